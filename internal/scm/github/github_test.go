package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/scm"
)

const (
	testToken = "ghp_s3cr3tT0ken"
	testPass  = "hunter2-pass"
)

// fakeGitHub answers the REST API v3 under /api/v3/ (GitHub Enterprise style) with
// the documented JSON: repository "o/r" exists with 150 branches and 120 tags (two
// pages each) and a pom.xml at its root; every other repository is a 404 except the
// ones named after the failure they produce.
type fakeGitHub struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string         // "METHOD path?query auth=<Authorization header>"
	bodies   map[string][]any // request bodies by "METHOD path"
}

func newFakeGitHub(t *testing.T) *fakeGitHub {
	t.Helper()
	f := &fakeGitHub{bodies: map[string][]any{}}
	mux := http.NewServeMux()
	api := "/api/v3"

	mux.HandleFunc("GET "+api+"/user", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"login": "alice", "id": 1})
	})
	mux.HandleFunc("GET "+api+"/user/repos", func(w http.ResponseWriter, r *http.Request) {
		var items []any
		page := pageOf(r)
		for i := range 3 {
			name := fmt.Sprintf("alice/repo-%d-%d", page, i)
			items = append(items, map[string]any{
				"id": page*10 + i, "name": name[6:], "full_name": name,
				"clone_url": "https://ghe.example.test/" + name + ".git",
				"html_url":  "https://ghe.example.test/" + name,
			})
		}
		f.paginate(w, r, page, 2, items)
	})
	mux.HandleFunc("GET "+api+"/repos/o/r/branches", func(w http.ResponseWriter, r *http.Request) {
		f.namesPages(w, r, "branch", 150, func(n string) any {
			return map[string]any{"name": n, "commit": map[string]any{"sha": "abc", "url": "x"}, "protected": false}
		})
	})
	mux.HandleFunc("GET "+api+"/repos/o/r/tags", func(w http.ResponseWriter, r *http.Request) {
		f.namesPages(w, r, "v", 120, func(n string) any {
			return map[string]any{"name": n, "commit": map[string]any{"sha": "abc", "url": "x"}, "zipball_url": "z", "tarball_url": "t"}
		})
	})
	mux.HandleFunc("GET "+api+"/repos/o/r/contents/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, []any{
			map[string]any{"type": "file", "name": "README.md", "path": "README.md", "sha": "1", "size": 10},
			map[string]any{"type": "dir", "name": "go.mod", "path": "go.mod", "sha": "2"}, // a directory: ignored
			map[string]any{"type": "file", "name": "pom.xml", "path": "pom.xml", "sha": "3", "size": 10},
			map[string]any{"type": "dir", "name": "src", "path": "src", "sha": "4"},
		})
	})
	mux.HandleFunc("POST "+api+"/repos/o/r/git/refs", func(w http.ResponseWriter, r *http.Request) {
		body := f.record(r)
		ref, _ := body["ref"].(string)
		if ref == "refs/tags/exists" {
			writeJSON(w, 422, map[string]any{"message": "Reference already exists", "documentation_url": "https://docs.github.com/rest/git/refs#create-a-reference"})
			return
		}
		writeJSON(w, 201, map[string]any{"ref": ref, "node_id": "n", "url": "u", "object": map[string]any{"type": "commit", "sha": body["sha"], "url": "u"}})
	})
	mux.HandleFunc("POST "+api+"/repos/o/r/statuses/{sha}", func(w http.ResponseWriter, r *http.Request) {
		body := f.record(r)
		writeJSON(w, 201, map[string]any{"id": 1, "state": body["state"], "context": body["context"]})
	})
	mux.HandleFunc("POST "+api+"/repos/o/r/hooks", func(w http.ResponseWriter, r *http.Request) {
		body := f.record(r)
		writeJSON(w, 201, map[string]any{"id": 12345678, "name": "web", "active": true, "events": body["events"], "config": body["config"]})
	})
	mux.HandleFunc("DELETE "+api+"/repos/o/r/hooks/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "12345678" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, 404, map[string]any{"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
	})
	// Failures, by repository name.
	mux.HandleFunc(api+"/repos/o/{repo}/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("repo") {
		case "ratelimited":
			w.Header().Set("X-RateLimit-Limit", "5000")
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
			writeJSON(w, 403, map[string]any{"message": "API rate limit exceeded for user ID 1.", "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"})
		case "secondary":
			writeJSON(w, 403, map[string]any{"message": "You have exceeded a secondary rate limit.", "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#secondary-rate-limits"})
		case "toomany":
			w.Header().Set("Retry-After", "60")
			writeJSON(w, 429, map[string]any{"message": "Too Many Requests"})
		case "readonly":
			writeJSON(w, 403, map[string]any{"message": "Must have admin rights to Repository.", "documentation_url": "https://docs.github.com/rest/webhooks/repos#create-a-repository-webhook"})
		case "broken":
			writeJSON(w, 502, map[string]any{"message": "Server Error"})
		default:
			writeJSON(w, 404, map[string]any{"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
		}
	})

	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI()+" auth="+r.Header.Get("Authorization"))
		f.mu.Unlock()
		if !f.authorized(r) {
			// GitHub's 401; this fake also echoes the credential to prove it is
			// redacted from errors.
			writeJSON(w, 401, map[string]any{"message": "Bad credentials: " + r.Header.Get("Authorization"), "documentation_url": "https://docs.github.com/rest"})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeGitHub) authorized(r *http.Request) bool {
	if r.Header.Get("Authorization") == "Bearer "+testToken {
		return true
	}
	u, p, ok := r.BasicAuth()
	return ok && u == "alice" && p == testPass
}

