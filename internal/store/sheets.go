package store

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
)

// Pipeline sheets: a pipeline's own card (the pipeline and its recentOnCard newest
// records, what a list usually shows of it) is kept on a sheet, a document shared by
// up to sheetCapacity pipelines of one project that are mostly neighbours by name.
// A page of the list then reads a few sheets instead of a document per pipeline: on
// the embedded FerretDB a lookup's fixed cost is most of reading a card (a card
// ~0.4 ms, a sheet of 16 ~1 ms).
//
// A pipeline is given its sheet when it enters its project's directory and keeps it
// for life: renamed, it stays on it; rebuilt, the directory keeps it. A pipeline's
// sheet, once known, is therefore always right, and every process caches it
// (sheetIndex). The sheet's _id is the ID of the pipeline it was opened for.

// sheetCapacity is how many pipelines a sheet holds at most.
const sheetCapacity = 16

// sheetFill is how many pipelines a rebuild puts on a sheet, leaving room for
// pipelines created later among them by name.
const sheetFill = sheetCapacity * 3 / 4

// sheetContent is what a sheet holds, packed (see packedDoc): its pipelines' own
// cards by pipeline ID.
type sheetContent struct {
	Cards map[string]*cardContent `bson:"cards"`
}

var sheetLocks stripedLocks

func (s *Store) sheets() *mongo.Collection { return s.db.Collection("pipelineSheets") }

// sheetIndex remembers the sheets of the pipelines this process has met, by pipeline
// ID: they never change (see above).
type sheetIndex struct{ m sync.Map }

func (si *sheetIndex) remember(pipelineID, sheet string) { si.m.Store(pipelineID, sheet) }
func (si *sheetIndex) forget(pipelineID string)          { si.m.Delete(pipelineID) }
func (si *sheetIndex) clear()                            { si.m.Clear() }

func (si *sheetIndex) lookup(pipelineID string) (string, bool) {
	v, ok := si.m.Load(pipelineID)
	if !ok {
		return "", false
	}
	return v.(string), true
}

// sheetOf is the sheet of a pipeline, read from its project's directory when this
// process has not met it yet; "" when the directory does not list it (deleted).
func (s *Store) sheetOf(ctx context.Context, projectID, pipelineID string) (string, error) {
	if sheet, ok := s.sheetIDs.lookup(pipelineID); ok {
		return sheet, nil
	}
	dir, err := s.directory(ctx, projectID)
	if err != nil {
		return "", err
	}
	sheet := ""
	for _, e := range dir {
		if e.Sheet != "" {
			s.sheetIDs.remember(e.ID, e.Sheet)
		}
		if e.ID == pipelineID {
			sheet = e.Sheet
		}
	}
	return sheet, nil
}

// sheetFor picks the sheet of pipeline id entering a directory (by name, without it)
// at position i: the sheet of the pipelines on both sides when they share one, else
// the sheet of the one before it when that one ends its sheet, else of the one after
// it when that one starts its sheet (so that sheets keep runs of names), each only
// while it has room; else a new sheet, opened for it.
func sheetFor(dir []directoryEntry, i int, id string) string {
	size := map[string]int{}
	for _, e := range dir {
		size[e.Sheet]++
	}
	hasRoom := func(sheet string) bool { return sheet != "" && size[sheet] < sheetCapacity }
	var before, after string
	if i > 0 {
		before = dir[i-1].Sheet
	}
	if i < len(dir) {
		after = dir[i].Sheet
	}
	onSheet := func(e directoryEntry) bool { return e.Sheet == before }
	switch {
	case before != "" && before == after:
		if hasRoom(before) {
			return before
		}
	case hasRoom(before) && !slices.ContainsFunc(dir[i:], onSheet):
		return before
	case hasRoom(after) && !slices.ContainsFunc(dir[:i], func(e directoryEntry) bool { return e.Sheet == after }):
		return after
	}
	return id
}

// assignSheets gives the entries of a directory (by name) that have no sheet one:
// each run of them by name fills new sheets sheetFill at a time.
func assignSheets(dir []directoryEntry) {
	open, held := "", 0
	for i := range dir {
		switch {
		case dir[i].Sheet != "":
			open = ""
		case open == "" || held == sheetFill:
			open, held = dir[i].ID, 1
			dir[i].Sheet = open
		default:
			held++
			dir[i].Sheet = open
		}
	}
}

// changeOwnCard lets change change a pipeline's own card on its sheet (a new card
// when the sheet has none for it yet). A pipeline its directory does not list
// (deleted) has no card to change.
func (s *Store) changeOwnCard(ctx context.Context, projectID, pipelineID string, change func(*cardContent) bool) error {
	sheet, err := s.sheetOf(ctx, projectID, pipelineID)
	if err != nil || sheet == "" {
		return err
	}
	return changePacked(ctx, s, s.sheets(), &sheetLocks, sheet, projectID, func(sc *sheetContent) bool {
		c := sc.Cards[pipelineID]
		if c == nil {
			c = new(cardContent)
		}
		if !change(c) {
			return false
		}
		if sc.Cards == nil {
			sc.Cards = map[string]*cardContent{}
		}
		sc.Cards[pipelineID] = c
		return true
	})
}

// dropOwnCard takes a deleted pipeline's card off its sheet, and deletes the sheet
// when it was the last one on it.
func (s *Store) dropOwnCard(ctx context.Context, projectID, pipelineID string) error {
	sheet, err := s.sheetOf(ctx, projectID, pipelineID)
	if err != nil || sheet == "" {
		return err
	}
	empty := false
	err = changePacked(ctx, s, s.sheets(), &sheetLocks, sheet, projectID, func(sc *sheetContent) bool {
		_, held := sc.Cards[pipelineID]
		delete(sc.Cards, pipelineID)
		empty = len(sc.Cards) == 0
		return held
	})
	if err == nil && empty {
		_, err = s.sheets().DeleteOne(ctx, bson.D{{Key: "_id", Value: sheet}})
	}
	return err
}

// readOwnCards reads the own cards of the given directory entries from their
// sheets, by pipeline ID (those the sheets do not hold are left out).
func (s *Store) readOwnCards(ctx context.Context, entries []directoryEntry) (map[string]*cardContent, error) {
	wanted := map[string][]string{} // sheet: the pipelines read from it
	var sheetIDs []string
	for _, e := range entries {
		if e.Sheet == "" {
			continue
		}
		if _, seen := wanted[e.Sheet]; !seen {
			sheetIDs = append(sheetIDs, e.Sheet)
		}
		wanted[e.Sheet] = append(wanted[e.Sheet], e.ID)
	}
	cards := make(map[string]*cardContent, len(entries))
	var mu sync.Mutex
	err := eachByID(ctx, s, s.sheets(), sheetIDs, func(id string, d *packedDoc) error {
		var sc sheetContent
		if err := unpack(d.Content, &sc); err != nil {
			return fmt.Errorf("sheet %s: %w", id, err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, pid := range wanted[id] {
			if c := sc.Cards[pid]; c != nil {
				cards[pid] = c
			}
		}
		return nil
	})
	return cards, err
}
