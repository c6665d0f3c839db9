package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SVNServer is a real Subversion server on loopback: svnserve serving one
// repository that only the given user may read and write.
type SVNServer struct {
	URL  string // the repository root, svn://127.0.0.1:port/repo
	UUID string // the repository's UUID (what post-commit hooks name it by)
	dir  string
	t    testing.TB
	user string
	pass string
}

// StartSVNServer creates a repository with trunk/, branches/ and tags/ and serves
// it with svnserve until the test ends.
func StartSVNServer(t testing.TB, user, password string) *SVNServer {
	t.Helper()
	for _, prog := range []string{"svn", "svnadmin", "svnserve"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s is required (make test-deps installs subversion): %v", prog, err)
		}
	}
	root := t.TempDir()
	repo := filepath.Join(root, "repo")
	run(t, "svnadmin", "create", repo)
	conf := "[general]\nanon-access = none\nauth-access = write\npassword-db = passwd\nrealm = cyclone-test\n"
	writeFile(t, filepath.Join(repo, "conf", "svnserve.conf"), conf)
	writeFile(t, filepath.Join(repo, "conf", "passwd"), fmt.Sprintf("[users]\n%s = %s\n", user, password))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	cmd := exec.Command("svnserve", "--daemon", "--foreground", "--listen-host", "127.0.0.1",
		"--listen-port", strconv.Itoa(port), "--root", root)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start svnserve: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("svnserve did not listen on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := &SVNServer{URL: "svn://" + addr + "/repo", dir: repo, t: t, user: user, pass: password}
	s.UUID = strings.TrimSpace(run(t, "svnlook", "uuid", repo))
	s.Commit("layout", map[string]string{"trunk/.keep": "", "branches/.keep": "", "tags/.keep": ""})
	return s
}

// Commit adds or changes files (paths relative to the repository root) in one
// commit and returns the new revision.
func (s *SVNServer) Commit(message string, files map[string]string) string {
	s.t.Helper()
	work := s.t.TempDir()
	s.svn("checkout", "--quiet", s.URL, work)
	for path, content := range files {
		full := filepath.Join(work, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			s.t.Fatal(err)
		}
		writeFile(s.t, full, content)
	}
	s.svn("add", "--quiet", "--force", "--parents", work+"/.")
	s.svn("commit", "--quiet", "-m", message, work)
	return strings.TrimSpace(run(s.t, "svnlook", "youngest", s.dir))
}

// Changed is what `svnlook changed` prints for a revision: the body of a
// post-commit hook's request.
func (s *SVNServer) Changed(revision string) string {
	s.t.Helper()
	return run(s.t, "svnlook", "changed", "--revision", revision, s.dir)
}

// Exists reports whether a path exists in the repository's youngest revision.
func (s *SVNServer) Exists(path string) bool {
	return exec.Command("svnlook", "tree", "--full-paths", s.dir, path).Run() == nil
}

func (s *SVNServer) svn(args ...string) {
	s.t.Helper()
	cmd := exec.Command("svn", append([]string{"--non-interactive", "--no-auth-cache",
		"--config-dir", s.t.TempDir(), "--username", s.user, "--password-from-stdin"}, args...)...)
	cmd.Stdin = strings.NewReader(s.pass + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("svn %v: %v\n%s", args, err, out)
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
