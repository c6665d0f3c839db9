package store

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

// seedBatch is how many records one InsertMany sends.
const seedBatch = 5000

// InsertRecords inserts many records at once, in large unordered batches, as
// CreateRecord would store each (startBucket set from StartTime, which must be set),
// and brings the derived data up to date. It is for benchmarks that need a large
// store quickly; the server never calls it.
func (s *Store) InsertRecords(ctx context.Context, recs []*model.Record) error {
	if err := s.insertRecords(ctx, recs); err != nil {
		return err
	}
	if err := s.countInserted(ctx, recs); err != nil {
		return fmt.Errorf("count inserted records: %w", err)
	}
	return s.noteRecentMany(ctx, recs)
}

func (s *Store) insertRecords(ctx context.Context, recs []*model.Record) error {
	for len(recs) > 0 {
		n := min(seedBatch, len(recs))
		docs := make([]any, n)
		for i, r := range recs[:n] {
			if r.StartTime.IsZero() {
				return fmt.Errorf("record %s has no start time", r.ID)
			}
			r.StartBucket = StartBucket(r.StartTime)
			r.CountedLevel = levelOf(r.Status)
			docs[i] = r
		}
		if _, err := s.records.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)); err != nil {
			return fmt.Errorf("insert %d records: %w", n, writeErr(err))
		}
		recs = recs[n:]
	}
	return nil
}
