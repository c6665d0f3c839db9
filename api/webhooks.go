package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/internal/webhook"
)

// WebhookBodyMax bounds webhook deliveries: GitHub caps its payloads at 25 MB.
const WebhookBodyMax = 25 << 20

// ReasonCreateWebhookPermissionDenied: the project's SCM credentials may not register
// the pipeline's webhook (no admin rights on the repository, or refused).
const ReasonCreateWebhookPermissionDenied = "CreateWebhookPermissionDenied"

// The webhook routes. They are outside the bearer-token guard: a delivery proves
// itself with the pipeline's secret (GitHub's HMAC signature, GitLab's token) or,
// for Subversion, the token in the hook URL.
const (
	routeGitHubWebhook = "/api/v1/pipelines/:pipelineid/githubwebhook"
	routeGitLabWebhook = "/api/v1/pipelines/:pipelineid/gitlabwebhook"
	routeSVNHook       = "/api/v1/subversion/:svnrepoid/postcommithook"
)

func isWebhookRoute(p string) bool {
	return p == routeGitHubWebhook || p == routeGitLabWebhook || p == routeSVNHook
}

// WebhookStore is what the webhook endpoints and the webhook registration need from
// persistence beyond Store.
type WebhookStore interface {
	GetPipelineByID(ctx context.Context, id string) (*model.Pipeline, error)
	GetProjectByID(ctx context.Context, id string) (*model.Project, error)
	PipelineWebhookSecret(ctx context.Context, pipelineID string) (string, error)
	SetPipelineWebhook(ctx context.Context, pipelineID string, h *model.PipelineWebhook) error
	PipelinesBySVNRepo(ctx context.Context, repoID string) ([]*model.Pipeline, error)
	WebhookKey(ctx context.Context) ([]byte, error)
}

// webhookRegistrar registers webhooks on a repository: the webhook half of an
// scm.Provider.
type webhookRegistrar interface {
	CreateWebhook(ctx context.Context, repo string, h scm.Webhook) (id string, err error)
	DeleteWebhook(ctx context.Context, repo, id string) error
}

// globalBodyLimit is the server's body limit for every route but the webhooks, which
// have their own (WebhookBodyMax).
func globalBodyLimit(max int64) echo.MiddlewareFunc {
	return middleware.BodyLimitWithConfig(middleware.BodyLimitConfig{
		Limit:   fmt.Sprintf("%dB", max),
		Skipper: func(c echo.Context) bool { return isWebhookRoute(c.Path()) },
	})
}

func (h *handlers) registerWebhookRoutes(e *echo.Echo) {
	limit := bodyLimit(WebhookBodyMax)
	e.POST(routeGitHubWebhook, h.githubWebhook, limit)
	e.POST(routeGitLabWebhook, h.gitlabWebhook, limit)
	e.POST(routeSVNHook, h.svnPostCommit, limit)
}

// hookAnswer is every webhook answer but an error.
type hookAnswer struct {
	Message  string   `json:"message"`
	RecordID string   `json:"recordID,omitempty"`
	Records  []string `json:"records,omitempty"`
}

func hookUnauthorized(err error) *Error {
	return &Error{Status: http.StatusUnauthorized, Reason: ReasonUnauthorized, Message: err.Error()}
}

// readHookBody reads a delivery's body within WebhookBodyMax: 413 beyond it.
func readHookBody(c echo.Context) ([]byte, error) {
	body, err := io.ReadAll(c.Request().Body)
	var tooLarge *http.MaxBytesError
	var httpErr *echo.HTTPError
	switch {
	case err == nil:
		return body, nil
	case errors.As(err, &tooLarge), errors.As(err, &httpErr) && httpErr.Code == http.StatusRequestEntityTooLarge:
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Reason: ReasonTooLarge,
			Message: fmt.Sprintf("request body is larger than the limit of %d bytes", WebhookBodyMax)}
	}
	return nil, &Error{Status: http.StatusBadRequest, Reason: ReasonInvalidField, Message: "could not read the body: " + err.Error()}
}

