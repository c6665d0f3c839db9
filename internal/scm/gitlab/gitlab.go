// Package gitlab is the scm.Provider for GitLab (gitlab.com or self-managed), over
// the REST API v4 at <server>/api/v4 with gitlab.com/gitlab-org/api/client-go.
//
// Authentication: a token (personal, project, group or OAuth access token) is sent
// as "Authorization: Bearer <token>". GitLab accepts every kind of token there,
// while its PRIVATE-TOKEN header refuses OAuth tokens, which is what a username and
// password turn into: they are exchanged once for an OAuth access token with the
// resource-owner password grant (POST <server>/oauth/token, grant_type=password),
// and Verify returns that token for the caller to store instead of the password.
// (GitLab refuses this grant for accounts with two-factor authentication, and the
// OAuth tokens it issues expire after two hours by default.)
//
// Repositories are named by their path_with_namespace ("group/sub/name"), which the
// client URL-encodes as the project ID. The client's own retries are off: a caller
// answering an API request gets the SCM's verdict at once. Every request goes
// through scm.HTTPClient (connections only to allowed addresses).
package gitlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"
	"golang.org/x/oauth2"

	"github.com/cycloneci/cyclone/internal/scm"
)

// maxPages bounds a listing (100 items a page).
const maxPages = 1000

// Provider talks to one GitLab server with one set of credentials.
type Provider struct {
	server string // without a trailing slash or /api/v4
	hc     *http.Client
	creds  scm.Credentials

	exchangeMu sync.Mutex // one password exchange at a time

	mu     sync.Mutex // guards client and token
	client *gl.Client // nil until a password was exchanged for a token
	token  string     // the exchanged token
}

var _ scm.Provider = (*Provider)(nil)

// New makes a Provider for cfg. It sends nothing (a password is exchanged on the
// first call); the server URL is expected to have passed scm.CheckURL.
func New(cfg scm.Config) (*Provider, error) {
	u, err := url.Parse(strings.TrimSpace(cfg.Server))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("gitlab: server %q: %w", cfg.Server, scm.ErrBadURL)
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/api/v4")
	u.RawQuery, u.Fragment = "", ""
	p := &Provider{server: u.String(), hc: scm.HTTPClient(60 * time.Second), creds: cfg.Credentials}
	if cfg.Token != "" {
		if p.client, err = p.newClient(cfg.Token); err != nil {
			return nil, err
		}
	} else if cfg.Password == "" {
		return nil, fmt.Errorf("gitlab: a token, or a username and password, is required: %w", scm.ErrUnauthorized)
	}
	return p, nil
}

func (p *Provider) newClient(token string) (*gl.Client, error) {
	c, err := gl.NewAuthSourceClient(
		gl.OAuthTokenSource{TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token})},
		gl.WithBaseURL(p.server+"/api/v4/"),
		gl.WithHTTPClient(p.hc),
		gl.WithoutRetries(),
		gl.WithUserAgent("cyclone"),
	)
	if err != nil {
		return nil, fmt.Errorf("gitlab: %w", err)
	}
	return c, nil
}

// api returns the API client, exchanging the password for a token first if needed.
func (p *Provider) api(ctx context.Context) (*gl.Client, error) {
	if c := p.current(); c != nil {
		return c, nil
	}
	p.exchangeMu.Lock()
	defer p.exchangeMu.Unlock()
	if c := p.current(); c != nil {
		return c, nil
	}
	tok, err := p.exchange(ctx)
	if err != nil {
		return nil, err
	}
	c, err := p.newClient(tok)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.client, p.token = c, tok
	p.mu.Unlock()
	return c, nil
}

func (p *Provider) current() *gl.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.client
}