func (f *fakeGitHub) record(r *http.Request) map[string]any {
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	defer f.mu.Unlock()
	k := r.Method + " " + r.URL.Path
	f.bodies[k] = append(f.bodies[k], body)
	return body
}

func (f *fakeGitHub) body(t *testing.T, key string) map[string]any {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies[key]) != 1 {
		t.Fatalf("%s received %d times, want 1", key, len(f.bodies[key]))
	}
	return f.bodies[key][0].(map[string]any)
}

func pageOf(r *http.Request) int {
	p, err := strconv.Atoi(r.URL.Query().Get("page"))
	if err != nil || p < 1 {
		return 1
	}
	return p
}

// paginate writes items with GitHub's Link header pointing at the next and last
// pages.
func (f *fakeGitHub) paginate(w http.ResponseWriter, r *http.Request, page, last int, items []any) {
	link := func(p int) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(p))
		return fmt.Sprintf("<%s%s?%s>", f.URL, r.URL.Path, q.Encode())
	}
	var rels []string
	if page < last {
		rels = append(rels, link(page+1)+`; rel="next"`, link(last)+`; rel="last"`)
	}
	if page > 1 {
		rels = append(rels, link(1)+`; rel="first"`, link(page-1)+`; rel="prev"`)
	}
	if len(rels) > 0 {
		w.Header().Set("Link", strings.Join(rels, ", "))
	}
	writeJSON(w, 200, items)
}

