package store

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

// onceBool is a bool worked out once.
type onceBool struct {
	once sync.Once
	v    bool
}

// scansQueries reports whether the server answers every query but a lone _id
// equality by reading the whole collection, as the embedded FerretDB v1.24 (SQLite
// backend) does. It asks buildInfo once; an error counts as MongoDB.
func (s *Store) scansQueries(ctx context.Context) bool {
	s.scans.once.Do(func() {
		var info bson.M
		if err := s.db.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err == nil {
			_, s.scans.v = info["ferretdbVersion"]
		}
	})
	return s.scans.v
}

// RecentRecords returns up to n newest records of a pipeline, with the given status
// when status is not empty.
func (s *Store) RecentRecords(ctx context.Context, pipelineID, status string, n int64) ([]*model.Record, error) {
	filter := bson.D{{Key: "pipelineID", Value: pipelineID}}
	if status != "" {
		filter = append(filter, bson.E{Key: "status", Value: status})
	}
	cur, err := s.records.Find(ctx, filter, options.Find().SetSort(newestFirst).SetLimit(n))
	if err != nil {
		return nil, err
	}
	items := []*model.Record{}
	if err := cur.All(ctx, &items); err != nil {
		return nil, err
	}
	return items, nil
}

// RecentRecordsOf is RecentRecords for many pipelines, by pipeline ID (a pipeline
// without such records has none in the map), read from the records (the pipeline
// list reads up to recentKept of them from the pipelines' cards instead). On MongoDB
// it runs one indexed query per pipeline (each reads n records); on a server that
// scans every query (FerretDB) it reads the pipelines' records in one query, one
// scan instead of one per pipeline, and keeps the n newest of each.
func (s *Store) RecentRecordsOf(ctx context.Context, pipelineIDs []string, status string, n int64) (map[string][]*model.Record, error) {
	out := make(map[string][]*model.Record, len(pipelineIDs))
	if n <= 0 || len(pipelineIDs) == 0 {
		return out, nil
	}
	if !s.scansQueries(ctx) {
		for _, id := range pipelineIDs {
			recs, err := s.RecentRecords(ctx, id, status, n)
			if err != nil {
				return nil, err
			}
			if len(recs) > 0 {
				out[id] = recs
			}
		}
		return out, nil
	}
	filter := bson.D{{Key: "pipelineID", Value: bson.D{{Key: "$in", Value: slices.Compact(slices.Sorted(slices.Values(pipelineIDs)))}}}}
	if status != "" {
		filter = append(filter, bson.E{Key: "status", Value: status})
	}
	cur, err := s.records.Find(ctx, filter, options.Find().SetSort(newestFirst))
	if err != nil {
		return nil, fmt.Errorf("recent records of %d pipelines: %w", len(pipelineIDs), err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		// Newest first: a pipeline's first n records are its newest.
		var head struct {
			PipelineID string `bson:"pipelineID"`
		}
		if err := cur.Decode(&head); err != nil {
			return nil, err
		}
		if int64(len(out[head.PipelineID])) >= n {
			continue
		}
		var r model.Record
		if err := cur.Decode(&r); err != nil {
			return nil, err
		}
		out[head.PipelineID] = append(out[head.PipelineID], &r)
	}
	return out, cur.Err()
}
