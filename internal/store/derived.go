package store

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// derivedMarker names the migration that built the derived data of records written
// before the store kept it (v2: bucket counts packed; v3: cards and directories
// packed; v4: pipelines' own cards on sheets).
const derivedMarker = "records.derived.v4"

// RebuildDerived recomputes all data derived from the records (day counters,
// pipeline cards, pipeline directories) from the records and pipelines themselves,
// and from the tombstones of rotated records (rotate.go), which stay counted. It
// reads every record. The store runs it once per database, when it first opens
// one written without (or with an older layout of) the derived data. Counts a
// crash left behind are repaired by RepairDerived, which the server runs at start.
func (s *Store) RebuildDerived(ctx context.Context) error {
	s.awaitDerived(ctx)
	if err := s.rebuildCounts(ctx); err != nil {
		return fmt.Errorf("rebuild record counters: %w", err)
	}
	if err := s.rebuildDirectories(ctx); err != nil {
		return fmt.Errorf("rebuild pipeline directories: %w", err)
	}
	if err := s.rebuildRecent(ctx); err != nil {
		return fmt.Errorf("rebuild pipeline cards: %w", err)
	}
	return nil
}

// RepairDerived brings the derived data up to date with the records whose own
// update did not happen (the process ended between a record's write and its
// derived update, see thenDerived): those whose countedLevel is below what their
// status calls for. It reads the records' IDs with one query (on FerretDB a scan of
// the records), and returns how many it repaired. A record whose update another
// process is making at the same time is counted once all the same (recordChanged).
func (s *Store) RepairDerived(ctx context.Context) (int, error) {
	filter := bson.D{{Key: "$or", Value: bson.A{
		// countedNothing is 0, which the record leaves out (omitempty).
		bson.D{{Key: "countedLevel", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "countedLevel", Value: countedTotal}, {Key: "status", Value: bson.D{{Key: "$in", Value: terminalStatuses}}}},
	}}}
	cur, err := s.records.Find(ctx, filter, options.Find().SetProjection(bson.D{{Key: "status", Value: 1}}))
	if err != nil {
		return 0, fmt.Errorf("find records with lagging derived data: %w", err)
	}
	var lagging []struct {
		ID     string `bson:"_id"`
		Status string `bson:"status"`
	}
	if err := cur.All(ctx, &lagging); err != nil {
		return 0, fmt.Errorf("find records with lagging derived data: %w", err)
	}
	repaired := 0
	var errs []error
	for _, r := range lagging {
		if err := s.recordChanged(ctx, r.ID, levelOf(r.Status)); err != nil {
			errs = append(errs, fmt.Errorf("record %s: %w", r.ID, err))
			continue
		}
		repaired++
	}
	return repaired, errors.Join(errs...)
}

// ensureDerived builds the derived data once per database.
func (s *Store) ensureDerived(ctx context.Context) error {
	return s.migrateOnce(ctx, derivedMarker, s.RebuildDerived)
}

// migrateOnce runs migrate unless a marker document says it ran in this database,
// and then writes the marker, so a migration that scans the records runs once
// rather than at every start.
func (s *Store) migrateOnce(ctx context.Context, marker string, migrate func(context.Context) error) error {
	migrations := s.db.Collection("migrations")
	err := migrations.FindOne(ctx, bson.D{{Key: "_id", Value: marker}}).Err()
	if err == nil {
		return nil
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return fmt.Errorf("read migrations: %w", err)
	}
	if err := migrate(ctx); err != nil {
		return err
	}
	_, err = migrations.InsertOne(ctx, bson.D{{Key: "_id", Value: marker}, {Key: "doneAt", Value: now()}})
	if errors.Is(writeErr(err), ErrConflict) {
		return nil // another server finished it at the same time
	}
	return err
}
