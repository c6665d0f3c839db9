package activities_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/local"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// checkoutExecutors are the two ways codeCheckout runs git: on the worker (the
// local executor's workspace) and as a step (an executor without a host
// workspace).
func checkoutExecutors(t *testing.T) map[string]executor.Executor {
	return map[string]executor.Executor{
		"worker": local.New(t.TempDir()),
		"step":   &hostlessExecutor{local: local.New(t.TempDir())},
	}
}

// git connects to the address the URL check resolved, not to what the name resolves
// to when git looks it up again: a name no resolver here knows, which the check
// resolves to the git server's loopback address, checks out on the worker and in a
// step. A real name (localhost) checks out too, with the pin but no credentials in
// git's argv.
func TestCheckoutPinsCheckedAddress(t *testing.T) {
	const user, password = "carol", "pin-s3cr3t"
	gs := testenv.StartPrivateGitServer(t, user, password)
	repoURL := gs.Repo("app", map[string]string{"README.md": "pinned\n"})
	head := gs.Head("app")
	u, err := url.Parse(repoURL)
	if err != nil {
		t.Fatal(err)
	}
	const fakeHost = "cyclone-pinned.invalid"
	var resolved []string
	activities.SetGitResolver(t, func(ctx context.Context, scmType, raw string) ([]netip.Addr, error) {
		resolved = append(resolved, raw)
		if strings.Contains(raw, fakeHost) {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return activities.RealGitResolver(ctx, scmType, raw)
	})
	argv := watchArgv(t, "git")
	header := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))

	for _, host := range []string{fakeHost, "localhost"} {
		src := strings.Replace(repoURL, "127.0.0.1", host, 1)
		for name, ex := range checkoutExecutors(t) {
			a := &activities.Activities{Executor: ex}
			in := checkoutInput("rec-pin-"+name+"-"+host[:4], "Other", src, user, "master")
			commit, _, log, err := runCheckout(a, in, password)
			if err != nil || commit == nil || commit.ID != head {
				t.Fatalf("%s, %s: commit %+v, %v\n%s", host, name, commit, err, log)
			}
			if h, ok := ex.(*hostlessExecutor); ok {
				pin := "GIT_CONFIG_VALUE_1=" + host + ":" + u.Port() + ":127.0.0.1"
				if env := h.lastStep(t).Env; !strings.Contains(strings.Join(env, "\n"), pin) {
					t.Fatalf("%s: the step's environment lacks %s: %q", host, pin, env)
				}
			}
		}
	}
	if len(resolved) != 4 {
		t.Fatalf("the checkouts resolved %q, want each URL once per checkout", resolved)
	}
	assertArgv(t, argv, "http.curloptResolve="+fakeHost+":"+u.Port()+":127.0.0.1 ", password, header)
	assertArgv(t, argv, "http.curloptResolve=localhost:"+u.Port()+":", password, header)
	assertArgv(t, argv, "http.followRedirects=false", password, header)
}

// A repository URL answering with a redirect to another server is not followed
// (git would reach an address no one checked): the checkout fails for good, saying
// so, and the other server is never asked.
func TestCheckoutRefusesRedirect(t *testing.T) {
	target := testenv.StartGitServer(t)
	target.Repo("app", map[string]string{"README.md": "elsewhere\n"})
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.RequestURI(), http.StatusFound)
	}))
	t.Cleanup(redirector.Close)
	before := target.Requests()

	for name, ex := range checkoutExecutors(t) {
		a := &activities.Activities{Executor: ex}
		in := checkoutInput("rec-redirect-"+name, "Other", redirector.URL+"/app.git", "", "master")
		_, _, log, err := runCheckout(a, in, "")
		var appErr *temporal.ApplicationError
		if !temporalAppError(err, &appErr) || !appErr.NonRetryable() || appErr.Type() != activities.ErrTypeStepFailed {
			t.Fatalf("%s: error %v, want a non-retryable step failure\n%s", name, err, log)
		}
		if msg := appErr.Message(); !strings.Contains(msg, "git fetch failed") ||
			!strings.Contains(msg, "the server answered with a redirect, HTTP 302: checkouts follow no redirect") {
			t.Fatalf("%s: message %q\n%s", name, msg, log)
		}
		var ws string
		if h, ok := ex.(*hostlessExecutor); ok {
			ws = h.workspace(t, in.Record.ExecutorRecord())
		} else {
			env, err := ex.Setup(context.Background(), in.Record.ExecutorRecord())
			if err != nil {
				t.Fatal(err)
			}
			ws = env.Workspace
		}
		if _, err := os.Stat(filepath.Join(ws, "README.md")); err == nil {
			t.Fatalf("%s: the redirect's target was checked out", name)
		}
	}
	if n := target.Requests() - before; n != 0 {
		t.Fatalf("the redirect's target got %d requests", n)
	}
}
