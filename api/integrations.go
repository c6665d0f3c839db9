package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/sonar"
	"github.com/cycloneci/cyclone/internal/store"
)

// ReasonSonarUnreachable: the SonarQube server of an integration could not be
// reached or failed, so its token could not be checked.
const ReasonSonarUnreachable = "SonarQubeUnreachable"

// IntegrationStore keeps the integrations (SonarQube servers) pipelines name.
type IntegrationStore interface {
	CreateIntegration(ctx context.Context, in *model.Integration) error
	GetIntegration(ctx context.Context, name string) (*model.Integration, error)
	ListIntegrations(ctx context.Context, o store.ListOptions) ([]*model.Integration, int64, error)
	UpdateIntegration(ctx context.Context, name string, in *model.Integration) error
	DeleteIntegration(ctx context.Context, name string) error
	IntegrationSecret(ctx context.Context, name string) (*store.IntegrationSecret, error)
	// IntegrationUsers returns up to limit pipelines that scan with the integration,
	// and how many do.
	IntegrationUsers(ctx context.Context, name string, limit int64) ([]*model.Pipeline, int64, error)
}

// SonarQube talks to SonarQube servers: it checks an integration's token, and
// deletes a deleted pipeline's SonarQube project. Errors wrap the sonar package's
// (sonar.ErrBadURL, sonar.ErrUnauthorized, sonar.ErrUnreachable, ...).
type SonarQube interface {
	Validate(ctx context.Context, address, token string) error
	DeleteProject(ctx context.Context, address, token, projectKey string) error
}

// sonarTimeout bounds a call to SonarQube made while a client waits.
const sonarTimeout = 15 * time.Second

func (h *handlers) integrationStore() (IntegrationStore, error) {
	if h.integrations == nil {
		return nil, &Unavailable{Service: "integrations", Err: errors.New("no integration store configured")}
	}
	return h.integrations, nil
}

func (h *handlers) listIntegrations(c echo.Context) error {
	is, err := h.integrationStore()
	if err != nil {
		return err
	}
	o, err := listOptions(c)
	if err != nil {
		return err
	}
	items, total, err := is.ListIntegrations(c.Request().Context(), o)
	if err != nil {
		return err
	}
	for _, in := range items {
		in.Redact()
	}
	return renderList(c, items, total)
}

func (h *handlers) integration(c echo.Context) (IntegrationStore, *model.Integration, error) {
	is, err := h.integrationStore()
	if err != nil {
		return nil, nil, err
	}
	name := c.Param("integration")
	in, err := is.GetIntegration(c.Request().Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, notFound("integration", name)
	}
	return is, in, err
}

func (h *handlers) getIntegration(c echo.Context) error {
	_, in, err := h.integration(c)
	if err != nil {
		return err
	}
	in.Redact()
	return c.JSON(http.StatusOK, in)
}

func (h *handlers) createIntegration(c echo.Context) error {
	is, err := h.integrationStore()
	if err != nil {
		return err
	}
	var in model.Integration
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if err := in.NormalizeAndValidate(); err != nil {
		return err
	}
	if in.SonarQube.Token == "" {
		return invalidField("sonarqube.token", "is required")
	}
	ctx := c.Request().Context()
	if err := h.checkSonarToken(ctx, in.SonarQube.Address, in.SonarQube.Token); err != nil {
		return err
	}
	if err := is.CreateIntegration(ctx, &in); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return alreadyExists("integration", in.Name)
		}
		return err
	}
	in.Redact()
	return c.JSON(http.StatusCreated, &in)
}

func (h *handlers) updateIntegration(c echo.Context) error {
	is, old, err := h.integration(c)
	if err != nil {
		return err
	}
	var in model.Integration
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	// Name and type cannot change; a body may leave them out.
	if in.Name == "" {
		in.Name = old.Name
	}
	if in.Name != old.Name {
		return invalidField("name", "cannot be changed (from %q to %q)", old.Name, in.Name)
	}
	if in.Type == "" {
		in.Type = old.Type
	}
	if err := in.NormalizeAndValidate(); err != nil {
		return err
	}
	if in.Type != old.Type {
		return invalidField("type", "cannot be changed (from %q to %q)", old.Type, in.Type)
	}
	ctx := c.Request().Context()
	switch {
	case in.SonarQube.Token != "":
		if err := h.checkSonarToken(ctx, in.SonarQube.Address, in.SonarQube.Token); err != nil {
			return err
		}
	case old.SonarQube == nil || old.SonarQube.Address != in.SonarQube.Address:
		// A kept token never follows the integration to another server.
		return invalidField("sonarqube.token", "is required when the address changes")
	}
	if err := is.UpdateIntegration(ctx, old.Name, &in); err != nil {
		return err
	}
	in.Redact()
	return c.JSON(http.StatusOK, &in)
}

