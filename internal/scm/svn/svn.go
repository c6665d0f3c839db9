// Package svn is the scm.Provider for Subversion, and the Subversion checkout the
// codeCheckout stage runs. Both run the svn program (Debian's subversion) with an
// argv list, never a shell.
//
// Credentials never appear in argv: the password goes to svn on its standard input
// (--password-from-stdin). Every run has --non-interactive, --no-auth-cache and a
// fresh, empty --config-dir, so nothing from the user's ~/.subversion (cached
// credentials, proxies, trusted certificates, tunnels) is used and nothing is
// written there; the environment is reduced to PATH, HOME (the temporary config
// dir) and LC_ALL=C (so the messages classified below are in English).
//
// The project's server is a repository root URL (svn://, http:// or https://).
// Its top-level directories are the "repositories" (each laid out as trunk,
// branches/, tags/); the repository "" is the server root itself. svn dials by
// itself, so the URL guard checks the host right before each run (a DNS answer
// changing in between is not caught, unlike with scm.HTTPClient).
package svn

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/cycloneci/cyclone/internal/scm"
)

// Program is the svn executable.
const Program = "svn"

// defaultTimeout bounds a provider call whose context has no deadline.
const defaultTimeout = 2 * time.Minute

// execSVN runs svn with args, stdin and outputs; tests wrap it to record argv.
var execSVN = func(ctx context.Context, args []string, env []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := exec.CommandContext(ctx, Program, args...)
	cmd.Env = env
	cmd.Stdin = stdin
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	return cmd.Run()
}

// Provider talks to one Subversion server with one set of credentials.
type Provider struct {
	server string // the repository root URL, without a trailing slash
	creds  scm.Credentials
}

var _ scm.Provider = (*Provider)(nil)

// New makes a Provider for cfg; it runs nothing. The server URL is expected to
// have passed scm.CheckURL (providers.New does that).
func New(cfg scm.Config) (*Provider, error) {
	u, err := url.Parse(strings.TrimSpace(cfg.Server))
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Contains(u.Path, "@") {
		return nil, fmt.Errorf("svn: server %q: %w", cfg.Server, scm.ErrBadURL)
	}
	switch u.Scheme {
	case "svn", "http", "https":
	default:
		return nil, fmt.Errorf("svn: server %q: %w", cfg.Server, scm.ErrBadURL)
	}
	return &Provider{server: strings.TrimSuffix(u.String(), "/"), creds: cfg.Credentials}, nil
}

// Verify checks the credentials with svn info on the server URL. Subversion has no
// tokens: it returns "".
func (p *Provider) Verify(ctx context.Context) (string, error) {
	_, err := p.run(ctx, "verifying the credentials", "info", "--xml", "--", p.server+"@")
	return "", err
}

// Repos lists the top-level directories of the server.
func (p *Provider) Repos(ctx context.Context) ([]scm.Repository, error) {
	entries, err := p.list(ctx, "listing repositories", p.server)
	if err != nil {
		return nil, err
	}
	var out []scm.Repository
	for _, e := range entries {
		if e.Kind == "dir" {
			out = append(out, scm.Repository{Name: e.Name, URL: p.server + "/" + escapePath(e.Name)})
		}
	}
	return out, nil
}

// Branches lists "trunk" (when the repository has one) and the directories in
// branches/.
func (p *Provider) Branches(ctx context.Context, repo string) ([]string, error) {
	base, err := p.repoURL(repo)
	if err != nil {
		return nil, err
	}
	op := "listing branches of " + display(repo)
	top, err := p.list(ctx, op, base)
	if err != nil {
		return nil, err
	}
	var out []string
	if hasDir(top, "trunk") {
		out = append(out, "trunk")
	}
	if hasDir(top, "branches") {
		bs, err := p.list(ctx, op, base+"/branches")
		if err != nil {
			return nil, err
		}
		out = append(out, dirNames(bs)...)
	}
	return out, nil
}

