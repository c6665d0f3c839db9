package store

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
)

// derivedMarker names the migration that built the derived data of records written
// before the store kept it (v2: bucket counts packed; v3: cards and directories
// packed).
const derivedMarker = "records.derived.v3"

// RebuildDerived recomputes all data derived from the records (day counters,
// pipeline cards, pipeline directories) from the records and pipelines themselves,
// and from the tombstones of rotated records (rotate.go), which stay counted. It
// reads every record. The store runs it once per database, when it first opens
// one written without (or with an older layout of) the derived data; it is also
// what would repair counts a crash left behind, but no command runs it on demand
// yet.
func (s *Store) RebuildDerived(ctx context.Context) error {
	s.awaitDerived(ctx)
	if err := s.rebuildCounts(ctx); err != nil {
		return fmt.Errorf("rebuild record counters: %w", err)
	}
	if err := s.rebuildRecent(ctx); err != nil {
		return fmt.Errorf("rebuild pipeline cards: %w", err)
	}
	if err := s.rebuildDirectories(ctx); err != nil {
		return fmt.Errorf("rebuild pipeline directories: %w", err)
	}
	return nil
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