// namesPages serves total items named prefix-N, per_page at a time.
func (f *fakeGitHub) namesPages(w http.ResponseWriter, r *http.Request, prefix string, total int, item func(string) any) {
	per, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
	if per <= 0 {
		per = 30
	}
	page := pageOf(r)
	last := (total + per - 1) / per
	var items []any
	for i := (page - 1) * per; i < page*per && i < total; i++ {
		items = append(items, item(fmt.Sprintf("%s-%03d", prefix, i)))
	}
	f.paginate(w, r, page, last, items)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func newProvider(t *testing.T, server string, creds scm.Credentials) *Provider {
	t.Helper()
	p, err := New(scm.Config{Type: "Github", Server: server, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func tokenCreds() scm.Credentials { return scm.Credentials{Username: "alice", Token: testToken} }

// noSecret fails when err's message shows a credential.
func noSecret(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range []string{testToken, testPass} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q shows a credential", err)
		}
	}
}

func TestAPIBaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://github.com":                   "https://api.github.com/",
		"https://github.com/":                  "https://api.github.com/",
		"https://api.github.com":               "https://api.github.com/",
		"https://ghe.example.com":              "https://ghe.example.com/api/v3/",
		"https://ghe.example.com/":             "https://ghe.example.com/api/v3/",
		"https://ghe.example.com/api/v3":       "https://ghe.example.com/api/v3/",
		"http://127.0.0.1:8080/github":         "http://127.0.0.1:8080/github/api/v3/",
		"https://ghe.example.com:8443/api/v3/": "https://ghe.example.com:8443/api/v3/",
	} {
		got, err := APIBaseURL(in)
		if err != nil || got.String() != want {
			t.Errorf("APIBaseURL(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	if _, err := APIBaseURL("ftp://x"); !errors.Is(err, scm.ErrBadURL) {
		t.Errorf("ftp: %v", err)
	}
}

func TestVerify(t *testing.T) {
	f := newFakeGitHub(t)
	ctx := context.Background()

	tok, err := newProvider(t, f.URL, tokenCreds()).Verify(ctx)
	if err != nil || tok != "" {
		t.Fatalf("token: Verify = %q, %v", tok, err)
	}
	tok, err = newProvider(t, f.URL, scm.Credentials{Username: "alice", Password: testPass}).Verify(ctx)
	if err != nil || tok != "" {
		t.Fatalf("password: Verify = %q, %v (GitHub exchanges no password for a token)", tok, err)
	}
	f.mu.Lock()
	reqs := append([]string(nil), f.requests...)
	f.mu.Unlock()
	if len(reqs) != 2 || reqs[0] != "GET /api/v3/user auth=Bearer "+testToken || !strings.HasPrefix(reqs[1], "GET /api/v3/user auth=Basic ") {
		t.Errorf("requests = %q", reqs)
	}

	for name, creds := range map[string]scm.Credentials{
		"wrong token":    {Username: "alice", Token: "ghp_wrongwrongwrong"},
		"wrong password": {Username: "alice", Password: "not-" + testPass},
	} {
		_, err := newProvider(t, f.URL, creds).Verify(ctx)
		if !errors.Is(err, scm.ErrUnauthorized) {
			t.Errorf("%s: err = %v, want ErrUnauthorized", name, err)
		}
		for _, s := range []string{creds.Token, creds.Password} {
			if s != "" && err != nil && strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q shows the credential", name, err)
			}
		}
	}
}

func TestListingsWalkAllPages(t *testing.T) {
	f := newFakeGitHub(t)
	p := newProvider(t, f.URL, tokenCreds())
	ctx := context.Background()

	repos, err := p.Repos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(repos) != 6 || repos[0].Name != "alice/repo-1-0" || repos[5].Name != "alice/repo-2-2" ||
		repos[5].URL != "https://ghe.example.test/alice/repo-2-2.git" {
		t.Errorf("repos = %+v", repos)
	}

	branches, err := p.Branches(ctx, "o/r")
	if err != nil {
		t.Fatal(err)
	}
	if len(branches) != 150 || branches[0] != "branch-000" || branches[149] != "branch-149" {
		t.Errorf("got %d branches: first %q last %q", len(branches), branches[0], branches[len(branches)-1])
	}
	tags, err := p.Tags(ctx, "o/r")
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 120 || tags[119] != "v-119" {
		t.Errorf("got %d tags", len(tags))
	}
	f.mu.Lock()
	var pages []string
	for _, r := range f.requests {
		if strings.Contains(r, "/branches") {
			pages = append(pages, strings.Fields(r)[1])
		}
	}
	f.mu.Unlock()
	if len(pages) != 2 || !strings.Contains(pages[1], "page=2") {
		t.Errorf("branch requests = %q, want two pages", pages)
	}

	tt, err := p.TemplateType(ctx, "o/r")
	if err != nil || tt != "Maven" {
		t.Errorf("TemplateType = %q, %v; want Maven (go.mod is a directory there)", tt, err)
	}
}

func TestErrorsAreClassified(t *testing.T) {
	f := newFakeGitHub(t)
	ctx := context.Background()
	for _, tc := range []struct {
		repo string
		want error
	}{
		{"o/missing", scm.ErrNotFound},
		{"o/ratelimited", scm.ErrRateLimited},
		{"o/secondary", scm.ErrRateLimited},
		{"o/toomany", scm.ErrRateLimited},
		{"o/broken", scm.ErrUnreachable},
		{"../etc", scm.ErrNotFound},
		{"o/r/../x", scm.ErrNotFound},
		{"noslash", scm.ErrNotFound},
	} {
		// A fresh client each time: go-github remembers a rate limit and would
		// answer the next call without asking the server.
		p := newProvider(t, f.URL, tokenCreds())
		_, err := p.Branches(ctx, tc.repo)
		if !errors.Is(err, tc.want) {
			t.Errorf("Branches(%q) = %v, want %v", tc.repo, err, tc.want)
		}
		noSecret(t, err)
	}

	p := newProvider(t, f.URL, tokenCreds())
	_, err := p.CreateWebhook(ctx, "o/readonly", scm.Webhook{URL: "http://ci/hook", Secret: "hooksecret", Events: []string{scm.EventPush}})
	if !errors.Is(err, scm.ErrForbidden) || strings.Contains(err.Error(), "hooksecret") {
		t.Errorf("webhook without admin rights: %v, want ErrForbidden", err)
	}
	if _, err := p.TemplateType(ctx, "o/missing"); !errors.Is(err, scm.ErrNotFound) {
		t.Errorf("TemplateType(missing) = %v", err)
	}
	if err := p.CreateTag(ctx, "o/r", "exists", "abc"); err == nil || !strings.Contains(err.Error(), "Reference already exists") {
		t.Errorf("existing tag: %v", err)
	}

	// Nothing listening: unreachable.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	_, err = newProvider(t, closed, tokenCreds()).Verify(ctx)
	if !errors.Is(err, scm.ErrUnreachable) {
		t.Errorf("closed port: %v, want ErrUnreachable", err)
	}
	noSecret(t, err)

	// A server at a refused address is never dialed.
	_, err = newProvider(t, "http://169.254.169.254", tokenCreds()).Verify(ctx)
	if !errors.Is(err, scm.ErrBadURL) {
		t.Errorf("metadata address: %v, want ErrBadURL", err)
	}
}

func TestWrites(t *testing.T) {
	f := newFakeGitHub(t)
	p := newProvider(t, f.URL, tokenCreds())
	ctx := context.Background()

	if err := p.CreateTag(ctx, "o/r", "rec-1", "0123456789abcdef0123456789abcdef01234567"); err != nil {
		t.Fatal(err)
	}
	if b := f.body(t, "POST /api/v3/repos/o/r/git/refs"); b["ref"] != "refs/tags/rec-1" || b["sha"] != "0123456789abcdef0123456789abcdef01234567" {
		t.Errorf("create ref body = %v", b)
	}

	err := p.SetCommitStatus(ctx, "o/r", "cafe", scm.CommitStatus{State: scm.StateSuccess, TargetURL: "http://ci/records/1", Description: strings.Repeat("d", 200), Context: "cyclone/p"})
	if err != nil {
		t.Fatal(err)
	}
	b := f.body(t, "POST /api/v3/repos/o/r/statuses/cafe")
	if b["state"] != "success" || b["target_url"] != "http://ci/records/1" || b["context"] != "cyclone/p" || len([]rune(b["description"].(string))) != 140 {
		t.Errorf("status body = %v", b)
	}
	if err := p.SetCommitStatus(ctx, "o/r", "cafe", scm.CommitStatus{State: "bogus"}); err == nil {
		t.Error("unknown state accepted")
	}

	id, err := p.CreateWebhook(ctx, "o/r", scm.Webhook{URL: "https://ci.example.test/hook", Secret: "hooksecret",
		Events: []string{scm.EventPush, scm.EventTagRelease, scm.EventPullRequest, scm.EventPullRequestComment}})
	if err != nil || id != "12345678" {
		t.Fatalf("CreateWebhook = %q, %v", id, err)
	}
	b = f.body(t, "POST /api/v3/repos/o/r/hooks")
	cfg := b["config"].(map[string]any)
	if b["name"] != "web" || b["active"] != true || cfg["url"] != "https://ci.example.test/hook" || cfg["content_type"] != "json" || cfg["secret"] != "hooksecret" {
		t.Errorf("hook body = %v", b)
	}
	if got := fmt.Sprint(b["events"]); got != "[push create pull_request issue_comment]" {
		t.Errorf("hook events = %s", got)
	}
	if _, err := p.CreateWebhook(ctx, "o/r", scm.Webhook{URL: "u", Events: []string{"bogus"}}); err == nil {
		t.Error("unknown event accepted")
	}

	if err := p.DeleteWebhook(ctx, "o/r", id); err != nil {
		t.Errorf("DeleteWebhook = %v", err)
	}
	if err := p.DeleteWebhook(ctx, "o/r", "999"); err != nil {
		t.Errorf("DeleteWebhook(gone) = %v, want nil", err)
	}
	if err := p.DeleteWebhook(ctx, "o/r", "not-a-number"); !errors.Is(err, scm.ErrNotFound) {
		t.Errorf("DeleteWebhook(bad id) = %v", err)
	}
}

func TestCredentialsStayOnTheAPIHost(t *testing.T) {
	// The API redirects to another host: the Authorization header must not follow.
	var seen string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Get("Authorization")
		writeJSON(w, 200, map[string]any{"login": "alice"})
	}))
	t.Cleanup(other.Close)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Same address, other host name: "localhost" instead of 127.0.0.1.
		http.Redirect(w, r, strings.Replace(other.URL, "127.0.0.1", "localhost", 1)+"/user", http.StatusFound)
	}))
	t.Cleanup(api.Close)
	if _, err := newProvider(t, api.URL, tokenCreds()).Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	if seen != "" {
		t.Errorf("the other host received Authorization %q", seen)
	}
}
