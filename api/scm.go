package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
	"github.com/cycloneci/cyclone/internal/store"
)

// SCMOpener opens the SCM of a project's configuration (providers.New in
// production). The returned provider checks the server URL before any request.
type SCMOpener func(cfg scm.Config) (scm.Provider, error)

// Reasons of SCM errors.
const (
	ReasonSCMUnreachable = "SCMUnreachable"
	ReasonSCMRateLimited = "SCMRateLimited"
	ReasonSCMForbidden   = "SCMPermissionDenied"
)

// projectSCM opens the SCM of a stored project with its stored credentials.
func (h *handlers) projectSCM(ctx context.Context, p *model.Project) (scm.Provider, error) {
	if h.scm == nil {
		return nil, &Error{Status: http.StatusNotImplemented, Reason: ReasonUnavailable, Message: "this server has no SCM access configured"}
	}
	creds, err := h.store.ProjectCredentials(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	prov, err := h.scm(scm.Config{Type: p.SCM.Type, Server: p.SCM.Server, Credentials: scm.Credentials{
		Username: creds.SCMUsername, Password: creds.SCMPassword, Token: creds.SCMToken,
	}})
	if err != nil {
		return nil, scmError(err, "scm.token")
	}
	return prov, nil
}

// verifySCM checks a project's SCM credentials before they are saved. An update
// that gives no new secret for the same SCM and user keeps the stored credentials,
// checked when they were given: editing a project does not need the SCM up. When
// the SCM exchanges a username and password for a token, the token replaces the
// password, which is then not stored.
func (h *handlers) verifySCM(ctx context.Context, p, old *model.Project) error {
	if h.scm == nil {
		return nil
	}
	cfg := scm.Config{Type: p.SCM.Type, Server: p.SCM.Server, Credentials: scm.Credentials{
		Username: p.SCM.Username, Password: p.SCM.Password, Token: p.SCM.Token,
	}}
	if cfg.Password == "" && cfg.Token == "" && old != nil && old.SCM != nil &&
		old.SCM.Type == cfg.Type && old.SCM.Server == cfg.Server && old.SCM.Username == cfg.Username {
		return nil
	}
	if cfg.Password == "" && cfg.Token == "" {
		// A public repository needs none; the server URL is still checked.
		return scmError(scm.CheckURLOffline(cfg.Type, cfg.Server), "scm.token")
	}
	field := credentialField("scm", p.SCM)
	prov, err := h.scm(cfg)
	if err != nil {
		return scmError(err, field)
	}
	token, err := prov.Verify(ctx)
	if err != nil {
		return scmError(err, field)
	}
	if token != "" && p.SCM.Password != "" {
		p.SCM.Token, p.SCM.Password = token, ""
	}
	return nil
}

// credentialField names the request field whose credential the SCM refused.
func credentialField(prefix string, p *model.SCMConfig) string {
	if p != nil && p.Password != "" {
		return prefix + ".password"
	}
	return prefix + ".token"
}

// scmError maps an SCM error to the API's error. credField names the credential a
// refusal is blamed on ("scm.token" or "scm.password").
func scmError(err error, credField string) error {
	var apiErr *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &apiErr):
		return err
	case errors.Is(err, scm.ErrBadURL):
		return invalidField("scm.server", "%s", err.Error())
	case errors.Is(err, scm.ErrUnauthorized):
		return invalidField(credField, "the SCM refused the credentials")
	case errors.Is(err, scm.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Reason: ReasonNotFound, Message: "not found on the SCM"}
	case errors.Is(err, scm.ErrForbidden):
		return &Error{Status: http.StatusForbidden, Reason: ReasonSCMForbidden, Message: "the SCM credentials lack the permission for this"}
	case errors.Is(err, scm.ErrRateLimited):
		return &Error{Status: http.StatusServiceUnavailable, Reason: ReasonSCMRateLimited, Message: "the SCM's rate limit is exhausted, retry later"}
	case errors.Is(err, scm.ErrUnsupported):
		return &Error{Status: http.StatusBadRequest, Reason: ReasonInvalidField, Message: err.Error(), Details: map[string]any{"field": "scm.type"}}
	}
	// ErrUnreachable and anything unclassified: the SCM failed us.
	return &Error{Status: http.StatusBadGateway, Reason: ReasonSCMUnreachable, Message: "the SCM server could not be reached or failed: " + err.Error()}
}

// repoParam reads the required repo query parameter.
func repoParam(c echo.Context) (string, error) {
	repo := strings.TrimSpace(c.QueryParam("repo"))
	if repo == "" {
		return "", invalidField("repo", "is required")
	}
	if strings.ContainsAny(repo, "\x00\r\n") || strings.Contains(repo, "..") {
		return "", invalidField("repo", "%q is not a repository name", repo)
	}
	return repo, nil
}

// withSCM runs f with the SCM of the project in the path.
func (h *handlers) withSCM(c echo.Context, f func(ctx context.Context, prov scm.Provider) error) error {
	p, err := h.project(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	prov, err := h.projectSCM(ctx, p)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("project", p.Name)
	}
	if err != nil {
		return err
	}
	return f(ctx, prov)
}

func (h *handlers) listRepos(c echo.Context) error {
	return h.withSCM(c, func(ctx context.Context, prov scm.Provider) error {
		repos, err := prov.Repos(ctx)
		if err != nil {
			return scmError(err, "scm.token")
		}
		return renderList(c, repos, int64(len(repos)))
	})
}

func (h *handlers) listBranches(c echo.Context) error {
	return h.listRefs(c, scm.Provider.Branches)
}

func (h *handlers) listTags(c echo.Context) error {
	return h.listRefs(c, scm.Provider.Tags)
}

func (h *handlers) listRefs(c echo.Context, list func(scm.Provider, context.Context, string) ([]string, error)) error {
	repo, err := repoParam(c)
	if err != nil {
		return err
	}
	return h.withSCM(c, func(ctx context.Context, prov scm.Provider) error {
		names, err := list(prov, ctx, repo)
		if err != nil {
			return repoError(err, repo)
		}
		return renderList(c, names, int64(len(names)))
	})
}

func (h *handlers) getTemplateType(c echo.Context) error {
	repo, err := repoParam(c)
	if err != nil {
		return err
	}
	return h.withSCM(c, func(ctx context.Context, prov scm.Provider) error {
		t, err := prov.TemplateType(ctx, repo)
		if err != nil {
			return repoError(err, repo)
		}
		return c.JSON(http.StatusOK, map[string]string{"type": t})
	})
}

func repoError(err error, repo string) error {
	if errors.Is(err, scm.ErrNotFound) {
		return notFound("repo", repo)
	}
	return scmError(err, "scm.token")
}
