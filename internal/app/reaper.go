package app

import (
	"context"
	"log/slog"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/reaper"
	"github.com/cycloneci/cyclone/internal/store"
)

// StartReaper reclaims, in the background until ctx ends, the containers, networks
// and volumes that finished records left on ex's backend (when ex can list them) and
// the capacity-queue places they still hold, within reaper.ReclaimWithin (under a
// minute) of their end.
func StartReaper(ctx context.Context, st *store.Store, ex executor.Executor, logger *slog.Logger) {
	r := &reaper.Reaper{Store: st, Logger: logger}
	if b, ok := ex.(reaper.Backend); ok {
		r.Backend = b
	}
	go r.Run(ctx)
}
