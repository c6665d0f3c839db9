package activities

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
	"github.com/cycloneci/cyclone/internal/scm/svn"
)

// codeCheckout fetches the main code source at the record's ref into the workspace
// and records the commit: git for GitHub, GitLab and other git sources, the svn
// program for Subversion. Credentials reach the program through its environment or
// standard input, never its argv, the log or the checkout's configuration. When the
// workspace is not on this host (the Kubernetes executor's volume claim), the same
// checkout runs as a step of the record in Activities.CheckoutImage (see
// checkout_step.go).
func (a *Activities) codeCheckout(ctx context.Context, in StageInput, secrets runSecrets, log io.Writer) (stageOutcome, error) {
	checkout := in.Record.Build.Stages.CodeCheckout
	src := checkout.Main()
	if src == nil {
		return stageOutcome{}, temporal.NewNonRetryableApplicationError("no main code source", ErrTypeStepFailed, nil)
	}
	if err := model.ValidateRef("ref", in.Record.Params.Ref); err != nil {
		return stageOutcome{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeStepFailed, nil)
	}
	stop := a.heartbeat(ctx)
	defer stop()
	// The workspace comes from this worker's executor, not from the activity's
	// input: the checkout writes there on the worker's own file system.
	env, err := a.Executor.Setup(ctx, in.Record.ExecutorRecord())
	if err != nil {
		return stageOutcome{}, fmt.Errorf("find the record's workspace: %w", err)
	}
	user, password := sourceAuth(checkout, secrets)
	svnSource := strings.EqualFold(src.Type, model.SCMSVN)
	var pins []string
	if !svnSource {
		if pins, err = checkGitURL(ctx, src.URL()); err != nil {
			return stageOutcome{}, err
		}
	}
	var commit *model.Commit
	switch {
	case env.Workspace == "":
		// The workspace is not on this host (a volume of the cluster's pods): the
		// checkout runs as a step of the record, see checkout_step.go.
		commit, err = a.stepCheckout(ctx, in, env, src, svnSource, pins, user, password, log)
	case svnSource:
		commit, err = svnCheckout(ctx, src, in.Record.Params.Ref, user, password, env.Workspace, log)
	default:
		commit, err = gitCheckout(ctx, src.URL(), gitFetchRef(in.Record.Params), pins, user, password, env.Workspace, log)
	}
	if err != nil {
		return stageOutcome{}, err
	}
	fmt.Fprintf(log, "Checked out %s (%s)\n", commit.ID, strings.SplitN(commit.Message, "\n", 2)[0])
	out := stageOutcome{commit: commit}
	if in.Record.Params.Name == "" {
		out.name = commit.ID[:min(7, len(commit.ID))] + "-" + in.Record.StartTime.UTC().Format("060102150405")
	}
	return out, nil
}

// gitFetchRef is what git fetches: the commit an SCM event named, when it names
// one (the branch may have moved on since), else the record's ref.
func gitFetchRef(pp model.PerformParams) string {
	if c := pp.Commit; (len(c) == 40 || len(c) == 64) && strings.Trim(strings.ToLower(c), "0123456789abcdef") == "" {
		return c
	}
	return pp.Ref
}

// sourceAuth picks the credentials of the main code source: its own username and
// password when it has them, else the project's SCM credentials, but only for a
// source on the project's SCM server, so a token never goes to another host.
func sourceAuth(c *model.CodeCheckoutStage, secrets runSecrets) (user, password string) {
	for i, src := range c.CodeSources {
		if !src.Main {
			continue
		}
		if o := src.OtherCodeSource; o != nil && secrets.sourcePasswords[i] != "" {
			return o.Username, secrets.sourcePasswords[i]
		}
		if cfg := secrets.project.SCM(); sameHost(src.URL(), cfg.Server) {
			return scm.GitAuth(cfg)
		}
	}
	return "", ""
}

// sameHost reports whether two URLs name the same scheme, host and port: the
// project's credentials never go to another server, nor over http when the project's
// server is https.
func sameHost(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil || ua.Host == "" {
		return false
	}
	return strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host)
}

