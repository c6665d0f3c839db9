// Package github is the scm.Provider for GitHub and GitHub Enterprise Server, over
// the REST API v3 with github.com/google/go-github/v50.
//
// The API base URL comes from the project's scm.server: https://github.com (or
// www./api.github.com) means https://api.github.com/; any other server is a GitHub
// Enterprise Server at <server>/api/v3/.
//
// Authentication: a token is sent as "Authorization: Bearer <token>" (the spec wants
// the username with it, as the owner of the token; the token plays the password's
// part). A username and password are sent as HTTP basic auth. GitHub no longer
// exchanges a password for a token (the authorizations API is gone), so Verify
// returns "" for them and the caller keeps the password, sealed, as the credential;
// github.com itself refuses passwords on the API, GitHub Enterprise may accept them.
//
// Every request goes through scm.HTTPClient (connections only to allowed
// addresses) and the credentials are only ever sent to the API's own host.
package github

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	gh "github.com/google/go-github/v50/github"

	"github.com/cycloneci/cyclone/internal/scm"
)

// maxPages bounds a listing (100 items a page), so a misbehaving server that always
// announces a next page cannot keep a request running forever.
const maxPages = 1000

// Provider talks to one GitHub (Enterprise) server with one set of credentials.
type Provider struct {
	client *gh.Client
	creds  scm.Credentials
}

var _ scm.Provider = (*Provider)(nil)

// New makes a Provider for cfg. It sends nothing; the server URL is expected to have
// passed scm.CheckURL (providers.New does that).
func New(cfg scm.Config) (*Provider, error) {
	base, err := APIBaseURL(cfg.Server)
	if err != nil {
		return nil, err
	}
	hc := scm.HTTPClient(60 * time.Second)
	if auth := authHeader(cfg.Credentials); auth != "" {
		hc.Transport = &authTransport{base: hc.Transport, host: base.Host, header: auth}
	}
	c := gh.NewClient(hc)
	c.BaseURL = base
	up := *base
	up.Path = strings.TrimSuffix(up.Path, "api/v3/") + "api/uploads/"
	if base.Host == "api.github.com" {
		up = url.URL{Scheme: "https", Host: "uploads.github.com", Path: "/"}
	}
	c.UploadURL = &up
	c.UserAgent = "cyclone"
	return &Provider{client: c, creds: cfg.Credentials}, nil
}

// APIBaseURL maps a project's scm.server to the REST API's base URL (ending in /).
func APIBaseURL(server string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(server))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("github: server %q: %w", server, scm.ErrBadURL)
	}
	switch strings.ToLower(u.Hostname()) {
	case "github.com", "www.github.com", "api.github.com":
		return &url.URL{Scheme: "https", Host: "api.github.com", Path: "/"}, nil
	}
	p := strings.TrimSuffix(u.Path, "/")
	p = strings.TrimSuffix(p, "/api/v3")
	return &url.URL{Scheme: u.Scheme, Host: u.Host, Path: p + "/api/v3/"}, nil
}

func authHeader(c scm.Credentials) string {
	switch {
	case c.Token != "":
		return "Bearer " + c.Token
	case c.Username != "" || c.Password != "":
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password))
	}
	return ""
}

// authTransport adds the Authorization header to requests for the API's host only,
// so a redirect elsewhere never carries the credentials.
type authTransport struct {
	base   http.RoundTripper
	host   string
	header string
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host {
		return t.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", t.header)
	return t.base.RoundTrip(r)
}

// Verify checks the credentials with GET /user. It never returns a token: see the
// package comment.
func (p *Provider) Verify(ctx context.Context) (string, error) {
	_, resp, err := p.client.Users.Get(ctx, "")
	if err != nil {
		return "", p.wrap("verifying the credentials", resp, err)
	}
	return "", nil
}

// Repos lists the repositories of the authenticated user (owned, collaborator and
// organization member), all pages. Name is "owner/name", URL the clone URL.
func (p *Provider) Repos(ctx context.Context) ([]scm.Repository, error) {
	var out []scm.Repository
	opts := &gh.RepositoryListOptions{ListOptions: gh.ListOptions{PerPage: 100, Page: 1}}
	err := p.pages(ctx, "listing repositories", &opts.ListOptions, func() (*gh.Response, error) {
		repos, resp, err := p.client.Repositories.List(ctx, "", opts)
		for _, r := range repos {
			out = append(out, scm.Repository{Name: r.GetFullName(), URL: r.GetCloneURL()})
		}
		return resp, err
	})
	return out, err
}

// Branches lists a repository's branch names, all pages.
func (p *Provider) Branches(ctx context.Context, repo string) ([]string, error) {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return nil, err
	}
	var out []string
	opts := &gh.BranchListOptions{ListOptions: gh.ListOptions{PerPage: 100, Page: 1}}
	err = p.pages(ctx, "listing branches of "+repo, &opts.ListOptions, func() (*gh.Response, error) {
		bs, resp, err := p.client.Repositories.ListBranches(ctx, owner, name, opts)
		for _, b := range bs {
			out = append(out, b.GetName())
		}
		return resp, err
	})
	return out, err
}

