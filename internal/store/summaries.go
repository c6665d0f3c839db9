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

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

// Each pipeline's newest records, kept ready for the pipeline list
// (recentCount, recentSuccessCount, recentFailedCount): one summary document per
// pipeline and kind (every status, Success, Failed), addressed by _id, holding the
// kind's recentKept newest records as they were last noted. A finished record does
// not change any more, so its copy is exact; a record still Pending or Running is
// read again when a summary is read. Reading a page of pipelines' recent records
// then costs one lookup per pipeline, however many records they have.

// recentKept is how many of its newest records a summary keeps. Lists asking for more
// read the records themselves.
const recentKept = 10

// recentAll is the kind of summary that holds records of every status.
const recentAll = "all"

// recentSummary is a pipeline's newest records of one kind. Records maps an encoded
// record ID (see recentKey) to the record.
type recentSummary struct {
	ID         string                   `bson:"_id"`
	PipelineID string                   `bson:"pipelineID"`
	ProjectID  string                   `bson:"projectID"`
	Records    map[string]*model.Record `bson:"records"`
}

func (s *Store) recentSummaries() *mongo.Collection { return s.db.Collection("recentRecords") }

func recentID(pipelineID, kind string) string { return pipelineID + "/" + kind }

// recentKey encodes a record ID as a field name: no dots or dollars.
func recentKey(recordID string) string { return "r" + hex.EncodeToString([]byte(recordID)) }

// recentKinds are the summaries a record with this status belongs to.
func recentKinds(status string) []string {
	switch status {
	case model.StatusSuccess, model.StatusFailed:
		return []string{recentAll, status}
	}
	return []string{recentAll}
}

// kindOf is the summary kind of a RecentRecords status filter.
func kindOf(status string) (string, bool) {
	switch status {
	case "":
		return recentAll, true
	case model.StatusSuccess, model.StatusFailed:
		return status, true
	}
	return "", false
}

// noteRecent puts record r, as it is now, in its pipeline's summaries.
func (s *Store) noteRecent(ctx context.Context, r *model.Record) error {
	var errs []error
	for _, kind := range recentKinds(r.Status) {
		errs = append(errs, s.mergeRecent(ctx, r.ProjectID, r.PipelineID, kind, []*model.Record{r}))
	}
	return errors.Join(errs...)
}

// noteRecentMany notes records inserted in bulk: each summary is written once.
func (s *Store) noteRecentMany(ctx context.Context, recs []*model.Record) error {
	type summaryKey struct{ project, pipeline, kind string }
	groups := map[summaryKey][]*model.Record{}
	for _, r := range recs {
		for _, kind := range recentKinds(r.Status) {
			k := summaryKey{r.ProjectID, r.PipelineID, kind}
			groups[k] = append(groups[k], r)
		}
	}
	for k, group := range groups {
		sortNewestFirst(group)
		if err := s.mergeRecent(ctx, k.project, k.pipeline, k.kind, group[:min(len(group), recentKept)]); err != nil {
			return fmt.Errorf("note recent records of pipeline %s: %w", k.pipeline, err)
		}
	}
	return nil
}

// mergeRecent adds recs to a summary and then drops what is no longer among its
// recentKept newest. Adding and dropping are each atomic on the one document, and
// only records outside the newest recentKept of what the writer saw are dropped, so
// concurrent writers never drop one of the newest.
func (s *Store) mergeRecent(ctx context.Context, projectID, pipelineID, kind string, recs []*model.Record) error {
	if len(recs) == 0 {
		return nil
	}
	set := bson.D{{Key: "pipelineID", Value: pipelineID}, {Key: "projectID", Value: projectID}}
	for _, r := range recs {
		set = append(set, bson.E{Key: "records." + recentKey(r.ID), Value: r})
	}
	id := recentID(pipelineID, kind)
	var after recentSummary
	err := s.recentSummaries().FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: id}},
		bson.D{{Key: "$set", Value: set}},
		options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Decode(&after)
	if err != nil {
		return err
	}
	if len(after.Records) <= recentKept {
		return nil
	}
	unset := bson.D{}
	for _, r := range after.newest()[recentKept:] {
		unset = append(unset, bson.E{Key: "records." + recentKey(r.ID), Value: ""})
	}
	_, err = s.recentSummaries().UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$unset", Value: unset}})
	return err
}

// newest is the summary's records, newest first (the order of newestFirst).
func (rs *recentSummary) newest() []*model.Record {
	out := make([]*model.Record, 0, len(rs.Records))
	for _, r := range rs.Records {
		out = append(out, r)
	}
	sortNewestFirst(out)
	return out
}

// sortNewestFirst orders records as the newestFirst sort does: start time, then ID,
// both descending.
func sortNewestFirst(recs []*model.Record) {
	slices.SortFunc(recs, func(a, b *model.Record) int {
		if c := b.StartTime.Compare(a.StartTime); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
}

// forgetRecent takes a deleted record out of its pipeline's summaries. A summary it
// was in may now hold fewer than recentKept records while older ones exist: it is
// filled again from the records.
func (s *Store) forgetRecent(ctx context.Context, r *model.Record) error {
	key := "records." + recentKey(r.ID)
	var errs []error
	for _, kind := range recentKinds(r.Status) {
		var before recentSummary
		err := s.recentSummaries().FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: recentID(r.PipelineID, kind)}},
			bson.D{{Key: "$unset", Value: bson.D{{Key: key, Value: ""}}}},
			options.FindOneAndUpdate().SetReturnDocument(options.Before)).Decode(&before)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, held := before.Records[recentKey(r.ID)]; held {
			errs = append(errs, s.refillRecent(ctx, r.ProjectID, r.PipelineID, kind))
		}
	}
	return errors.Join(errs...)
}