// checkGitURL keeps git away from the addresses the SCM guard refuses (link-local,
// cloud metadata): git dials by itself, so the host is checked right before it runs.
// For http(s) it returns the pins that make git connect to exactly the addresses
// checked (gitResolvePins), so a name answering otherwise when git resolves it again
// (DNS rebinding) is not followed; git follows no redirect either (gitHardening).
// ssh:// and git:// URLs are checked but not pinned: ssh and git's own transport
// resolve the name again by themselves.
func checkGitURL(ctx context.Context, raw string) (pins []string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, failStep("the repository URL %q is not a URL", redactURL(raw))
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		var addrs []netip.Addr
		if addrs, err = resolveGitURL(ctx, "", raw); err == nil {
			pins = gitResolvePins(u, addrs)
		}
	default: // ssh, git
		err = scm.CheckHost(ctx, u.Hostname())
	}
	if err != nil {
		return nil, checkoutError(ctx, err, fmt.Sprintf("the repository %s may not be checked out", redactURL(raw)))
	}
	return pins, nil
}

// resolveGitURL checks an http(s) repository URL and returns the addresses its
// host resolved to; tests replace it to make a name resolve where no resolver
// would.
var resolveGitURL = scm.ResolveURL

// gitResolvePins are the values of git's http.curloptResolve (curl's
// CURLOPT_RESOLVE, "host:port:addr,addr") that make git (libcurl) connect to addrs
// for u's host instead of resolving the name itself. An IP-literal host is not
// resolved at all and needs none. A name with a trailing dot is pinned with and
// without it, as curl may drop the dot. git reads http.curloptResolve from 2.37 on
// (the worker's Debian git and the default checkout image are newer).
func gitResolvePins(u *url.URL, addrs []netip.Addr) []string {
	host := u.Hostname()
	if _, err := netip.ParseAddr(host); err == nil || len(addrs) == 0 {
		return nil
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if strings.EqualFold(u.Scheme, "http") {
			port = "80"
		}
	}
	list := make([]string, len(addrs))
	for i, a := range addrs {
		a = a.WithZone("").Unmap()
		if a.Is6() {
			list[i] = "[" + a.String() + "]"
		} else {
			list[i] = a.String()
		}
	}
	names := []string{host}
	if trimmed := strings.TrimSuffix(host, "."); trimmed != host && trimmed != "" {
		names = append(names, trimmed)
	}
	pins := make([]string, len(names))
	for i, name := range names {
		pins[i] = name + ":" + port + ":" + strings.Join(list, ",")
	}
	return pins
}

// gitPinArgs are the git options applying pins.
func gitPinArgs(pins []string) []string {
	var args []string
	for _, p := range pins {
		args = append(args, "-c", "http.curloptResolve="+p)
	}
	return args
}

// gitRedirectHint explains a fetch that failed on an HTTP redirect (git prints
// "The requested URL returned error: 301" when it does not follow one), from git's
// output; "" when there was none.
func gitRedirectHint(output []byte) string {
	m := gitRedirectRe.FindSubmatch(output)
	if m == nil {
		return ""
	}
	return fmt.Sprintf(" (the server answered with a redirect, HTTP %s: checkouts follow no redirect, give the repository's final URL)", m[1])
}

// gitFetchHints explain a failed git fetch from its output: a redirect it did not
// follow, and that no credentials were given when none were.
func gitFetchHints(output []byte, withCredentials bool) string {
	hints := gitRedirectHint(output)
	if !withCredentials {
		hints += " (no credentials were given for this repository)"
	}
	return hints
}

var gitRedirectRe = regexp.MustCompile(`returned error: (3[0-9][0-9])\b`)

// checkoutError turns an SCM error met by a checkout into the stage's: a
// cancellation when the record was cancelled, a retried error when the server
// could not be reached, else a final failure saying what failed and why.
func checkoutError(ctx context.Context, err error, what string) error {
	switch {
	case ctx.Err() != nil:
		return temporal.NewCanceledError("checkout cancelled")
	case errors.Is(err, scm.ErrUnreachable):
		return fmt.Errorf("%s: %w", what, err)
	}
	return failStep("%s: %v", what, err)
}

