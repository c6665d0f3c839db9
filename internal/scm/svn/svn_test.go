package svn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/scm"
)

const (
	svnUser = "alice"
	svnPass = "s3cret-Pa55"
)

// argvLog records the argv of every svn run of the test, to prove the password is
// never in it.
type argvLog struct {
	mu   sync.Mutex
	runs [][]string
}

func recordArgv(t *testing.T) *argvLog {
	t.Helper()
	l := &argvLog{}
	old := execSVN
	execSVN = func(ctx context.Context, args, env []string, stdin io.Reader, stdout, stderr io.Writer) error {
		l.mu.Lock()
		l.runs = append(l.runs, append([]string{Program}, args...))
		l.mu.Unlock()
		return old(ctx, args, env, stdin, stdout, stderr)
	}
	t.Cleanup(func() {
		execSVN = old
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.runs) == 0 {
			t.Error("no svn run was recorded")
		}
		for _, argv := range l.runs {
			joined := strings.Join(argv, " ")
			if strings.Contains(joined, svnPass) || strings.Contains(joined, "wrong-pass") {
				t.Errorf("a password is in argv: %q", argv)
			}
			for _, must := range []string{"--non-interactive", "--no-auth-cache", "--config-dir"} {
				if !slices.Contains(argv, must) {
					t.Errorf("argv %q lacks %s", argv, must)
				}
			}
			if slices.Contains(argv, "--username") && !slices.Contains(argv, "--password-from-stdin") {
				t.Errorf("argv %q has a username but no --password-from-stdin", argv)
			}
		}
	})
	return l
}

