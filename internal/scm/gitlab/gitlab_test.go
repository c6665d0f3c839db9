package gitlab

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

	"github.com/cycloneci/cyclone/internal/scm"
)

const (
	testToken  = "glpat-s3cr3tT0ken"
	testPass   = "hunter2-pass"
	oauthToken = "oauth-access-t0ken"
	project    = "group/sub/app" // the project that exists
)

// fakeGitLab answers the REST API v4 under /api/v4/ and the OAuth token endpoint
// with the documented JSON and pagination headers (X-Page, X-Next-Page,
// X-Total-Pages, X-Per-Page).
type fakeGitLab struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string // "METHOD escaped-path?query auth=<Authorization> pt=<PRIVATE-TOKEN>"
	bodies   map[string][]map[string]any
}

func newFakeGitLab(t *testing.T) *fakeGitLab {
	t.Helper()
	f := &fakeGitLab{bodies: map[string][]map[string]any{}}
	mux := http.NewServeMux()
	api := "/api/v4"

	mux.HandleFunc("GET "+api+"/user", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"id": 1, "username": "alice", "name": "Alice", "state": "active"})
	})
	mux.HandleFunc("GET "+api+"/projects", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("membership") != "true" {
			writeJSON(w, 400, map[string]any{"error": "the fake wants membership=true"})
			return
		}
		page := pageOf(r)
		var items []any
		for i := range 3 {
			path := fmt.Sprintf("group/p%d-%d", page, i)
			items = append(items, map[string]any{
				"id": page*10 + i, "name": path[6:], "path": path[6:], "path_with_namespace": path,
				"http_url_to_repo": "https://gitlab.example.test/" + path + ".git",
				"web_url":          "https://gitlab.example.test/" + path,
			})
		}
		paginate(w, page, 2, items)
	})
	mux.HandleFunc("GET "+api+"/projects/{id}/repository/branches", f.forProject(func(w http.ResponseWriter, r *http.Request) {
		namesPages(w, r, "branch", 150, func(n string) any {
			return map[string]any{"name": n, "merged": false, "protected": false, "default": n == "branch-000", "commit": map[string]any{"id": "abc"}}
		})
	}))
	mux.HandleFunc("GET "+api+"/projects/{id}/repository/tags", f.forProject(func(w http.ResponseWriter, r *http.Request) {
		namesPages(w, r, "v", 101, func(n string) any {
			return map[string]any{"name": n, "target": "abc", "commit": map[string]any{"id": "abc"}}
		})
	}))
	mux.HandleFunc("GET "+api+"/projects/{id}/repository/tree", f.forProject(func(w http.ResponseWriter, r *http.Request) {
		// Two pages: page 1 has a directory named pom.xml (ignored), page 2 the
		// build.gradle file.
		if pageOf(r) == 1 {
			paginate(w, 1, 2, []any{
				map[string]any{"id": "1", "name": "README.md", "type": "blob", "path": "README.md", "mode": "100644"},
				map[string]any{"id": "2", "name": "pom.xml", "type": "tree", "path": "pom.xml", "mode": "040000"},
			})
			return
		}
		paginate(w, 2, 2, []any{map[string]any{"id": "3", "name": "build.gradle", "type": "blob", "path": "build.gradle", "mode": "100644"}})
	}))
	mux.HandleFunc("POST "+api+"/projects/{id}/repository/tags", f.forProject(func(w http.ResponseWriter, r *http.Request) {
		b := f.record(r)
		if b["tag_name"] == "exists" {
			writeJSON(w, 400, map[string]any{"message": "Tag exists already"})
			return
		}
		writeJSON(w, 201, map[string]any{"name": b["tag_name"], "target": b["ref"], "commit": map[string]any{"id": b["ref"]}})
	}))
	mux.HandleFunc("POST "+api+"/projects/{id}/statuses/{sha}", f.forProject(func(w http.ResponseWriter, r *http.Request) {
		b := f.record(r)
		writeJSON(w, 201, map[string]any{"id": 7, "sha": r.PathValue("sha"), "status": b["state"], "name": b["name"]})
	}))
	mux.HandleFunc("POST "+api+"/projects/{id}/hooks", f.forProject(func(w http.ResponseWriter, r *http.Request) {
		b := f.record(r)
		writeJSON(w, 201, map[string]any{"id": 42, "url": b["url"], "push_events": b["push_events"]})
	}))
	mux.HandleFunc("DELETE "+api+"/projects/{id}/hooks/{hook}", f.forProject(func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("hook") == "42" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, 404, map[string]any{"message": "404 Not Found"})
	}))

	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.EscapedPath()+"?"+r.URL.RawQuery+" auth="+r.Header.Get("Authorization")+" pt="+r.Header.Get("Private-Token"))
		f.mu.Unlock()
		if r.Method == http.MethodPost && r.URL.Path == "/oauth/token" {
			f.token(w, r)
			return
		}
		switch r.Header.Get("Authorization") {
		case "Bearer " + testToken, "Bearer " + oauthToken:
		default:
			// This fake echoes the credential to prove errors redact it.
			writeJSON(w, 401, map[string]any{"message": "401 Unauthorized " + r.Header.Get("Authorization")})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

// token is the resource-owner password grant of GitLab's OAuth provider.
func (f *fakeGitLab) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "password" {
		writeJSON(w, 400, map[string]any{"error": "unsupported_grant_type"})
		return
	}
	if r.PostForm.Get("username") != "alice" || r.PostForm.Get("password") != testPass {
		writeJSON(w, 400, map[string]any{"error": "invalid_grant",
			"error_description": "The provided authorization grant is invalid, expired, revoked (" + r.PostForm.Get("password") + ")"})
		return
	}
	writeJSON(w, 200, map[string]any{"access_token": oauthToken, "token_type": "Bearer", "expires_in": 7200, "refresh_token": "r", "scope": "api", "created_at": 1700000000})
}

