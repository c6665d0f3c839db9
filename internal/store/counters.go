package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

// Day counters: the stats of a project or a pipeline are read from pre-counted
// documents by _id alone, so a stats query costs the days it covers, not the records
// the store holds (the embedded FerretDB answers any other query by reading the
// whole collection).
//
// The recordCounts collection holds one document per scope (a pipeline or a project)
// and UTC day, with _id "pipeline/<pipelineID>/2024-03-01" or
// "project/<projectID>/2024-03-01". It counts the records that started that day per
// start bucket (see stats.go), under b.q<index of the bucket in the day>: every
// record, and the records finished Success, Failed and Aborted, packed in one number
// (see counts). Its fields scope, projectID, pipelineID and day serve the rare
// queries that drop or rebuild counters.
//
// A record's countedLevel (records.go) says what the counters hold of it; every
// change moves it to another level with one $inc per scope, upserted by _id alone.
//
// Consistency is best effort, without transactions: the record is written first and
// its counters next, so a crash (or a failed counter write) in between leaves the
// record uncounted, or counted at its previous level, until RebuildDerived recounts
// everything from the records and the rotated records' tombstones (rotate.go), which
// are the truth. A record changed while a rebuild runs may be counted twice or not at
// all until the next rebuild.

// Counter scopes: the kinds of counter documents.
const (
	scopePipeline = "pipeline"
	scopeProject  = "project"
)

// counterWriteBatch is how many counter documents one bulk insert sends.
const counterWriteBatch = 1000

// bucketsPerDay is how many start buckets a UTC day has.
const bucketsPerDay = 86400 / BucketSeconds

func (s *Store) recordCounts() *mongo.Collection { return s.db.Collection("recordCounts") }

// counterScope is whose records a counter counts: a pipeline's or a project's.
type counterScope struct {
	kind string // scopePipeline or scopeProject
	id   string
}

// recordField names the records' field holding the scope's ID.
func (c counterScope) recordField() string { return c.kind + "ID" }

// docID is the _id of the scope's counter document for a UTC day.
func (c counterScope) docID(day int64) string {
	return c.kind + "/" + c.id + "/" + time.Unix(day*86400, 0).UTC().Format(time.DateOnly)
}

// utcDay numbers the UTC day Unix time unix lies in: days since 1970-01-01.
func utcDay(unix int64) int64 {
	day := unix / 86400
	if unix%86400 < 0 {
		day--
	}
	return day
}

// bucketKey names a bucket's counts in its day's document: "q" and the bucket's
// index in the day, not the bare index, which a dotted path would take for an array
// index.
func bucketKey(bucket int64) string {
	return "q" + strconv.FormatInt((bucket-utcDay(bucket)*86400)/BucketSeconds, 10)
}

// counts are the records counted in one bucket, or a change to them. A bucket's
// counts are stored as one number, four 15-bit lanes (see pack): FerretDB's cost of
// reading a document grows with its fields, and a day's document holds up to 96
// buckets. A bucket thus counts at most 32,767 records of each kind, in a scope's
// 15 minutes.
type counts struct {
	Total, Success, Failed, Aborted int64
}

// countLaneBits is the width of one count in a packed bucket.
const countLaneBits = 15

// pack is c as one number: Total in the lowest lane, then Success, Failed and
// Aborted. Packing is linear, so adding packed changes (negative ones too) to a
// packed bucket packs the sum, as long as every count stays in its lane.
func (c counts) pack() int64 {
	return c.Total + c.Success<<countLaneBits + c.Failed<<(2*countLaneBits) + c.Aborted<<(3*countLaneBits)
}

// unpackCounts is the counts a packed bucket holds.
func unpackCounts(v int64) counts {
	const mask = 1<<countLaneBits - 1
	lane := func(i int) int64 { return v >> (i * countLaneBits) & mask }
	return counts{Total: lane(0), Success: lane(1), Failed: lane(2), Aborted: lane(3)}
}

// MarshalBSONValue stores c packed.
func (c counts) MarshalBSONValue() (bsontype.Type, []byte, error) {
	return bson.MarshalValue(c.pack())
}

// UnmarshalBSONValue reads counts stored packed.
func (c *counts) UnmarshalBSONValue(t bsontype.Type, data []byte) error {
	v := bson.RawValue{Type: t, Value: data}
	n, ok := v.AsInt64OK()
	if !ok {
		return fmt.Errorf("bucket counts stored as %s, not a number", t)
	}
	*c = unpackCounts(n)
	return nil
}

