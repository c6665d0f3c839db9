package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// maxRecent bounds recentCount and its siblings.
const maxRecent = 100

func (h *handlers) pipeline(c echo.Context) (*model.Project, *model.Pipeline, error) {
	proj, err := h.project(c)
	if err != nil {
		return nil, nil, err
	}
	name := c.Param("pipeline")
	p, err := h.store.GetPipeline(c.Request().Context(), proj.ID, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, notFound("pipeline", name)
	}
	return proj, p, err
}

func (h *handlers) listPipelines(c echo.Context) error {
	proj, err := h.project(c)
	if err != nil {
		return err
	}
	o, err := listOptions(c)
	if err != nil {
		return err
	}
	recent := map[string]int64{}
	for _, name := range []string{"recentCount", "recentSuccessCount", "recentFailedCount"} {
		if recent[name], err = intParam(c, name, 0, 0, maxRecent); err != nil {
			return err
		}
	}
	rc := store.RecentCounts{All: recent["recentCount"], Success: recent["recentSuccessCount"], Failed: recent["recentFailedCount"]}
	items, total, err := h.store.ListPipelinesRecent(c.Request().Context(), proj.ID, o, rc)
	if err != nil {
		return err
	}
	for _, lp := range items {
		lp.Redact()
	}
	return renderList(c, items, total)
}

func (h *handlers) decodePipeline(c echo.Context, owner string) (*model.Pipeline, error) {
	var p model.Pipeline
	if err := decodeJSON(c, &p); err != nil {
		return nil, err
	}
	if err := p.NormalizeAndValidate(); err != nil {
		return nil, err
	}
	if err := checkWebhookConfig(&p); err != nil {
		return nil, err
	}
	if err := h.checkCodeScan(c.Request().Context(), &p); err != nil {
		return nil, err
	}
	if p.Owner == "" {
		p.Owner = owner
	}
	return &p, nil
}

func (h *handlers) createPipeline(c echo.Context) error {
	proj, err := h.project(c)
	if err != nil {
		return err
	}
	p, err := h.decodePipeline(c, c.Request().Header.Get(HeaderUser))
	if err != nil {
		return err
	}
	p.ProjectID = proj.ID
	if p.WebhookSecret == "" {
		if p.WebhookSecret, err = newWebhookSecret(); err != nil {
			return err
		}
	}
	secret := p.WebhookSecret
	ctx := c.Request().Context()
	if err := h.store.CreatePipeline(ctx, p); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return alreadyExists("pipeline", p.Name)
		}
		return err
	}
	// Schedules are made from the stored pipeline: its secrets are sealed by now.
	err = h.syncSchedules(ctx, proj, p, 0)
	if err == nil {
		err = h.registerNewPipelineHook(ctx, proj, p, secret)
	}
	if err != nil {
		bg := context.WithoutCancel(ctx)
		if h.schedules != nil {
			_ = h.schedules.DeleteSchedules(bg, p)
		}
		if delErr := h.store.DeletePipeline(bg, p.ID); delErr != nil {
			h.log.Error("roll back pipeline after failed schedule sync", "pipeline", p.ID, "error", delErr)
		}
		return err
	}
	h.describeSchedules(ctx, p)
	p.Redact()
	h.showSVNHookURL(ctx, p)
	return c.JSON(http.StatusCreated, p)
}

func (h *handlers) getPipeline(c echo.Context) error {
	_, p, err := h.pipeline(c)
	if err != nil {
		return err
	}
	h.describeSchedules(c.Request().Context(), p)
	p.Redact()
	return c.JSON(http.StatusOK, p)
}

