package testenv

import (
	"crypto/subtle"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// GitServer is a real git server on loopback: `git http-backend` behind Go's CGI
// handler, serving bare repositories over smart HTTP.
type GitServer struct {
	URL  string // base URL; a repository is at URL + "/" + name + ".git"
	root string
	t    testing.TB
	// backend serves the repositories without authentication.
	backend http.Handler
	// requests counts the HTTP requests the server answered.
	requests atomic.Int64
}

// StartGitServer serves the bare repositories it creates until the test ends.
func StartGitServer(t testing.TB) *GitServer {
	t.Helper()
	return startGitServer(t, "", "")
}

// StartPrivateGitServer is StartGitServer behind HTTP basic authentication: every
// request without user and password is answered 401.
func StartPrivateGitServer(t testing.TB, user, password string) *GitServer {
	t.Helper()
	return startGitServer(t, user, password)
}

func startGitServer(t testing.TB, user, password string) *GitServer {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("git is required (make test-deps installs it): %v", err)
	}
	root := t.TempDir()
	handler := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	var h http.Handler = handler
	if user != "" {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(password)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
			handler.ServeHTTP(w, r)
		})
	}
	g := &GitServer{root: root, t: t, backend: handler}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.requests.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	return g
}

// Requests is how many HTTP requests the server has answered (a test proves with
// it that git never reached the server).
func (g *GitServer) Requests() int64 { return g.requests.Load() }

// Repo creates a bare repository named name whose master branch has one commit per
// entry of commits (each a map of file path to content), and returns its URL.
func (g *GitServer) Repo(name string, commits ...map[string]string) string {
	g.t.Helper()
	bare := filepath.Join(g.root, name+".git")
	work := g.t.TempDir()
	g.git("", "init", "-q", "--bare", bare)
	g.git("", "init", "-q", "-b", "master", work)
	for i, files := range commits {
		for path, content := range files {
			full := filepath.Join(work, path)
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				g.t.Fatal(err)
			}
			if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
				g.t.Fatal(err)
			}
		}
		g.git(work, "add", "-A")
		g.git(work, "commit", "-q", "-m", "commit "+strings.Repeat("I", i+1))
	}
	g.git(work, "push", "-q", bare, "master")
	return g.URL + "/" + name + ".git"
}

// Head returns the commit ID master points to in the named repository.
func (g *GitServer) Head(name string) string {
	g.t.Helper()
	return strings.TrimSpace(g.git("", "--git-dir", filepath.Join(g.root, name+".git"), "rev-parse", "master"))
}

func (g *GitServer) git(dir string, args ...string) string {
	g.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=Test Author", "GIT_AUTHOR_EMAIL=author@example.com",
		"GIT_COMMITTER_NAME=Test Author", "GIT_COMMITTER_EMAIL=author@example.com",
		"GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		g.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}