// hookPipeline finds the pipeline a delivery is addressed to, and its project.
func (h *handlers) hookPipeline(c echo.Context) (*model.Project, *model.Pipeline, error) {
	if h.hooks == nil {
		return nil, nil, &Unavailable{Service: "webhooks", Err: errors.New("no webhook store configured")}
	}
	ctx := c.Request().Context()
	id := c.Param("pipelineid")
	p, err := h.hooks.GetPipelineByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, notFound("pipeline", id)
	}
	if err != nil {
		return nil, nil, err
	}
	proj, err := h.hooks.GetProjectByID(ctx, p.ProjectID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, notFound("project", p.ProjectID)
	}
	return proj, p, err
}

// hookDelivery is a GitHub or GitLab delivery to a pipeline, read but not yet
// verified.
type hookDelivery struct {
	project  *model.Project
	pipeline *model.Pipeline
	body     []byte
	secret   string
	header   http.Header
}

// readDelivery reads a delivery to the pipeline in the path and the pipeline's
// webhook secret. verifyHeader, when set, checks the headers against the secret
// before the body is read (GitLab's token needs no body).
func (h *handlers) readDelivery(c echo.Context, verifyHeader func(secret string, hdr http.Header) error) (*hookDelivery, error) {
	proj, p, err := h.hookPipeline(c)
	if err != nil {
		return nil, err
	}
	secret, err := h.hooks.PipelineWebhookSecret(c.Request().Context(), p.ID)
	if err != nil {
		return nil, err
	}
	hdr := c.Request().Header
	if verifyHeader != nil {
		if err := verifyHeader(secret, hdr); err != nil {
			return nil, hookUnauthorized(err)
		}
	}
	body, err := readHookBody(c)
	if err != nil {
		return nil, err
	}
	return &hookDelivery{project: proj, pipeline: p, body: body, secret: secret, header: hdr}, nil
}

func (h *handlers) githubWebhook(c echo.Context) error {
	d, err := h.readDelivery(c, nil)
	if err != nil {
		return err
	}
	hdr := d.header
	if err := webhook.VerifyGitHub(d.secret, hdr.Get("X-Hub-Signature-256"), hdr.Get("X-Hub-Signature"), d.body); err != nil {
		return hookUnauthorized(err)
	}
	event := hdr.Get("X-GitHub-Event")
	if event == webhook.GitHubPing {
		return c.JSON(http.StatusOK, hookAnswer{Message: "pong"})
	}
	ev, err := webhook.ParseGitHub(event, hdr.Get("X-GitHub-Delivery"), d.body)
	return h.triggerPipeline(c, d.project, d.pipeline, ev, err)
}

func (h *handlers) gitlabWebhook(c echo.Context) error {
	d, err := h.readDelivery(c, func(secret string, hdr http.Header) error {
		return webhook.VerifyGitLab(secret, hdr.Get("X-Gitlab-Token"))
	})
	if err != nil {
		return err
	}
	hdr := d.header
	// GitLab 17.4+ sends Idempotency-Key, the same on every retry of a delivery.
	delivery := hdr.Get("Idempotency-Key")
	if delivery == "" {
		delivery = hdr.Get("X-Gitlab-Event-UUID")
	}
	ev, err := webhook.ParseGitLab(hdr.Get("X-Gitlab-Event"), delivery, d.body)
	return h.triggerPipeline(c, d.project, d.pipeline, ev, err)
}

// parseOutcome answers a delivery that parsed to no event: 200 for an ignored one,
// 400 naming the field for a malformed one.
func parseOutcome(c echo.Context, err error) error {
	var (
		ign *webhook.Ignored
		bad *webhook.MalformedError
	)
	switch {
	case errors.As(err, &ign):
		return c.JSON(http.StatusOK, hookAnswer{Message: "ignored: " + ign.Reason})
	case errors.As(err, &bad):
		field := bad.Field
		if field == "" {
			field = "body"
		}
		return invalidField(field, "%s", bad.Msg)
	}
	return err
}