// Tags lists a repository's tag names, all pages.
func (p *Provider) Tags(ctx context.Context, repo string) ([]string, error) {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return nil, err
	}
	var out []string
	opts := &gh.ListOptions{PerPage: 100, Page: 1}
	err = p.pages(ctx, "listing tags of "+repo, opts, func() (*gh.Response, error) {
		ts, resp, err := p.client.Repositories.ListTags(ctx, owner, name, opts)
		for _, t := range ts {
			out = append(out, t.GetName())
		}
		return resp, err
	})
	return out, err
}

// pages calls list for each page, following the Link header's next page.
func (p *Provider) pages(ctx context.Context, op string, opts *gh.ListOptions, list func() (*gh.Response, error)) error {
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
	return fmt.Errorf("github: %s: more than %d pages", op, maxPages)
}

// TemplateType detects the build tool from the files at the root of the default
// branch (repository contents API).
func (p *Provider) TemplateType(ctx context.Context, repo string) (string, error) {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return "", err
	}
	_, dir, resp, err := p.client.Repositories.GetContents(ctx, owner, name, "", nil)
	if err != nil {
		return "", p.wrap("reading the root of "+repo, resp, err)
	}
	files := make([]string, 0, len(dir))
	for _, f := range dir {
		if f.GetType() == "file" {
			files = append(files, f.GetName())
		}
	}
	return scm.DetectTemplateType(files), nil
}

// CreateTag creates the lightweight tag refs/tags/<name> at commit.
func (p *Provider) CreateTag(ctx context.Context, repo, name, commit string) error {
	owner, rname, err := splitRepo(repo)
	if err != nil {
		return err
	}
	if name == "" || commit == "" {
		return fmt.Errorf("github: creating a tag needs a name and a commit")
	}
	ref := &gh.Reference{Ref: gh.String("refs/tags/" + name), Object: &gh.GitObject{SHA: gh.String(commit)}}
	_, resp, err := p.client.Git.CreateRef(ctx, owner, rname, ref)
	if err != nil {
		return p.wrap(fmt.Sprintf("creating tag %q on %s", name, repo), resp, err)
	}
	return nil
}

// SetCommitStatus reports a state on a commit (repository statuses API).
func (p *Provider) SetCommitStatus(ctx context.Context, repo, commit string, s scm.CommitStatus) error {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return err
	}
	switch s.State {
	case scm.StatePending, scm.StateSuccess, scm.StateFailure, scm.StateError:
	default:
		return fmt.Errorf("github: unknown commit state %q", s.State)
	}
	st := &gh.RepoStatus{State: gh.String(s.State), Context: gh.String(s.Context)}
	if s.Context == "" {
		st.Context = gh.String("cyclone")
	}
	if s.TargetURL != "" {
		st.TargetURL = gh.String(s.TargetURL)
	}
	if s.Description != "" {
		st.Description = gh.String(truncate(s.Description, 140))
	}
	_, resp, err := p.client.Repositories.CreateStatus(ctx, owner, name, commit, st)
	if err != nil {
		return p.wrap("setting the status of "+commit+" on "+repo, resp, err)
	}
	return nil
}

// webhookEvents maps Cyclone's events to GitHub's: tags arrive as push events (and
// create events).
var webhookEvents = map[string][]string{
	scm.EventPush:               {"push"},
	scm.EventTagRelease:         {"push", "create"},
	scm.EventPullRequest:        {"pull_request"},
	scm.EventPullRequestComment: {"issue_comment"},
}

// CreateWebhook registers a JSON webhook signed with h.Secret and returns its ID.
func (p *Provider) CreateWebhook(ctx context.Context, repo string, h scm.Webhook) (string, error) {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return "", err
	}
	var events []string
	seen := map[string]bool{}
	for _, e := range h.Events {
		mapped, ok := webhookEvents[e]
		if !ok {
			return "", fmt.Errorf("github: unknown webhook event %q", e)
		}
		for _, m := range mapped {
			if !seen[m] {
				seen[m] = true
				events = append(events, m)
			}
		}
	}
	hook := &gh.Hook{
		Name:   gh.String("web"),
		Active: gh.Bool(true),
		Events: events,
		Config: map[string]interface{}{
			"url":          h.URL,
			"content_type": "json",
			"secret":       h.Secret,
			"insecure_ssl": "0",
		},
	}
	created, resp, err := p.client.Repositories.CreateHook(ctx, owner, name, hook)
	if err != nil {
		return "", p.wrap("creating a webhook on "+repo, resp, err, h.Secret)
	}
	return strconv.FormatInt(created.GetID(), 10), nil
}

