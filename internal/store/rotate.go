package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

// Rotation keeps the newest records of every pipeline and deletes the older
// finished ones, with their logs. It is housekeeping, not a deletion on request: a
// rotated record leaves the record lists, the pipeline cards and the logs, but it
// stays counted in the project's and the pipeline's stats. Its day counters are left
// as they are, and a tombstone (below) keeps what the stats still read of it
// elsewhere: the range edges counted record by record, and RebuildDerived, which
// recounts the counters from the records.
//
// Rotation runs every minute, so its usual pass must not read the records: on the
// embedded FerretDB any query but a lone _id lookup reads the whole collection.
// The store remembers, per pipeline, how many records it may hold at most and its
// newest record when they were last counted, and reads the pipeline's "/all" shelf
// (its recentKept newest records, by _id) to see how many came since. Only a
// pipeline that may now hold more than it keeps has its records counted again, all
// such pipelines in one query. Every pipeline is recounted at least once per
// rotationRecount, which also catches what the shelves cannot show (a record
// inserted with an older start time than the pipeline's newest, a card a crash left
// behind).

// Tombstones: the "rotatedRecords" collection holds, per scope (pipeline or project)
// and start bucket, the rotated records that started in it, with _id
// "pipeline/<pipelineID>/<bucket>" or "project/<projectID>/<bucket>" (bucket: Unix
// seconds, see StartBucket):
//
//	{_id, scope, projectID, pipelineID (pipeline scope), bucket,
//	 r: [{id, p: pipelineID, t: startTime, s: status}]}
//
// A stats range edge inside a bucket reads its tombstone by _id. Like the counters
// it is written after the record changed (deleted), best effort: a crash in
// between leaves the rotated record counted in the day counters but missing from
// range edges and from a rebuild.

const (
	// rotationRecount is how long a pipeline's remembered count is trusted before
	// its records are counted again.
	rotationRecount = time.Hour
	// orphanWatch is how long the logs of a record this process deleted are watched
	// for lines a stage wrote after the deletion.
	orphanWatch = 10 * time.Minute
	// orphanSweep is how often every log is checked for a record that no longer
	// exists (a deletion by another process, or before a restart).
	orphanSweep = time.Hour
	// rotationBatch is how many pipelines or records one query of rotation names.
	rotationBatch = 500
)

// rotationState is what rotation remembers between passes, in this process.
type rotationState struct {
	mu sync.Mutex
	// pipelines: what each pipeline held when its records were last counted.
	pipelines map[string]pipelineTally
	// deleted: records this process deleted, and when, watched for orphan logs.
	deleted map[string]time.Time
	// swept is when every log was last checked for a deleted record.
	swept time.Time
}

// pipelineTally bounds the records a pipeline holds.
type pipelineTally struct {
	live      int64     // at most this many records
	newest    recordPos // its newest record when counted (zero: none)
	held      []string  // unfinished records it kept beyond keep when counted
	countedAt time.Time
}

// recordPos is a record's place in the newestFirst order.
type recordPos struct {
	start time.Time
	id    string
}

func posOf(r *model.Record) recordPos { return recordPos{r.StartTime, r.ID} }

// after reports whether p comes after q in time (is newer in the newestFirst order).
func (p recordPos) after(q recordPos) bool {
	if c := p.start.Compare(q.start); c != 0 {
		return c > 0
	}
	return p.id > q.id
}

// noteDeleted remembers that this process deleted record id, for DeleteOrphanLogs.
func (st *rotationState) noteDeleted(id string, at time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.deleted == nil {
		st.deleted = map[string]time.Time{}
	}
	st.deleted[id] = at
}

// withinKeep reports whether the pipeline, whose /all shelf holds recs (newest
// first), cannot hold finished records beyond its keep newest, from what was
// remembered of it, and then remembers the new bound. False means its records must
// be counted. Held are the unfinished records it kept beyond keep: the caller
// checks that they are still unfinished.
func (st *rotationState) withinKeep(pipelineID string, recs []*model.Record, keep int64, at time.Time) (ok bool, held []string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	t, known := st.pipelines[pipelineID]
	if !known || at.Sub(t.countedAt) >= rotationRecount {
		return false, nil
	}
	newer := 0
	for _, r := range recs {
		if !posOf(r).after(t.newest) {
			break
		}
		newer++
	}
	switch {
	case newer < len(recs):
		t.live += int64(newer)
	case len(recs) < recentKept:
		// The shelf holds all the pipeline's records, all newer than the
		// remembered newest (deleted since).
		t.live = int64(len(recs))
	default:
		return false, nil // more may have come than the shelf shows
	}
	if newer > 0 {
		if t.live > keep {
			return false, nil // some record moved beyond keep
		}
		t.newest = posOf(recs[0])
	}
	st.pipelines[pipelineID] = t
	return true, t.held
}