// Tags lists the directories in tags/.
func (p *Provider) Tags(ctx context.Context, repo string) ([]string, error) {
	base, err := p.repoURL(repo)
	if err != nil {
		return nil, err
	}
	op := "listing tags of " + display(repo)
	top, err := p.list(ctx, op, base)
	if err != nil {
		return nil, err
	}
	if !hasDir(top, "tags") {
		return nil, nil
	}
	ts, err := p.list(ctx, op, base+"/tags")
	if err != nil {
		return nil, err
	}
	return dirNames(ts), nil
}

// TemplateType detects the build tool from the files in trunk, or at the
// repository's root when it has no trunk.
func (p *Provider) TemplateType(ctx context.Context, repo string) (string, error) {
	base, err := p.repoURL(repo)
	if err != nil {
		return "", err
	}
	op := "reading the root of " + display(repo)
	entries, err := p.list(ctx, op, base)
	if err != nil {
		return "", err
	}
	if hasDir(entries, "trunk") {
		if entries, err = p.list(ctx, op, base+"/trunk"); err != nil {
			return "", err
		}
	}
	var files []string
	for _, e := range entries {
		if e.Kind == "file" {
			files = append(files, e.Name)
		}
	}
	return scm.DetectTemplateType(files), nil
}

var (
	revisionRe = regexp.MustCompile(`^(?:[0-9]{1,19}|HEAD)$`)
	tagNameRe  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.+-]*$`)
)

// CreateTag copies path (below the server URL: the directory a record checked out,
// such as "trunk", "app/trunk" or "app/branches/b1") as it was at revision commit
// to <name> in the tags/ directory of its trunk/branches/tags layout, creating
// tags/ if needed: for .../X/trunk, .../X/branches/<b> or .../X/tags/<t> (and any
// directory below them) that is .../X/tags. A path in no such layout (the server
// root, a project without trunk/) has no tags/ to copy to, and copying a directory
// into a tags/ inside itself is no tag: that is an error, before svn runs. An
// existing tag is an error too: svn copy would copy into it.
func (p *Provider) CreateTag(ctx context.Context, path, name, commit string) error {
	src, err := p.repoURL(path)
	if err != nil {
		return err
	}
	if !tagNameRe.MatchString(name) || strings.Contains(name, "..") || len(name) > 255 {
		return fmt.Errorf("svn: %q is not a valid tag name", name)
	}
	if !revisionRe.MatchString(commit) || commit == "HEAD" {
		return fmt.Errorf("svn: %q is not a revision number", commit)
	}
	tags, ok := TagsDir(path)
	if !ok {
		return fmt.Errorf("svn: cannot tag %s: it is not trunk, a branch or a tag of a trunk/branches/tags layout, so it has no tags/ directory next to it", display(path))
	}
	tagsURL, err := p.repoURL(tags)
	if err != nil {
		return err
	}
	op := fmt.Sprintf("tagging revision %s of %s as %s/%s", commit, display(path), tags, name)
	dst := tagsURL + "/" + name
	if _, err := p.run(ctx, op, "info", "--xml", "--", dst+"@"); err == nil {
		return fmt.Errorf("svn: %s: the tag already exists", op)
	} else if !errors.Is(err, scm.ErrNotFound) {
		return err
	}
	// src@commit: the directory as it was at the checked-out revision (a peg
	// revision, so a later move or deletion of the path does not matter).
	_, err = p.run(ctx, op, "copy", "--parents", "-m", "Cyclone: tag "+name+" at r"+commit,
		"--", src+"@"+commit, dst)
	return err
}

// TagsDir is the tags/ directory of the trunk/branches/tags layout path is in: the
// innermost .../trunk, .../branches/<b> or .../tags/<t> in path decides, and the
// tags directory sits next to it ("app/branches/b1/src" -> "app/tags",
// "trunk" -> "tags"). ok is false when path is in no such layout.
func TagsDir(path string) (tags string, ok bool) {
	path = strings.Trim(path, "/")
	if path == "" {
		return "", false
	}
	segs := strings.Split(path, "/")
	for i := len(segs) - 1; i >= 0; i-- {
		parent := -1
		switch {
		case i >= 1 && (segs[i-1] == "branches" || segs[i-1] == "tags"):
			parent = i - 1
		case segs[i] == "trunk":
			parent = i
		}
		if parent >= 0 {
			return strings.Join(append(segs[:parent:parent], "tags"), "/"), true
		}
	}
	return "", false
}

// SetCommitStatus: Subversion has no commit statuses.
func (p *Provider) SetCommitStatus(context.Context, string, string, scm.CommitStatus) error {
	return fmt.Errorf("svn: commit status: %w", scm.ErrUnsupported)
}

// CreateWebhook: Subversion calls Cyclone from a post-commit hook script instead.
func (p *Provider) CreateWebhook(context.Context, string, scm.Webhook) (string, error) {
	return "", fmt.Errorf("svn: webhooks (use a post-commit hook): %w", scm.ErrUnsupported)
}

// DeleteWebhook: see CreateWebhook.
func (p *Provider) DeleteWebhook(context.Context, string, string) error {
	return fmt.Errorf("svn: webhooks: %w", scm.ErrUnsupported)
}

// Checkout checks url out into dir at revision rev ("" means HEAD), writing svn's
// progress to out, and returns the revision checked out. cfg gives the credentials
// (cfg.Server is not used: url is checked with scm.CheckURL itself).
func Checkout(ctx context.Context, cfg scm.Config, url, rev, dir string, out io.Writer) (revision string, err error) {
	if err := scm.CheckURLContext(ctx, "SVN", url); err != nil {
		return "", fmt.Errorf("svn: checkout: %w", err)
	}
	if rev != "" && !revisionRe.MatchString(rev) {
		return "", fmt.Errorf("svn: checkout: %q is not a revision number: %w", rev, scm.ErrNotFound)
	}
	if dir == "" {
		return "", errors.New("svn: checkout: no directory")
	}
	args := []string{"checkout"}
	if rev != "" {
		args = append(args, "-r", rev)
	}
	// The trailing @ keeps an @ in the URL from being read as a peg revision.
	args = append(args, "--", url+"@", dir)
	creds := cfg.Credentials
	if _, err := runSVN(ctx, "checkout", creds, out, args...); err != nil {
		return "", err
	}
	var info struct {
		Entry struct {
			Revision string `xml:"revision,attr"`
		} `xml:"entry"`
	}
	stdout, err := runSVN(ctx, "reading the checked-out revision", scm.Credentials{}, nil, "info", "--xml", "--", dir+"@")
	if err != nil {
		return "", err
	}
	if err := xml.Unmarshal(stdout, &info); err != nil || info.Entry.Revision == "" {
		return "", fmt.Errorf("svn: reading the checked-out revision: unexpected svn info output")
	}
	return info.Entry.Revision, nil
}

// entry is one item of svn list --xml.
type entry struct {
	Kind string `xml:"kind,attr"`
	Name string `xml:"name"`
}

func (p *Provider) list(ctx context.Context, op, target string) ([]entry, error) {
	stdout, err := p.run(ctx, op, "list", "--xml", "--", target+"@")
	if err != nil {
		return nil, err
	}
	var doc struct {
		Lists []struct {
			Entries []entry `xml:"entry"`
		} `xml:"list"`
	}
	if err := xml.Unmarshal(stdout, &doc); err != nil {
		return nil, fmt.Errorf("svn: %s: unexpected svn list output: %w", op, err)
	}
	var out []entry
	for _, l := range doc.Lists {
		out = append(out, l.Entries...)
	}
	return out, nil
}

// run checks the server's host, then runs svn against it with the credentials.
func (p *Provider) run(ctx context.Context, op string, args ...string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	if err := scm.CheckURLContext(ctx, "SVN", p.server); err != nil {
		return nil, fmt.Errorf("svn: %s: %w", op, err)
	}
	return runSVN(ctx, op, p.creds, nil, args...)
}

// runSVN runs svn with the common options and the credentials (the password on
// stdin) and returns its stdout. progress, when not nil, gets stdout and stderr as
// they come (stdout is then not returned). Errors are classified from stderr.
func runSVN(ctx context.Context, op string, creds scm.Credentials, progress io.Writer, args ...string) ([]byte, error) {
	cfgDir, err := os.MkdirTemp("", "cyclone-svn-")
	if err != nil {
		return nil, fmt.Errorf("svn: %s: %w", op, err)
	}
	defer os.RemoveAll(cfgDir)

	argv := []string{"--non-interactive", "--no-auth-cache", "--config-dir", cfgDir}
	var stdin io.Reader = strings.NewReader("")
	password := creds.Password
	if password == "" {
		password = creds.Token
	}
	if creds.Username != "" {
		argv = append(argv, "--username", creds.Username)
	}
	if password != "" {
		argv = append(argv, "--password-from-stdin")
		stdin = strings.NewReader(password + "\n")
	}
	argv = append(argv, args...)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + cfgDir, "LC_ALL=C", "LANG=C"}

	var stdout, stderr bytes.Buffer
	var outW, errW io.Writer = &stdout, &stderr
	if progress != nil {
		outW = io.MultiWriter(&stdout, progress)
		errW = io.MultiWriter(&stderr, progress)
	}
	err = execSVN(ctx, argv, env, stdin, outW, errW)
	if err != nil {
		return nil, classify(ctx, op, stderr.String(), err, password)
	}
	return stdout.Bytes(), nil
}

var svnCode = regexp.MustCompile(`\b[EW]\d{6}\b`)

// classify maps svn's failure to the scm sentinels, quoting its last error line.
func classify(ctx context.Context, op, stderr string, runErr error, password string) error {
	var ee *exec.Error
	if errors.As(runErr, &ee) {
		return fmt.Errorf("svn: %s: the svn program cannot run: %w", op, runErr)
	}
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("svn: %s: timed out: %w", op, scm.ErrUnreachable)
		}
		return fmt.Errorf("svn: %s: %w", op, ctx.Err())
	}
	// svn says what failed over several lines ("Unable to connect ...", then why).
	var said []string
	for _, l := range strings.Split(scm.Redact(stderr, password), "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "svn: "))
		if l != "" && !strings.Contains(l, "svn help") && len(said) < 5 {
			said = append(said, l)
		}
	}
	last := strings.Join(said, "; ")
	if last == "" {
		last = runErr.Error()
	}
	codes := map[string]bool{}
	for _, c := range svnCode.FindAllString(stderr, -1) {
		codes[c] = true
	}
	has := func(cs ...string) bool {
		for _, c := range cs {
			if codes[c] {
				return true
			}
		}
		return false
	}
	lower := strings.ToLower(stderr)
	var sentinel error
	switch {
	case has("E170001", "E215004"), strings.Contains(lower, "authorization failed"), strings.Contains(lower, "authentication failed"):
		sentinel = scm.ErrUnauthorized
	case has("E170000", "W160013", "E160013", "W170000", "E160006", "E200009", "E210005", "E160005", "E175013"):
		sentinel = scm.ErrNotFound
	case has("E000111", "E170013", "E000110", "E000113", "E670002", "E670008", "E210002", "E175002", "E175012", "E120108", "E120171", "E000104", "E230001"):
		sentinel = scm.ErrUnreachable
	}
	if sentinel == nil {
		return fmt.Errorf("svn: %s: %s", op, last)
	}
	return fmt.Errorf("svn: %s: %s: %w", op, last, sentinel)
}

// repoURL returns the URL of a repository ("" is the server root); a name that is
// not a plain relative path cannot exist.
func (p *Provider) repoURL(repo string) (string, error) {
	repo = strings.Trim(repo, "/")
	if repo == "" {
		return p.server, nil
	}
	for _, seg := range strings.Split(repo, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "@\\") {
			return "", fmt.Errorf("svn: %q is not a repository path: %w", repo, scm.ErrNotFound)
		}
		for _, r := range seg {
			if r < 0x20 || r == 0x7f {
				return "", fmt.Errorf("svn: %q is not a repository path: %w", repo, scm.ErrNotFound)
			}
		}
	}
	return p.server + "/" + escapePath(repo), nil
}

func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

func display(repo string) string {
	if repo == "" {
		return "the server root"
	}
	return repo
}

func hasDir(es []entry, name string) bool {
	for _, e := range es {
		if e.Kind == "dir" && e.Name == name {
			return true
		}
	}
	return false
}

func dirNames(es []entry) []string {
	var out []string
	for _, e := range es {
		if e.Kind == "dir" {
			out = append(out, e.Name)
		}
	}
	return out
}
