package testenv

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// GitHub is a loopback server answering the GitHub REST API's documented JSON for
// what Cyclone uses (user, repositories, branches, tags, contents, refs, statuses,
// hooks), GitHub Enterprise style: the API is under URL + "/api/v3/". github.com
// cannot be reached from tests; the real client code talks to this instead.
type GitHub struct {
	URL   string // the server, as a project's scm.server
	Token string // the one token it accepts

	mu       sync.Mutex
	repos    map[string]*GitHubRepo
	statuses []GitHubStatus
	tags     []string // "owner/repo:tag@sha" for every tag created
	hooks    map[string]map[int]map[string]any
	nextHook int
	// PageSize paginates lists (default 2, so that every list has several pages).
	PageSize int
	git      http.Handler
	srv      *httptest.Server
}

// ServeGit makes the fake serve gs's repositories over git's smart HTTP beside
// its API, as github.com does, to clients authenticated with the token:
// owner/name's clone URL is URL + "/owner/name.git" when gs has a repository
// named "owner/name".
func (g *GitHub) ServeGit(gs *GitServer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.git = gs.backend
}

// GitHubRepo is a repository the fake serves.
type GitHubRepo struct {
	Branches []string
	Tags     []string
	Files    []string // names at the root
}

// GitHubStatus is a commit status the fake received.
type GitHubStatus struct {
	Repo, SHA, State, TargetURL, Context string
}

// StartGitHub serves a fake GitHub accepting token until the test ends.
func StartGitHub(t testing.TB, token string) *GitHub {
	t.Helper()
	g := NewGitHub(token)
	t.Cleanup(g.Close)
	return g
}

// NewGitHub serves a fake GitHub accepting token (or, when token is "", any
// token that starts with "tok-") until Close.
func NewGitHub(token string) *GitHub {
	g := &GitHub{Token: token, repos: map[string]*GitHubRepo{}, hooks: map[string]map[int]map[string]any{}, PageSize: 2}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	g.URL = g.srv.URL
	return g
}

// Close stops the server.
func (g *GitHub) Close() { g.srv.Close() }

// AddRepo serves a repository named owner/name.
func (g *GitHub) AddRepo(fullName string, r GitHubRepo) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repos[fullName] = &r
}

// Statuses returns the commit statuses received so far.
func (g *GitHub) Statuses() []GitHubStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]GitHubStatus(nil), g.statuses...)
}

// CreatedTags returns "owner/repo:tag@sha" for every tag created so far.
func (g *GitHub) CreatedTags() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.tags...)
}

// Hooks returns the webhooks registered on a repository, by ID.
func (g *GitHub) Hooks(fullName string) map[int]map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[int]map[string]any{}
	for id, h := range g.hooks[fullName] {
		out[id] = h
	}
	return out
}

func (g *GitHub) authorized(r *http.Request) bool {
	accept := func(tok string) bool {
		if g.Token == "" {
			return strings.HasPrefix(tok, "tok-")
		}
		return tok == g.Token
	}
	if user, pass, ok := r.BasicAuth(); ok {
		return user != "" && accept(pass)
	}
	auth := r.Header.Get("Authorization")
	for _, scheme := range []string{"token ", "Bearer ", "bearer "} {
		if tok, ok := strings.CutPrefix(auth, scheme); ok && accept(tok) {
			return true
		}
	}
	return false
}

func writeGitHubError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"})
}