// refillRecent merges a pipeline's newest records of a kind, read from the records,
// into its summary.
func (s *Store) refillRecent(ctx context.Context, projectID, pipelineID, kind string) error {
	status := kind
	if kind == recentAll {
		status = ""
	}
	recs, err := s.RecentRecords(ctx, pipelineID, status, recentKept)
	if err != nil {
		return err
	}
	return s.mergeRecent(ctx, projectID, pipelineID, kind, recs)
}

// recentFromSummaries is RecentRecordsOf read from the summaries (n <= recentKept).
func (s *Store) recentFromSummaries(ctx context.Context, pipelineIDs []string, kind string, n int64) (map[string][]*model.Record, error) {
	ids := make([]string, 0, len(pipelineIDs))
	for _, p := range slices.Compact(slices.Sorted(slices.Values(pipelineIDs))) {
		ids = append(ids, recentID(p, kind))
	}
	summaries, err := findByIDs[recentSummary](ctx, s, s.recentSummaries(), ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]*model.Record, len(summaries))
	var live []*model.Record // unfinished when noted: read again
	for _, sum := range summaries {
		recs := sum.newest()
		recs = recs[:min(int64(len(recs)), n)]
		for _, r := range recs {
			if !model.IsTerminal(r.Status) {
				live = append(live, r)
			}
		}
		if len(recs) > 0 {
			out[sum.PipelineID] = recs
		}
	}
	if len(live) == 0 {
		return out, nil
	}
	liveIDs := make([]string, len(live))
	for i, r := range live {
		liveIDs[i] = r.ID
	}
	now, err := findByIDs[model.Record](ctx, s, s.records, liveIDs)
	if err != nil {
		return nil, err
	}
	for p, recs := range out {
		kept := recs[:0]
		for _, r := range recs {
			if !model.IsTerminal(r.Status) {
				if r = now[r.ID]; r == nil {
					continue // deleted since
				}
			}
			kept = append(kept, r)
		}
		if len(kept) == 0 {
			delete(out, p)
		} else {
			out[p] = kept
		}
	}
	return out, nil
}

// dropPipelineRecent deletes a deleted pipeline's summaries.
func (s *Store) dropPipelineRecent(ctx context.Context, pipelineID string) error {
	ids := bson.A{}
	for _, kind := range []string{recentAll, model.StatusSuccess, model.StatusFailed} {
		ids = append(ids, recentID(pipelineID, kind))
	}
	_, err := s.recentSummaries().DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	return err
}

// dropProjectRecent deletes a deleted project's summaries and pipeline directory.
func (s *Store) dropProjectRecent(ctx context.Context, projectID string) error {
	_, err := s.recentSummaries().DeleteMany(ctx, bson.D{{Key: "projectID", Value: projectID}})
	if err != nil {
		return err
	}
	_, err = s.directories().DeleteOne(ctx, bson.D{{Key: "_id", Value: projectID}})
	return err
}

// rebuildRecent writes every summary again from the records, in one pass over them
// (unsorted: MongoDB could not sort them all in memory).
func (s *Store) rebuildRecent(ctx context.Context) error {
	if _, err := s.recentSummaries().DeleteMany(ctx, bson.D{}); err != nil {
		return err
	}
	cur, err := s.records.Find(ctx, bson.D{})
	if err != nil {
		return err
	}
	defer cur.Close(ctx)
	type summaryKey struct{ project, pipeline, kind string }
	newest := map[summaryKey][]*model.Record{}
	for cur.Next(ctx) {
		r := new(model.Record)
		if err := cur.Decode(r); err != nil {
			return err
		}
		for _, kind := range recentKinds(r.Status) {
			k := summaryKey{r.ProjectID, r.PipelineID, kind}
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
	for k, recs := range newest {
		sortNewestFirst(recs)
		if err := s.mergeRecent(ctx, k.project, k.pipeline, k.kind, recs[:min(len(recs), recentKept)]); err != nil {
			return fmt.Errorf("pipeline %s: %w", k.pipeline, err)
		}
	}
	return nil
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
	_, err := s.directories().UpdateOne(ctx, bson.D{{Key: "_id", Value: p.ProjectID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "pipelines." + p.ID, Value: p.Name}}}},
		options.Update().SetUpsert(true))
	return err
}

// unlistPipeline takes p out of its project's directory.
func (s *Store) unlistPipeline(ctx context.Context, p *model.Pipeline) error {
	_, err := s.directories().UpdateOne(ctx, bson.D{{Key: "_id", Value: p.ProjectID}},
		bson.D{{Key: "$unset", Value: bson.D{{Key: "pipelines." + p.ID, Value: ""}}}})
	return err
}

// directoryPage is a page of a project's pipelines by name, read through its
// directory, and how many pipelines the project has.
func (s *Store) directoryPage(ctx context.Context, projectID string, o ListOptions) ([]*model.Pipeline, int64, error) {
	var dir struct {
		Pipelines map[string]string `bson:"pipelines"`
	}
	err := s.directories().FindOne(ctx, bson.D{{Key: "_id", Value: projectID}}).Decode(&dir)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return nil, 0, err
	}
	type entry struct{ id, name string }
	entries := make([]entry, 0, len(dir.Pipelines))
	for id, name := range dir.Pipelines {
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
	byID, err := findByIDs[model.Pipeline](ctx, s, s.pipelines, ids)
	if err != nil {
		return nil, 0, err
	}
	items := make([]*model.Pipeline, 0, len(ids))
	for _, id := range ids {
		if p := byID[id]; p != nil && p.ProjectID == projectID {
			items = append(items, p)
		}
	}
	return items, total, nil
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
