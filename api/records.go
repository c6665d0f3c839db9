package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/reconcile"
	"github.com/cycloneci/cyclone/internal/store"
)

func (h *handlers) record(c echo.Context) (*model.Project, *model.Pipeline, *model.Record, error) {
	proj, p, err := h.pipeline(c)
	if err != nil {
		return nil, nil, nil, err
	}
	id := c.Param("record")
	r, err := h.store.GetRecord(c.Request().Context(), p.ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil, notFound("record", id)
	}
	return proj, p, r, err
}

func (h *handlers) listRecords(c echo.Context) error {
	_, p, err := h.pipeline(c)
	if err != nil {
		return err
	}
	o, err := listOptions(c)
	if err != nil {
		return err
	}
	items, total, err := h.store.ListRecords(c.Request().Context(), p.ID, o)
	if err != nil {
		return err
	}
	return renderList(c, items, total)
}

func (h *handlers) createRecord(c echo.Context) error {
	proj, p, err := h.pipeline(c)
	if err != nil {
		return err
	}
	var params model.PerformParams
	if err := decodeJSON(c, &params); err != nil {
		return err
	}
	return h.startUserRecord(c, proj, p, params)
}

// startUserRecord checks params against the pipeline, starts a record of them with
// trigger user and answers it, 201.
func (h *handlers) startUserRecord(c echo.Context, proj *model.Project, p *model.Pipeline, params model.PerformParams) error {
	if err := params.NormalizeAndValidate(p); err != nil {
		return err
	}
	if len(params.Stages) == 0 {
		params.Stages = p.Build.Stages.Configured()
	}
	id := uuid.NewString()
	rec := &model.Record{
		ID:            id,
		Name:          params.Name,
		ProjectID:     proj.ID,
		PipelineID:    p.ID,
		Trigger:       model.TriggerUser,
		PerformParams: &params,
		StageStatus:   &model.StageStatus{},
		Status:        model.StatusPending,
		WorkflowID:    id,
	}
	if err := h.startRecord(c.Request().Context(), proj, p, rec); err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, rec)
}

// rerunRecord starts a new record of the pipeline with a finished record's
// parameters (an idea of the Rancher pipeline API): the same ref, stages,
// description and createScmTag, a fresh name, against the pipeline as it is now.
func (h *handlers) rerunRecord(c echo.Context) error {
	proj, p, old, err := h.record(c)
	if err != nil {
		return err
	}
	if !model.IsTerminal(old.Status) {
		return &Error{Status: http.StatusConflict, Reason: ReasonInvalidStateChange,
			Message: "only a finished record can be rerun; this one is " + old.Status,
			Details: map[string]any{"status": old.Status}}
	}
	var params model.PerformParams
	if old.PerformParams != nil {
		params = *old.PerformParams
		params.Stages = append([]string(nil), old.PerformParams.Stages...)
	}
	params.Name = "" // a fresh name; the commit an SCM event named, if any, is built again
	return h.startUserRecord(c, proj, p, params)
}

// startRecord writes a new record and starts its workflow (ID = record ID). A record
// with the same ID already there is store.ErrConflict and starts nothing; a start
// that fails leaves no record behind and is Unavailable (503: retry).
func (h *handlers) startRecord(ctx context.Context, proj *model.Project, p *model.Pipeline, rec *model.Record) error {
	if err := h.store.CreateRecord(ctx, rec); err != nil {
		return err
	}
	runID, err := h.runs.Start(ctx, rec, proj, p)
	if err != nil {
		// A start that timed out may still have happened: keep the record then.
		bg := context.WithoutCancel(ctx)
		if started, _ := h.runs.Started(bg, rec.ID); started {
			return nil
		}
		// Leave no half-made record behind: the run never started.
		if delErr := h.store.DeleteRecord(bg, rec.ID); delErr != nil {
			h.log.Error("roll back record after failed start", "record", rec.ID, "error", delErr)
		}
		return &Unavailable{Service: "temporal", Err: err}
	}
	rec.RunID = runID
	return nil
}