// RotateRecords keeps the newest keep records of every pipeline and deletes the
// older ones with their logs; they stay counted in the stats (see above). Records
// still Pending or Running are never deleted, and they count towards what is kept.
// It returns how many records it deleted.
func (s *Store) RotateRecords(ctx context.Context, keep int64) (int, error) {
	if keep <= 0 {
		return 0, nil
	}
	ids, err := s.pipelines.Distinct(ctx, "_id", bson.D{})
	if err != nil {
		return 0, err
	}
	pipelineIDs := make([]string, 0, len(ids))
	for _, id := range ids {
		if p, ok := id.(string); ok {
			pipelineIDs = append(pipelineIDs, p)
		}
	}
	s.forgetPipelinesBut(pipelineIDs)
	toCount, err := s.pipelinesToCount(ctx, pipelineIDs, keep)
	if err != nil {
		return 0, err
	}
	deleted := 0
	var errs []error
	for batch := range slices.Chunk(toCount, rotationBatch) {
		n, err := s.rotatePipelines(ctx, batch, keep)
		deleted += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return deleted, errors.Join(errs...)
}

// forgetPipelinesBut forgets what rotation remembered of pipelines not in ids
// (deleted).
func (s *Store) forgetPipelinesBut(ids []string) {
	st := &s.rotation
	st.mu.Lock()
	defer st.mu.Unlock()
	present := make(map[string]bool, len(ids))
	for _, id := range ids {
		present[id] = true
	}
	maps.DeleteFunc(st.pipelines, func(id string, _ pipelineTally) bool { return !present[id] })
}

// pipelinesToCount are the pipelines that may hold more than keep records, or were
// not counted for rotationRecount: it reads their "/all" shelves by _id.
func (s *Store) pipelinesToCount(ctx context.Context, pipelineIDs []string, keep int64) ([]string, error) {
	s.awaitDerived(ctx) // the shelves read are derived data
	all, _ := shelfToRead(recentAll, recentKept)
	shelfIDs := make([]string, len(pipelineIDs))
	for i, id := range pipelineIDs {
		shelfIDs[i] = all.id(id)
	}
	onShelf := make(map[string][]*model.Record, len(pipelineIDs))
	var mu sync.Mutex
	err := eachByID(ctx, s, s.cards(), shelfIDs, func(id string, d *packedDoc) error {
		c := new(cardContent)
		if err := unpack(d.Content, c); err != nil {
			return fmt.Errorf("card %s: %w", id, err)
		}
		mu.Lock()
		defer mu.Unlock()
		onShelf[id] = c.Records
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the recent records of %d pipelines: %w", len(pipelineIDs), err)
	}
	at := now()
	var toCount []string
	held := map[string][]string{} // pipeline: its unfinished records beyond keep
	var heldIDs []string
	for i, id := range pipelineIDs {
		ok, h := s.rotation.withinKeep(id, onShelf[shelfIDs[i]], keep, at)
		switch {
		case !ok:
			toCount = append(toCount, id)
		case len(h) > 0:
			held[id] = h
			heldIDs = append(heldIDs, h...)
		}
	}
	// A record kept beyond keep because it was unfinished is rotated once it ends.
	current, err := findByIDs[model.Record](ctx, s, s.records, heldIDs)
	if err != nil {
		return nil, fmt.Errorf("read unfinished records: %w", err)
	}
	for _, id := range pipelineIDs {
		if slices.ContainsFunc(held[id], func(rid string) bool { r := current[rid]; return r != nil && model.IsTerminal(r.Status) }) {
			toCount = append(toCount, id)
		}
	}
	return toCount, nil
}

// rotatedFields are the fields of a record rotation reads.
var rotatedFields = bson.D{{Key: "projectID", Value: 1}, {Key: "pipelineID", Value: 1}, {Key: "status", Value: 1},
	{Key: "startTime", Value: 1}, {Key: "startBucket", Value: 1}, {Key: "countedLevel", Value: 1}}

// rotatePipelines counts the records of the given pipelines in one query, deletes
// those beyond the newest keep that are finished, and remembers what each pipeline
// holds.
func (s *Store) rotatePipelines(ctx context.Context, pipelineIDs []string, keep int64) (int, error) {
	countedAt := now()
	cur, err := s.records.Find(ctx, bson.D{{Key: "pipelineID", Value: bson.D{{Key: "$in", Value: pipelineIDs}}}},
		options.Find().SetProjection(rotatedFields))
	if err != nil {
		return 0, fmt.Errorf("count the records of %d pipelines: %w", len(pipelineIDs), err)
	}
	byPipeline := map[string][]*model.Record{}
	for cur.Next(ctx) {
		r := new(model.Record)
		if err := cur.Decode(r); err != nil {
			_ = cur.Close(ctx)
			return 0, err
		}
		byPipeline[r.PipelineID] = append(byPipeline[r.PipelineID], r)
	}
	if err := errors.Join(cur.Err(), cur.Close(ctx)); err != nil {
		return 0, fmt.Errorf("count the records of %d pipelines: %w", len(pipelineIDs), err)
	}
	tallies := make(map[string]pipelineTally, len(pipelineIDs))
	var old []*model.Record
	for _, id := range pipelineIDs {
		recs := byPipeline[id]
		sortNewestFirst(recs) // in Go: FerretDB would sort them all in memory anyway
		t := pipelineTally{countedAt: countedAt}
		if len(recs) > 0 {
			t.newest = posOf(recs[0])
		}
		for i, r := range recs {
			switch {
			case int64(i) < keep:
			case model.IsTerminal(r.Status):
				old = append(old, r)
				continue
			default:
				t.held = append(t.held, r.ID)
			}
			t.live++
		}
		tallies[id] = t
	}
	deleted, err := s.rotateOut(ctx, old)
	if err == nil {
		st := &s.rotation
		st.mu.Lock()
		if st.pipelines == nil {
			st.pipelines = map[string]pipelineTally{}
		}
		maps.Copy(st.pipelines, tallies)
		st.mu.Unlock()
	}
	return deleted, err
}

// rotateOut deletes finished records with their logs, keeping them counted in the
// stats.
func (s *Store) rotateOut(ctx context.Context, old []*model.Record) (int, error) {
	ids := make([]string, len(old))
	for i, r := range old {
		ids[i] = r.ID
	}
	// The logs first, all at once (FerretDB reads every chunk for each delete): a
	// record whose logs went and that is still there is rotated again next time.
	if err := s.deleteLogsOf(ctx, ids); err != nil {
		return 0, err
	}
	deleted := 0
	for _, r := range old {
		gone, err := s.takeRecord(ctx, r.ID)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return deleted, err
		}
		deleted++
		// An update of its derived data in flight lands before it is taken out.
		s.awaitDerived(ctx)
		// Counted final it stays; a count that lagged (a crash) is completed.
		err = errors.Join(s.entomb(ctx, gone),
			s.countRecord(ctx, gone, gone.CountedLevel, countedFinal),
			s.forgetRecent(ctx, gone))
		if err != nil {
			return deleted, fmt.Errorf("rotate record %s: %w", r.ID, err)
		}
	}
	return deleted, nil
}

// deleteLogsOf deletes the logs of the given records, a batch per query.
func (s *Store) deleteLogsOf(ctx context.Context, recordIDs []string) error {
	for batch := range slices.Chunk(recordIDs, rotationBatch) {
		in := bson.D{{Key: "recordID", Value: bson.D{{Key: "$in", Value: batch}}}}
		if _, err := s.logs.DeleteMany(ctx, in); err != nil {
			return fmt.Errorf("delete logs: %w", err)
		}
		if _, err := s.logHeads().DeleteMany(ctx, in); err != nil {
			return fmt.Errorf("delete logs: %w", err)
		}
	}
	return nil
}

// DeleteOrphanLogs deletes the logs of records that no longer exist: a stage still
// writing when its record was deleted stores its last lines after the deletion. Logs
// updated in the last grace period are left alone. It checks the logs of the
// records this process deleted in the last orphanWatch, which costs one query
// when there are any, and every log once per orphanSweep (which reads every log
// head and looks each record up). It returns how many records' logs it deleted.
func (s *Store) DeleteOrphanLogs(ctx context.Context, grace time.Duration) (int, error) {
	at := now()
	cutoff := at.Add(-grace)
	st := &s.rotation
	st.mu.Lock()
	var watched []string
	for id, when := range st.deleted {
		switch {
		case at.Sub(when) >= orphanWatch+grace:
			delete(st.deleted, id)
		case !when.After(cutoff):
			watched = append(watched, id)
		}
	}
	sweep := at.Sub(st.swept) >= orphanSweep
	st.mu.Unlock()

	filter := bson.D{{Key: "updated", Value: bson.D{{Key: "$lte", Value: cutoff}}}}
	if !sweep {
		if len(watched) == 0 {
			return 0, nil
		}
		filter = append(filter, bson.E{Key: "recordID", Value: bson.D{{Key: "$in", Value: watched}}})
	}
	ids, err := s.logHeads().Distinct(ctx, "recordID", filter)
	if err != nil {
		return 0, err
	}
	var orphans []string
	for _, v := range ids {
		id, ok := v.(string)
		if !ok {
			continue
		}
		if _, err := s.GetRecordByID(ctx, id); !errors.Is(err, ErrNotFound) {
			if err != nil {
				return 0, err
			}
			continue
		}
		orphans = append(orphans, id)
	}
	if err := s.deleteLogsOf(ctx, orphans); err != nil {
		return 0, err
	}
	if sweep {
		st.mu.Lock()
		st.swept = at
		st.mu.Unlock()
	}
	return len(orphans), nil
}

// tombstone is a rotatedRecords document (see above).
type tombstone struct {
	ID         string          `bson:"_id"`
	Scope      string          `bson:"scope"`
	ProjectID  string          `bson:"projectID,omitempty"`
	PipelineID string          `bson:"pipelineID,omitempty"`
	Bucket     int64           `bson:"bucket"`
	Records    []rotatedRecord `bson:"r"`
}

// rotatedRecord is what a tombstone keeps of a rotated record.
type rotatedRecord struct {
	ID         string    `bson:"id"`
	PipelineID string    `bson:"p"`
	StartTime  time.Time `bson:"t"`
	Status     string    `bson:"s"`
}

func (s *Store) tombstones() *mongo.Collection { return s.db.Collection("rotatedRecords") }

// tombstoneID is the _id of a scope's tombstone for a bucket.
func tombstoneID(scope counterScope, bucket int64) string {
	return scope.kind + "/" + scope.id + "/" + strconv.FormatInt(bucket, 10)
}

// entomb adds rotated record r to the tombstones of its pipeline and its project.
// Adding it twice keeps one copy.
func (s *Store) entomb(ctx context.Context, r *model.Record) error {
	entry := rotatedRecord{ID: r.ID, PipelineID: r.PipelineID, StartTime: r.StartTime.UTC(), Status: r.Status}
	var errs []error
	for _, d := range counterDocsOf(r) {
		scope := counterScope{kind: d.Scope, id: d.PipelineID}
		identity := bson.D{{Key: "scope", Value: d.Scope}, {Key: "projectID", Value: d.ProjectID}}
		if d.Scope == scopePipeline {
			identity = append(identity, bson.E{Key: "pipelineID", Value: d.PipelineID})
		} else {
			scope.id = d.ProjectID
		}
		identity = append(identity, bson.E{Key: "bucket", Value: r.StartBucket})
		id := tombstoneID(scope, r.StartBucket)
		errs = append(errs, s.upsertTombstone(ctx, id, bson.D{
			{Key: "$addToSet", Value: bson.D{{Key: "r", Value: entry}}},
			{Key: "$setOnInsert", Value: identity},
		}))
	}
	return errors.Join(errs...)
}

// upsertTombstone applies update to tombstone id, creating it if need be.
func (s *Store) upsertTombstone(ctx context.Context, id string, update bson.D) error {
	defer s.lockCounter(ctx, id)()
	filter := bson.D{{Key: "_id", Value: id}}
	upsert := options.Update().SetUpsert(true)
	_, err := s.tombstones().UpdateOne(ctx, filter, update, upsert)
	if errors.Is(writeErr(err), ErrConflict) {
		_, err = s.tombstones().UpdateOne(ctx, filter, update, upsert) // created meanwhile
	}
	if err != nil {
		return fmt.Errorf("tombstone %s: %w", id, err)
	}
	return nil
}

// tallyRotated adds to t the rotated records of scope that started in the given
// buckets, within [from, to): the range edges of a stats query, which RecordStats
// counts from the records.
func (s *Store) tallyRotated(ctx context.Context, t *statsTally, scope counterScope, buckets []int64, from, to time.Time) error {
	ids := make([]string, len(buckets))
	for i, b := range buckets {
		ids[i] = tombstoneID(scope, b)
	}
	docs, err := findByIDs[tombstone](ctx, s, s.tombstones(), ids)
	if err != nil {
		return fmt.Errorf("read rotated records: %w", err)
	}
	for _, d := range docs {
		var c counts
		for _, r := range d.Records {
			if !r.StartTime.Before(from) && r.StartTime.Before(to) {
				c.add(countedFinal, r.Status, 1)
			}
		}
		t.add(d.Bucket, c)
	}
	return nil
}

// countTombstones adds the rotated records to set, as rebuildCounts counts the
// records: from the pipelines' tombstones (each record is in its project's too).
func (s *Store) countTombstones(ctx context.Context, set counterSet) error {
	cur, err := s.tombstones().Find(ctx, bson.D{{Key: "scope", Value: scopePipeline}})
	if err != nil {
		return fmt.Errorf("read rotated records: %w", err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		var d tombstone
		if err := cur.Decode(&d); err != nil {
			return err
		}
		for _, r := range d.Records {
			var c counts
			c.add(countedFinal, r.Status, 1)
			set.add(&model.Record{ProjectID: d.ProjectID, PipelineID: d.PipelineID, StartBucket: d.Bucket}, c)
		}
	}
	return cur.Err()
}

// dropPipelineTombstones deletes a deleted pipeline's tombstones and takes its
// records out of its project's.
func (s *Store) dropPipelineTombstones(ctx context.Context, pipelineID string) error {
	cur, err := s.tombstones().Find(ctx, bson.D{{Key: "scope", Value: scopePipeline}, {Key: "pipelineID", Value: pipelineID}},
		options.Find().SetProjection(bson.D{{Key: "projectID", Value: 1}, {Key: "bucket", Value: 1}}))
	if err != nil {
		return fmt.Errorf("find the rotated records of pipeline %s: %w", pipelineID, err)
	}
	var docs []tombstone
	if err := cur.All(ctx, &docs); err != nil {
		return fmt.Errorf("find the rotated records of pipeline %s: %w", pipelineID, err)
	}
	for _, d := range docs {
		if d.ProjectID != "" {
			id := tombstoneID(counterScope{scopeProject, d.ProjectID}, d.Bucket)
			pull := bson.D{{Key: "$pull", Value: bson.D{{Key: "r", Value: bson.D{{Key: "p", Value: pipelineID}}}}}}
			if err := s.pullTombstone(ctx, id, pull); err != nil {
				return err
			}
		}
		if _, err := s.tombstones().DeleteOne(ctx, bson.D{{Key: "_id", Value: d.ID}}); err != nil {
			return fmt.Errorf("delete tombstone %s: %w", d.ID, err)
		}
	}
	return nil
}

// pullTombstone applies update to an existing tombstone.
func (s *Store) pullTombstone(ctx context.Context, id string, update bson.D) error {
	defer s.lockCounter(ctx, id)()
	if _, err := s.tombstones().UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, update); err != nil {
		return fmt.Errorf("tombstone %s: %w", id, err)
	}
	return nil
}

// dropProjectTombstones deletes a deleted project's tombstones and its pipelines'.
func (s *Store) dropProjectTombstones(ctx context.Context, projectID string) error {
	if _, err := s.tombstones().DeleteMany(ctx, bson.D{{Key: "projectID", Value: projectID}}); err != nil {
		return fmt.Errorf("delete the rotated records of project %s: %w", projectID, err)
	}
	return nil
}