// triggerPipeline starts the record a GitHub or GitLab event asks of a pipeline, or
// says why it starts none.
func (h *handlers) triggerPipeline(c echo.Context, proj *model.Project, p *model.Pipeline, ev *webhook.Event, err error) error {
	if err != nil {
		return parseOutcome(c, err)
	}
	src := mainSource(p)
	if src == nil {
		return invalidField("repository", "the pipeline checks out no repository")
	}
	if !webhook.SameRepo(src.URL(), ev) {
		return &Error{Status: http.StatusBadRequest, Reason: ReasonInvalidField,
			Message: fmt.Sprintf("repository: the payload names %q, not the pipeline's main code source %s", clipText(ev.Repo), src.URL()),
			Details: map[string]any{"field": "repository"}}
	}
	d := matchHook(p, ev, "")
	if !d.Run {
		return c.JSON(http.StatusOK, hookAnswer{Message: "ignored: " + d.Reason})
	}
	rec, existed, err := h.startHookRecord(c.Request().Context(), proj, p, ev, d)
	if err != nil {
		return err
	}
	if existed {
		return c.JSON(http.StatusOK, hookAnswer{Message: "already triggered: record " + rec.ID, RecordID: rec.ID})
	}
	return c.JSON(http.StatusOK, hookAnswer{Message: "triggered record " + rec.ID, RecordID: rec.ID})
}

// matchHook decides whether an SCM event starts a record of the pipeline: never
// while the pipeline is deactivated.
func matchHook(p *model.Pipeline, ev *webhook.Event, svnPath string) webhook.Decision {
	if !p.IsActive() {
		return webhook.Decision{Reason: "the pipeline is deactivated"}
	}
	return webhook.Match(scmTriggerOf(p), ev, svnPath)
}

func clipText(s string) string {
	if len(s) > 200 {
		return strings.ToValidUTF8(s[:200], "") + "..."
	}
	return s
}

func mainSource(p *model.Pipeline) *model.CodeSource {
	if p.Build == nil || p.Build.Stages == nil {
		return nil
	}
	return p.Build.Stages.CodeCheckout.Main()
}

func scmTriggerOf(p *model.Pipeline) *model.SCMTrigger {
	if p.AutoTrigger == nil {
		return nil
	}
	return p.AutoTrigger.SCMTrigger
}

// startHookRecord starts the record of an event for a pipeline. Its ID comes from the
// event (webhook.RecordID), so a redelivery finds the record already there: existed.
func (h *handlers) startHookRecord(ctx context.Context, proj *model.Project, p *model.Pipeline, ev *webhook.Event, d webhook.Decision) (*model.Record, bool, error) {
	params := model.PerformParams{Ref: ev.Ref, Commit: ev.SHA, Stages: d.Stages, Description: describeEvent(ev)}
	if err := params.NormalizeAndValidate(p); err != nil {
		return nil, false, err
	}
	if len(params.Stages) == 0 {
		params.Stages = p.Build.Stages.Configured()
	}
	id := webhook.RecordID(p.ID, ev)
	rec := &model.Record{
		ID:            id,
		ProjectID:     proj.ID,
		PipelineID:    p.ID,
		Trigger:       model.TriggerSCM,
		PerformParams: &params,
		StageStatus:   &model.StageStatus{},
		Status:        model.StatusPending,
		WorkflowID:    id,
	}
	err := h.startRecord(ctx, proj, p, rec)
	if errors.Is(err, store.ErrConflict) {
		return rec, true, nil
	}
	return rec, false, err
}

