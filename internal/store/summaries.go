package store

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

// Pipeline cards: what the pipeline list shows of each pipeline, in documents
// addressed by _id. A pipeline's own card holds the pipeline and its recentOnCard
// newest records, which is what a list usually asks for; further cards ("shelves")
// hold its recentKept newest records of every status, of Success and of Failed, read
// only when a list asks for more or for those. Each keeps the records as they were
// last noted: a finished record does not change any more, so its copy is exact; a
// record still Pending or Running is read again when a card is read. A page of the
// list then costs a lookup of the project's directory and one per pipeline shown
// (and per shelf asked for), however many pipelines and records there are. (The
// embedded FerretDB reads the whole collection for any query but a lone _id
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

// pipelineCard is a card: the pipeline's own (Pipeline is the stored pipeline,
// secrets sealed, packed) or a shelf. Recent holds its records by encoded record ID
// (see recentKey).
type pipelineCard struct {
	ID        string                 `bson:"_id"`
	ProjectID string                 `bson:"projectID"`
	Pipeline  []byte                 `bson:"pipeline,omitempty"`
	Recent    map[string]recentEntry `bson:"recent"`
}

// recentEntry is a record on a card: what orders it, and the record itself packed
// (cards of whole records read field by field took ten times as long).
type recentEntry struct {
	ID        string    `bson:"id"`
	StartTime time.Time `bson:"startTime"`
	Doc       []byte    `bson:"doc"`
}

func newRecentEntry(r *model.Record) (recentEntry, error) {
	doc, err := pack(r)
	return recentEntry{ID: r.ID, StartTime: r.StartTime, Doc: doc}, err
}

func (s *Store) cards() *mongo.Collection { return s.db.Collection("pipelineCards") }

// recentKey encodes a record ID as a field name: no dots or dollars.
func recentKey(recordID string) string { return "r" + hex.EncodeToString([]byte(recordID)) }

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

// mergeRecent adds recs to a shelf and then drops what is no longer among its
// newest. Adding and dropping are each atomic on the one document, and only records
// outside the newest of what the writer saw are dropped, so concurrent writers never
// drop one of the newest.
func (s *Store) mergeRecent(ctx context.Context, projectID, pipelineID string, sh shelf, recs []*model.Record) error {
	if len(recs) == 0 {
		return nil
	}
	set := bson.D{{Key: "projectID", Value: projectID}}
	for _, r := range recs {
		e, err := newRecentEntry(r)
		if err != nil {
			return err
		}
		set = append(set, bson.E{Key: "recent." + recentKey(r.ID), Value: e})
	}
	id := sh.id(pipelineID)
	defer s.lockDoc(ctx, &cardLocks, id)()
	var after pipelineCard
	err := s.cards().FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: id}},
		bson.D{{Key: "$set", Value: set}},
		options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Decode(&after)
	if err != nil {
		return err
	}
	entries := newestEntries(after.Recent)
	if len(entries) <= sh.keep {
		return nil
	}
	unset := bson.D{}
	for _, e := range entries[sh.keep:] {
		unset = append(unset, bson.E{Key: "recent." + recentKey(e.ID), Value: ""})
	}
	_, err = s.cards().UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$unset", Value: unset}})
	return err
}

