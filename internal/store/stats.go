package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Per-day record stats in any time zone, without date operators (FerretDB has none):
// every record carries startBucket, its start time in Unix seconds truncated to
// BucketSeconds. Every real zone offset and every DST change is a whole number of
// 15-minute steps, so local midnight is always on a bucket edge and a bucket lies
// wholly inside one local day, in every zone. The store keeps per-bucket counts in
// day counters (counters.go) and folds the few hundred buckets per day at most into
// the local days asked for here; only a range edge that cuts a bucket is counted
// from the records.

// BucketSeconds is the width of a record's start-time bucket.
const BucketSeconds = 15 * 60

// MaxStatsDays bounds the days one stats query may cover (a leap year).
const MaxStatsDays = 366

// StartBucket is the bucket t falls in: Unix seconds rounded down to BucketSeconds.
func StartBucket(t time.Time) int64 {
	u := t.Unix()
	return u - ((u%BucketSeconds)+BucketSeconds)%BucketSeconds
}

// onBucketEdge reports whether t is the first instant of its bucket.
func onBucketEdge(t time.Time) bool {
	return t.Nanosecond() == 0 && StartBucket(t) == t.Unix()
}

// StatsQuery selects the records of one project or one pipeline that started in
// [From, To), counted per day of Location.
type StatsQuery struct {
	ProjectID  string // set exactly one of ProjectID and PipelineID
	PipelineID string
	From, To   time.Time
	Location   *time.Location // nil means UTC
}

// DayStats counts the records that started on one local day.
type DayStats struct {
	// Start is the day's first instant: 00:00 local, or the end of the DST gap on
	// the rare day whose midnight does not exist.
	Start time.Time
	// Total counts every record, whatever its status (also Pending and Running);
	// Success, Failed and Aborted count the finished ones.
	Total, Success, Failed, Aborted int64
}

// StatsDays is how many local days of loc the range [from, to) touches.
func StatsDays(from, to time.Time, loc *time.Location) int {
	if loc == nil {
		loc = time.UTC
	}
	if !to.After(from) {
		return 0
	}
	return int(civilDay(to.Add(-time.Nanosecond), loc)-civilDay(from, loc)) + 1
}

// RecordStats counts the selected records per local day, one entry for every day
// the range touches, days without records included, oldest first. It reads the day
// counters of the UTC days the range touches, by _id; a range edge inside a bucket
// (From or To not on a 15-minute edge) has that bucket counted from its records and
// from the tombstones of the records rotated out of it.
func (s *Store) RecordStats(ctx context.Context, q StatsQuery) ([]DayStats, error) {
	s.awaitDerived(ctx)
	t, scope, err := newStatsTally(q)
	if err != nil || len(t.days) == 0 {
		return t.days, err
	}
	// Buckets in [whole, cut) lie wholly inside [From, To).
	whole, cut := StartBucket(q.From), StartBucket(q.To)
	var edges []int64
	if !onBucketEdge(q.From) {
		edges = append(edges, whole)
		whole += BucketSeconds
	}
	if !onBucketEdge(q.To) && (len(edges) == 0 || edges[0] != cut) {
		edges = append(edges, cut)
	}
	if whole < cut {
		docs, err := s.readCounters(ctx, scope, utcDay(whole), utcDay(cut-1))
		if err != nil {
			return nil, err
		}
		for _, doc := range docs {
			if err := doc.eachBucket(func(bucket int64, c counts) {
				if whole <= bucket && bucket < cut {
					t.add(bucket, c)
				}
			}); err != nil {
				return nil, err
			}
		}
	}
	if len(edges) > 0 {
		match := bson.D{
			{Key: scope.recordField(), Value: scope.id},
			{Key: "startBucket", Value: bson.D{{Key: "$in", Value: edges}}},
			{Key: "startTime", Value: bson.D{{Key: "$gte", Value: q.From}, {Key: "$lt", Value: q.To}}},
		}
		if err := s.tallyRecords(ctx, t, match); err != nil {
			return nil, err
		}
		if err := s.tallyRotated(ctx, t, scope, edges, q.From, q.To); err != nil {
			return nil, err
		}
	}
	return t.days, nil
}

