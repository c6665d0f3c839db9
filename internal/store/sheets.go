package store

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/cycloneci/cyclone/internal/model"
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
// (sheetIndex). A new sheet gets a new random _id.
//
// A pipeline's card is put on its sheet by the pipeline's own writes (created,
// updated: cardPipeline); its records are noted only on a card that exists, so a
// record noted late, after its pipeline was deleted, does not bring the card back. A
// sheet is deleted with the last card taken off it. (A process that ends between a
// pipeline's entry in the directory and its card leaves it listed without a card:
// the list reads it from the pipelines, without recent records, until it is next
// updated.)

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

// empty says the sheet holds no card: changePacked deletes it.
func (sc *sheetContent) empty() bool { return len(sc.Cards) == 0 }

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

// sheetFor picks the sheet of a pipeline entering a directory (by name, without it)
// at position i: the sheet of the pipelines on both sides when they share one, else
// the sheet of the one before it when that one ends its sheet, else of the one after
// it when that one starts its sheet (so that sheets keep runs of names), each only
// while it has room; else a new sheet, fresh.
func sheetFor(dir []directoryEntry, i int, fresh string) string {
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
	return fresh
}

// assignSheets gives the entries of a directory (by name) that have no sheet one:
// each run of them by name fills new sheets (named by fresh) sheetFill at a time.
func assignSheets(dir []directoryEntry, fresh func() string) {
	open, held := "", 0
	for i := range dir {
		switch {
		case dir[i].Sheet != "":
			open = ""
		case open == "" || held == sheetFill:
			open, held = fresh(), 1
			dir[i].Sheet = open
		default:
			held++
			dir[i].Sheet = open
		}
	}
}

// changeOwnCard lets change change a pipeline's own card on its sheet; a card the
// sheet does not hold is changed only when create says so (a new one), and a
// pipeline its directory does not list (deleted) has none.
func (s *Store) changeOwnCard(ctx context.Context, projectID, pipelineID string, create bool, change func(*cardContent) bool) error {
	sheet, err := s.sheetOf(ctx, projectID, pipelineID)
	if err != nil || sheet == "" {
		return err
	}
	return changePacked(ctx, s, s.sheets(), &sheetLocks, sheet, projectID, func(sc *sheetContent) bool {
		c := sc.Cards[pipelineID]
		if c == nil && !create {
			return false
		}
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

// dropOwnCard takes a deleted pipeline's card off its sheet (the sheet goes with
// its last card).
func (s *Store) dropOwnCard(ctx context.Context, projectID, pipelineID string) error {
	sheet, err := s.sheetOf(ctx, projectID, pipelineID)
	if err != nil || sheet == "" {
		return err
	}
	return changePacked(ctx, s, s.sheets(), &sheetLocks, sheet, projectID, func(sc *sheetContent) bool {
		_, held := sc.Cards[pipelineID]
		delete(sc.Cards, pipelineID)
		return held
	})
}

// readOwnCards reads the own cards of the given directory entries from their
// sheets, by pipeline ID (those the sheets do not hold are left out). The cards'
// records may be shared with other readers (see sheetMemo): they must not be
// changed; the pipelines are the caller's.
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
		sheet, err := s.sheetMemo.unpack(id, d.Content)
		if err != nil {
			return fmt.Errorf("sheet %s: %w", id, err)
		}
		own := make(map[string]*cardContent, len(wanted[id]))
		for _, pid := range wanted[id] {
			rc := sheet.Cards[pid]
			if rc == nil {
				continue
			}
			c := &cardContent{Records: rc.Records}
			if rc.Pipeline != nil {
				c.Pipeline = new(model.Pipeline)
				if err := bson.Unmarshal(rc.Pipeline, c.Pipeline); err != nil {
					return fmt.Errorf("sheet %s, pipeline %s: %w", id, pid, err)
				}
			}
			own[pid] = c
		}
		mu.Lock()
		defer mu.Unlock()
		maps.Copy(cards, own)
		return nil
	})
	return cards, err
}

// unpackedSheet is a sheet's content as readers take it: its records unpacked, its
// pipelines left as BSON for each reader to unpack its own copy.
type unpackedSheet struct {
	Cards map[string]*struct {
		Pipeline bson.Raw        `bson:"pipeline,omitempty"`
		Records  []*model.Record `bson:"records"`
	} `bson:"cards"`
}

// sheetMemo remembers the sheets this process unpacked last, by _id, with the exact
// bytes they were unpacked from: a sheet read again unchanged (a list polled, the
// next page) is not unpacked again, which is most of a list's own work. It holds
// at most sheetMemoSize sheets.
type sheetMemo struct {
	mu     sync.Mutex
	sheets map[string]memoSheet
}

type memoSheet struct {
	packed []byte
	sheet  *unpackedSheet
}

// sheetMemoSize bounds the sheets a process remembers unpacked (each some 100 KiB).
const sheetMemoSize = 128

// unpack is the content of sheet id packed as packed: remembered, or unpacked now.
// What it returns is shared: it must not be changed.
func (sm *sheetMemo) unpack(id string, packed []byte) (*unpackedSheet, error) {
	sm.mu.Lock()
	m, ok := sm.sheets[id]
	sm.mu.Unlock()
	if ok && bytes.Equal(m.packed, packed) {
		return m.sheet, nil
	}
	sheet := new(unpackedSheet)
	if err := unpack(packed, sheet); err != nil {
		return nil, err
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.sheets == nil {
		sm.sheets = make(map[string]memoSheet, sheetMemoSize)
	}
	if _, ok := sm.sheets[id]; !ok && len(sm.sheets) >= sheetMemoSize {
		for other := range sm.sheets { // any one
			delete(sm.sheets, other)
			break
		}
	}
	sm.sheets[id] = memoSheet{packed: slices.Clone(packed), sheet: sheet}
	return sheet, nil
}