// describeEvent is a record's description: what started it, within the spec's 100
// characters.
func describeEvent(ev *webhook.Event) string {
	var s string
	switch ev.Kind {
	case webhook.KindPush:
		s = "push to " + ev.Branch
	case webhook.KindTagRelease:
		s = "tag " + ev.Tag
	case webhook.KindPullRequest:
		s = fmt.Sprintf("pull request #%d", ev.PRNumber)
	case webhook.KindPullRequestComment:
		s = fmt.Sprintf("comment on pull request #%d", ev.PRNumber)
	case webhook.KindPostCommit:
		s = "svn revision " + ev.SHA
	}
	if ev.SHA != "" && ev.Kind != webhook.KindPostCommit && len(ev.SHA) >= 7 {
		s += " at " + ev.SHA[:7]
	}
	for utf8.RuneCountInString(s) > model.MaxDescriptionLength {
		r := []rune(s)
		s = string(r[:model.MaxDescriptionLength])
	}
	return s
}

// svnPostCommit starts the records a Subversion commit asks of the pipelines building
// that repository.
func (h *handlers) svnPostCommit(c echo.Context) error {
	if h.hooks == nil {
		return &Unavailable{Service: "webhooks", Err: errors.New("no webhook store configured")}
	}
	ctx := c.Request().Context()
	repoID := strings.ToLower(c.Param("svnrepoid"))
	key, err := h.hooks.WebhookKey(ctx)
	if err != nil {
		return err
	}
	if err := webhook.VerifySVN(key, repoID, c.QueryParam("token")); err != nil {
		return hookUnauthorized(err)
	}
	body, err := readHookBody(c)
	if err != nil {
		return err
	}
	ev, err := webhook.ParseSVN(repoID, c.QueryParam("revision"), body)
	if err != nil {
		return parseOutcome(c, err)
	}
	pipelines, err := h.hooks.PipelinesBySVNRepo(ctx, repoID)
	if err != nil {
		return err
	}
	var started, skipped []string
	ans := hookAnswer{}
	for _, p := range pipelines {
		src := mainSource(p)
		var svnPath string
		if src != nil && src.OtherCodeSource != nil {
			svnPath = src.OtherCodeSource.Path
		}
		d := matchHook(p, ev, svnPath)
		if !d.Run {
			skipped = append(skipped, p.Name+": "+d.Reason)
			continue
		}
		proj, err := h.hooks.GetProjectByID(ctx, p.ProjectID)
		if err != nil {
			return err
		}
		rec, existed, err := h.startHookRecord(ctx, proj, p, ev, d)
		if err != nil {
			return err
		}
		ans.Records = append(ans.Records, rec.ID)
		if existed {
			started = append(started, rec.ID+" (already triggered)")
		} else {
			started = append(started, rec.ID)
		}
	}
	switch {
	case len(pipelines) == 0:
		ans.Message = "ignored: no pipeline builds repository " + repoID
	case len(started) == 0:
		ans.Message = "ignored: " + strings.Join(skipped, "; ")
	default:
		ans.Message = "triggered records " + strings.Join(started, ", ")
		if len(ans.Records) == 1 {
			ans.RecordID = ans.Records[0]
		}
	}
	return c.JSON(http.StatusOK, ans)
}

// --- Pipeline configuration and webhook registration ---

// checkWebhookConfig validates and normalises what a pipeline says about its
// webhooks; the server-kept webhook a client sends back is dropped.
func checkWebhookConfig(p *model.Pipeline) error {
	p.Webhook = nil
	p.SVNRepoID = strings.ToLower(strings.TrimSpace(p.SVNRepoID))
	if p.SVNRepoID != "" && !webhook.ValidSVNRepoID(p.SVNRepoID) {
		return invalidField("svnRepoID", "%q is not a repository UUID as `svnlook uuid` prints it", p.SVNRepoID)
	}
	if n := len(p.WebhookSecret); n > 0 && (n < 16 || n > 256) {
		return invalidField("webhookSecret", "must be 16 to 256 characters long")
	}
	t := scmTriggerOf(p)
	if t == nil {
		return nil
	}
	const prefix = "autoTrigger.scmTrigger."
	if t.Push != nil {
		for i, b := range t.Push.Branches {
			if !webhook.CheckBranchPattern(b) {
				return invalidField(fmt.Sprintf("%spush.branches[%d]", prefix, i), "%q is not a branch name or glob pattern", b)
			}
		}
	}
	if c := t.PullRequestComment; c != nil {
		n := 0
		for _, s := range c.Comments {
			if strings.TrimSpace(s) != "" {
				n++
			}
		}
		if n == 0 {
			return invalidField(prefix+"pullRequestComment.comments", "must list at least one comment (exact text or a glob with * and ?)")
		}
	}
	if t.PostCommit != nil {
		src := mainSource(p)
		if src == nil || !strings.EqualFold(src.Type, model.SCMSVN) {
			return invalidField(prefix+"postCommit", "needs a main code source of type SVN")
		}
		if p.SVNRepoID == "" {
			return invalidField("svnRepoID", "is required with a postCommit trigger: the repository UUID (`svn info --show-item repos-uuid <url>`)")
		}
	}
	return nil
}