func (g *GitHub) serve(w http.ResponseWriter, r *http.Request) {
	path, ok := strings.CutPrefix(r.URL.Path, "/api/v3")
	if !ok {
		g.mu.Lock()
		git := g.git
		g.mu.Unlock()
		if git == nil {
			writeGitHubError(w, http.StatusNotFound, "Not Found")
			return
		}
		if !g.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		git.ServeHTTP(w, r)
		return
	}
	if !g.authorized(r) {
		writeGitHubError(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	w.Header().Set("X-RateLimit-Limit", "5000")
	w.Header().Set("X-RateLimit-Remaining", "4999")
	g.mu.Lock()
	defer g.mu.Unlock()
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case path == "/user":
		g.json(w, http.StatusOK, map[string]any{"login": "bot", "id": 1, "type": "User"})
	case path == "/user/repos":
		names := make([]string, 0, len(g.repos))
		for n := range g.repos {
			names = append(names, n)
		}
		sort.Strings(names)
		items := make([]any, 0, len(names))
		for _, n := range names {
			items = append(items, map[string]any{"full_name": n, "name": n[strings.Index(n, "/")+1:],
				"html_url": g.URL + "/" + n, "clone_url": g.URL + "/" + n + ".git", "private": true})
		}
		g.page(w, r, items)
	case len(parts) >= 4 && parts[0] == "repos":
		g.serveRepo(w, r, parts[1]+"/"+parts[2], parts[3:])
	default:
		writeGitHubError(w, http.StatusNotFound, "Not Found")
	}
}

func (g *GitHub) serveRepo(w http.ResponseWriter, r *http.Request, name string, rest []string) {
	repo, ok := g.repos[name]
	if !ok {
		writeGitHubError(w, http.StatusNotFound, "Not Found")
		return
	}
	var body map[string]any
	if r.Method == http.MethodPost || r.Method == http.MethodPatch {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeGitHubError(w, http.StatusBadRequest, "Problems parsing JSON")
			return
		}
	}
	switch {
	case r.Method == http.MethodGet && rest[0] == "branches":
		items := make([]any, 0, len(repo.Branches))
		for _, b := range repo.Branches {
			items = append(items, map[string]any{"name": b, "commit": map[string]any{"sha": strings.Repeat("a", 40)}, "protected": false})
		}
		g.page(w, r, items)
	case r.Method == http.MethodGet && rest[0] == "tags":
		items := make([]any, 0, len(repo.Tags))
		for _, t := range repo.Tags {
			items = append(items, map[string]any{"name": t, "commit": map[string]any{"sha": strings.Repeat("b", 40)}})
		}
		g.page(w, r, items)
	case r.Method == http.MethodGet && rest[0] == "contents":
		items := make([]any, 0, len(repo.Files))
		for _, f := range repo.Files {
			items = append(items, map[string]any{"name": f, "path": f, "type": "file", "sha": strings.Repeat("c", 40)})
		}
		g.json(w, http.StatusOK, items)
	case r.Method == http.MethodPost && len(rest) == 2 && rest[0] == "git" && rest[1] == "refs":
		ref, _ := body["ref"].(string)
		sha, _ := body["sha"].(string)
		tag, ok := strings.CutPrefix(ref, "refs/tags/")
		if !ok || len(sha) != 40 {
			writeGitHubError(w, http.StatusUnprocessableEntity, "Reference update failed")
			return
		}
		g.tags = append(g.tags, name+":"+tag+"@"+sha)
		repo.Tags = append(repo.Tags, tag)
		g.json(w, http.StatusCreated, map[string]any{"ref": ref, "object": map[string]any{"sha": sha, "type": "commit"}})
	case r.Method == http.MethodPost && len(rest) == 2 && rest[0] == "statuses":
		s := GitHubStatus{Repo: name, SHA: rest[1]}
		s.State, _ = body["state"].(string)
		s.TargetURL, _ = body["target_url"].(string)
		s.Context, _ = body["context"].(string)
		g.statuses = append(g.statuses, s)
		g.json(w, http.StatusCreated, map[string]any{"id": len(g.statuses), "state": s.State, "target_url": s.TargetURL, "context": s.Context})
	case r.Method == http.MethodPost && len(rest) == 1 && rest[0] == "hooks":
		url := func(h map[string]any) any { c, _ := h["config"].(map[string]any); return c["url"] }
		for _, h := range g.hooks[name] {
			if url(h) == url(body) {
				// As github.com: one hook per URL and repository.
				g.json(w, http.StatusUnprocessableEntity, map[string]any{"message": "Validation Failed",
					"errors": []any{map[string]any{"resource": "Hook", "code": "custom", "message": "Hook already exists on this repository"}}})
				return
			}
		}
		g.nextHook++
		if g.hooks[name] == nil {
			g.hooks[name] = map[int]map[string]any{}
		}
		g.hooks[name][g.nextHook] = body
		g.json(w, http.StatusCreated, map[string]any{"id": g.nextHook, "active": true, "events": body["events"], "config": body["config"]})
	case r.Method == http.MethodDelete && len(rest) == 2 && rest[0] == "hooks":
		id, _ := strconv.Atoi(rest[1])
		if _, ok := g.hooks[name][id]; !ok {
			writeGitHubError(w, http.StatusNotFound, "Not Found")
			return
		}
		delete(g.hooks[name], id)
		w.WriteHeader(http.StatusNoContent)
	default:
		writeGitHubError(w, http.StatusNotFound, "Not Found")
	}
}

// page answers one page of items with GitHub's Link header.
func (g *GitHub) page(w http.ResponseWriter, r *http.Request, items []any) {
	size := g.PageSize
	if pp, err := strconv.Atoi(r.URL.Query().Get("per_page")); err == nil && pp > 0 && pp < size {
		size = pp
	}
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	if page < 1 {
		page = 1
	}
	last := (len(items) + size - 1) / size
	from, to := min((page-1)*size, len(items)), min(page*size, len(items))
	if page < last {
		q := r.URL.Query()
		link := func(p int) string {
			q.Set("page", strconv.Itoa(p))
			return fmt.Sprintf("<%s%s?%s>", g.URL, r.URL.Path, q.Encode())
		}
		w.Header().Set("Link", link(page+1)+`; rel="next", `+link(last)+`; rel="last"`)
	}
	g.json(w, http.StatusOK, items[from:to])
}

func (g *GitHub) json(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
