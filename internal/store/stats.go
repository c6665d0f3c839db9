package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

// Per-day record stats in any time zone, without date operators (FerretDB has none):
// every record carries startBucket, its start time in Unix seconds truncated to
// BucketSeconds. Every real zone offset and every DST change is a whole number of
// 15-minute steps, so local midnight is always on a bucket edge and a bucket lies
// wholly inside one local day, in every zone. MongoDB groups the records of a range
// by (bucket, status); the few hundred buckets per day at most are folded into local
// days here.

// BucketSeconds is the width of a record's start-time bucket.
const BucketSeconds = 15 * 60

// MaxStatsDays bounds the days one stats query may cover (a leap year).
const MaxStatsDays = 366

// StartBucket is the bucket t falls in: Unix seconds rounded down to BucketSeconds.
func StartBucket(t time.Time) int64 {
	u := t.Unix()
	return u - ((u%BucketSeconds)+BucketSeconds)%BucketSeconds
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
// the range touches, days without records included, oldest first.
func (s *Store) RecordStats(ctx context.Context, q StatsQuery) ([]DayStats, error) {
	loc := q.Location
	if loc == nil {
		loc = time.UTC
	}
	n := StatsDays(q.From, q.To, loc)
	if n == 0 {
		return []DayStats{}, nil
	}
	if n > MaxStatsDays {
		return nil, fmt.Errorf("stats range of %d days is over %d", n, MaxStatsDays)
	}
	var match bson.D
	switch {
	case q.ProjectID != "" && q.PipelineID == "":
		match = bson.D{{Key: "projectID", Value: q.ProjectID}}
	case q.PipelineID != "" && q.ProjectID == "":
		match = bson.D{{Key: "pipelineID", Value: q.PipelineID}}
	default:
		return nil, errors.New("stats query needs exactly one of project and pipeline")
	}
	// The bucket range uses the index; startTime keeps the edges exact.
	match = append(match,
		bson.E{Key: "startBucket", Value: bson.D{{Key: "$gte", Value: StartBucket(q.From)}, {Key: "$lte", Value: StartBucket(q.To)}}},
		bson.E{Key: "startTime", Value: bson.D{{Key: "$gte", Value: q.From}, {Key: "$lt", Value: q.To}}},
	)
	groups, err := s.countByBucket(ctx, match)
	if err != nil {
		return nil, err
	}

	first := civilDay(q.From, loc)
	days := make([]DayStats, n)
	for i := range days {
		days[i].Start = dayStart(first+int64(i), loc)
	}
	for _, g := range groups {
		i := civilDay(time.Unix(g.ID.Bucket, 0), loc) - first
		if i < 0 || i >= int64(n) {
			continue // cannot happen: the match keeps startTime inside the range
		}
		d := &days[i]
		d.Total += g.N
		switch g.ID.Status {
		case model.StatusSuccess:
			d.Success += g.N
		case model.StatusFailed:
			d.Failed += g.N
		case model.StatusAborted:
			d.Aborted += g.N
		}
	}
	return days, nil
}

// bucketCount is how many matched records started in one bucket with one status.
type bucketCount struct {
	ID struct {
		Bucket int64  `bson:"bucket"`
		Status string `bson:"status"`
	} `bson:"_id"`
	N int64 `bson:"n"`
}

// countByBucket counts the records matching match by (startBucket, status). MongoDB
// groups them. FerretDB's $group looks each document's group up in a list of the
// groups so far (quadratic: minutes for 100,000 records in thousands of buckets), so
// there the two fields are read and counted here.
func (s *Store) countByBucket(ctx context.Context, match bson.D) ([]bucketCount, error) {
	if !s.scansQueries(ctx) {
		pipeline := mongo.Pipeline{
			{{Key: "$match", Value: match}},
			{{Key: "$group", Value: bson.D{
				{Key: "_id", Value: bson.D{{Key: "bucket", Value: "$startBucket"}, {Key: "status", Value: "$status"}}},
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
	proj := bson.D{{Key: "_id", Value: 0}, {Key: "startBucket", Value: 1}, {Key: "status", Value: 1}}
	cur, err := s.records.Find(ctx, match, options.Find().SetProjection(proj))
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	type key struct {
		bucket int64
		status string
	}
	counts := map[key]int64{}
	for cur.Next(ctx) {
		var r struct {
			Bucket int64  `bson:"startBucket"`
			Status string `bson:"status"`
		}
		if err := cur.Decode(&r); err != nil {
			return nil, err
		}
		counts[key{r.Bucket, r.Status}]++
	}
	if err := cur.Err(); err != nil {
		return nil, err
	}
	groups := make([]bucketCount, 0, len(counts))
	for k, n := range counts {
		var g bucketCount
		g.ID.Bucket, g.ID.Status, g.N = k.bucket, k.status, n
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