func (h *handlers) deleteIntegration(c echo.Context) error {
	is, in, err := h.integration(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	// A pipeline's scans, and the removal of its SonarQube project when it is
	// deleted, need the integration.
	users, n, err := is.IntegrationUsers(ctx, in.Name, 10)
	if err != nil {
		return err
	}
	if n > 0 {
		names := make([]string, 0, len(users))
		for _, p := range users {
			names = append(names, p.Name)
		}
		return &Error{Status: http.StatusConflict, Reason: ReasonConflict,
			Message: fmt.Sprintf("integration %q is used by the codeScan stage of %d pipeline(s); change or delete them first", in.Name, n),
			Details: map[string]any{"kind": "integration", "name": in.Name, "pipelines": names}}
	}
	if err := is.DeleteIntegration(ctx, in.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// checkSonarToken asks SonarQube whether it takes the token: a refused token or a
// refused address is the client's mistake (400), a server that cannot be reached a
// 502 that says so.
func (h *handlers) checkSonarToken(ctx context.Context, address, token string) error {
	if h.sonar == nil {
		return &Unavailable{Service: "sonarqube", Err: errors.New("no SonarQube client configured")}
	}
	ctx, cancel := context.WithTimeout(ctx, sonarTimeout)
	defer cancel()
	err := h.sonar.Validate(ctx, address, token)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sonar.ErrBadURL):
		return invalidField("sonarqube.address", "%s", err.Error())
	case errors.Is(err, sonar.ErrUnauthorized), errors.Is(err, sonar.ErrForbidden):
		return invalidField("sonarqube.token", "SonarQube at %s refused the token", address)
	case errors.Is(err, sonar.ErrNotFound):
		return invalidField("sonarqube.address", "%s does not serve the SonarQube Web API (api/authentication/validate not found)", address)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &Error{Status: http.StatusBadGateway, Reason: ReasonSonarUnreachable,
			Message: "SonarQube at " + address + " did not answer within " + sonarTimeout.String(),
			Details: map[string]any{"field": "sonarqube.address"}}
	}
	return &Error{Status: http.StatusBadGateway, Reason: ReasonSonarUnreachable,
		Message: "SonarQube could not be reached or failed, so the token could not be checked: " + err.Error(),
		Details: map[string]any{"field": "sonarqube.address"}}
}

// checkCodeScan makes a pipeline's codeScan name an integration that exists.
func (h *handlers) checkCodeScan(ctx context.Context, p *model.Pipeline) error {
	if p.Build == nil || p.Build.Stages == nil || p.Build.Stages.CodeScan == nil || p.Build.Stages.CodeScan.SonarQube == nil {
		return nil
	}
	const field = "build.stages.codeScan.sonarqube.name"
	name := p.Build.Stages.CodeScan.SonarQube.Name
	if name == "" {
		return invalidField(field, "is required")
	}
	if h.integrations == nil {
		return nil
	}
	if _, err := h.integrations.GetIntegration(ctx, name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return invalidField(field, "integration %q does not exist", name)
		}
		return err
	}
	return nil
}

// deleteSonarProject deletes the SonarQube project of a deleted pipeline that scans
// its code there. It never fails the deletion: a SonarQube that is down or a token
// since revoked leaves the project behind, and the log says so.
func (h *handlers) deleteSonarProject(ctx context.Context, proj *model.Project, p *model.Pipeline) {
	if h.integrations == nil || h.sonar == nil || p.Build == nil || p.Build.Stages == nil ||
		p.Build.Stages.CodeScan == nil || p.Build.Stages.CodeScan.SonarQube == nil {
		return
	}
	name := p.Build.Stages.CodeScan.SonarQube.Name
	key := sonar.ProjectKey(proj.Name, p.Name)
	log := h.log.With("project", proj.Name, "pipeline", p.Name, "integration", name, "sonarProject", key)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sonarTimeout)
	defer cancel()
	sec, err := h.integrations.IntegrationSecret(ctx, name)
	if err != nil {
		log.Warn("the deleted pipeline's SonarQube project is left behind: cannot read the integration", "error", err)
		return
	}
	if err := h.sonar.DeleteProject(ctx, sec.Address, sec.Token, key); err != nil {
		log.Warn("the deleted pipeline's SonarQube project is left behind", "error", err)
		return
	}
	log.Info("deleted the pipeline's SonarQube project")
}
