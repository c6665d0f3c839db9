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
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/cycloneci/cyclone/internal/metrics"
	"github.com/cycloneci/cyclone/internal/model"
)

// Store is what the reconciler reads and writes.
type Store interface {
	// ListUnfinishedRecords lists up to limit Pending or Running records that
	// started before before, in the order (start time, ID), from the one after the
	// record (after, afterID) on.
	ListUnfinishedRecords(ctx context.Context, after time.Time, afterID string, before time.Time, limit int64) ([]*model.Record, error)
	Finisher
}

// Finisher writes a record's ending, with the stage outcomes not written yet; a
// record already terminal is left as it is.
type Finisher interface {
	FinishRecordWith(ctx context.Context, id, status, errorMessage string, end time.Time, stages []model.StageUpdate) error
}

// Temporal is the part of the Temporal client the reconciler uses.
type Temporal interface {
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
	// GetWorkflowHistory gives the stage outcomes the closed workflow still held (a
	// stage's success is handed back to the workflow to be written later: see
	// activities.StageInput.CarryOutcome), which the record's ending then writes.
	GetWorkflowHistory(ctx context.Context, workflowID, runID string, isLongPoll bool, filterType enums.HistoryEventFilterType) client.HistoryEventIterator
}

// stageActivity is the activity type of a record's stages (activities.RunStage).
const stageActivity = "RunStage"

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
	// PageSize is how many records a pass reads from the store at a time (default 500).
	PageSize int64
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
	page := r.PageSize
	if page <= 0 {
		page = 500
	}
	before := time.Now().Add(-grace)
	var after time.Time
	var afterID string
	var errs []error
	for {
		recs, err := r.Store.ListUnfinishedRecords(ctx, after, afterID, before, page)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, rec := range recs {
			if err := r.reconcile(ctx, rec); err != nil {
				errs = append(errs, fmt.Errorf("record %s: %w", rec.ID, err))
			}
		}
		if int64(len(recs)) < page {
			return errors.Join(errs...)
		}
		// Records that started at the same instant as the last one may follow it.
		last := recs[len(recs)-1]
		after, afterID = last.StartTime, last.ID
	}
}

func (r *Reconciler) reconcile(ctx context.Context, rec *model.Record) error {
	ending, err := Record(ctx, r.Store, r.Temporal, rec)
	if err != nil || ending == nil {
		return err
	}
	r.logger().Info("closed record after its workflow closed", "record", rec.ID,
		"projectID", rec.ProjectID, "pipelineID", rec.PipelineID, "status", ending.Status, "reason", ending.Message)
	r.Metrics.RecordFinished(ending.Status)
	return nil
}

// Ending is how a record was closed after its workflow closed.
type Ending struct {
	Status  string    // the record's terminal status
	Message string    // its error message, "" for none
	End     time.Time // the workflow's close time (now for one Temporal does not know)

	known bool // Temporal knows the workflow (it has a history)
}

// Record closes rec if its workflow has closed without writing its ending: in the
// status the way the workflow closed means, at the workflow's close time; a workflow
// Temporal does not know fails the record. It returns the ending written, or nil
// while the workflow runs (it will write its own ending). A record that is already
// terminal in st keeps its status.
func Record(ctx context.Context, st Finisher, tc Temporal, rec *model.Record) (*Ending, error) {
	return closeRecord(ctx, st, tc, rec, true)
}

// RecordIfKnown is Record for a workflow Temporal knows: a record whose workflow it
// does not know (yet: the record's create may not have started it) is left alone,
// and nil returned, for the reconciler to judge after its grace period.
func RecordIfKnown(ctx context.Context, st Finisher, tc Temporal, rec *model.Record) (*Ending, error) {
	return closeRecord(ctx, st, tc, rec, false)
}

func closeRecord(ctx context.Context, st Finisher, tc Temporal, rec *model.Record, unknownFails bool) (*Ending, error) {
	ending, err := workflowEnding(ctx, tc, rec.WorkflowID)
	if err != nil || ending == nil || !ending.known && !unknownFails {
		return nil, err
	}
	var held []model.StageUpdate
	if ending.known {
		if held, err = heldOutcomes(ctx, tc, rec.WorkflowID); err != nil {
			return nil, err
		}
	}
	if err := st.FinishRecordWith(ctx, rec.ID, ending.Status, ending.Message, ending.End, held); err != nil {
		return nil, err
	}
	return ending, nil
}

// heldOutcomes are the stage outcomes the workflow held when it closed: what the
// last stage to succeed handed back (writing them again is harmless).
func heldOutcomes(ctx context.Context, hr Temporal, workflowID string) ([]model.StageUpdate, error) {
	it := hr.GetWorkflowHistory(ctx, workflowID, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	stages := map[int64]bool{} // scheduled event IDs of stage activities
	var held []model.StageUpdate
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("read the history of workflow %s: %w", workflowID, err)
		}
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetActivityType().GetName() == stageActivity {
			stages[ev.GetEventId()] = true
		}
		a := ev.GetActivityTaskCompletedEventAttributes()
		if a == nil || !stages[a.GetScheduledEventId()] {
			continue
		}
		var outcomes []model.StageUpdate
		if a.GetResult() != nil {
			if err := converter.GetDefaultDataConverter().FromPayloads(a.GetResult(), &outcomes); err != nil {
				return nil, fmt.Errorf("stage result in the history of workflow %s: %w", workflowID, err)
			}
		}
		held = outcomes
	}
	return held, nil
}

// workflowEnding describes the workflow and tells the ending its record should have,
// nil while the workflow runs.
func workflowEnding(ctx context.Context, tc Temporal, workflowID string) (*Ending, error) {
	desc, err := tc.DescribeWorkflowExecution(ctx, workflowID, "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return &Ending{Status: model.StatusFailed, Message: "the record's workflow does not exist in Temporal", End: time.Now()}, nil
	}
	if err != nil {
		return nil, err
	}
	info := desc.GetWorkflowExecutionInfo()
	status, message := terminalStatus(info.GetStatus())
	if status == "" {
		return nil, nil // still running: the workflow will write its own ending
	}
	end := time.Now()
	if ct := info.GetCloseTime(); ct != nil {
		end = ct.AsTime()
	}
	return &Ending{Status: status, Message: message, End: end, known: true}, nil
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
