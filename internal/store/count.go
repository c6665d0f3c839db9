package store

import (
	"context"

	"go.mongodb.org/mongo-driver/bson"
)

// CountRecordsByStatus counts the records with the given status, on the status index
// (the pending-records gauge of /metrics).
func (s *Store) CountRecordsByStatus(ctx context.Context, status string) (int64, error) {
	return s.records.CountDocuments(ctx, bson.D{{Key: "status", Value: status}})
}