// exchange trades the username and password for an OAuth access token.
func (p *Provider) exchange(ctx context.Context) (string, error) {
	const op = "exchanging the password for a token"
	form := url.Values{"grant_type": {"password"}, "username": {p.creds.Username}, "password": {p.creds.Password}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.server+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("gitlab: %s: %w", op, scm.ErrBadURL)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := p.hc.Do(req)
	if err != nil {
		return "", p.wrap(op, nil, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(body, &out)
	why := p.redact(strings.TrimSpace(out.Error + " " + out.Description))
	switch c := resp.StatusCode; {
	case c == http.StatusOK && out.AccessToken != "":
		return out.AccessToken, nil
	case c == http.StatusOK:
		return "", fmt.Errorf("gitlab: %s: the answer has no access_token", op)
	case c == http.StatusUnauthorized || (c == http.StatusBadRequest && (out.Error == "invalid_grant" || out.Error == "invalid_client")):
		return "", fmt.Errorf("gitlab: %s: %d %s: %w", op, c, why, scm.ErrUnauthorized)
	case c == http.StatusTooManyRequests:
		return "", fmt.Errorf("gitlab: %s: %d: %w", op, c, scm.ErrRateLimited)
	case c == http.StatusNotFound:
		return "", fmt.Errorf("gitlab: %s: %s/oauth/token: %w", op, p.server, scm.ErrNotFound)
	case c >= 500:
		return "", fmt.Errorf("gitlab: %s: %d: %w", op, c, scm.ErrUnreachable)
	}
	return "", fmt.Errorf("gitlab: %s: %d %s", op, resp.StatusCode, why)
}

// Verify checks the credentials with GET /user; for a username and password it
// returns the OAuth token they were exchanged for.
func (p *Provider) Verify(ctx context.Context) (string, error) {
	c, err := p.api(ctx)
	if err != nil {
		return "", err
	}
	_, resp, err := c.Users.CurrentUser(gl.WithContext(ctx))
	if err != nil {
		return "", p.wrap("verifying the credentials", resp, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.token, nil
}

// Repos lists the projects the user is a member of, all pages.
func (p *Provider) Repos(ctx context.Context) ([]scm.Repository, error) {
	c, err := p.api(ctx)
	if err != nil {
		return nil, err
	}
	var out []scm.Repository
	opts := &gl.ListProjectsOptions{ListOptions: gl.ListOptions{PerPage: 100, Page: 1}, Membership: gl.Ptr(true), Simple: gl.Ptr(true)}
	err = p.pages(ctx, "listing projects", &opts.ListOptions, func() (*gl.Response, error) {
		ps, resp, err := c.Projects.ListProjects(opts, gl.WithContext(ctx))
		for _, pr := range ps {
			out = append(out, scm.Repository{Name: pr.PathWithNamespace, URL: pr.HTTPURLToRepo})
		}
		return resp, err
	})
	return out, err
}

// Branches lists a project's branch names, all pages.
func (p *Provider) Branches(ctx context.Context, repo string) ([]string, error) {
	c, err := p.project(ctx, repo)
	if err != nil {
		return nil, err
	}
	var out []string
	opts := &gl.ListBranchesOptions{ListOptions: gl.ListOptions{PerPage: 100, Page: 1}}
	err = p.pages(ctx, "listing branches of "+repo, &opts.ListOptions, func() (*gl.Response, error) {
		bs, resp, err := c.Branches.ListBranches(repo, opts, gl.WithContext(ctx))
		for _, b := range bs {
			out = append(out, b.Name)
		}
		return resp, err
	})
	return out, err
}

// Tags lists a project's tag names, all pages.
func (p *Provider) Tags(ctx context.Context, repo string) ([]string, error) {
	c, err := p.project(ctx, repo)
	if err != nil {
		return nil, err
	}
	var out []string
	opts := &gl.ListTagsOptions{ListOptions: gl.ListOptions{PerPage: 100, Page: 1}}
	err = p.pages(ctx, "listing tags of "+repo, &opts.ListOptions, func() (*gl.Response, error) {
		ts, resp, err := c.Tags.ListTags(repo, opts, gl.WithContext(ctx))
		for _, t := range ts {
			out = append(out, t.Name)
		}
		return resp, err
	})
	return out, err
}

// TemplateType detects the build tool from the files at the root of the default
// branch (repository tree API, all pages).
func (p *Provider) TemplateType(ctx context.Context, repo string) (string, error) {
	c, err := p.project(ctx, repo)
	if err != nil {
		return "", err
	}
	var files []string
	opts := &gl.ListTreeOptions{ListOptions: gl.ListOptions{PerPage: 100, Page: 1}}
	err = p.pages(ctx, "reading the root of "+repo, &opts.ListOptions, func() (*gl.Response, error) {
		nodes, resp, err := c.Repositories.ListTree(repo, opts, gl.WithContext(ctx))
		for _, n := range nodes {
			if n.Type == "blob" {
				files = append(files, n.Name)
			}
		}
		return resp, err
	})
	if err != nil {
		return "", err
	}
	return scm.DetectTemplateType(files), nil
}

// CreateTag creates the tag name at commit.
func (p *Provider) CreateTag(ctx context.Context, repo, name, commit string) error {
	c, err := p.project(ctx, repo)
	if err != nil {
		return err
	}
	if name == "" || commit == "" {
		return fmt.Errorf("gitlab: creating a tag needs a name and a commit")
	}
	_, resp, err := c.Tags.CreateTag(repo, &gl.CreateTagOptions{TagName: gl.Ptr(name), Ref: gl.Ptr(commit)}, gl.WithContext(ctx))
	if err != nil {
		return p.wrap(fmt.Sprintf("creating tag %q on %s", name, repo), resp, err)
	}
	return nil
}

// commitStates maps scm states to GitLab's (which has no "error").
var commitStates = map[string]gl.BuildStateValue{
	scm.StatePending: gl.Pending,
	scm.StateSuccess: gl.Success,
	scm.StateFailure: gl.Failed,
	scm.StateError:   gl.Failed,
}

// SetCommitStatus reports a state on a commit (commit statuses API).
func (p *Provider) SetCommitStatus(ctx context.Context, repo, commit string, s scm.CommitStatus) error {
	c, err := p.project(ctx, repo)
	if err != nil {
		return err
	}
	state, ok := commitStates[s.State]
	if !ok {
		return fmt.Errorf("gitlab: unknown commit state %q", s.State)
	}
	opts := &gl.SetCommitStatusOptions{State: state, Name: gl.Ptr(s.Context)}
	if s.Context == "" {
		opts.Name = gl.Ptr("cyclone")
	}
	if s.TargetURL != "" {
		opts.TargetURL = gl.Ptr(s.TargetURL)
	}
	if s.Description != "" {
		opts.Description = gl.Ptr(s.Description)
	}
	_, resp, err := c.Commits.SetCommitStatus(repo, commit, opts, gl.WithContext(ctx))
	if err != nil {
		return p.wrap("setting the status of "+commit+" on "+repo, resp, err)
	}
	return nil
}

// CreateWebhook registers a project hook (h.Secret is sent back by GitLab in
// X-Gitlab-Token) and returns its ID.
func (p *Provider) CreateWebhook(ctx context.Context, repo string, h scm.Webhook) (string, error) {
	c, err := p.project(ctx, repo)
	if err != nil {
		return "", err
	}
	opts := &gl.AddProjectHookOptions{
		URL:                   gl.Ptr(h.URL),
		PushEvents:            gl.Ptr(false),
		TagPushEvents:         gl.Ptr(false),
		MergeRequestsEvents:   gl.Ptr(false),
		NoteEvents:            gl.Ptr(false),
		EnableSSLVerification: gl.Ptr(true),
	}
	if h.Secret != "" {
		opts.Token = gl.Ptr(h.Secret)
	}
	for _, e := range h.Events {
		switch e {
		case scm.EventPush:
			opts.PushEvents = gl.Ptr(true)
		case scm.EventTagRelease:
			opts.TagPushEvents = gl.Ptr(true)
		case scm.EventPullRequest:
			opts.MergeRequestsEvents = gl.Ptr(true)
		case scm.EventPullRequestComment:
			opts.NoteEvents = gl.Ptr(true)
		default:
			return "", fmt.Errorf("gitlab: unknown webhook event %q", e)
		}
	}
	hook, resp, err := c.Projects.AddProjectHook(repo, opts, gl.WithContext(ctx))
	if err != nil {
		return "", p.wrap("creating a webhook on "+repo, resp, err, h.Secret)
	}
	return strconv.FormatInt(hook.ID, 10), nil
}

// DeleteWebhook removes a project hook; one already gone (404) is not an error.
func (p *Provider) DeleteWebhook(ctx context.Context, repo, id string) error {
	c, err := p.project(ctx, repo)
	if err != nil {
		return err
	}
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("gitlab: webhook ID %q: %w", id, scm.ErrNotFound)
	}
	resp, err := c.Projects.DeleteProjectHook(repo, n, gl.WithContext(ctx))
	if err != nil {
		werr := p.wrap("deleting webhook "+id+" of "+repo, resp, err)
		if errors.Is(werr, scm.ErrNotFound) {
			return nil
		}
		return werr
	}
	return nil
}

// project checks a repository name (a project path, never empty, no dot segments)
// and returns the API client.
func (p *Provider) project(ctx context.Context, repo string) (*gl.Client, error) {
	bad := repo == "" || strings.HasPrefix(repo, "/") || strings.HasSuffix(repo, "/")
	for _, seg := range strings.Split(repo, "/") {
		if seg == "" || seg == "." || seg == ".." {
			bad = true
		}
	}
	for _, r := range repo {
		if r < 0x20 || r == 0x7f {
			bad = true
		}
	}
	if bad {
		return nil, fmt.Errorf("gitlab: %q is not a project path: %w", repo, scm.ErrNotFound)
	}
	return p.api(ctx)
}

// pages calls list for each page, following X-Next-Page.
func (p *Provider) pages(ctx context.Context, op string, opts *gl.ListOptions, list func() (*gl.Response, error)) error {
	for n := 0; n < maxPages; n++ {
		resp, err := list()
		if err != nil {
			return p.wrap(op, resp, err)
		}
		if resp == nil || resp.NextPage == 0 || resp.NextPage <= opts.Page {
			return nil
		}
		opts.Page = resp.NextPage
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("gitlab: %s: more than %d pages", op, maxPages)
}

func (p *Provider) redact(s string, extra ...string) string {
	p.mu.Lock()
	tok := p.token
	p.mu.Unlock()
	return scm.Redact(s, append([]string{p.creds.Token, p.creds.Password, tok}, extra...)...)
}

// wrap classifies a client error with the scm sentinels; the message quotes the
// server's message with the credentials (and extra secrets) redacted.
func (p *Provider) wrap(op string, resp *gl.Response, err error, extra ...string) error {
	var er *gl.ErrorResponse
	var ne net.Error
	code := 0
	if resp != nil && resp.Response != nil {
		code = resp.StatusCode
	}
	msg := ""
	if errors.As(err, &er) {
		msg = " " + p.redact(er.Message, extra...)
		if er.Response != nil {
			code = er.Response.StatusCode
		}
	}
	text := fmt.Sprintf("gitlab: %s: %d%s", op, code, msg)
	switch {
	case errors.Is(err, scm.ErrBadURL):
		return fmt.Errorf("gitlab: %s: %s: %w", op, p.redact(err.Error(), extra...), scm.ErrBadURL)
	case errors.Is(err, gl.ErrNotFound), code == http.StatusNotFound:
		return fmt.Errorf("gitlab: %s: 404: %w", op, scm.ErrNotFound)
	case code == http.StatusUnauthorized:
		return fmt.Errorf("%s: %w", text, scm.ErrUnauthorized)
	case code == http.StatusTooManyRequests,
		code == http.StatusForbidden && resp != nil && resp.Header.Get("RateLimit-Remaining") == "0":
		return fmt.Errorf("%s: %w", text, scm.ErrRateLimited)
	case code == http.StatusForbidden:
		return fmt.Errorf("%s: %w", text, scm.ErrForbidden)
	case code >= 500:
		return fmt.Errorf("%s: %w", text, scm.ErrUnreachable)
	case code != 0:
		return errors.New(text)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("gitlab: %s: %w", op, err)
	case errors.Is(err, scm.ErrUnreachable), errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne):
		return fmt.Errorf("gitlab: %s: %s: %w", op, p.redact(err.Error(), extra...), scm.ErrUnreachable)
	}
	return fmt.Errorf("gitlab: %s: %s", op, p.redact(err.Error(), extra...))
}