// svnServer is a real svnserve on loopback serving one repository:
//
//	/trunk/go.mod                   (r1)
//	/branches/feature-x/            (r1)
//	/tags/                          (r1)
//	/app/trunk/pom.xml              (r1)
//	/app/branches/b1/, b2/          (r1)
//	/app/tags/v1.0/                 (r1)
//	/plain/package.json             (r1)
//	/app/trunk/added-in-r2.txt      (r2)
type svnServer struct {
	URL  string // svn://127.0.0.1:<port>
	repo string // the repository's directory
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

func startSVNServe(t *testing.T) *svnServer {
	t.Helper()
	for _, prog := range []string{"svnserve", "svnadmin", Program} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s is required (Debian package subversion): %v", prog, err)
		}
	}
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	mustRun(t, "svnadmin", "create", repo)
	conf := "[general]\nanon-access = none\nauth-access = write\npassword-db = passwd\nrealm = cyclone-test\n"
	if err := os.WriteFile(filepath.Join(repo, "conf", "svnserve.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "conf", "passwd"), []byte("[users]\n"+svnUser+" = "+svnPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Content, imported through file:// (no server, no credentials needed).
	tree := filepath.Join(dir, "import")
	files := map[string]string{
		"trunk/go.mod":            "module example.com/root\n",
		"branches/feature-x/":     "",
		"tags/":                   "",
		"app/trunk/pom.xml":       "<project/>\n",
		"app/branches/b1/":        "",
		"app/branches/b2/":        "",
		"app/tags/v1.0/":          "",
		"plain/package.json":      "{}\n",
		"plain/src/index.js":      "\n",
		"app/trunk/src/Main.java": "class Main {}\n",
	}
	for name, content := range files {
		p := filepath.Join(tree, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "svn-config")
	fileURL := "file://" + repo
	mustRun(t, Program, "import", "--config-dir", cfg, "-m", "initial", tree, fileURL)
	extra := filepath.Join(dir, "added-in-r2.txt")
	if err := os.WriteFile(extra, []byte("r2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, Program, "import", "--config-dir", cfg, "-m", "r2", extra, fileURL+"/app/trunk/added-in-r2.txt")

	port := freePort(t)
	cmd := exec.Command("svnserve", "-d", "--foreground", "--listen-host", "127.0.0.1", "--listen-port", port, "-r", repo)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := "127.0.0.1:" + port
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("svnserve does not accept on %s: %v\n%s", addr, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &svnServer{URL: "svn://" + addr, repo: repo}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

func provider(t *testing.T, server, user, pass string) *Provider {
	t.Helper()
	p, err := New(scm.Config{Type: "SVN", Server: server, Credentials: scm.Credentials{Username: user, Password: pass}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProviderAgainstSVNServe(t *testing.T) {
	recordArgv(t)
	srv := startSVNServe(t)
	p := provider(t, srv.URL, svnUser, svnPass)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if tok, err := p.Verify(ctx); err != nil || tok != "" {
		t.Fatalf("Verify = %q, %v", tok, err)
	}

	repos, err := p.Repos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range repos {
		names = append(names, r.Name)
		if r.URL != srv.URL+"/"+r.Name {
			t.Errorf("repo %s URL = %s", r.Name, r.URL)
		}
	}
	if strings.Join(names, ",") != "app,branches,plain,tags,trunk" {
		t.Errorf("repos = %v", names)
	}

	check := func(what string, got []string, err error, want ...string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
	bs, err := p.Branches(ctx, "app")
	check("Branches(app)", bs, err, "trunk", "b1", "b2")
	bs, err = p.Branches(ctx, "")
	check("Branches(root)", bs, err, "trunk", "feature-x")
	bs, err = p.Branches(ctx, "plain")
	check("Branches(plain)", bs, err)
	ts, err := p.Tags(ctx, "app")
	check("Tags(app)", ts, err, "v1.0")
	ts, err = p.Tags(ctx, "")
	check("Tags(root)", ts, err)

	for repo, want := range map[string]string{"app": "Maven", "": "Go", "plain": "NodeJS", "branches": ""} {
		if got, err := p.TemplateType(ctx, repo); err != nil || got != want {
			t.Errorf("TemplateType(%q) = %q, %v; want %q", repo, got, err, want)
		}
	}

	// Tags: the checked-out directory at a revision, copied to the tags/ next to it.
	if err := p.CreateTag(ctx, "app/trunk", "rec-1", "1"); err != nil {
		t.Fatal(err)
	}
	ts, err = p.Tags(ctx, "app")
	check("Tags(app) after CreateTag", ts, err, "rec-1", "v1.0")
	list := func(path string) string {
		t.Helper()
		out, err := exec.Command(Program, "list", "--config-dir", t.TempDir(), "file://"+srv.repo+"/"+path).CombinedOutput()
		if err != nil {
			t.Fatalf("svn list %s: %v\n%s", path, err, out)
		}
		return string(out)
	}
	if out := list("app/tags/rec-1"); strings.Contains(out, "added-in-r2.txt") || !strings.Contains(out, "pom.xml") {
		t.Errorf("app/tags/rec-1 (app/trunk at r1) holds %q", out)
	}
	if err := p.CreateTag(ctx, "app/trunk", "rec-1", "2"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second CreateTag(rec-1) = %v, want 'already exists'", err)
	}
	// A branch is tagged next to trunk's tags, with the branch's content.
	if err := p.CreateTag(ctx, "app/branches/b1", "rec-b1", "2"); err != nil {
		t.Fatal(err)
	}
	if out := list("app/tags/rec-b1"); strings.Contains(out, "pom.xml") {
		t.Errorf("app/tags/rec-b1 (the empty branch b1) holds %q", out)
	}
	// The server root's own layout: trunk -> tags.
	if err := p.CreateTag(ctx, "trunk", "rec-root", "2"); err != nil {
		t.Fatal(err)
	}
	ts, err = p.Tags(ctx, "")
	check("Tags(root) after CreateTag", ts, err, "rec-root")
	if out := list("tags/rec-root"); !strings.Contains(out, "go.mod") {
		t.Errorf("tags/rec-root (trunk) holds %q", out)
	}
	// A directory in no trunk/branches/tags layout has no tags/ to copy to.
	for _, path := range []string{"", "plain", "app", "app/branches"} {
		if err := p.CreateTag(ctx, path, "rec-x", "2"); err == nil || !strings.Contains(err.Error(), "no tags/ directory") {
			t.Errorf("CreateTag(%q) = %v, want a refusal naming the missing tags/ directory", path, err)
		}
	}
	for _, bad := range [][2]string{{"../x", "1"}, {"-r", "1"}, {"a/b", "1"}, {"ok", "--help"}, {"ok", "abc"}, {"ok", "HEAD"}, {"", "1"}} {
		if err := p.CreateTag(ctx, "app/trunk", bad[0], bad[1]); err == nil {
			t.Errorf("CreateTag(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if err := p.CreateTag(ctx, "app/trunk", "rec-9", "99"); !errors.Is(err, scm.ErrNotFound) {
		t.Errorf("CreateTag at a missing revision = %v, want ErrNotFound", err)
	}

	// Unknown repositories.
	for _, repo := range []string{"nope", "app/nope", "../etc", "a@1"} {
		if _, err := p.Branches(ctx, repo); !errors.Is(err, scm.ErrNotFound) {
			t.Errorf("Branches(%q) = %v, want ErrNotFound", repo, err)
		}
	}
	if _, err := p.TemplateType(ctx, "nope"); !errors.Is(err, scm.ErrNotFound) {
		t.Errorf("TemplateType(nope) = %v, want ErrNotFound", err)
	}

	// No statuses or webhooks on Subversion.
	if err := p.SetCommitStatus(ctx, "app", "1", scm.CommitStatus{State: scm.StateSuccess}); !errors.Is(err, scm.ErrUnsupported) {
		t.Errorf("SetCommitStatus = %v", err)
	}
	if _, err := p.CreateWebhook(ctx, "app", scm.Webhook{}); !errors.Is(err, scm.ErrUnsupported) {
		t.Errorf("CreateWebhook = %v", err)
	}
	if err := p.DeleteWebhook(ctx, "app", "1"); !errors.Is(err, scm.ErrUnsupported) {
		t.Errorf("DeleteWebhook = %v", err)
	}
}

func TestProviderErrors(t *testing.T) {
	recordArgv(t)
	srv := startSVNServe(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, err := provider(t, srv.URL, svnUser, "wrong-pass").Verify(ctx)
	if !errors.Is(err, scm.ErrUnauthorized) {
		t.Errorf("wrong password: %v, want ErrUnauthorized", err)
	}
	if err != nil && strings.Contains(err.Error(), "wrong-pass") {
		t.Errorf("error %q shows the password", err)
	}
	if _, err := provider(t, srv.URL, "", "").Repos(ctx); !errors.Is(err, scm.ErrUnauthorized) {
		t.Errorf("no credentials: %v, want ErrUnauthorized", err)
	}
	if _, err := provider(t, srv.URL+"/nope", svnUser, svnPass).Verify(ctx); !errors.Is(err, scm.ErrNotFound) {
		t.Errorf("unknown path: %v, want ErrNotFound", err)
	}
	closed := "svn://127.0.0.1:" + freePort(t)
	if _, err := provider(t, closed, svnUser, svnPass).Verify(ctx); !errors.Is(err, scm.ErrUnreachable) {
		t.Errorf("closed port: %v, want ErrUnreachable", err)
	}
	if _, err := provider(t, "svn://169.254.169.254", svnUser, svnPass).Verify(ctx); !errors.Is(err, scm.ErrBadURL) {
		t.Errorf("metadata address: %v, want ErrBadURL", err)
	}
	for _, bad := range []string{"file:///etc", "svn://u:p@127.0.0.1/", "svn+ssh://127.0.0.1/x", "svn://127.0.0.1/a@3"} {
		if _, err := New(scm.Config{Type: "SVN", Server: bad}); !errors.Is(err, scm.ErrBadURL) {
			t.Errorf("New(%q) = %v, want ErrBadURL", bad, err)
		}
	}
}

func TestCheckout(t *testing.T) {
	argv := recordArgv(t)
	srv := startSVNServe(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := scm.Config{Type: "SVN", Credentials: scm.Credentials{Username: svnUser, Password: svnPass}}

	dir := filepath.Join(t.TempDir(), "at-r1")
	var log bytes.Buffer
	rev, err := Checkout(ctx, cfg, srv.URL+"/app/trunk", "1", dir, &log)
	if err != nil || rev != "1" {
		t.Fatalf("Checkout at r1 = %q, %v\n%s", rev, err, log.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "pom.xml")); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "added-in-r2.txt")); !os.IsNotExist(err) {
		t.Errorf("r1 has added-in-r2.txt: %v", err)
	}
	if !strings.Contains(log.String(), "pom.xml") || strings.Contains(log.String(), svnPass) {
		t.Errorf("checkout log = %q", log.String())
	}

	head := filepath.Join(t.TempDir(), "head")
	rev, err = Checkout(ctx, cfg, srv.URL+"/app/trunk", "", head, io.Discard)
	if err != nil || rev != "2" {
		t.Fatalf("Checkout at HEAD = %q, %v", rev, err)
	}
	if _, err := os.Stat(filepath.Join(head, "added-in-r2.txt")); err != nil {
		t.Error(err)
	}

	bad := scm.Config{Type: "SVN", Credentials: scm.Credentials{Username: svnUser, Password: "wrong-pass"}}
	if _, err := Checkout(ctx, bad, srv.URL+"/app/trunk", "", filepath.Join(t.TempDir(), "x"), io.Discard); !errors.Is(err, scm.ErrUnauthorized) {
		t.Errorf("wrong password: %v, want ErrUnauthorized", err)
	}
	if _, err := Checkout(ctx, cfg, srv.URL+"/app/nope", "", filepath.Join(t.TempDir(), "x"), io.Discard); !errors.Is(err, scm.ErrNotFound) {
		t.Errorf("missing path: %v, want ErrNotFound", err)
	}
	if _, err := Checkout(ctx, cfg, srv.URL+"/app/trunk", "99", filepath.Join(t.TempDir(), "x"), io.Discard); !errors.Is(err, scm.ErrNotFound) {
		t.Errorf("missing revision: %v, want ErrNotFound", err)
	}

	// Refused before svn runs.
	argv.mu.Lock()
	before := len(argv.runs)
	argv.mu.Unlock()
	for _, tc := range []struct{ url, rev string }{
		{"svn://169.254.169.254/repo", ""},
		{"file://" + srv.repo, ""},
		{srv.URL + "/app/trunk", "--force"},
		{srv.URL + "/app/trunk", "1:2"},
	} {
		if _, err := Checkout(ctx, cfg, tc.url, tc.rev, filepath.Join(t.TempDir(), "x"), io.Discard); err == nil {
			t.Errorf("Checkout(%q, %q) accepted", tc.url, tc.rev)
		}
	}
	argv.mu.Lock()
	after := len(argv.runs)
	argv.mu.Unlock()
	if after != before {
		t.Errorf("%d svn runs for refused checkouts", after-before)
	}
}

func TestTagsDir(t *testing.T) {
	for path, want := range map[string]string{
		"trunk":                "tags",
		"/trunk/":              "tags",
		"trunk/src":            "tags",
		"app/trunk":            "app/tags",
		"app/branches/b1":      "app/tags",
		"app/branches/b1/src":  "app/tags",
		"app/tags/v1":          "app/tags",
		"a/trunk/vendor/trunk": "a/trunk/vendor/tags",
		"branches/trunk":       "tags",
		"":                     "",
		"app":                  "",
		"app/branches":         "",
		"tags":                 "",
		"plain/src":            "",
	} {
		got, ok := TagsDir(path)
		if got != want || ok != (want != "") {
			t.Errorf("TagsDir(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
}