// gitCheckout fetches ref of repoURL into ws and checks it out, connecting to the
// addresses pins give (see checkGitURL).
func gitCheckout(ctx context.Context, repoURL, ref string, pins []string, user, password, ws string, log io.Writer) (*model.Commit, error) {
	home, err := os.MkdirTemp("", "cyclone-git-home-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(home)
	env := gitEnv(home)
	if password != "" {
		env = append(env, gitConfigEnv(gitAuthEnv(repoURL, user, password))...)
	}
	shownURL := redactURL(repoURL)
	out := &tailWriter{w: log}
	options := append(append([]string{"-C", ws}, gitHardening...), gitPinArgs(pins)...)
	git := func(args ...string) error {
		fmt.Fprintf(log, "+ git %s\n", strings.ReplaceAll(strings.Join(args, " "), repoURL, shownURL))
		cmd := exec.CommandContext(ctx, "git", append(slices.Clone(options), args...)...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = out, out
		cmd.WaitDelay = 5 * time.Second
		return cmd.Run()
	}
	steps := [][]string{
		{"init", "-q"},
		{"fetch", "--no-tags", "--depth=50", "--end-of-options", repoURL, ref},
		{"checkout", "-q", "--force", "FETCH_HEAD"},
	}
	for _, args := range steps {
		if err := git(args...); err != nil {
			if ctx.Err() != nil {
				return nil, temporal.NewCanceledError("checkout cancelled")
			}
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				msg := fmt.Sprintf("git %s failed (exit code %d): ref %q of %s could not be checked out",
					args[0], exitErr.ExitCode(), ref, shownURL)
				if args[0] == "fetch" {
					msg += gitFetchHints(out.tail.Bytes(), password != "")
				}
				return nil, temporal.NewNonRetryableApplicationError(msg, ErrTypeStepFailed, nil)
			}
			return nil, fmt.Errorf("run git: %w", err)
		}
	}
	return headCommit(ctx, ws, home)
}

// gitAuthEnv gives git an Authorization header for repoURL's server through
// environment configuration (GIT_CONFIG_COUNT, see gitConfigEnv): it stays out of
// argv and out of .git/config, and is sent only to URLs under the server's scheme,
// host and port.
func gitAuthEnv(repoURL, user, password string) [][2]string {
	u, err := url.Parse(repoURL)
	if err != nil {
		return nil
	}
	prefix := u.Scheme + "://" + u.Host + "/"
	header := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	return [][2]string{{"http." + prefix + ".extraHeader", header}}
}

// gitConfigEnv is git configuration (key, value) given in the environment
// (GIT_CONFIG_COUNT, GIT_CONFIG_KEY_n, GIT_CONFIG_VALUE_n), which git's child
// processes (git-remote-https) read too.
func gitConfigEnv(kv [][2]string) []string {
	if len(kv) == 0 {
		return nil
	}
	env := []string{"GIT_CONFIG_COUNT=" + strconv.Itoa(len(kv))}
	for i, c := range kv {
		env = append(env, fmt.Sprintf("GIT_CONFIG_KEY_%d=%s", i, c[0]), fmt.Sprintf("GIT_CONFIG_VALUE_%d=%s", i, c[1]))
	}
	return env
}

// svnCheckout checks out a Subversion source. The ref names a revision ("27", or
// "HEAD": the latest), a path below the source's URL ("trunk", "branches/x",
// "tags/v1") or both ("trunk@27", "trunk@HEAD"); the commit ID is the checked-out
// revision.
func svnCheckout(ctx context.Context, src *model.CodeSource, ref, user, password, ws string, log io.Writer) (*model.Commit, error) {
	target, rev, err := svnTarget(src, ref)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "+ svn checkout %s (revision %s)\n", redactURL(target), orHead(rev))
	cfg := scm.Config{Type: model.SCMSVN, Credentials: scm.Credentials{Username: user, Password: password}}
	revision, err := svn.Checkout(ctx, cfg, target, rev, ws, log)
	if err != nil {
		return nil, checkoutError(ctx, err, fmt.Sprintf("svn checkout of %q from %s failed", ref, redactURL(target)))
	}
	return &model.Commit{ID: revision, Message: "revision " + revision}, nil
}