// newWebhookSecret makes a pipeline's webhook secret.
func newWebhookSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// hookEvents are the scm.Event* a pipeline's trigger wants, sorted.
func hookEvents(t *model.SCMTrigger) []string {
	if t == nil {
		return nil
	}
	var out []string
	if t.Push != nil {
		out = append(out, scm.EventPush)
	}
	if t.TagRelease != nil {
		out = append(out, scm.EventTagRelease)
	}
	if t.PullRequest != nil {
		out = append(out, scm.EventPullRequest)
	}
	if t.PullRequestComment != nil {
		out = append(out, scm.EventPullRequestComment)
	}
	sort.Strings(out)
	return out
}

// hookTarget is the webhook p wants (without its ID on the SCM), nil for none: an
// SVN pipeline with a postCommit trigger gets its hook URL (without the token), a
// GitHub or GitLab one with git triggers its delivery URL.
func (h *handlers) hookTarget(p *model.Pipeline) *model.PipelineWebhook {
	t, src := scmTriggerOf(p), mainSource(p)
	if t == nil || src == nil {
		return nil
	}
	if t.PostCommit != nil && p.SVNRepoID != "" {
		return &model.PipelineWebhook{URL: h.publicURL + "/api/v1/subversion/" + p.SVNRepoID + "/postcommithook"}
	}
	events := hookEvents(t)
	if len(events) == 0 {
		return nil
	}
	var kind string
	switch {
	case strings.EqualFold(src.Type, model.SCMGithub):
		kind = "githubwebhook"
	case strings.EqualFold(src.Type, model.SCMGitlab):
		kind = "gitlabwebhook"
	default:
		return nil
	}
	return &model.PipelineWebhook{URL: h.publicURL + "/api/v1/pipelines/" + p.ID + "/" + kind,
		Repo: webhook.RepoPath(src.URL()), Events: events}
}

// registrar is the SCM a pipeline's webhook is registered on; nil when Cyclone does
// not register it: no SCM factory, an SVN hook, a code source on another SCM than
// the project's, or a project without credentials (the user adds the webhook by hand,
// with the URL shown and the secret they gave).
func (h *handlers) registrar(ctx context.Context, proj *model.Project, p *model.Pipeline, target *model.PipelineWebhook) (webhookRegistrar, string, error) {
	src := mainSource(p)
	if h.scm == nil || h.hooks == nil || target == nil || target.Repo == "" || proj.SCM == nil || src == nil ||
		!strings.EqualFold(src.Type, proj.SCM.Type) {
		return nil, "", nil
	}
	creds, err := h.store.ProjectCredentials(ctx, proj.ID)
	if err != nil {
		return nil, "", err
	}
	if creds.SCMToken == "" && creds.SCMPassword == "" {
		return nil, "", nil
	}
	repo := target.Repo
	// A server under a path (https://host/gitlab) is not part of the repository's name.
	if u, err := url.Parse(proj.SCM.Server); err == nil {
		if prefix := strings.Trim(u.Path, "/"); prefix != "" {
			repo = strings.TrimPrefix(repo, prefix+"/")
		}
	}
	r, err := h.scm(scm.Config{Type: proj.SCM.Type, Server: proj.SCM.Server, Credentials: scm.Credentials{
		Username: creds.SCMUsername, Password: creds.SCMPassword, Token: creds.SCMToken}})
	if err != nil {
		return nil, "", hookError(err, repo)
	}
	return r, repo, nil
}

