// Package devstack runs Cyclone's infrastructure inside the Cyclone process:
// a Temporal server (with its Web UI) and a MongoDB-compatible database
// (FerretDB), both stored in SQLite.
//
// It exists for two callers. `cyclone dev` uses it so that a developer can run
// the whole CI/CD server as one binary with nothing else installed, keeping
// state in a data directory across restarts. Tests use it so that they
// exercise the real Temporal and Mongo wire protocols instead of mocks, with
// in-memory or temporary storage and free ports so they can run in parallel.
//
// Production deployments do not use this package: they point Cyclone at an
// external Temporal cluster and a real MongoDB. Everything here is therefore
// tuned for a single node and low latency rather than for throughput or
// durability under power loss (SQLite runs with synchronous=normal).
package devstack
