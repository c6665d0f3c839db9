package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/google/uuid"

	"github.com/cycloneci/cyclone/internal/model"
)

// Pipeline cards: what the pipeline list shows of each pipeline, packed. A
// pipeline's own card holds the pipeline and its recentOnCard newest records, which
// is what a list usually asks for, and is kept on the pipeline's sheet (sheets.go)
// with its neighbours by name; further cards ("shelves"), documents addressed by
// _id, hold its recentKept newest records of every status, of Success and of
// Failed, read only when a list asks for more or for those. Each keeps the records
// as they were last noted: a finished record does not change any more, so its copy
// is exact; a record still Pending or Running is read again when a card is read. A
// page of the list then costs a lookup of the project's directory and one per sheet
// shown (and per shelf asked for), however many pipelines and records there are.
// (The embedded FerretDB reads the whole collection for any query but a lone _id
// equality, and its cost of reading one grows with its bytes: hence records packed,
// and the fewest records a list usually needs on the card it always reads.)

const (
	// recentOnCard is how many of its newest records a pipeline's own card keeps.
	recentOnCard = 5
	// recentKept is how many newest records of a kind the shelves keep. Lists asking
	// for more read the records themselves.
	recentKept = 10
	// recentAll is the kind of recent records of every status.
	recentAll = "all"
)

// recentKindsListed are the kinds of recent records a list may ask for.
var recentKindsListed = []string{recentAll, model.StatusSuccess, model.StatusFailed}

// shelf is where a pipeline's newest records of a kind are kept, up to keep of
// them, on the card whose _id is the pipeline ID and suffix.
type shelf struct {
	kind, suffix string
	keep         int
}

// shelves are a pipeline's places for recent records; the pipeline's own card first.
var shelves = []shelf{
	{recentAll, "", recentOnCard},
	{recentAll, "/all", recentKept},
	{model.StatusSuccess, "/" + model.StatusSuccess, recentKept},
	{model.StatusFailed, "/" + model.StatusFailed, recentKept},
}

func (sh shelf) id(pipelineID string) string { return pipelineID + sh.suffix }

// shelvesFor are the shelves a record with this status goes on.
func shelvesFor(status string) []shelf {
	var out []shelf
	for _, sh := range shelves {
		if sh.kind == recentAll || sh.kind == status {
			out = append(out, sh)
		}
	}
	return out
}

// shelfToRead is the smallest shelf that holds a pipeline's n newest records of a
// kind, if one does.
func shelfToRead(kind string, n int64) (shelf, bool) {
	for _, sh := range shelves {
		if sh.kind == kind && n <= int64(sh.keep) {
			return sh, true
		}
	}
	return shelf{}, false
}

// cardContent is what a card holds, packed (see packedDoc): on a pipeline's own
// card the stored pipeline (secrets sealed), and on every card its records, newest
// first.
type cardContent struct {
	Pipeline *model.Pipeline `bson:"pipeline,omitempty"`
	Records  []*model.Record `bson:"records"`
}

func (s *Store) cards() *mongo.Collection { return s.db.Collection("pipelineCards") }

// statusOfKind is the record status a kind selects ("" for every status).
func statusOfKind(kind string) string {
	if kind == recentAll {
		return ""
	}
	return kind
}