// hookError maps an SCM's refusal to register a webhook to the answer.
func hookError(err error, repo string) error {
	details := map[string]any{"repo": repo}
	switch {
	case errors.Is(err, scm.ErrForbidden):
		return &Error{Status: http.StatusForbidden, Reason: ReasonCreateWebhookPermissionDenied,
			Message: "the project's SCM credentials lack admin rights on " + repo + " to create the pipeline's webhook", Details: details}
	case errors.Is(err, scm.ErrUnauthorized):
		return &Error{Status: http.StatusForbidden, Reason: ReasonCreateWebhookPermissionDenied,
			Message: "the SCM refused the project's credentials: cannot create the webhook on " + repo, Details: details}
	case errors.Is(err, scm.ErrNotFound):
		return invalidField("build.stages.codeCheckout.codeSources", "repository %s is not on the project's SCM or not visible to its credentials", repo)
	case errors.Is(err, scm.ErrBadURL), errors.Is(err, scm.ErrUnsupported):
		return invalidField("scm.server", "cannot create a webhook on the project's SCM: %v", err)
	}
	return &Unavailable{Service: "scm", Err: err}
}

// registerHook creates target on the SCM when Cyclone registers it, setting its ID.
func (h *handlers) registerHook(ctx context.Context, proj *model.Project, p *model.Pipeline, target *model.PipelineWebhook, secret string) error {
	r, repo, err := h.registrar(ctx, proj, p, target)
	if err != nil || r == nil {
		return err
	}
	id, err := r.CreateWebhook(ctx, repo, scm.Webhook{URL: target.URL, Secret: secret, Events: target.Events})
	if err != nil {
		return hookError(err, repo)
	}
	target.ID = id
	return nil
}

// removeHook deletes a webhook Cyclone registered, best effort: a hook left behind
// gets 404s, so a failure is logged, not returned.
func (h *handlers) removeHook(ctx context.Context, proj *model.Project, p *model.Pipeline, hook *model.PipelineWebhook) {
	if hook == nil || hook.ID == "" {
		return
	}
	r, repo, err := h.registrar(ctx, proj, p, hook)
	if err == nil && r != nil {
		err = r.DeleteWebhook(ctx, repo, hook.ID)
	}
	if err != nil || r == nil {
		h.log.Warn("could not delete the pipeline's webhook on the SCM; delete it by hand", "pipeline", p.ID, "repo", hook.Repo, "hook", hook.ID, "error", err)
	}
}

// registerNewPipelineHook registers the webhook of a pipeline just stored and records
// it; on failure nothing is left on the SCM.
func (h *handlers) registerNewPipelineHook(ctx context.Context, proj *model.Project, p *model.Pipeline, secret string) error {
	target := h.hookTarget(p)
	if target == nil {
		return nil
	}
	if err := h.registerHook(ctx, proj, p, target, secret); err != nil {
		return err
	}
	if err := h.hooks.SetPipelineWebhook(ctx, p.ID, target); err != nil {
		h.removeHook(context.WithoutCancel(ctx), proj, p, target)
		return err
	}
	p.Webhook = target
	return nil
}

// hookUpdate is a webhook change prepared for a pipeline update: commit once the
// pipeline is saved (the replaced hook goes), rollback when it is not (the new one goes).
type hookUpdate struct {
	h          *handlers
	proj       *model.Project
	p          *model.Pipeline
	created    *model.PipelineWebhook
	obsolete   *model.PipelineWebhook
	obsoleteOf *model.Pipeline
}