func (h *handlers) getRecord(c echo.Context) error {
	_, _, r, err := h.record(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

func (h *handlers) deleteRecord(c echo.Context) error {
	_, _, r, err := h.record(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if !model.IsTerminal(r.Status) {
		if err := h.cancelRun(ctx, r.ID); err != nil {
			return err
		}
	}
	if err := h.store.DeleteRecord(ctx, r.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

type statusChange struct {
	Status string `json:"status"`
}

func (h *handlers) updateRecordStatus(c echo.Context) error {
	_, _, r, err := h.record(c)
	if err != nil {
		return err
	}
	var change statusChange
	if err := decodeJSON(c, &change); err != nil {
		return err
	}
	if change.Status != model.StatusAborted {
		return invalidField("status", "%q is not supported; only Aborted is", change.Status)
	}
	if model.IsTerminal(r.Status) {
		return &Error{Status: http.StatusConflict, Reason: ReasonInvalidStateChange,
			Message: "record is already " + r.Status + "; only Pending or Running records can be aborted",
			Details: map[string]any{"field": "status", "current": r.Status}}
	}
	ctx := c.Request().Context()
	if err := h.cancelRun(ctx, r.ID); err != nil {
		return err
	}
	closed, err := h.closeIfWorkflowClosed(ctx, r)
	if err != nil {
		return err
	}
	if closed != nil {
		return c.JSON(http.StatusOK, closed)
	}
	return c.JSON(http.StatusOK, h.awaitTerminal(ctx, r))
}

// closeIfWorkflowClosed finishes a record whose workflow had already closed when it
// was cancelled (terminated from the temporal CLI, say, before the reconciler's next
// pass): Temporal accepts a cancel of a closed workflow as a no-op, so the record
// would otherwise wait for the reconciler. The record gets the status the reconciler
// would give it, and is returned as stored; nil while the workflow runs (it writes
// its own ending) or when Temporal cannot tell, and the reconciler closes it later.
func (h *handlers) closeIfWorkflowClosed(ctx context.Context, r *model.Record) (*model.Record, error) {
	ending, err := reconcile.RecordIfKnown(ctx, h.store, h.runs, r)
	if err != nil {
		// The cancel was delivered: answer as for a running workflow.
		h.log.Warn("close aborted record if its workflow had closed", "record", r.ID, "error", err)
		return nil, nil
	}
	if ending == nil {
		return nil, nil
	}
	h.metrics.RecordFinished(ending.Status)
	h.log.Info("closed aborted record whose workflow had closed", "record", r.ID,
		"projectID", r.ProjectID, "pipelineID", r.PipelineID, "status", ending.Status, "reason", ending.Message)
	return h.store.GetRecord(ctx, r.PipelineID, r.ID)
}

// abortWait bounds how long an abort answer waits for the record to say Aborted; the
// running stage learns of the cancellation through its next heartbeat (about a second).
const abortWait = 3 * time.Second

// awaitTerminal re-reads the record until it is terminal or abortWait has passed, and
// returns the latest state it saw.
func (h *handlers) awaitTerminal(ctx context.Context, r *model.Record) *model.Record {
	deadline := time.Now().Add(abortWait)
	for !model.IsTerminal(r.Status) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return r
		case <-time.After(100 * time.Millisecond):
		}
		fresh, err := h.store.GetRecord(ctx, r.PipelineID, r.ID)
		if err != nil {
			return r
		}
		r = fresh
	}
	return r
}

// cancelRun cancels a record's run; Temporal being unreachable is a 503, so the
// client knows to retry.
func (h *handlers) cancelRun(ctx context.Context, recordID string) error {
	if err := h.runs.Cancel(ctx, recordID); err != nil {
		return &Unavailable{Service: "temporal", Err: err}
	}
	return nil
}