// forProject serves h for the existing project and the failure answers for the
// projects named after them.
func (f *fakeGitLab) forProject(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case project:
			h(w, r)
		case "group/ratelimited":
			w.Header().Set("RateLimit-Limit", "600")
			w.Header().Set("RateLimit-Remaining", "0")
			w.Header().Set("Retry-After", "60")
			writeJSON(w, 429, map[string]any{"message": "Retry later"})
		case "group/broken":
			writeJSON(w, 500, map[string]any{"message": "500 Internal Server Error"})
		case "group/readonly":
			writeJSON(w, 403, map[string]any{"message": "403 Forbidden"})
		default:
			writeJSON(w, 404, map[string]any{"message": "404 Project Not Found"})
		}
	}
}

func (f *fakeGitLab) record(r *http.Request) map[string]any {
	var b map[string]any
	_ = json.NewDecoder(r.Body).Decode(&b)
	f.mu.Lock()
	defer f.mu.Unlock()
	k := r.Method + " " + r.URL.EscapedPath()
	f.bodies[k] = append(f.bodies[k], b)
	return b
}

func (f *fakeGitLab) body(t *testing.T, key string) map[string]any {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies[key]) != 1 {
		t.Fatalf("%s received %d times, want 1 (have %v)", key, len(f.bodies[key]), f.bodies)
	}
	return f.bodies[key][0]
}

func (f *fakeGitLab) requestsMatching(s string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.requests {
		if strings.Contains(r, s) {
			out = append(out, r)
		}
	}
	return out
}

func pageOf(r *http.Request) int {
	p, err := strconv.Atoi(r.URL.Query().Get("page"))
	if err != nil || p < 1 {
		return 1
	}
	return p
}

func paginate(w http.ResponseWriter, page, last int, items []any) {
	w.Header().Set("X-Page", strconv.Itoa(page))
	w.Header().Set("X-Total-Pages", strconv.Itoa(last))
	w.Header().Set("X-Per-Page", "100")
	if page < last {
		w.Header().Set("X-Next-Page", strconv.Itoa(page+1))
	} else {
		w.Header().Set("X-Next-Page", "")
	}
	writeJSON(w, 200, items)
}

