package store

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

// RotateRecords keeps the newest keep records of every pipeline and deletes the
// older ones with their logs. Records still Pending or Running are never deleted, and
// they count towards what is kept. It returns how many records it deleted.
func (s *Store) RotateRecords(ctx context.Context, keep int64) (int, error) {
	if keep <= 0 {
		return 0, nil
	}
	ids, err := s.pipelines.Distinct(ctx, "_id", bson.D{})
	if err != nil {
		return 0, err
	}
	deleted := 0
	var errs []error
	for _, id := range ids {
		pipelineID, ok := id.(string)
		if !ok {
			continue
		}
		n, err := s.rotatePipeline(ctx, pipelineID, keep)
		deleted += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return deleted, errors.Join(errs...)
}

func (s *Store) rotatePipeline(ctx context.Context, pipelineID string, keep int64) (int, error) {
	cur, err := s.records.Find(ctx, bson.D{{Key: "pipelineID", Value: pipelineID}},
		options.Find().SetSort(newestFirst).SetSkip(keep).SetProjection(bson.D{{Key: "status", Value: 1}}))
	if err != nil {
		return 0, err
	}
	var old []struct {
		ID     string `bson:"_id"`
		Status string `bson:"status"`
	}
	if err := cur.All(ctx, &old); err != nil {
		return 0, err
	}
	deleted := 0
	for _, r := range old {
		if !model.IsTerminal(r.Status) {
			continue
		}
		if err := s.DeleteRecord(ctx, r.ID); err != nil && !errors.Is(err, ErrNotFound) {
			return deleted, err
		}
		deleted++
	}
	return deleted, nil
}

// DeleteOrphanLogs deletes the logs of records that no longer exist: a stage still
// writing when its record was deleted stores its last lines after the deletion. Logs
// updated in the last grace period are left alone. It returns how many records' logs
// it deleted.
func (s *Store) DeleteOrphanLogs(ctx context.Context, grace time.Duration) (int, error) {
	ids, err := s.logHeads().Distinct(ctx, "recordID", bson.D{{Key: "updated", Value: bson.D{{Key: "$lte", Value: now().Add(-grace)}}}})
	if err != nil {
		return 0, err
	}
	deleted := 0
	for _, v := range ids {
		id, ok := v.(string)
		if !ok {
			continue
		}
		if _, err := s.GetRecordByID(ctx, id); !errors.Is(err, ErrNotFound) {
			if err != nil {
				return deleted, err
			}
			continue
		}
		if err := s.deleteLogs(ctx, "recordID", id); err != nil {
			return deleted, err
		}
		deleted++
	}
	return deleted, nil
}