// DeleteWebhook removes a webhook; one already gone (404) is not an error.
func (p *Provider) DeleteWebhook(ctx context.Context, repo, id string) error {
	owner, name, err := splitRepo(repo)
	if err != nil {
		return err
	}
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("github: webhook ID %q: %w", id, scm.ErrNotFound)
	}
	resp, err := p.client.Repositories.DeleteHook(ctx, owner, name, n)
	if err != nil {
		werr := p.wrap("deleting webhook "+id+" of "+repo, resp, err)
		if errors.Is(werr, scm.ErrNotFound) {
			return nil
		}
		return werr
	}
	return nil
}

var repoPart = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// splitRepo parses "owner/name"; anything else cannot be a GitHub repository (and
// must not reach the API's URL paths).
func splitRepo(repo string) (owner, name string, err error) {
	owner, name, ok := strings.Cut(repo, "/")
	if !ok || !repoPart.MatchString(owner) || !repoPart.MatchString(name) ||
		owner == "." || owner == ".." || name == "." || name == ".." {
		return "", "", fmt.Errorf("github: repository %q is not owner/name: %w", repo, scm.ErrNotFound)
	}
	return owner, name, nil
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// wrap classifies a go-github error with the scm sentinels; the message quotes the
// server's message with the credentials (and extra secrets) redacted.
func (p *Provider) wrap(op string, resp *gh.Response, err error, extra ...string) error {
	secrets := append([]string{p.creds.Token, p.creds.Password}, extra...)
	msg := func(s string) string { return scm.Redact(s, secrets...) }

	var rl *gh.RateLimitError
	var abuse *gh.AbuseRateLimitError
	var tfa *gh.TwoFactorAuthError
	var er *gh.ErrorResponse
	var ne net.Error
	switch {
	case errors.Is(err, scm.ErrBadURL), errors.Is(err, scm.ErrUnreachable):
		return fmt.Errorf("github: %s: %s: %w", op, msg(err.Error()), errSentinel(err))
	case errors.As(err, &rl):
		return fmt.Errorf("github: %s: rate limit exhausted until %s: %w", op, rl.Rate.Reset.Format(time.RFC3339), scm.ErrRateLimited)
	case errors.As(err, &abuse):
		return fmt.Errorf("github: %s: secondary rate limit: %s: %w", op, msg(abuse.Message), scm.ErrRateLimited)
	case errors.As(err, &tfa):
		return fmt.Errorf("github: %s: two-factor authentication required: %w", op, scm.ErrUnauthorized)
	case errors.As(err, &er) && er.Response != nil:
		code := er.Response.StatusCode
		text := fmt.Sprintf("github: %s: %d %s", op, code, msg(er.Message))
		switch {
		case code == http.StatusUnauthorized:
			return fmt.Errorf("%s: %w", text, scm.ErrUnauthorized)
		case code == http.StatusTooManyRequests:
			return fmt.Errorf("%s: %w", text, scm.ErrRateLimited)
		case code == http.StatusForbidden && er.Response.Header.Get("X-RateLimit-Remaining") == "0":
			return fmt.Errorf("%s: %w", text, scm.ErrRateLimited)
		case code == http.StatusForbidden:
			return fmt.Errorf("%s: %w", text, scm.ErrForbidden)
		case code == http.StatusNotFound:
			return fmt.Errorf("%s: %w", text, scm.ErrNotFound)
		case code >= 500:
			return fmt.Errorf("%s: %w", text, scm.ErrUnreachable)
		}
		return errors.New(text)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("github: %s: %w", op, err)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne):
		return fmt.Errorf("github: %s: %s: %w", op, msg(err.Error()), scm.ErrUnreachable)
	}
	if resp != nil && resp.StatusCode >= 500 {
		return fmt.Errorf("github: %s: %d: %w", op, resp.StatusCode, scm.ErrUnreachable)
	}
	return fmt.Errorf("github: %s: %s", op, msg(err.Error()))
}

// errSentinel returns the guard sentinel err wraps.
func errSentinel(err error) error {
	if errors.Is(err, scm.ErrBadURL) {
		return scm.ErrBadURL
	}
	return scm.ErrUnreachable
}
