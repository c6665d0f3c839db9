package activities

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"strconv"
	"strings"

	"go.temporal.io/sdk/temporal"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
)

// DefaultCheckoutImage is the image of the checkout step on executors whose
// workspace is not on the worker's host (Kubernetes). It needs sh (with printf and
// read built in), mktemp and git, and for Subversion sources svn 1.10 or later.
const DefaultCheckoutImage = "alpine/git:v2.47.2"

// A checkout step: when the record's workspace is not on the worker's file system,
// the checkout runs as a step of the record, in Activities.CheckoutImage, with the
// same isolation as the worker's own git (gitIsolation, gitHardening).
//
// The step's command is a fixed script: the repository's URL, the ref and the
// credentials reach it through its environment only, never its argv (the pod spec's
// command, process lists, the executor's errors). The git credentials are an
// Authorization header in GIT_CONFIG_* variables, as on the worker; svn reads its
// password on standard input from the shell's printf builtin, so it is in no
// process's argv either. Both are still in the step's environment, which whoever may
// read the record's pods can read.
//
// The script reports to the activity through lines of its output that start with a
// mark made afresh for every run (checkoutMarkPrefix and random digits): the mark is
// in no repository and no server's answer, so nothing but the script can write such a
// line. Every line it writes is complete in itself and may be repeated (a Kubernetes
// log stream followed again repeats lines): "commit <sha> <date> <author>",
// "message <n> <line n of the message>", "end <lines>", "revision <svn revision>"
// and "failed <command> <exit code>". These lines are kept out of the stage's log.

// checkoutMarkPrefix starts the mark of a checkout step's report lines.
const checkoutMarkPrefix = "cyclone-checkout-"

// Environment variables of a checkout step.
const (
	envCheckoutMark = "CYCLONE_CHECKOUT_MARK"
	envCheckoutURL  = "CYCLONE_CHECKOUT_URL"
	envCheckoutRef  = "CYCLONE_CHECKOUT_REF"
	envSVNRevision  = "CYCLONE_CHECKOUT_REVISION"
	envSVNUsername  = "CYCLONE_CHECKOUT_USERNAME"
	envSVNPassword  = "CYCLONE_CHECKOUT_PASSWORD"
)

// checkoutScriptHead is shared by the git and svn scripts: the mark, the failure
// report, and a home of its own (git's and svn's configuration, never the
// workspace, which the local executor uses as HOME).
const checkoutScriptHead = `set -u
m="$` + envCheckoutMark + `"
fail() { printf '%s failed %s %s\n' "$m" "$1" "$2"; exit "$2"; }
HOME=$(mktemp -d) || fail mktemp 1
export HOME
`

// gitCheckoutScript fetches $CYCLONE_CHECKOUT_REF of $CYCLONE_CHECKOUT_URL into the
// working directory (the workspace), checks it out and reports the commit.
var gitCheckoutScript = checkoutScriptHead + `g() { git ` + strings.Join(gitHardening, " ") + ` "$@"; }
g init -q || fail init $?
g fetch --no-tags --depth=50 --end-of-options "$` + envCheckoutURL + `" "$` + envCheckoutRef + `" || fail fetch $?
g checkout -q --force FETCH_HEAD || fail checkout $?
c=$(g log -1 --format='%H %aI %an <%ae>') || fail log $?
g log -1 --format=%B > "$HOME/message" || fail log $?
printf '%s commit %s\n' "$m" "$c"
n=0
while IFS= read -r l || [ -n "$l" ]; do n=$((n+1)); printf '%s message %d %s\n' "$m" "$n" "$l"; done < "$HOME/message"
printf '%s end %d\n' "$m" "$n"
rm -rf "$HOME"
`

