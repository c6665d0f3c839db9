package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"reflect"

	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// HeaderUser names the acting user; it fills owner fields a body leaves empty.
const HeaderUser = "X-User"

func (h *handlers) listProjects(c echo.Context) error {
	o, err := listOptions(c)
	if err != nil {
		return err
	}
	items, total, err := h.store.ListProjects(c.Request().Context(), o)
	if err != nil {
		return err
	}
	for _, p := range items {
		p.Redact()
	}
	return renderList(c, items, total)
}

func (h *handlers) createProject(c echo.Context) error {
	var p model.Project
	if err := decodeJSON(c, &p); err != nil {
		return err
	}
	if err := p.NormalizeAndValidate(); err != nil {
		return err
	}
	if p.Owner == "" {
		p.Owner = c.Request().Header.Get(HeaderUser)
	}
	ctx := c.Request().Context()
	if err := h.verifySCM(ctx, &p, nil); err != nil {
		return err
	}
	if p.Name != "" {
		if err := h.store.CreateProject(ctx, &p); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return alreadyExists("project", p.Name)
			}
			return err
		}
	} else if err := h.createWithGeneratedName(c, &p); err != nil {
		return err
	}
	p.Redact()
	return c.JSON(http.StatusCreated, &p)
}

// createWithGeneratedName derives the name from the alias, adding a random suffix
// when the plain name is taken.
func (h *handlers) createWithGeneratedName(c echo.Context, p *model.Project) error {
	base := model.NameFromAlias(p.Alias)
	if base == "" {
		return invalidField("name", "is required when alias does not yield a valid name")
	}
	p.Name = base
	for attempt := 0; attempt < 5; attempt++ {
		err := h.store.CreateProject(c.Request().Context(), p)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		p.Name = base + "-" + randomSuffix()
	}
	return alreadyExists("project", base)
}

func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (h *handlers) project(c echo.Context) (*model.Project, error) {
	name := c.Param("project")
	p, err := h.store.GetProject(c.Request().Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("project", name)
	}
	return p, err
}

func (h *handlers) getProject(c echo.Context) error {
	p, err := h.project(c)
	if err != nil {
		return err
	}
	p.Redact()
	return c.JSON(http.StatusOK, p)
}

func (h *handlers) updateProject(c echo.Context) error {
	old, err := h.project(c)
	if err != nil {
		return err
	}
	var p model.Project
	if err := decodeJSON(c, &p); err != nil {
		return err
	}
	if p.Name == "" {
		p.Name = old.Name
	}
	if err := p.NormalizeAndValidate(); err != nil {
		return err
	}
	if p.Owner == "" {
		p.Owner = old.Owner
	}
	if err := h.verifySCM(c.Request().Context(), &p, old); err != nil {
		return err
	}
	if err := h.store.UpdateProject(c.Request().Context(), old.Name, &p); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return alreadyExists("project", p.Name)
		}
		return err
	}
	if p.Name != old.Name || !reflect.DeepEqual(p.Worker, old.Worker) {
		h.resyncProjectSchedules(c.Request().Context(), &p)
	}
	p.Redact()
	return c.JSON(http.StatusOK, &p)
}

// resyncProjectSchedules rewrites the cron schedules of the project's pipelines,
// whose records carry the project's name, cloud, namespace and worker quota as they
// were when a schedule was written. The project is saved by then: a schedule
// Temporal does not take now is logged and caught up at its pipeline's next update.
func (h *handlers) resyncProjectSchedules(ctx context.Context, proj *model.Project) {
	pipelines, _, err := h.store.ListPipelines(ctx, proj.ID, store.ListOptions{})
	if err != nil {
		h.log.Warn("resync the project's cron schedules", "project", proj.Name, "error", err)
		return
	}
	for _, p := range pipelines {
		if n := len(cronsOf(p)); n > 0 {
			if err := h.syncSchedules(ctx, proj, p, n); err != nil {
				h.log.Warn("resync a pipeline's cron schedules", "project", proj.Name, "pipeline", p.Name, "error", err)
			}
		}
	}
}

func (h *handlers) deleteProject(c echo.Context) error {
	p, err := h.project(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	pipelines, _, err := h.store.ListPipelines(ctx, p.ID, store.ListOptions{})
	if err != nil {
		return err
	}
	for _, pl := range pipelines {
		if err := h.stopPipeline(c, p, pl); err != nil {
			return err
		}
	}
	// The pipelines' webhooks go from the SCM while the project's credentials, which
	// remove them, are still stored; best effort, as a pipeline's deletion does.
	for _, pl := range pipelines {
		h.removePipelineHook(context.WithoutCancel(ctx), p, pl)
	}
	if err := h.store.DeleteProject(ctx, p.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	for _, pl := range pipelines {
		h.deleteSonarProject(ctx, p, pl)
	}
	return c.NoContent(http.StatusNoContent)
}

// removePipelineHook removes the SCM webhook of one of the project's pipelines,
// reading the pipeline again: a listed pipeline may not carry the webhook recorded
// after it was stored. A failure is logged, as removeHook's are.
func (h *handlers) removePipelineHook(ctx context.Context, proj *model.Project, listed *model.Pipeline) {
	if h.hooks == nil {
		return
	}
	p, err := h.hooks.GetPipelineByID(ctx, listed.ID)
	if err != nil {
		h.log.Warn("could not read the pipeline to delete its webhook on the SCM; delete it by hand", "pipeline", listed.ID, "error", err)
		return
	}
	h.removeHook(ctx, proj, p, p.Webhook)
}