// prepareHookUpdate sets p's webhook secret (kept, or made for a pipeline that had
// none) and webhook before p replaces old: the old hook kept when nothing it depends
// on changed, else a new one registered.
func (h *handlers) prepareHookUpdate(ctx context.Context, proj *model.Project, old, p *model.Pipeline) (*hookUpdate, error) {
	u := &hookUpdate{h: h, proj: proj, p: p}
	if h.hooks == nil {
		p.Webhook = old.Webhook
		return u, nil
	}
	p.ID = old.ID
	secret, secretChanged := p.WebhookSecret, p.WebhookSecret != ""
	if secret == "" {
		var err error
		if secret, err = h.hooks.PipelineWebhookSecret(ctx, old.ID); err != nil {
			return nil, err
		}
		if secret == "" { // a pipeline older than webhooks
			if secret, err = newWebhookSecret(); err != nil {
				return nil, err
			}
			p.WebhookSecret, secretChanged = secret, true
		}
	}
	target := h.hookTarget(p)
	if target != nil && old.Webhook != nil && !secretChanged && sameHook(old.Webhook, target) {
		p.Webhook = old.Webhook
		return u, nil
	}
	// GitHub refuses a second hook with the URL of one the repository has: a hook
	// replaced at the same URL and repository goes first, and comes back if its
	// replacement is refused.
	replacedFirst := target != nil && old.Webhook != nil && old.Webhook.ID != "" &&
		old.Webhook.URL == target.URL && old.Webhook.Repo == target.Repo
	if replacedFirst {
		h.removeHook(ctx, proj, old, old.Webhook)
	}
	if target != nil {
		if err := h.registerHook(ctx, proj, p, target, secret); err != nil {
			if replacedFirst {
				h.restoreHook(context.WithoutCancel(ctx), proj, old)
			}
			return nil, err
		}
		if target.ID != "" {
			u.created = target
		}
	}
	p.Webhook = target
	if old.Webhook != nil && old.Webhook.ID != "" && !replacedFirst {
		u.obsolete, u.obsoleteOf = old.Webhook, old
	}
	return u, nil
}

// restoreHook registers again the webhook of old (removed to make room for a
// replacement that was refused) with its secret, and records its new ID.
func (h *handlers) restoreHook(ctx context.Context, proj *model.Project, old *model.Pipeline) {
	secret, err := h.hooks.PipelineWebhookSecret(ctx, old.ID)
	if err == nil {
		hook := *old.Webhook
		if err = h.registerHook(ctx, proj, old, &hook, secret); err == nil {
			err = h.hooks.SetPipelineWebhook(ctx, old.ID, &hook)
		}
	}
	if err != nil {
		h.log.Warn("could not register the pipeline's webhook again; update the pipeline to retry", "pipeline", old.ID, "error", err)
	}
}

func sameHook(a, b *model.PipelineWebhook) bool {
	return a.URL == b.URL && a.Repo == b.Repo && strings.Join(a.Events, ",") == strings.Join(b.Events, ",")
}

func (u *hookUpdate) commit(ctx context.Context) {
	if u.obsolete != nil {
		u.h.removeHook(ctx, u.proj, u.obsoleteOf, u.obsolete)
	}
}

func (u *hookUpdate) rollback(ctx context.Context) {
	if u.created != nil {
		u.h.removeHook(ctx, u.proj, u.p, u.created)
	}
}

// showSVNHookURL adds the token to an SVN pipeline's hook URL, for the answer to a
// create or update only: the token is a credential, so reading a pipeline never shows it.
func (h *handlers) showSVNHookURL(ctx context.Context, p *model.Pipeline) {
	if h.hooks == nil || p.Webhook == nil || p.SVNRepoID == "" || !strings.HasSuffix(p.Webhook.URL, "/postcommithook") {
		return
	}
	key, err := h.hooks.WebhookKey(ctx)
	if err != nil {
		h.log.Warn("webhook key", "error", err)
		return
	}
	shown := *p.Webhook
	shown.URL += "?token=" + webhook.SVNToken(key, p.SVNRepoID) + "&revision="
	p.Webhook = &shown
}