// noteRecent puts record r, as it is now, on its pipeline's cards (all at once:
// they are different documents).
func (s *Store) noteRecent(ctx context.Context, r *model.Record) error {
	onto := shelvesFor(r.Status)
	errs := make([]error, len(onto))
	var wg sync.WaitGroup
	for i, sh := range onto {
		wg.Go(func() { errs[i] = s.mergeRecent(ctx, r.ProjectID, r.PipelineID, sh, []*model.Record{r}) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// noteRecentMany notes records inserted in bulk: each card is written once.
func (s *Store) noteRecentMany(ctx context.Context, recs []*model.Record) error {
	groups := map[recentGroup][]*model.Record{}
	for _, r := range recs {
		for _, kind := range []string{recentAll, r.Status} {
			k := recentGroup{r.ProjectID, r.PipelineID, kind}
			groups[k] = append(groups[k], r)
		}
	}
	return s.shelveGroups(ctx, groups)
}

// recentGroup is the records of one kind of a pipeline.
type recentGroup struct{ project, pipeline, kind string }

// shelveGroups merges grouped records onto the shelves of their kind.
func (s *Store) shelveGroups(ctx context.Context, groups map[recentGroup][]*model.Record) error {
	for k, recs := range groups {
		sortNewestFirst(recs)
		for _, sh := range shelves {
			if sh.kind != k.kind {
				continue
			}
			if err := s.mergeRecent(ctx, k.project, k.pipeline, sh, recs[:min(len(recs), sh.keep)]); err != nil {
				return fmt.Errorf("recent records of pipeline %s: %w", k.pipeline, err)
			}
		}
	}
	return nil
}

// mergeRecent adds recs to a shelf (replacing older copies of them) and keeps its
// newest.
func (s *Store) mergeRecent(ctx context.Context, projectID, pipelineID string, sh shelf, recs []*model.Record) error {
	if len(recs) == 0 {
		return nil
	}
	return s.changeShelf(ctx, projectID, pipelineID, sh, func(c *cardContent) bool {
		c.Records = slices.DeleteFunc(c.Records, func(old *model.Record) bool {
			return slices.ContainsFunc(recs, func(r *model.Record) bool { return r.ID == old.ID })
		})
		c.Records = append(c.Records, recs...)
		sortNewestFirst(c.Records)
		c.Records = c.Records[:min(len(c.Records), sh.keep)]
		return true
	})
}

// changeShelf lets change change a pipeline's shelf: its own card on its sheet, or
// a card of its own.
func (s *Store) changeShelf(ctx context.Context, projectID, pipelineID string, sh shelf, change func(*cardContent) bool) error {
	if sh.suffix == "" {
		return s.changeOwnCard(ctx, projectID, pipelineID, false, change)
	}
	return changePacked(ctx, s, s.cards(), &cardLocks, sh.id(pipelineID), projectID, change)
}

// sortNewestFirst orders records as the newestFirst sort does: start time, then ID,
// both descending.
func sortNewestFirst(recs []*model.Record) {
	slices.SortFunc(recs, func(a, b *model.Record) int {
		return cmp.Or(b.StartTime.Compare(a.StartTime), strings.Compare(b.ID, a.ID))
	})
}

// forgetRecent takes a deleted record off its pipeline's cards. A shelf it was on
// may now hold fewer records than it keeps while older ones exist: it is filled
// again from the records.
func (s *Store) forgetRecent(ctx context.Context, r *model.Record) error {
	var errs []error
	for _, sh := range shelvesFor(r.Status) {
		held := false
		err := s.changeShelf(ctx, r.ProjectID, r.PipelineID, sh, func(c *cardContent) bool {
			n := len(c.Records)
			c.Records = slices.DeleteFunc(c.Records, func(old *model.Record) bool { return old.ID == r.ID })
			held = len(c.Records) < n
			return held
		})
		if err == nil && held {
			var recs []*model.Record
			if recs, err = s.RecentRecords(ctx, r.PipelineID, statusOfKind(sh.kind), int64(sh.keep)); err == nil {
				err = s.mergeRecent(ctx, r.ProjectID, r.PipelineID, sh, recs)
			}
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cardPipeline puts the stored pipeline p on its card.
func (s *Store) cardPipeline(ctx context.Context, p *model.Pipeline) error {
	return s.changeOwnCard(ctx, p.ProjectID, p.ID, true, func(c *cardContent) bool {
		c.Pipeline = p
		return true
	})
}

// RecentCounts says how many of each pipeline's newest records a list shows: of
// every status, successful, failed.
type RecentCounts struct{ All, Success, Failed int64 }

func (rc RecentCounts) of(kind string) int64 {
	switch kind {
	case model.StatusSuccess:
		return rc.Success
	case model.StatusFailed:
		return rc.Failed
	}
	return rc.All
}

// ListPipelinesRecent lists a project's pipelines by name, as ListPipelines does,
// each with its newest records as rc asks. Without a filter, a page is read from
// the project's directory and the pipelines' cards. The pipelines are the caller's
// to change; the records may be shared with other readers and must not be changed.
func (s *Store) ListPipelinesRecent(ctx context.Context, projectID string, o ListOptions, rc RecentCounts) ([]*model.ListedPipeline, int64, error) {
	s.awaitDerived(ctx)
	if len(o.Filter) > 0 {
		pipelines, total, err := s.listPipelinesQuery(ctx, projectID, o)
		if err != nil {
			return nil, 0, err
		}
		items := make([]*model.ListedPipeline, len(pipelines))
		for i, p := range pipelines {
			items[i] = &model.ListedPipeline{Pipeline: p}
		}
		return items, total, s.addRecentFromRecords(ctx, items, rc, nil)
	}
	entries, total, err := s.directoryPage(ctx, projectID, o)
	if err != nil {
		return nil, 0, err
	}
	read := map[string]shelf{} // kind: the shelf read for it
	var shelfIDs []string      // the shelves read beside the pipelines' own cards
	for _, kind := range recentKindsListed {
		if n := rc.of(kind); n > 0 {
			if sh, ok := shelfToRead(kind, n); ok {
				read[kind] = sh
				for _, e := range entries {
					if sh.suffix != "" {
						shelfIDs = append(shelfIDs, sh.id(e.ID))
					}
				}
			}
		}
	}
	cards, err := s.readCards(ctx, entries, shelfIDs)
	if err != nil {
		return nil, 0, err
	}
	items := make([]*model.ListedPipeline, 0, len(entries))
	for _, e := range entries {
		p, err := s.pipelineOnCard(ctx, e.ID, cards[e.ID])
		if errors.Is(err, ErrNotFound) || (err == nil && p.ProjectID != projectID) {
			continue // deleted since the directory was read
		}
		if err != nil {
			return nil, 0, err
		}
		lp := &model.ListedPipeline{Pipeline: p}
		for kind, sh := range read {
			card := cards[sh.id(e.ID)]
			if card == nil {
				continue
			}
			recs := card.Records[:min(int64(len(card.Records)), rc.of(kind))]
			if len(recs) > 0 {
				// A copy: refreshUnfinished edits the list, which a sheet read
				// by others holds (sheetMemo).
				*lp.RecentOf(statusOfKind(kind)) = slices.Clone(recs)
			}
		}
		items = append(items, lp)
	}
	if err := s.refreshUnfinished(ctx, items); err != nil {
		return nil, 0, err
	}
	return items, total, s.addRecentFromRecords(ctx, items, rc, read)
}

// readCards reads the own cards of the pipelines of the given directory entries
// (from their sheets) and the shelves with the given IDs, at the same time, by card
// ID (a pipeline's own card by the pipeline's ID).
func (s *Store) readCards(ctx context.Context, entries []directoryEntry, shelfIDs []string) (map[string]*cardContent, error) {
	var own map[string]*cardContent
	var ownErr error
	var wg sync.WaitGroup
	wg.Go(func() { own, ownErr = s.readOwnCards(ctx, entries) })
	shelved := map[string]*cardContent{}
	var mu sync.Mutex
	err := eachByID(ctx, s, s.cards(), shelfIDs, func(id string, d *packedDoc) error {
		c := new(cardContent)
		if err := unpack(d.Content, c); err != nil {
			return fmt.Errorf("card %s: %w", id, err)
		}
		mu.Lock()
		defer mu.Unlock()
		shelved[id] = c
		return nil
	})
	wg.Wait()
	if err = errors.Join(ownErr, err); err != nil {
		return nil, err
	}
	maps.Copy(own, shelved)
	return own, nil
}

// pipelineOnCard is the pipeline a card holds, or the stored one when the card has
// none.
func (s *Store) pipelineOnCard(ctx context.Context, id string, card *cardContent) (*model.Pipeline, error) {
	if card == nil || card.Pipeline == nil {
		return s.GetPipelineByID(ctx, id)
	}
	return card.Pipeline, nil
}

// refreshUnfinished replaces the copies of records noted before they finished by
// the records as they are now, and drops those deleted since.
func (s *Store) refreshUnfinished(ctx context.Context, items []*model.ListedPipeline) error {
	var stale []string
	for _, lp := range items {
		for _, kind := range recentKindsListed {
			for _, r := range *lp.RecentOf(statusOfKind(kind)) {
				if !model.IsTerminal(r.Status) {
					stale = append(stale, r.ID)
				}
			}
		}
	}
	live, err := findByIDs[model.Record](ctx, s, s.records, stale)
	if err != nil {
		return err
	}
	for _, lp := range items {
		for _, kind := range recentKindsListed {
			recs := lp.RecentOf(statusOfKind(kind))
			kept := (*recs)[:0]
			for _, r := range *recs {
				if !model.IsTerminal(r.Status) {
					if r = live[r.ID]; r == nil {
						continue
					}
				}
				kept = append(kept, r)
			}
			if len(kept) == 0 {
				kept = nil
			}
			*recs = kept
		}
	}
	return nil
}

// addRecentFromRecords reads from the records the recent records of the kinds rc
// asks for that no shelf was read for.
func (s *Store) addRecentFromRecords(ctx context.Context, items []*model.ListedPipeline, rc RecentCounts, shelved map[string]shelf) error {
	ids := make([]string, len(items))
	for i, lp := range items {
		ids[i] = lp.ID
	}
	for _, kind := range recentKindsListed {
		n := rc.of(kind)
		if _, done := shelved[kind]; done || n <= 0 || len(ids) == 0 {
			continue
		}
		recs, err := s.RecentRecordsOf(ctx, ids, statusOfKind(kind), n)
		if err != nil {
			return err
		}
		for _, lp := range items {
			*lp.RecentOf(statusOfKind(kind)) = recs[lp.ID]
		}
	}
	return nil
}

// dropPipelineRecent deletes a deleted pipeline's cards (before it leaves its
// directory, which says where its own card is, so that a failure leaves it there
// for the delete's retry).
func (s *Store) dropPipelineRecent(ctx context.Context, p *model.Pipeline) error {
	errs := []error{s.dropOwnCard(ctx, p.ProjectID, p.ID)}
	for _, sh := range shelves {
		if sh.suffix != "" {
			_, err := s.cards().DeleteOne(ctx, bson.D{{Key: "_id", Value: sh.id(p.ID)}})
			errs = append(errs, err)
		}
	}
	s.sheetIDs.forget(p.ID)
	return errors.Join(errs...)
}

// dropProjectRecent deletes a deleted project's cards, sheets and pipeline
// directory.
func (s *Store) dropProjectRecent(ctx context.Context, projectID string) error {
	for _, coll := range []*mongo.Collection{s.cards(), s.sheets()} {
		if _, err := coll.DeleteMany(ctx, bson.D{{Key: "projectID", Value: projectID}}); err != nil {
			return err
		}
	}
	_, err := s.directories().DeleteOne(ctx, bson.D{{Key: "_id", Value: projectID}})
	return err
}

// rebuildRecent writes every card and sheet again from the pipelines and the
// records, in one pass over the records (unsorted: MongoDB could not sort them all
// in memory). The directories must be up to date: they say where the sheets are.
func (s *Store) rebuildRecent(ctx context.Context) error {
	for _, coll := range []*mongo.Collection{s.cards(), s.sheets()} {
		if _, err := coll.DeleteMany(ctx, bson.D{}); err != nil {
			return err
		}
	}
	pcur, err := s.pipelines.Find(ctx, bson.D{})
	if err != nil {
		return err
	}
	defer pcur.Close(ctx)
	for pcur.Next(ctx) {
		var p model.Pipeline
		if err := pcur.Decode(&p); err != nil {
			return err
		}
		if err := s.cardPipeline(ctx, &p); err != nil {
			return err
		}
	}
	if err := pcur.Err(); err != nil {
		return err
	}
	cur, err := s.records.Find(ctx, bson.D{})
	if err != nil {
		return err
	}
	defer cur.Close(ctx)
	newest := map[recentGroup][]*model.Record{}
	for cur.Next(ctx) {
		r := new(model.Record)
		if err := cur.Decode(r); err != nil {
			return err
		}
		for _, kind := range []string{recentAll, r.Status} {
			k := recentGroup{r.ProjectID, r.PipelineID, kind}
			recs := append(newest[k], r)
			if len(recs) >= 2*recentKept {
				sortNewestFirst(recs)
				recs = recs[:recentKept]
			}
			newest[k] = recs
		}
	}
	if err := cur.Err(); err != nil {
		return err
	}
	return s.shelveGroups(ctx, newest)
}

// Pipeline directories: each project's pipelines by ID, name and sheet in one
// document, so a page of the pipeline list is one lookup and a lookup per sheet
// shown.

func (s *Store) directories() *mongo.Collection { return s.db.Collection("pipelineDirectories") }

// directoryContent is what a project's directory holds, packed (see packedDoc): its
// pipelines, by name.
type directoryContent struct {
	Pipelines []directoryEntry `bson:"pipelines"`
}

// directoryEntry is a pipeline in its project's directory.
type directoryEntry struct {
	ID    string `bson:"id"`
	Name  string `bson:"name"`
	Sheet string `bson:"sheet,omitempty"` // the sheet of its own card (see sheetFor)
}

// sortByName orders a directory's entries by name, then ID.
func (dc *directoryContent) sortByName() { slices.SortFunc(dc.Pipelines, compareByName) }

func compareByName(a, b directoryEntry) int {
	return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
}

// listPipeline puts p in its project's directory, on a sheet (sheetFor), or renames
// it there (on the sheet it has).
func (s *Store) listPipeline(ctx context.Context, p *model.Pipeline) error {
	var sheet string
	err := changePacked(ctx, s, s.directories(), &directoryLocks, p.ProjectID, p.ProjectID, func(dc *directoryContent) bool {
		sheet = ""
		dc.Pipelines = slices.DeleteFunc(dc.Pipelines, func(e directoryEntry) bool {
			if e.ID == p.ID {
				sheet = e.Sheet
			}
			return e.ID == p.ID
		})
		entry := directoryEntry{ID: p.ID, Name: p.Name, Sheet: sheet}
		i, _ := slices.BinarySearchFunc(dc.Pipelines, entry, compareByName)
		if entry.Sheet == "" {
			entry.Sheet = sheetFor(dc.Pipelines, i, uuid.NewString())
		}
		sheet = entry.Sheet
		dc.Pipelines = slices.Insert(dc.Pipelines, i, entry)
		return true
	})
	if err == nil {
		s.sheetIDs.remember(p.ID, sheet)
	}
	return err
}

// unlistPipeline takes p out of its project's directory.
func (s *Store) unlistPipeline(ctx context.Context, p *model.Pipeline) error {
	return changePacked(ctx, s, s.directories(), &directoryLocks, p.ProjectID, p.ProjectID, func(dc *directoryContent) bool {
		n := len(dc.Pipelines)
		dc.Pipelines = slices.DeleteFunc(dc.Pipelines, func(e directoryEntry) bool { return e.ID == p.ID })
		return len(dc.Pipelines) < n
	})
}

// directory is a project's pipelines, by name.
func (s *Store) directory(ctx context.Context, projectID string) ([]directoryEntry, error) {
	var doc packedDoc
	err := s.directories().FindOne(ctx, bson.D{{Key: "_id", Value: projectID}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var dc directoryContent
	if err := unpack(doc.Content, &dc); err != nil {
		return nil, fmt.Errorf("directory of project %s: %w", projectID, err)
	}
	return dc.Pipelines, nil
}

// directoryLookup is the ID of the pipeline called name in a project's directory,
// or "".
func (s *Store) directoryLookup(ctx context.Context, projectID, name string) (string, error) {
	dir, err := s.directory(ctx, projectID)
	for _, e := range dir {
		if e.Name == name {
			return e.ID, err
		}
	}
	return "", err
}

// directoryPage is a page of a project's pipelines by name, read from its
// directory, and how many pipelines the project has.
func (s *Store) directoryPage(ctx context.Context, projectID string, o ListOptions) ([]directoryEntry, int64, error) {
	dir, err := s.directory(ctx, projectID)
	if err != nil {
		return nil, 0, err
	}
	total := int64(len(dir))
	page := dir[min(max(o.Start, 0), total):]
	if o.Limit > 0 {
		page = page[:min(o.Limit, int64(len(page)))]
	}
	return page, total, nil
}

// rebuildDirectories writes every project's pipeline directory again from the
// pipelines, which keep their sheets.
func (s *Store) rebuildDirectories(ctx context.Context) error {
	cur, err := s.pipelines.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "projectID", Value: 1}, {Key: "name", Value: 1}}))
	if err != nil {
		return err
	}
	defer cur.Close(ctx)
	byProject := map[string]*directoryContent{}
	for cur.Next(ctx) {
		var p model.Pipeline
		if err := cur.Decode(&p); err != nil {
			return err
		}
		dc := byProject[p.ProjectID]
		if dc == nil {
			dc = &directoryContent{}
			byProject[p.ProjectID] = dc
		}
		dc.Pipelines = append(dc.Pipelines, directoryEntry{ID: p.ID, Name: p.Name})
	}
	if err := cur.Err(); err != nil {
		return err
	}
	// Pipelines keep their sheets (see sheetFor); those without one get one.
	for projectID, dc := range byProject {
		old, err := s.directory(ctx, projectID)
		if err != nil {
			return err
		}
		sheets := make(map[string]string, len(old))
		for _, e := range old {
			sheets[e.ID] = e.Sheet
		}
		for i, e := range dc.Pipelines {
			dc.Pipelines[i].Sheet = sheets[e.ID]
		}
		dc.sortByName()
		assignSheets(dc.Pipelines, uuid.NewString)
	}
	if _, err := s.directories().DeleteMany(ctx, bson.D{}); err != nil {
		return err
	}
	s.sheetIDs.clear()
	for projectID, dc := range byProject {
		err := changePacked(ctx, s, s.directories(), &directoryLocks, projectID, projectID, func(c *directoryContent) bool {
			*c = *dc
			return true
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// packedDoc is a document whose content is one packed value, changed by reading it,
// changing it and writing it back (changePacked): FerretDB reads such a document
// far faster than the same content as fields.
type packedDoc struct {
	ID        string `bson:"_id"`
	ProjectID string `bson:"projectID"`
	Version   int64  `bson:"version"`
	Content   []byte `bson:"content"`
}

// changePacked reads the packed document id of coll (a zero T when there is none),
// lets change change its content and, when change says it did, writes it back, or
// deletes the document when T says the content is now empty (emptiable). On
// MongoDB the write is a compare-and-set on the document's version, tried again
// when another writer came first; on FerretDB, whose filters beyond _id read every
// document, the document's lock in this process (see stripedLocks) keeps other
// writers out from the read to the write. A new document's version starts at the
// time of its creation, so a document deleted and created again never meets a
// writer holding a version of the one before.
func changePacked[T any](ctx context.Context, s *Store, coll *mongo.Collection, locks *stripedLocks, id, projectID string, change func(*T) bool) error {
	defer s.lockDoc(ctx, locks, id)()
	for range packedAttempts {
		var doc packedDoc
		err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
		found := err == nil
		if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
			return err
		}
		content := new(T)
		if found {
			if err := unpack(doc.Content, content); err != nil {
				return fmt.Errorf("%s %s: %w", coll.Name(), id, err)
			}
		}
		if !change(content) {
			return nil
		}
		if e, ok := any(content).(emptiable); ok && e.empty() {
			if !found {
				return nil
			}
			res, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "version", Value: doc.Version}})
			if err != nil || res.DeletedCount == 1 {
				return err
			}
			continue // changed meanwhile: change that
		}
		packed, err := pack(content)
		if err != nil {
			return err
		}
		if !found {
			_, err := coll.InsertOne(ctx, packedDoc{ID: id, ProjectID: projectID, Version: now().UnixNano(), Content: packed})
			if errors.Is(writeErr(err), ErrConflict) {
				continue // created meanwhile: change that one
			}
			return err
		}
		filter := bson.D{{Key: "_id", Value: id}}
		if !s.scansQueries(ctx) {
			filter = append(filter, bson.E{Key: "version", Value: doc.Version})
		}
		res, err := coll.UpdateOne(ctx, filter, bson.D{{Key: "$set", Value: bson.D{
			{Key: "projectID", Value: projectID}, {Key: "version", Value: doc.Version + 1}, {Key: "content", Value: packed}}}})
		if err != nil || res.MatchedCount == 1 {
			return err
		}
	}
	return fmt.Errorf("%s %s: changed by others %d times in a row", coll.Name(), id, packedAttempts)
}

// emptiable is the content of a packed document that is deleted once empty.
type emptiable interface{ empty() bool }

// packedAttempts bounds changePacked's compare-and-set attempts.
const packedAttempts = 20