// add counts n records with status at counted level (a negative n takes them out).
// Only a record counted final is counted under its status.
func (c *counts) add(level int, status string, n int64) {
	if level < countedTotal {
		return
	}
	c.Total += n
	if level < countedFinal {
		return
	}
	switch status {
	case model.StatusSuccess:
		c.Success += n
	case model.StatusFailed:
		c.Failed += n
	case model.StatusAborted:
		c.Aborted += n
	}
}

// plus adds o to c.
func (c *counts) plus(o counts) {
	c.Total += o.Total
	c.Success += o.Success
	c.Failed += o.Failed
	c.Aborted += o.Aborted
}

// incFields are the $inc fields adding sign times c to the bucket whose key is
// key; none when c counts nothing.
func (c counts) incFields(key string, sign int64) bson.D {
	if c == (counts{}) {
		return nil
	}
	return bson.D{{Key: "b." + key, Value: sign * c.pack()}}
}

// counterDoc is a counter document: one scope's counts on one UTC day, by bucket key.
type counterDoc struct {
	ID         string            `bson:"_id"`
	Scope      string            `bson:"scope"`
	ProjectID  string            `bson:"projectID,omitempty"`
	PipelineID string            `bson:"pipelineID,omitempty"`
	Day        int64             `bson:"day"` // days since 1970-01-01, UTC
	Buckets    map[string]counts `bson:"b"`
}

// counterDocsOf are the counter documents, without counts, that count record r: its
// pipeline's and its project's on the UTC day of its bucket (a record without one
// of them counts in the other only).
func counterDocsOf(r *model.Record) []*counterDoc {
	day := utcDay(r.StartBucket)
	var docs []*counterDoc
	if r.PipelineID != "" {
		docs = append(docs, &counterDoc{ID: counterScope{scopePipeline, r.PipelineID}.docID(day),
			Scope: scopePipeline, ProjectID: r.ProjectID, PipelineID: r.PipelineID, Day: day})
	}
	if r.ProjectID != "" {
		docs = append(docs, &counterDoc{ID: counterScope{scopeProject, r.ProjectID}.docID(day),
			Scope: scopeProject, ProjectID: r.ProjectID, Day: day})
	}
	return docs
}

// identity are the fields a counter document is created with: all but its counts.
func (d *counterDoc) identity() bson.D {
	id := bson.D{{Key: "scope", Value: d.Scope}}
	if d.ProjectID != "" {
		id = append(id, bson.E{Key: "projectID", Value: d.ProjectID})
	}
	if d.PipelineID != "" {
		id = append(id, bson.E{Key: "pipelineID", Value: d.PipelineID})
	}
	return append(id, bson.E{Key: "day", Value: d.Day})
}

// incFields are the $inc fields adding sign times d's counts.
func (d *counterDoc) incFields(sign int64) bson.D {
	var inc bson.D
	for _, key := range slices.Sorted(maps.Keys(d.Buckets)) {
		inc = append(inc, d.Buckets[key].incFields(key, sign)...)
	}
	return inc
}

// eachBucket calls f with the start of each bucket d counts and its counts.
func (d *counterDoc) eachBucket(f func(bucket int64, c counts)) error {
	for key, c := range d.Buckets {
		i, err := strconv.ParseInt(strings.TrimPrefix(key, "q"), 10, 64)
		if !strings.HasPrefix(key, "q") || err != nil || i < 0 || i >= bucketsPerDay {
			return fmt.Errorf("counter document %s has a bucket %q", d.ID, key)
		}
		f(d.Day*86400+i*BucketSeconds, c)
	}
	return nil
}

// counterSet adds counts up into counter documents, by _id, to write each once.
type counterSet map[string]*counterDoc

// add counts c in the bucket of r, in r's counter documents.
func (set counterSet) add(r *model.Record, c counts) {
	key := bucketKey(r.StartBucket)
	for _, d := range counterDocsOf(r) {
		if have, ok := set[d.ID]; ok {
			d = have
		} else {
			d.Buckets = map[string]counts{}
			set[d.ID] = d
		}
		b := d.Buckets[key]
		b.plus(c)
		d.Buckets[key] = b
	}
}