// svnCheckoutScript checks $CYCLONE_CHECKOUT_URL out at $CYCLONE_CHECKOUT_REVISION
// ("": HEAD) into the working directory and reports the revision.
const svnCheckoutScript = checkoutScriptHead + `set -- --non-interactive --no-auth-cache --config-dir "$HOME/svn"
if [ -n "$` + envSVNUsername + `" ]; then set -- "$@" --username "$` + envSVNUsername + `"; fi
set -- "$@" checkout
if [ -n "$` + envSVNRevision + `" ]; then set -- "$@" -r "$` + envSVNRevision + `"; fi
if [ -n "$` + envSVNPassword + `" ]; then
  printf '%s\n' "$` + envSVNPassword + `" | svn --password-from-stdin "$@" -- "$` + envCheckoutURL + `@" . || fail checkout $?
else
  svn "$@" -- "$` + envCheckoutURL + `@" . </dev/null || fail checkout $?
fi
r=$(svn --non-interactive --config-dir "$HOME/svn" info --show-item revision -- ./@) || fail info $?
printf '%s revision %s\n' "$m" "$r"
rm -rf "$HOME"
`

// newCheckoutMark returns a mark no one can guess.
func newCheckoutMark() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("checkout mark: %w", err)
	}
	return checkoutMarkPrefix + hex.EncodeToString(b), nil
}

// gitCheckoutStep is the step checking ref of repoURL out into the workspace. Its
// git connects to the addresses pins give (the worker's check, see checkGitURL),
// set in its environment like the credentials.
func gitCheckoutStep(repoURL, ref string, pins []string, user, password, mark string) executor.Step {
	env := append([]string{
		envCheckoutMark + "=" + mark,
		envCheckoutURL + "=" + repoURL,
		envCheckoutRef + "=" + ref,
		"LC_ALL=C",
	}, gitIsolation...)
	var config [][2]string
	if password != "" {
		config = gitAuthEnv(repoURL, user, password)
	}
	for _, p := range pins {
		config = append(config, [2]string{"http.curloptResolve", p})
	}
	env = append(env, gitConfigEnv(config)...)
	return executor.Step{Command: []string{"/bin/sh", "-c", gitCheckoutScript}, Env: env}
}

// svnCheckoutStep is the step checking target out at rev ("": HEAD) into the
// workspace.
func svnCheckoutStep(target, rev, user, password, mark string) executor.Step {
	return executor.Step{Command: []string{"/bin/sh", "-c", svnCheckoutScript}, Env: []string{
		envCheckoutMark + "=" + mark,
		envCheckoutURL + "=" + target,
		envSVNRevision + "=" + rev,
		envSVNUsername + "=" + user,
		envSVNPassword + "=" + password,
		"LC_ALL=C", "LANG=C",
	}}
}

// stepCheckout checks the main code source out with a step in the record's
// environment, for executors whose workspace the worker cannot write.
func (a *Activities) stepCheckout(ctx context.Context, in StageInput, env executor.Environment, src *model.CodeSource, svnSource bool, pins []string, user, password string, log io.Writer) (*model.Commit, error) {
	mark, err := newCheckoutMark()
	if err != nil {
		return nil, err
	}
	ref := in.Record.Params.Ref
	if !svnSource {
		ref = gitFetchRef(in.Record.Params)
	}
	var step executor.Step
	var shown string // the source as the log and errors show it
	if svnSource {
		target, rev, err := svnTarget(src, ref)
		if err != nil {
			return nil, err
		}
		shown = redactURL(target)
		if err := scm.CheckURLContext(ctx, model.SCMSVN, target); err != nil {
			return nil, checkoutError(ctx, err, fmt.Sprintf("svn checkout of %q from %s failed", ref, shown))
		}
		step = svnCheckoutStep(target, rev, user, password, mark)
		fmt.Fprintf(log, "+ svn checkout %s (revision %s) in %s\n", shown, orHead(rev), a.checkoutImage())
	} else {
		shown = redactURL(src.URL())
		step = gitCheckoutStep(src.URL(), ref, pins, user, password, mark)
		fmt.Fprintf(log, "+ git fetch %s %s && git checkout FETCH_HEAD in %s\n", shown, ref, a.checkoutImage())
	}
	step.Name, step.Stage, step.Image = in.Stage, in.Stage, a.checkoutImage()
	step.Resources = in.Record.resources()

	out := newMarkedOutput(mark, log)
	res, err := a.Executor.Run(ctx, env, step, out)
	out.Flush()
	if err != nil {
		if err := capabilityError(ctx, err); temporal.IsApplicationError(err) || temporal.IsCanceledError(err) {
			return nil, err
		}
		return nil, fmt.Errorf("run the checkout step: %w", err)
	}
	rep := parseCheckoutReport(out.Lines())
	if res.ExitCode != 0 {
		return nil, checkoutStepFailure(rep, res.ExitCode, svnSource, ref, shown, password != "", a.checkoutImage(), out.tail.Bytes())
	}
	switch {
	case svnSource && rep.revision != "":
		return &model.Commit{ID: rep.revision, Message: "revision " + rep.revision}, nil
	case !svnSource && rep.commit != nil:
		return rep.commit, nil
	}
	// The step succeeded but its report did not come through (a log cut short).
	return nil, errors.New("the checkout step did not report what it checked out")
}

