package store

import "context"

// UseMongoDBPaths makes s read as it does on MongoDB (one query per pipeline,
// $group for stats) even on FerretDB, so tests can compare both ways of reading.
func UseMongoDBPaths(s *Store) { s.scans.once.Do(func() {}) }

// ScansQueries reports whether s reads the FerretDB way.
func ScansQueries(s *Store) bool { return s.scansQueries(context.Background()) }
