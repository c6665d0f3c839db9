// Package reconcile keeps the record projection true to Temporal when the workflow
// could not write its own ending: a workflow terminated from the `temporal` CLI or the
// Web UI, timed out, or lost. Records whose workflow is closed but that still say
// Pending or Running are put in the matching terminal state.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cycloneci/cyclone/internal/metrics"
	"github.com/cycloneci/cyclone/internal/model"
)

// Store is what the reconciler reads and writes.
type Store interface {
	ListUnfinishedRecords(ctx context.Context, after, before time.Time, limit int64) ([]*model.Record, error)
	FinishRecord(ctx context.Context, id, status, errorMessage string, end time.Time) error
}

// Temporal is the part of the Temporal client the reconciler uses.
type Temporal interface {
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
}

// Reconciler periodically closes records whose workflow has closed.
type Reconciler struct {
	Store    Store
	Temporal Temporal
	Logger   *slog.Logger
	// Metrics counts the records closed here as finished; nil counts nothing.
	Metrics *metrics.Metrics
	// Interval between passes (default 15s).
	Interval time.Duration
	// Grace is how old a record must be before it is checked, so a record whose
	// workflow is being started is left alone (default 30s).
	Grace time.Duration
}

// Run reconciles every Interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	interval := r.Interval
	if interval <= 0 {
		interval = 15 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := r.Once(ctx); err != nil && ctx.Err() == nil {
			r.logger().Warn("reconcile records", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Reconciler) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.Default()
	}
	return r.Logger
}

// Once makes one pass over the unfinished records.
func (r *Reconciler) Once(ctx context.Context) error {
	grace := r.Grace
	if grace == 0 {
		grace = 30 * time.Second
	}
	const page = 500
	before := time.Now().Add(-grace)
	var after time.Time
	var errs []error
	for {
		recs, err := r.Store.ListUnfinishedRecords(ctx, after, before, page)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, rec := range recs {
			if err := r.reconcile(ctx, rec); err != nil {
				errs = append(errs, fmt.Errorf("record %s: %w", rec.ID, err))
			}
		}
		if len(recs) < page {
			return errors.Join(errs...)
		}
		after = recs[len(recs)-1].StartTime
	}
}

func (r *Reconciler) reconcile(ctx context.Context, rec *model.Record) error {
	desc, err := r.Temporal.DescribeWorkflowExecution(ctx, rec.WorkflowID, "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return r.finish(ctx, rec, model.StatusFailed, "the record's workflow does not exist in Temporal", time.Now())
	}
	if err != nil {
		return err
	}
	info := desc.GetWorkflowExecutionInfo()
	status, message := terminalStatus(info.GetStatus())
	if status == "" {
		return nil // still running: the workflow will write its own ending
	}
	end := time.Now()
	if ct := info.GetCloseTime(); ct != nil {
		end = ct.AsTime()
	}
	return r.finish(ctx, rec, status, message, end)
}

func (r *Reconciler) finish(ctx context.Context, rec *model.Record, status, message string, end time.Time) error {
	r.logger().Info("closing record after its workflow closed", "record", rec.ID,
		"projectID", rec.ProjectID, "pipelineID", rec.PipelineID, "status", status, "reason", message)
	if err := r.Store.FinishRecord(ctx, rec.ID, status, message, end); err != nil {
		return err
	}
	r.Metrics.RecordFinished(status)
	return nil
}

// terminalStatus maps a closed workflow to the record status it means; "" while the
// workflow runs.
func terminalStatus(s enums.WorkflowExecutionStatus) (status, message string) {
	switch s {
	case enums.WORKFLOW_EXECUTION_STATUS_RUNNING, enums.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED:
		return "", ""
	case enums.WORKFLOW_EXECUTION_STATUS_TERMINATED:
		return model.StatusAborted, "the record's workflow was terminated in Temporal"
	case enums.WORKFLOW_EXECUTION_STATUS_CANCELED:
		return model.StatusAborted, ""
	case enums.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
		return model.StatusFailed, "the record's workflow timed out"
	case enums.WORKFLOW_EXECUTION_STATUS_COMPLETED:
		return model.StatusSuccess, ""
	case enums.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:
		return "", ""
	}
	return model.StatusFailed, "the record's workflow ended as " + s.String()
}