// recordStatsFromRecords answers what RecordStats answers by counting the records
// themselves, as the store did before it kept counters; tests hold the counters to
// it.
func (s *Store) recordStatsFromRecords(ctx context.Context, q StatsQuery) ([]DayStats, error) {
	t, scope, err := newStatsTally(q)
	if err != nil || len(t.days) == 0 {
		return t.days, err
	}
	// The bucket range uses the index; startTime keeps the edges exact.
	match := bson.D{
		{Key: scope.recordField(), Value: scope.id},
		{Key: "startBucket", Value: bson.D{{Key: "$gte", Value: StartBucket(q.From)}, {Key: "$lte", Value: StartBucket(q.To)}}},
		{Key: "startTime", Value: bson.D{{Key: "$gte", Value: q.From}, {Key: "$lt", Value: q.To}}},
	}
	if err := s.tallyRecords(ctx, t, match); err != nil {
		return nil, err
	}
	return t.days, nil
}

// tallyRecords adds the records matching match to t.
func (s *Store) tallyRecords(ctx context.Context, t *statsTally, match bson.D) error {
	groups, err := s.countByBucket(ctx, match)
	if err != nil {
		return err
	}
	for _, g := range groups {
		var c counts
		c.add(levelOf(g.ID.Status), g.ID.Status, g.N)
		t.add(g.ID.Bucket, c)
	}
	return nil
}

// statsTally adds up per-bucket counts into the local days of a stats query.
type statsTally struct {
	loc   *time.Location
	first int64 // civil day of days[0]
	days  []DayStats
}

// newStatsTally checks q and returns its days, all zero, and the scope it counts.
// A range that touches no day has no days and no error.
func newStatsTally(q StatsQuery) (*statsTally, counterScope, error) {
	t := &statsTally{loc: q.Location}
	if t.loc == nil {
		t.loc = time.UTC
	}
	n := StatsDays(q.From, q.To, t.loc)
	if n == 0 {
		t.days = []DayStats{}
		return t, counterScope{}, nil
	}
	if n > MaxStatsDays {
		return t, counterScope{}, fmt.Errorf("stats range of %d days is over %d", n, MaxStatsDays)
	}
	var scope counterScope
	switch {
	case q.ProjectID != "" && q.PipelineID == "":
		scope = counterScope{kind: scopeProject, id: q.ProjectID}
	case q.PipelineID != "" && q.ProjectID == "":
		scope = counterScope{kind: scopePipeline, id: q.PipelineID}
	default:
		return t, counterScope{}, errors.New("stats query needs exactly one of project and pipeline")
	}
	t.first = civilDay(q.From, t.loc)
	t.days = make([]DayStats, n)
	for i := range t.days {
		t.days[i].Start = dayStart(t.first+int64(i), t.loc)
	}
	return t, scope, nil
}

// add counts c on the local day of bucket. Callers pass buckets inside the query's
// range only; one outside it would be dropped.
func (t *statsTally) add(bucket int64, c counts) {
	i := civilDay(time.Unix(bucket, 0), t.loc) - t.first
	if i < 0 || i >= int64(len(t.days)) {
		return
	}
	d := &t.days[i]
	d.Total += c.Total
	d.Success += c.Success
	d.Failed += c.Failed
	d.Aborted += c.Aborted
}

// bucketCount is how many matched records of one pipeline (and its project) started
// in one bucket with one status.
type bucketCount struct {
	ID struct {
		ProjectID  string `bson:"projectID"`
		PipelineID string `bson:"pipelineID"`
		Bucket     int64  `bson:"bucket"`
		Status     string `bson:"status"`
	} `bson:"_id"`
	N int64 `bson:"n"`
}

