package api

import (
	"errors"
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
	ctx := c.Request().Context()
	pipelines, total, err := h.store.ListPipelines(ctx, proj.ID, o)
	if err != nil {
		return err
	}
	items := make([]*model.ListedPipeline, 0, len(pipelines))
	for _, p := range pipelines {
		p.Redact()
		lp := &model.ListedPipeline{Pipeline: p}
		for _, q := range []struct {
			n      int64
			status string
			dst    *[]*model.Record
		}{
			{recent["recentCount"], "", &lp.RecentRecords},
			{recent["recentSuccessCount"], model.StatusSuccess, &lp.RecentSuccessRecords},
			{recent["recentFailedCount"], model.StatusFailed, &lp.RecentFailedRecords},
		} {
			if q.n == 0 {
				continue
			}
			if *q.dst, err = h.store.RecentRecords(ctx, p.ID, q.status, q.n); err != nil {
				return err
			}
		}
		items = append(items, lp)
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
	if err := h.store.CreatePipeline(c.Request().Context(), p); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return alreadyExists("pipeline", p.Name)
		}
		return err
	}
	p.Redact()
	return c.JSON(http.StatusCreated, p)
}

func (h *handlers) getPipeline(c echo.Context) error {
	_, p, err := h.pipeline(c)
	if err != nil {
		return err
	}
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
	if err := h.store.UpdatePipeline(c.Request().Context(), proj.ID, old.Name, p); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return alreadyExists("pipeline", p.Name)
		}
		return err
	}
	p.Redact()
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
	return c.NoContent(http.StatusNoContent)
}

// stopPipeline runs the deletion hooks and cancels the pipeline's unfinished records.
func (h *handlers) stopPipeline(c echo.Context, proj *model.Project, p *model.Pipeline) error {
	ctx := c.Request().Context()
	if h.hooks.BeforePipelineDelete != nil {
		if err := h.hooks.BeforePipelineDelete(ctx, proj, p); err != nil {
			return err
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