func namesPages(w http.ResponseWriter, r *http.Request, prefix string, total int, item func(string) any) {
	per, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
	if per <= 0 {
		per = 20
	}
	page := pageOf(r)
	var items []any
	for i := (page - 1) * per; i < page*per && i < total; i++ {
		items = append(items, item(fmt.Sprintf("%s-%03d", prefix, i)))
	}
	paginate(w, page, (total+per-1)/per, items)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func newProvider(t *testing.T, server string, creds scm.Credentials) *Provider {
	t.Helper()
	p, err := New(scm.Config{Type: "Gitlab", Server: server, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func tokenCreds() scm.Credentials { return scm.Credentials{Token: testToken} }

func noSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range append([]string{testToken, testPass, oauthToken}, secrets...) {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q shows a secret", err)
		}
	}
}

func TestVerifyWithToken(t *testing.T) {
	f := newFakeGitLab(t)
	tok, err := newProvider(t, f.URL+"/", tokenCreds()).Verify(context.Background())
	if err != nil || tok != "" {
		t.Fatalf("Verify = %q, %v", tok, err)
	}
	reqs := f.requestsMatching("/api/v4/user")
	if len(reqs) != 1 || !strings.HasSuffix(reqs[0], "auth=Bearer "+testToken+" pt=") {
		t.Errorf("requests = %q", reqs)
	}

	_, err = newProvider(t, f.URL, scm.Credentials{Token: "glpat-wrong-wrong"}).Verify(context.Background())
	if !errors.Is(err, scm.ErrUnauthorized) {
		t.Errorf("wrong token: %v, want ErrUnauthorized", err)
	}
	noSecret(t, err, "glpat-wrong-wrong")
}

func TestVerifyExchangesThePassword(t *testing.T) {
	f := newFakeGitLab(t)
	p := newProvider(t, f.URL+"/api/v4", scm.Credentials{Username: "alice", Password: testPass})
	tok, err := p.Verify(context.Background())
	if err != nil || tok != oauthToken {
		t.Fatalf("Verify = %q, %v; want the OAuth token", tok, err)
	}
	// The token, not the password, authenticates the API calls; one exchange.
	if _, err := p.Branches(context.Background(), project); err != nil {
		t.Fatal(err)
	}
	if n := len(f.requestsMatching("/oauth/token")); n != 1 {
		t.Errorf("%d token exchanges, want 1", n)
	}
	for _, r := range f.requestsMatching("/api/v4/") {
		if !strings.Contains(r, "auth=Bearer "+oauthToken) || strings.Contains(r, testPass) {
			t.Errorf("request %q", r)
		}
	}

	_, err = newProvider(t, f.URL, scm.Credentials{Username: "alice", Password: "wrong-" + testPass}).Verify(context.Background())
	if !errors.Is(err, scm.ErrUnauthorized) {
		t.Errorf("wrong password: %v, want ErrUnauthorized", err)
	}
	noSecret(t, err, "wrong-"+testPass)

	if _, err := New(scm.Config{Type: "Gitlab", Server: f.URL, Credentials: scm.Credentials{Username: "alice"}}); !errors.Is(err, scm.ErrUnauthorized) {
		t.Errorf("no secret: %v, want ErrUnauthorized", err)
	}
}

func TestListingsWalkAllPages(t *testing.T) {
	f := newFakeGitLab(t)
	p := newProvider(t, f.URL, tokenCreds())
	ctx := context.Background()

	repos, err := p.Repos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(repos) != 6 || repos[0].Name != "group/p1-0" || repos[5].Name != "group/p2-2" || repos[5].URL != "https://gitlab.example.test/group/p2-2.git" {
		t.Errorf("repos = %+v", repos)
	}
	bs, err := p.Branches(ctx, project)
	if err != nil || len(bs) != 150 || bs[0] != "branch-000" || bs[149] != "branch-149" {
		t.Errorf("branches: %d, %v", len(bs), err)
	}
	reqs := f.requestsMatching("/repository/branches")
	if len(reqs) != 2 || !strings.HasPrefix(reqs[0], "GET /api/v4/projects/group%2Fsub%2Fapp/repository/branches?") || !strings.Contains(reqs[1], "page=2") {
		t.Errorf("branch requests = %q (the project path must be URL-encoded, 2 pages)", reqs)
	}
	ts, err := p.Tags(ctx, project)
	if err != nil || len(ts) != 101 || ts[100] != "v-100" {
		t.Errorf("tags: %d, %v", len(ts), err)
	}
	tt, err := p.TemplateType(ctx, project)
	if err != nil || tt != "Gradle" {
		t.Errorf("TemplateType = %q, %v; want Gradle (from page 2; pom.xml is a directory)", tt, err)
	}
}

func TestErrorsAreClassified(t *testing.T) {
	f := newFakeGitLab(t)
	p := newProvider(t, f.URL, tokenCreds())
	ctx := context.Background()
	for _, tc := range []struct {
		repo string
		want error
	}{
		{"group/missing", scm.ErrNotFound},
		{"group/ratelimited", scm.ErrRateLimited},
		{"group/broken", scm.ErrUnreachable},
		{"group/readonly", scm.ErrForbidden},
		{"group/../x", scm.ErrNotFound},
		{"", scm.ErrNotFound},
		{"/abs", scm.ErrNotFound},
	} {
		_, err := p.Tags(ctx, tc.repo)
		if !errors.Is(err, tc.want) {
			t.Errorf("Tags(%q) = %v, want %v", tc.repo, err, tc.want)
		}
		noSecret(t, err)
	}
	if n := len(f.requestsMatching("/projects/group%2Fbroken/")); n != 1 {
		t.Errorf("the 500 was asked %d times, want 1 (no retries)", n)
	}
	if err := p.CreateTag(ctx, project, "exists", "abc"); err == nil || !strings.Contains(err.Error(), "Tag exists already") {
		t.Errorf("existing tag: %v", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	if _, err := newProvider(t, closed, tokenCreds()).Verify(ctx); !errors.Is(err, scm.ErrUnreachable) {
		t.Errorf("closed port (token): %v, want ErrUnreachable", err)
	}
	_, err = newProvider(t, closed, scm.Credentials{Username: "alice", Password: testPass}).Verify(ctx)
	if !errors.Is(err, scm.ErrUnreachable) {
		t.Errorf("closed port (password): %v, want ErrUnreachable", err)
	}
	noSecret(t, err)
	if _, err := newProvider(t, "http://169.254.169.254", tokenCreds()).Verify(ctx); !errors.Is(err, scm.ErrBadURL) {
		t.Errorf("metadata address: %v, want ErrBadURL", err)
	}
}

func TestWrites(t *testing.T) {
	f := newFakeGitLab(t)
	p := newProvider(t, f.URL, tokenCreds())
	ctx := context.Background()
	const enc = "/api/v4/projects/group%2Fsub%2Fapp"

	if err := p.CreateTag(ctx, project, "rec-1", "cafe"); err != nil {
		t.Fatal(err)
	}
	if b := f.body(t, "POST "+enc+"/repository/tags"); b["tag_name"] != "rec-1" || b["ref"] != "cafe" {
		t.Errorf("tag body = %v", b)
	}

	for _, st := range []string{scm.StatePending, scm.StateFailure} {
		if err := p.SetCommitStatus(ctx, project, "sha-"+st, scm.CommitStatus{State: st, TargetURL: "http://ci/r/1", Description: "d", Context: "cyclone/p"}); err != nil {
			t.Fatal(err)
		}
	}
	if b := f.body(t, "POST "+enc+"/statuses/sha-pending"); b["state"] != "pending" || b["name"] != "cyclone/p" || b["target_url"] != "http://ci/r/1" {
		t.Errorf("status body = %v", b)
	}
	if b := f.body(t, "POST "+enc+"/statuses/sha-failure"); b["state"] != "failed" {
		t.Errorf("failure is sent as %v, want failed", b["state"])
	}

	id, err := p.CreateWebhook(ctx, project, scm.Webhook{URL: "https://ci.example.test/hook", Secret: "hooksecret", Events: []string{scm.EventTagRelease, scm.EventPullRequestComment}})
	if err != nil || id != "42" {
		t.Fatalf("CreateWebhook = %q, %v", id, err)
	}
	b := f.body(t, "POST "+enc+"/hooks")
	if b["url"] != "https://ci.example.test/hook" || b["token"] != "hooksecret" || b["push_events"] != false ||
		b["tag_push_events"] != true || b["merge_requests_events"] != false || b["note_events"] != true {
		t.Errorf("hook body = %v", b)
	}
	if _, err := p.CreateWebhook(ctx, "group/readonly", scm.Webhook{URL: "u", Secret: "hooksecret", Events: []string{scm.EventPush}}); !errors.Is(err, scm.ErrForbidden) || strings.Contains(err.Error(), "hooksecret") {
		t.Errorf("webhook without rights: %v", err)
	}
	if err := p.DeleteWebhook(ctx, project, "42"); err != nil {
		t.Errorf("DeleteWebhook = %v", err)
	}
	if err := p.DeleteWebhook(ctx, project, "43"); err != nil {
		t.Errorf("DeleteWebhook(gone) = %v, want nil", err)
	}
}