// countByBucket counts the records matching match by (projectID, pipelineID,
// startBucket, status). MongoDB groups them. FerretDB's $group looks each document's
// group up in a list of the groups so far (quadratic: minutes for 100,000 records in
// thousands of buckets), so there the four fields are read and counted here.
func (s *Store) countByBucket(ctx context.Context, match bson.D) ([]bucketCount, error) {
	if !s.scansQueries(ctx) {
		pipeline := mongo.Pipeline{
			{{Key: "$match", Value: match}},
			{{Key: "$group", Value: bson.D{
				{Key: "_id", Value: bson.D{
					{Key: "projectID", Value: "$projectID"},
					{Key: "pipelineID", Value: "$pipelineID"},
					{Key: "bucket", Value: "$startBucket"},
					{Key: "status", Value: "$status"},
				}},
				{Key: "n", Value: bson.D{{Key: "$sum", Value: 1}}},
			}}},
		}
		cur, err := s.records.Aggregate(ctx, pipeline)
		if err != nil {
			return nil, err
		}
		var groups []bucketCount
		if err := cur.All(ctx, &groups); err != nil {
			return nil, err
		}
		return groups, nil
	}
	proj := bson.D{{Key: "_id", Value: 0}, {Key: "projectID", Value: 1}, {Key: "pipelineID", Value: 1},
		{Key: "startBucket", Value: 1}, {Key: "status", Value: 1}}
	cur, err := s.records.Find(ctx, match, options.Find().SetProjection(proj))
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	type key struct {
		projectID, pipelineID string
		bucket                int64
		status                string
	}
	counts := map[key]int64{}
	for cur.Next(ctx) {
		var r struct {
			ProjectID  string `bson:"projectID"`
			PipelineID string `bson:"pipelineID"`
			Bucket     int64  `bson:"startBucket"`
			Status     string `bson:"status"`
		}
		if err := cur.Decode(&r); err != nil {
			return nil, err
		}
		counts[key{r.ProjectID, r.PipelineID, r.Bucket, r.Status}]++
	}
	if err := cur.Err(); err != nil {
		return nil, err
	}
	groups := make([]bucketCount, 0, len(counts))
	for k, n := range counts {
		var g bucketCount
		g.ID.ProjectID, g.ID.PipelineID, g.ID.Bucket, g.ID.Status, g.N = k.projectID, k.pipelineID, k.bucket, k.status, n
		groups = append(groups, g)
	}
	return groups, nil
}

// civilDay numbers the local calendar day of t in loc: days since 1970-01-01.
func civilDay(t time.Time, loc *time.Location) int64 {
	y, m, d := t.In(loc).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400
}

// dayStart is the first instant of the civil day n (days since 1970-01-01) in loc.
func dayStart(n int64, loc *time.Location) time.Time {
	y, m, d := time.Unix(n*86400, 0).UTC().Date()
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	// Where a DST change skips midnight, Date may answer with an instant of the day
	// before; the day then begins where that zone period ends.
	if civilDay(t, loc) < n {
		_, end := t.ZoneBounds()
		t = end
	}
	return t
}

// ensureStatsIndexes indexes the stats queries and gives records written before
// startBucket existed their bucket, once.
func (s *Store) ensureStatsIndexes(ctx context.Context) error {
	for _, scope := range []string{"projectID", "pipelineID"} {
		m := mongo.IndexModel{Keys: bson.D{{Key: scope, Value: 1}, {Key: "startBucket", Value: 1}}}
		if _, err := s.records.Indexes().CreateOne(ctx, m); err != nil {
			return fmt.Errorf("create index on %s: %w", s.records.Name(), err)
		}
	}
	if err := s.backfillStartBuckets(ctx); err != nil {
		return err
	}
	return s.ensureDerived(ctx)
}

// backfillStartBuckets sets startBucket on records that lack it (written before it
// existed), once per database.
func (s *Store) backfillStartBuckets(ctx context.Context) error {
	return s.migrateOnce(ctx, "records.startBucket", func(ctx context.Context) error {
		missing := bson.D{{Key: "startBucket", Value: bson.D{{Key: "$exists", Value: false}}}}
		cur, err := s.records.Find(ctx, missing, options.Find().SetProjection(bson.D{{Key: "startTime", Value: 1}}))
		if err != nil {
			return fmt.Errorf("find records without startBucket: %w", err)
		}
		defer cur.Close(ctx)
		for cur.Next(ctx) {
			var r struct {
				ID        string    `bson:"_id"`
				StartTime time.Time `bson:"startTime"`
			}
			if err := cur.Decode(&r); err != nil {
				return err
			}
			set := bson.D{{Key: "$set", Value: bson.D{{Key: "startBucket", Value: StartBucket(r.StartTime)}}}}
			if _, err := s.records.UpdateOne(ctx, bson.D{{Key: "_id", Value: r.ID}}, set); err != nil {
				return fmt.Errorf("backfill startBucket of record %s: %w", r.ID, err)
			}
		}
		return cur.Err()
	})
}