// newestEntries is entries newest first (the order of newestFirst).
func newestEntries(entries map[string]recentEntry) []recentEntry {
	out := make([]recentEntry, 0, len(entries))
	for _, e := range entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b recentEntry) int {
		return cmp.Or(b.StartTime.Compare(a.StartTime), strings.Compare(b.ID, a.ID))
	})
	return out
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
	key := recentKey(r.ID)
	var errs []error
	for _, sh := range shelvesFor(r.Status) {
		var before pipelineCard
		unlock := s.lockDoc(ctx, &cardLocks, sh.id(r.PipelineID))
		err := s.cards().FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: sh.id(r.PipelineID)}},
			bson.D{{Key: "$unset", Value: bson.D{{Key: "recent." + key, Value: ""}}}},
			options.FindOneAndUpdate().SetReturnDocument(options.Before)).Decode(&before)
		unlock()
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, held := before.Recent[key]; held {
			recs, err := s.RecentRecords(ctx, r.PipelineID, statusOfKind(sh.kind), int64(sh.keep))
			if err == nil {
				err = s.mergeRecent(ctx, r.ProjectID, r.PipelineID, sh, recs)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cardPipeline puts the stored pipeline p on its card.
func (s *Store) cardPipeline(ctx context.Context, p *model.Pipeline) error {
	doc, err := pack(p)
	if err != nil {
		return err
	}
	defer s.lockDoc(ctx, &cardLocks, p.ID)()
	_, err = s.cards().UpdateOne(ctx, bson.D{{Key: "_id", Value: p.ID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "projectID", Value: p.ProjectID}, {Key: "pipeline", Value: doc}}}},
		options.Update().SetUpsert(true))
	return err
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
// the project's directory and the pipelines' cards.
func (s *Store) ListPipelinesRecent(ctx context.Context, projectID string, o ListOptions, rc RecentCounts) ([]*model.ListedPipeline, int64, error) {
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
	ids, total, err := s.directoryPage(ctx, projectID, o)
	if err != nil {
		return nil, 0, err
	}
	cardIDs := slices.Clone(ids) // the pipelines' own cards
	read := map[string]shelf{}   // kind: the shelf read for it
	for _, kind := range recentKindsListed {
		if n := rc.of(kind); n > 0 {
			if sh, ok := shelfToRead(kind, n); ok {
				read[kind] = sh
				if sh.suffix != "" {
					for _, id := range ids {
						cardIDs = append(cardIDs, sh.id(id))
					}
				}
			}
		}
	}
	cards, err := findByIDs[pipelineCard](ctx, s, s.cards(), cardIDs)
	if err != nil {
		return nil, 0, err
	}
	items := make([]*model.ListedPipeline, 0, len(ids))
	var unfinished []*model.Record // when noted: read again
	for _, id := range ids {
		p, err := s.pipelineOnCard(ctx, id, cards[id])
		if errors.Is(err, ErrNotFound) || (err == nil && p.ProjectID != projectID) {
			continue // deleted since the directory was read
		}
		if err != nil {
			return nil, 0, err
		}
		lp := &model.ListedPipeline{Pipeline: p}
		for kind, sh := range read {
			card := cards[sh.id(id)]
			if card == nil {
				continue
			}
			entries := newestEntries(card.Recent)
			recs := make([]*model.Record, 0, min(int64(len(entries)), rc.of(kind)))
			for _, e := range entries[:min(int64(len(entries)), rc.of(kind))] {
				r := new(model.Record)
				if err := unpack(e.Doc, r); err != nil {
					return nil, 0, fmt.Errorf("card %s: record %s: %w", card.ID, e.ID, err)
				}
				if !model.IsTerminal(r.Status) {
					unfinished = append(unfinished, r)
				}
				recs = append(recs, r)
			}
			if len(recs) > 0 {
				*lp.RecentOf(statusOfKind(kind)) = recs
			}
		}
		items = append(items, lp)
	}
	if err := s.refreshUnfinished(ctx, items, unfinished); err != nil {
		return nil, 0, err
	}
	return items, total, s.addRecentFromRecords(ctx, items, rc, read)
}

// pipelineOnCard is the pipeline a card holds, or the stored one when the card has
// none.
func (s *Store) pipelineOnCard(ctx context.Context, id string, card *pipelineCard) (*model.Pipeline, error) {
	if card == nil || card.Pipeline == nil {
		return s.GetPipelineByID(ctx, id)
	}
	p := new(model.Pipeline)
	if err := unpack(card.Pipeline, p); err != nil {
		return nil, fmt.Errorf("card of pipeline %s: %w", id, err)
	}
	return p, nil
}

// refreshUnfinished replaces the copies of records noted before they finished by the
// records as they are now, and drops those deleted since.
func (s *Store) refreshUnfinished(ctx context.Context, items []*model.ListedPipeline, stale []*model.Record) error {
	if len(stale) == 0 {
		return nil
	}
	ids := make([]string, len(stale))
	for i, r := range stale {
		ids[i] = r.ID
	}
	now, err := findByIDs[model.Record](ctx, s, s.records, ids)
	if err != nil {
		return err
	}
	for _, lp := range items {
		for _, kind := range recentKindsListed {
			recs := lp.RecentOf(statusOfKind(kind))
			kept := (*recs)[:0]
			for _, r := range *recs {
				if !model.IsTerminal(r.Status) {
					if r = now[r.ID]; r == nil {
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

// dropPipelineRecent deletes a deleted pipeline's cards.
func (s *Store) dropPipelineRecent(ctx context.Context, pipelineID string) error {
	var errs []error
	for _, sh := range shelves {
		_, err := s.cards().DeleteOne(ctx, bson.D{{Key: "_id", Value: sh.id(pipelineID)}})
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// dropProjectRecent deletes a deleted project's cards and pipeline directory.
func (s *Store) dropProjectRecent(ctx context.Context, projectID string) error {
	if _, err := s.cards().DeleteMany(ctx, bson.D{{Key: "projectID", Value: projectID}}); err != nil {
		return err
	}
	_, err := s.directories().DeleteOne(ctx, bson.D{{Key: "_id", Value: projectID}})
	return err
}

// rebuildRecent writes every card again from the pipelines and the records, in one
// pass over the records (unsorted: MongoDB could not sort them all in memory).
func (s *Store) rebuildRecent(ctx context.Context) error {
	if _, err := s.cards().DeleteMany(ctx, bson.D{}); err != nil {
		return err
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

// findByIDs reads the documents with the given IDs, by ID. MongoDB answers an $in
// on _id from its index; FerretDB answers only a lone _id equality without reading
// the whole collection, so there each is read on its own, a few at a time.
func findByIDs[T any](ctx context.Context, s *Store, coll *mongo.Collection, ids []string) (map[string]*T, error) {
	out := make(map[string]*T, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	idOf := func(raw bson.Raw) string { id, _ := raw.Lookup("_id").StringValueOK(); return id }
	if !s.scansQueries(ctx) {
		cur, err := coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
		if err != nil {
			return nil, err
		}
		defer cur.Close(ctx)
		for cur.Next(ctx) {
			v := new(T)
			if err := cur.Decode(v); err != nil {
				return nil, err
			}
			out[idOf(cur.Current)] = v
		}
		return out, cur.Err()
	}
	found := make([]*T, len(ids))
	errs := make([]error, len(ids))
	sem := make(chan struct{}, lookupConcurrency)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			v, err := findOne[T](ctx, coll, bson.D{{Key: "_id", Value: id}})
			if !errors.Is(err, ErrNotFound) {
				found[i], errs[i] = v, err
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i, v := range found {
		if v != nil {
			out[ids[i]] = v
		}
	}
	return out, nil
}

// lookupConcurrency bounds the lookups by _id one read runs at once.
const lookupConcurrency = 8

// Pipeline directories: each project's pipelines by ID and name in one document,
// so a page of the pipeline list is one lookup and a lookup per pipeline shown.

func (s *Store) directories() *mongo.Collection { return s.db.Collection("pipelineDirectories") }

// listPipeline puts p in its project's directory (or renames it there).
func (s *Store) listPipeline(ctx context.Context, p *model.Pipeline) error {
	defer s.lockDoc(ctx, &directoryLocks, p.ProjectID)()
	_, err := s.directories().UpdateOne(ctx, bson.D{{Key: "_id", Value: p.ProjectID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "pipelines." + p.ID, Value: p.Name}}}},
		options.Update().SetUpsert(true))
	return err
}

// unlistPipeline takes p out of its project's directory.
func (s *Store) unlistPipeline(ctx context.Context, p *model.Pipeline) error {
	defer s.lockDoc(ctx, &directoryLocks, p.ProjectID)()
	_, err := s.directories().UpdateOne(ctx, bson.D{{Key: "_id", Value: p.ProjectID}},
		bson.D{{Key: "$unset", Value: bson.D{{Key: "pipelines." + p.ID, Value: ""}}}})
	return err
}

// directory is a project's pipelines: their names by ID.
func (s *Store) directory(ctx context.Context, projectID string) (map[string]string, error) {
	var dir struct {
		Pipelines map[string]string `bson:"pipelines"`
	}
	err := s.directories().FindOne(ctx, bson.D{{Key: "_id", Value: projectID}}).Decode(&dir)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return nil, err
	}
	return dir.Pipelines, nil
}

// directoryLookup is the ID of the pipeline called name in a project's directory,
// or "".
func (s *Store) directoryLookup(ctx context.Context, projectID, name string) (string, error) {
	dir, err := s.directory(ctx, projectID)
	for id, n := range dir {
		if n == name {
			return id, err
		}
	}
	return "", err
}

// directoryPage is the IDs of a page of a project's pipelines by name, read from
// its directory, and how many pipelines the project has.
func (s *Store) directoryPage(ctx context.Context, projectID string, o ListOptions) ([]string, int64, error) {
	dir, err := s.directory(ctx, projectID)
	if err != nil {
		return nil, 0, err
	}
	type entry struct{ id, name string }
	entries := make([]entry, 0, len(dir))
	for id, name := range dir {
		entries = append(entries, entry{id, name})
	}
	slices.SortFunc(entries, func(a, b entry) int { return cmp.Or(strings.Compare(a.name, b.name), strings.Compare(a.id, b.id)) })
	total := int64(len(entries))
	page := entries[min(max(o.Start, 0), total):]
	if o.Limit > 0 {
		page = page[:min(o.Limit, int64(len(page)))]
	}
	ids := make([]string, len(page))
	for i, e := range page {
		ids[i] = e.id
	}
	return ids, total, nil
}

// rebuildDirectories writes every project's pipeline directory again from the
// pipelines.
func (s *Store) rebuildDirectories(ctx context.Context) error {
	cur, err := s.pipelines.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "projectID", Value: 1}, {Key: "name", Value: 1}}))
	if err != nil {
		return err
	}
	defer cur.Close(ctx)
	byProject := map[string]bson.D{}
	for cur.Next(ctx) {
		var p model.Pipeline
		if err := cur.Decode(&p); err != nil {
			return err
		}
		byProject[p.ProjectID] = append(byProject[p.ProjectID], bson.E{Key: p.ID, Value: p.Name})
	}
	if err := cur.Err(); err != nil {
		return err
	}
	if _, err := s.directories().DeleteMany(ctx, bson.D{}); err != nil {
		return err
	}
	for projectID, pipelines := range byProject {
		doc := bson.D{{Key: "_id", Value: projectID}, {Key: "pipelines", Value: pipelines}}
		if _, err := s.directories().InsertOne(ctx, doc); err != nil {
			return err
		}
	}
	return nil
}
