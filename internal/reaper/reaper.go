// Package reaper reclaims what records left behind on an executor's backend: the
// containers, networks and volumes (or pods) of records that are no longer running
// because their worker died, they were aborted, or their workflow was terminated
// before its teardown ran. It also frees the capacity-queue places such records
// still hold.
//
// Each pass lists what carries Cyclone's record labels (executor.Lister), looks each
// record up in the store, and tears down (executor.Executor.Teardown) the records
// that are finished or deleted. Resources younger than the grace period are left
// alone, so a record being set up is not reaped. A record the store does not know
// waits a longer grace (GoneGrace): it may belong to another installation sharing
// the engine, whose records this store cannot see.
package reaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// Store is what the reaper reads and writes.
type Store interface {
	GetRecordByID(ctx context.Context, id string) (*model.Record, error)
	ListSlots(ctx context.Context) ([]*store.Slot, error)
	PruneSlots(ctx context.Context, slots []*store.Slot) (int, error)
}

// Backend lists and tears down records' resources.
type Backend interface {
	executor.Lister
	Teardown(ctx context.Context, rec executor.Record) error
}

// Defaults of Reaper.
const (
	DefaultInterval = 20 * time.Second
	DefaultGrace    = 30 * time.Second
	// DefaultGoneGrace applies to records the store does not know.
	DefaultGoneGrace = 10 * time.Minute
)

// ReclaimWithin bounds, with the defaults, how long after a record ended what it
// left behind stays: a resource is reaped at the first pass (every
// DefaultInterval) that finds its record finished and the resource older than
// DefaultGrace. It is at most a minute (tested), plus the time a teardown takes.
// Leftovers of records the store does not know wait DefaultGoneGrace instead.
const ReclaimWithin = DefaultInterval + DefaultGrace

// Reaper reclaims the resources of finished records.
type Reaper struct {
	Store Store
	// Backend is the executor whose resources are reaped; nil reaps only queue places.
	Backend  Backend
	Logger   *slog.Logger
	Interval time.Duration // between passes (default 20s)
	Grace    time.Duration // minimum age of what is reaped (default 30s)
	// GoneGrace is the minimum age of what records unknown to the store left
	// (default 10 min).
	GoneGrace time.Duration
	Now       func() time.Time
}

// Run reaps every Interval until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := r.Once(ctx); err != nil && ctx.Err() == nil {
			r.logger().Warn("reap finished records' leftovers", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Reaper) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// Once makes one pass and returns the records it tore down.
func (r *Reaper) Once(ctx context.Context) ([]executor.Record, error) {
	var errs []error
	if slots, err := r.Store.ListSlots(ctx); err != nil {
		errs = append(errs, err)
	} else if n, err := r.Store.PruneSlots(ctx, slots); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		r.logger().Info("freed the queue places of finished records", "count", n)
	}
	if r.Backend == nil {
		return nil, errors.Join(errs...)
	}
	list, err := r.Backend.List(ctx)
	if err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	grace := r.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	goneGrace := r.GoneGrace
	if goneGrace <= 0 {
		goneGrace = DefaultGoneGrace
	}
	cutoff, goneCutoff := now().Add(-grace), now().Add(-goneGrace)
	// A record is considered once, and only when all it has is old enough.
	records := map[string]executor.Record{}
	young, youngForGone := map[string]bool{}, map[string]bool{}
	var order []string
	for _, in := range list {
		id := in.Record.ID
		if id == "" {
			continue
		}
		if _, seen := records[id]; !seen {
			order = append(order, id)
			records[id] = in.Record
		}
		if in.Created.After(cutoff) {
			young[id] = true
		}
		if in.Created.After(goneCutoff) {
			youngForGone[id] = true
		}
	}
	var reaped []executor.Record
	for _, id := range order {
		if young[id] {
			continue
		}
		rec, err := r.Store.GetRecordByID(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if youngForGone[id] {
				continue
			}
		case err != nil:
			errs = append(errs, fmt.Errorf("record %s: %w", id, err))
			continue
		case !model.IsTerminal(rec.Status):
			continue
		}
		status := "deleted"
		if rec != nil {
			status = rec.Status
		}
		if err := r.Backend.Teardown(ctx, records[id]); err != nil {
			errs = append(errs, err)
			continue
		}
		r.logger().Info("reclaimed the leftovers of a finished record", "record", id,
			"project", records[id].Project, "pipeline", records[id].Pipeline, "status", status)
		reaped = append(reaped, records[id])
	}
	return reaped, errors.Join(errs...)
}