// SVNHead names the latest revision in a Subversion ref: "HEAD" alone is the source's
// URL at its latest revision (what a cron record of an SVN pipeline builds).
const SVNHead = "HEAD"

// svnTarget is the URL and revision ("": HEAD) a Subversion ref names below src.
func svnTarget(src *model.CodeSource, ref string) (target, rev string, err error) {
	path := ref
	if p, r, ok := strings.Cut(ref, "@"); ok {
		path, rev = p, r
	} else if isDigits(ref) || ref == SVNHead {
		path, rev = "", ref
	}
	if rev == SVNHead {
		rev = ""
	}
	if rev != "" && !isDigits(rev) {
		return "", "", temporal.NewNonRetryableApplicationError(fmt.Sprintf("ref %q: the revision must be a number", ref), ErrTypeStepFailed, nil)
	}
	target = strings.TrimRight(src.URL(), "/")
	if o := src.OtherCodeSource; o != nil && o.Path != "" {
		target += "/" + strings.Trim(o.Path, "/")
	}
	if path != "" {
		target += "/" + path
	}
	return target, rev, nil
}

func orHead(rev string) string {
	if rev == "" {
		return "HEAD"
	}
	return rev
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// gitEnv runs git with nothing of the worker's: not its environment (which holds the
// secret key and store address), not its global or system configuration, not its
// credential helpers or SSH keys and agent. A pipeline reaches only what its own
// credentials open, and a missing credential fails instead of prompting.
func gitEnv(home string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}, gitIsolation...)
}

// gitIsolation is the environment that keeps git to the pipeline's own
// configuration and credentials, on the worker and in a checkout step alike.
var gitIsolation = []string{
	"GIT_CONFIG_NOSYSTEM=1",
	"GIT_CONFIG_GLOBAL=/dev/null",
	"GIT_TERMINAL_PROMPT=0",
	"GIT_ASKPASS=/bin/false",
	"SSH_ASKPASS=/bin/false",
	"GIT_SSH_COMMAND=ssh -F /dev/null -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes",
	"GIT_PROTOCOL_FROM_USER=0",
	"GIT_AUTHOR_NAME=cyclone", "GIT_AUTHOR_EMAIL=cyclone@localhost",
	"GIT_COMMITTER_NAME=cyclone", "GIT_COMMITTER_EMAIL=cyclone@localhost",
}

// gitHardening turns off credential helpers, every transport but the network ones a
// repository URL may name (no file://, no ext::), and HTTP redirects: the URL's
// address is checked (and pinned, see checkGitURL) before git runs, and a redirect
// would lead git to an address no one checked.
var gitHardening = []string{
	"-c", "credential.helper=",
	"-c", "http.followRedirects=false",
	"-c", "protocol.allow=never",
	"-c", "protocol.https.allow=always", "-c", "protocol.http.allow=always",
	"-c", "protocol.ssh.allow=always", "-c", "protocol.git.allow=always",
}

// redactURL hides a password in a URL before it is shown.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

func headCommit(ctx context.Context, ws, home string) (*model.Commit, error) {
	cmd := exec.CommandContext(ctx, "git", "-C", ws, "log", "-1", "--format=%H%x00%an <%ae>%x00%aI%x00%B")
	cmd.Env = gitEnv(home)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("read checked-out commit: %w", err)
	}
	parts := bytes.SplitN(out, []byte{0}, 4)
	if len(parts) != 4 {
		return nil, fmt.Errorf("read checked-out commit: unexpected git output")
	}
	return &model.Commit{
		ID:      string(parts[0]),
		Author:  string(parts[1]),
		Date:    string(parts[2]),
		Message: strings.TrimSpace(string(parts[3])),
	}, nil
}