// checkoutImage is the image of checkout steps.
func (a *Activities) checkoutImage() string {
	if a.CheckoutImage != "" {
		return a.CheckoutImage
	}
	return DefaultCheckoutImage
}

// checkoutStepFailure is the stage's error for a checkout step that exited with
// code: the messages of the worker's own checkout, from the command the script
// reported failing.
func checkoutStepFailure(rep checkoutReport, code int, svnSource bool, ref, shown string, withCredentials bool, image string, tail []byte) error {
	if rep.failed == "" {
		return failStep("the checkout step exited with code %d before running git or svn (does image %s have /bin/sh?)", code, image)
	}
	if rep.failedCode != 0 {
		code = rep.failedCode
	}
	program := "git"
	if svnSource {
		program = "svn"
	}
	hint := ""
	if code == 127 {
		hint = fmt.Sprintf(" (is %s installed in the checkout image %s?)", program, image)
	}
	if svnSource {
		msg := fmt.Sprintf("svn %s of %q from %s failed (exit code %d)%s", rep.failed, ref, shown, code, hint)
		if lines := svnErrorLines(tail); lines != "" {
			msg += ": " + lines
		}
		return failStep("%s", msg)
	}
	msg := fmt.Sprintf("git %s failed (exit code %d): ref %q of %s could not be checked out%s", rep.failed, code, ref, shown, hint)
	if rep.failed == "fetch" {
		msg += gitFetchHints(tail, withCredentials)
	}
	return failStep("%s", msg)
}

var svnErrorLine = regexp.MustCompile(`(?m)^svn: E\d{6}: .*$`)

// svnErrorLines quotes the last svn error lines of a step's output.
func svnErrorLines(tail []byte) string {
	found := svnErrorLine.FindAll(tail, -1)
	if len(found) > 3 {
		found = found[len(found)-3:]
	}
	quoted := make([]string, len(found))
	for i, l := range found {
		quoted[i] = strconv.Quote(strings.TrimSpace(string(l)))
	}
	return strings.Join(quoted, "; ")
}

// checkoutReport is what a checkout step's report lines say.
type checkoutReport struct {
	commit     *model.Commit // git
	revision   string        // svn
	failed     string        // the command that failed
	failedCode int
}

var (
	commitIDRe = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)
	failedRe   = regexp.MustCompile(`^failed ([a-z]+) ([0-9]{1,3})$`)
)