// countRecord moves record r's part in the day counters of its pipeline and its
// project from level from to level to (countedNothing takes it out: a deleted
// record). r.Status is the record's status at that moment. The two documents are
// written at the same time: this runs on every record's creation and end.
func (s *Store) countRecord(ctx context.Context, r *model.Record, from, to int) error {
	var change counts
	change.add(to, r.Status, 1)
	change.add(from, r.Status, -1)
	inc := change.incFields(bucketKey(r.StartBucket), 1)
	if len(inc) == 0 {
		return nil
	}
	docs := counterDocsOf(r)
	errs := make([]error, len(docs))
	var wg sync.WaitGroup
	for i, d := range docs {
		wg.Go(func() { errs[i] = s.incCounter(ctx, d, inc) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// lockCounter locks the writes to counter document id (see stripedLocks) and
// returns the unlock.
func (s *Store) lockCounter(ctx context.Context, id string) (unlock func()) {
	return s.lockDoc(ctx, &counterLocks, id)
}

// lockAllCounters locks the writes to every counter document, for a bulk write,
// and returns the unlock.
func (s *Store) lockAllCounters(ctx context.Context) (unlock func()) {
	return s.lockAllDocs(ctx, &counterLocks)
}

// incCounter applies inc to counter document d, creating it if need be.
func (s *Store) incCounter(ctx context.Context, d *counterDoc, inc bson.D) error {
	defer s.lockCounter(ctx, d.ID)()
	return s.incCounterLocked(ctx, d, inc)
}

// incCounterLocked is incCounter for a caller that holds the document's lock.
func (s *Store) incCounterLocked(ctx context.Context, d *counterDoc, inc bson.D) error {
	filter := bson.D{{Key: "_id", Value: d.ID}}
	update := bson.D{{Key: "$inc", Value: inc}, {Key: "$setOnInsert", Value: d.identity()}}
	upsert := options.Update().SetUpsert(true)
	_, err := s.recordCounts().UpdateOne(ctx, filter, update, upsert)
	if errors.Is(writeErr(err), ErrConflict) {
		// Another writer created the document meanwhile (FerretDB does not retry
		// such an upsert as MongoDB does); it exists now.
		_, err = s.recordCounts().UpdateOne(ctx, filter, update, upsert)
	}
	if err != nil {
		return fmt.Errorf("count in %s: %w", d.ID, err)
	}
	return nil
}

// countInserted counts records inserted in bulk, each at its CountedLevel: the
// counts are added up here and each counter document is written once.
func (s *Store) countInserted(ctx context.Context, recs []*model.Record) error {
	set := counterSet{}
	for _, r := range recs {
		var c counts
		c.add(r.CountedLevel, r.Status, 1)
		set.add(r, c)
	}
	return s.writeCounters(ctx, set, func(d *counterDoc) error {
		return s.incCounterLocked(ctx, d, d.incFields(1))
	})
}

// writeCounters writes many counter documents: it inserts them in unordered
// batches, and calls writeExisting for each that exists already. (Not one bulk of
// upserts: FerretDB v1.24 holds a connection per statement of an update command
// until its end, and one of more statements than its pool has connections never
// ends.) Other counter writes of this process wait meanwhile.
func (s *Store) writeCounters(ctx context.Context, set counterSet, writeExisting func(*counterDoc) error) error {
	defer s.lockAllCounters(ctx)()
	docs := make([]any, 0, len(set))
	for _, d := range set {
		docs = append(docs, d)
	}
	for batch := range slices.Chunk(docs, counterWriteBatch) {
		_, err := s.recordCounts().InsertMany(ctx, batch, options.InsertMany().SetOrdered(false))
		var bulkErr mongo.BulkWriteException
		if errors.As(err, &bulkErr) && bulkErr.WriteConcernError == nil {
			err = nil
			for _, we := range bulkErr.WriteErrors {
				if !errors.Is(writeErr(we), ErrConflict) {
					err = we
					break
				}
				if err = writeExisting(batch[we.Index].(*counterDoc)); err != nil {
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("write %d counter documents: %w", len(batch), err)
		}
	}
	return nil
}

// readCounters reads the scope's counter documents of the UTC days firstDay to
// lastDay (by _id: see findByIDs); a day without one has none in the answer.
func (s *Store) readCounters(ctx context.Context, scope counterScope, firstDay, lastDay int64) (map[string]*counterDoc, error) {
	ids := make([]string, 0, lastDay-firstDay+1)
	for day := firstDay; day <= lastDay; day++ {
		ids = append(ids, scope.docID(day))
	}
	docs, err := findByIDs[counterDoc](ctx, s, s.recordCounts(), ids)
	if err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	return docs, nil
}

// dropPipelineCounts deletes a deleted pipeline's counters and takes them out of
// its project's. Each document is taken (found and deleted at once) before its
// counts leave the project's, so concurrent or repeated drops take them out once.
// The pipeline's rotated records (tombstones) go the same way.
func (s *Store) dropPipelineCounts(ctx context.Context, pipelineID string) error {
	if err := s.dropPipelineTombstones(ctx, pipelineID); err != nil {
		return err
	}
	filter := bson.D{{Key: "scope", Value: scopePipeline}, {Key: "pipelineID", Value: pipelineID}}
	cur, err := s.recordCounts().Find(ctx, filter, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return fmt.Errorf("find the counters of pipeline %s: %w", pipelineID, err)
	}
	var ids []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &ids); err != nil {
		return fmt.Errorf("find the counters of pipeline %s: %w", pipelineID, err)
	}
	for _, id := range ids {
		var d counterDoc
		err := s.recordCounts().FindOneAndDelete(ctx, bson.D{{Key: "_id", Value: id.ID}}).Decode(&d)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue
		}
		if err != nil {
			return fmt.Errorf("delete counters %s: %w", id.ID, err)
		}
		inc := d.incFields(-1)
		if d.ProjectID == "" || len(inc) == 0 {
			continue
		}
		project := &counterDoc{ID: counterScope{scopeProject, d.ProjectID}.docID(d.Day),
			Scope: scopeProject, ProjectID: d.ProjectID, Day: d.Day}
		if err := s.incCounter(ctx, project, inc); err != nil {
			return err
		}
	}
	return nil
}

// dropProjectCounts deletes a deleted project's counters and its pipelines', and
// their rotated records (tombstones).
func (s *Store) dropProjectCounts(ctx context.Context, projectID string) error {
	if err := s.dropProjectTombstones(ctx, projectID); err != nil {
		return err
	}
	if _, err := s.recordCounts().DeleteMany(ctx, bson.D{{Key: "projectID", Value: projectID}}); err != nil {
		return fmt.Errorf("delete the counters of project %s: %w", projectID, err)
	}
	return nil
}

// rebuildCounts recomputes every counter from the records: it sets every record's
// countedLevel to what its status calls for, counts the records by pipeline,
// bucket and status, replaces each counter document with its counts and deletes the
// documents nothing counts in any more. Running it again changes nothing.
func (s *Store) rebuildCounts(ctx context.Context) error {
	if err := s.setCountedLevels(ctx); err != nil {
		return err
	}
	groups, err := s.countByBucket(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("count the records: %w", err)
	}
	set := counterSet{}
	for _, g := range groups {
		var c counts
		c.add(levelOf(g.ID.Status), g.ID.Status, g.N)
		set.add(&model.Record{ProjectID: g.ID.ProjectID, PipelineID: g.ID.PipelineID, StartBucket: g.ID.Bucket}, c)
	}
	// Rotated records are no longer records, but they stay counted.
	if err := s.countTombstones(ctx, set); err != nil {
		return err
	}
	err = s.writeCounters(ctx, set, func(d *counterDoc) error {
		_, err := s.recordCounts().ReplaceOne(ctx, bson.D{{Key: "_id", Value: d.ID}}, d, options.Replace().SetUpsert(true))
		if err != nil {
			return fmt.Errorf("replace counters %s: %w", d.ID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cur, err := s.recordCounts().Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return fmt.Errorf("list counters: %w", err)
	}
	var docs []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return fmt.Errorf("list counters: %w", err)
	}
	var stale bson.A
	for _, d := range docs {
		if _, ok := set[d.ID]; !ok {
			stale = append(stale, d.ID)
		}
	}
	if len(stale) > 0 {
		if _, err := s.recordCounts().DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: stale}}}}); err != nil {
			return fmt.Errorf("delete %d stale counters: %w", len(stale), err)
		}
	}
	return nil
}

// setCountedLevels gives every record the countedLevel its status calls for, as the
// counters rebuilt from the records will hold it, so that later changes count from
// there.
func (s *Store) setCountedLevels(ctx context.Context) error {
	for _, u := range []struct {
		status bson.D
		level  int
	}{
		{bson.D{{Key: "$in", Value: terminalStatuses}}, countedFinal},
		{bson.D{{Key: "$nin", Value: terminalStatuses}}, countedTotal},
	} {
		filter := bson.D{{Key: "status", Value: u.status}, {Key: "countedLevel", Value: bson.D{{Key: "$ne", Value: u.level}}}}
		set := bson.D{{Key: "$set", Value: bson.D{{Key: "countedLevel", Value: u.level}}}}
		if _, err := s.records.UpdateMany(ctx, filter, set); err != nil {
			return fmt.Errorf("set the counted level of records: %w", err)
		}
	}
	return nil
}