func (h *handlers) updatePipeline(c echo.Context) error {
	proj, old, err := h.pipeline(c)
	if err != nil {
		return err
	}
	p, err := h.decodePipeline(c, old.Owner)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	hooks, err := h.prepareHookUpdate(ctx, proj, old, p)
	if err != nil {
		return err
	}
	if err := h.store.UpdatePipeline(ctx, proj.ID, old.Name, p); err != nil {
		hooks.rollback(context.WithoutCancel(ctx))
		if errors.Is(err, store.ErrConflict) {
			return alreadyExists("pipeline", p.Name)
		}
		return err
	}
	if err := h.syncSchedules(ctx, proj, p, len(cronsOf(old))); err != nil {
		// Put the pipeline, its schedules and its webhook back as they were.
		bg := context.WithoutCancel(ctx)
		hooks.rollback(bg)
		if rbErr := h.store.UpdatePipeline(bg, proj.ID, p.Name, old); rbErr != nil {
			h.log.Error("roll back pipeline after failed schedule sync", "pipeline", old.ID, "error", rbErr)
		} else if rbErr := h.syncSchedules(bg, proj, old, len(cronsOf(p))); rbErr != nil {
			h.log.Error("restore schedules after failed sync", "pipeline", old.ID, "error", rbErr)
		}
		return err
	}
	hooks.commit(ctx)
	h.describeSchedules(ctx, p)
	p.Redact()
	h.showSVNHookURL(ctx, p)
	return c.JSON(http.StatusOK, p)
}

func (h *handlers) deletePipeline(c echo.Context) error {
	proj, p, err := h.pipeline(c)
	if err != nil {
		return err
	}
	if err := h.stopPipeline(c, proj, p); err != nil {
		return err
	}
	if err := h.store.DeletePipeline(c.Request().Context(), p.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	h.removeHook(context.WithoutCancel(c.Request().Context()), proj, p, p.Webhook)
	h.deleteSonarProject(c.Request().Context(), proj, p)
	return c.NoContent(http.StatusNoContent)
}

// stopPipeline runs the deletion hooks and cancels the pipeline's unfinished records.
func (h *handlers) stopPipeline(c echo.Context, proj *model.Project, p *model.Pipeline) error {
	ctx := c.Request().Context()
	if h.schedules != nil && len(cronsOf(p)) > 0 {
		if err := h.schedules.DeleteSchedules(ctx, p); err != nil {
			return &Unavailable{Service: "temporal", Err: err}
		}
	}
	for _, status := range []string{model.StatusPending, model.StatusRunning} {
		recs, _, err := h.store.ListRecords(ctx, p.ID, store.ListOptions{Filter: map[string]string{"status": status}})
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := h.cancelRun(ctx, r.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

func cronsOf(p *model.Pipeline) []model.Cron {
	if p.AutoTrigger == nil || p.AutoTrigger.CronTrigger == nil {
		return nil
	}
	return p.AutoTrigger.CronTrigger.Crons
}

// syncSchedules turns the pipeline's crons into Temporal Schedules; a cron Temporal
// refuses is a 400 naming it, Temporal being unreachable a 503.
func (h *handlers) syncSchedules(ctx context.Context, proj *model.Project, p *model.Pipeline, previous int) error {
	if h.schedules == nil || (previous == 0 && len(cronsOf(p)) == 0) {
		return nil
	}
	err := h.schedules.SyncSchedules(ctx, proj, p, previous)
	var cronErr interface{ CronIndex() int }
	switch {
	case err == nil:
		return nil
	case errors.As(err, &cronErr):
		i := cronErr.CronIndex()
		return invalidField(fmt.Sprintf("autoTrigger.cronTrigger.crons[%d].expression", i),
			"%q is not a valid cron expression", cronsOf(p)[i].Expression)
	}
	return &Unavailable{Service: "temporal", Err: err}
}

// describeSchedules adds next run times and paused states; without Temporal the
// pipeline is shown without them.
func (h *handlers) describeSchedules(ctx context.Context, p *model.Pipeline) {
	if h.schedules == nil || len(cronsOf(p)) == 0 {
		return
	}
	if err := h.schedules.DescribeSchedules(ctx, p); err != nil {
		h.log.Warn("describe the pipeline's schedules", "pipeline", p.ID, "error", err)
	}
}