// parseCheckoutReport reads a checkout step's report lines (the mark removed). A
// commit counts only with all the lines of its message; lines seen twice are the
// same line.
func parseCheckoutReport(lines []string) checkoutReport {
	var rep checkoutReport
	var head []string
	message := map[int]string{}
	end := -1
	for _, l := range lines {
		kind, rest, _ := strings.Cut(l, " ")
		switch kind {
		case "commit":
			if f := strings.SplitN(rest, " ", 3); len(f) == 3 && commitIDRe.MatchString(f[0]) {
				head = f
			}
		case "message":
			n, text, _ := strings.Cut(rest, " ")
			if i, err := strconv.Atoi(n); err == nil && i > 0 {
				message[i] = text
			}
		case "end":
			if i, err := strconv.Atoi(rest); err == nil && i >= 0 {
				end = i
			}
		case "revision":
			if isDigits(rest) {
				rep.revision = rest
			}
		case "failed":
			if m := failedRe.FindStringSubmatch(l); m != nil {
				rep.failed = m[1]
				rep.failedCode, _ = strconv.Atoi(m[2])
			}
		}
	}
	if head == nil || end < 0 {
		return rep
	}
	text := make([]string, end)
	for i := range end {
		l, ok := message[i+1]
		if !ok {
			return rep
		}
		text[i] = l
	}
	rep.commit = &model.Commit{ID: head[0], Date: head[1], Author: head[2], Message: strings.TrimSpace(strings.Join(text, "\n"))}
	return rep
}

// maxMarkedLine bounds a report line that is kept (a commit message's line may be
// long); the rest of a longer line is dropped.
const maxMarkedLine = 64 << 10

// markedOutput sits between a checkout step and the stage's log: it keeps the lines
// that start with the mark (the step's report) and passes everything else on as it
// comes. A line is held back only while it may still turn out to be a report line.
type markedOutput struct {
	mark    []byte // the mark and a space
	log     io.Writer
	tail    bytes.Buffer // the end of what went to the log, for error messages
	line    []byte       // the start of a line held back
	passing bool         // the current line is not a report line
	lines   []string
}

func newMarkedOutput(mark string, log io.Writer) *markedOutput {
	return &markedOutput{mark: []byte(mark + " "), log: log}
}

// Write never fails: a log that does not take the output must not stop the step
// (the stage's log reports its own errors when closed).
func (w *markedOutput) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		chunk := p
		complete := false
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			chunk, complete = p[:i+1], true
		}
		p = p[len(chunk):]
		if w.passing {
			w.forward(chunk)
			w.passing = !complete
			continue
		}
		w.line = append(w.line, chunk...)
		switch {
		case bytes.HasPrefix(w.line, w.mark):
			if complete {
				w.keep()
			} else if len(w.line) > maxMarkedLine {
				w.line = w.line[:maxMarkedLine]
			}
		case !complete && bytes.HasPrefix(w.mark, w.line):
			// May still become a report line.
		default:
			w.forward(w.line)
			w.line = w.line[:0]
			w.passing = !complete
		}
	}
	return n, nil
}

// Flush ends the output: a line held back is kept or passed on.
func (w *markedOutput) Flush() {
	if len(w.line) == 0 {
		return
	}
	if bytes.HasPrefix(w.line, w.mark) {
		w.keep()
		return
	}
	w.forward(w.line)
	w.line = w.line[:0]
}

func (w *markedOutput) keep() {
	l := strings.TrimRight(string(w.line[len(w.mark):]), "\r\n")
	w.lines = append(w.lines, l)
	w.line = w.line[:0]
}

func (w *markedOutput) forward(b []byte) {
	_, _ = w.log.Write(b)
	w.tail.Write(b)
	if n := w.tail.Len(); n > 2*tailKeep {
		rest := append([]byte(nil), w.tail.Bytes()[n-tailKeep:]...)
		w.tail.Reset()
		w.tail.Write(rest)
	}
}

// Lines returns the report lines seen, without the mark.
func (w *markedOutput) Lines() []string { return w.lines }

// resources is the record's worker quota for a step (a copy: steps may not share
// it).
func (in RecordInput) resources() map[string]string {
	if len(in.Quota) == 0 {
		return nil
	}
	return maps.Clone(in.Quota)
}
