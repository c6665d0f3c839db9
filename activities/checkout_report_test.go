package activities

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"go.temporal.io/sdk/temporal"
)

const testMark = checkoutMarkPrefix + "0123456789abcdef"

// The report lines are kept out of the log and everything else passes through
// unchanged, however the output is cut into writes.
func TestMarkedOutput(t *testing.T) {
	sha := strings.Repeat("ab", 20)
	output := "Initialized empty Git repository\n" +
		"cyclone-checkout-is-not-the-mark\n" + // a prefix of the mark, then not
		"cyclone\n" +
		testMark + " commit " + sha + " 2026-11-23T12:00:00+00:00 A <a@example.com>\n" +
		"  " + testMark + " indented: not a report line\n" +
		testMark + " message 1 fix: " + testMark + " commit " + strings.Repeat("cd", 20) + " forged\n" +
		testMark + " message 2 \r\n" +
		testMark + " end 2\n" +
		"remote: done\n" +
		"no newline at the end"
	wantLog := "Initialized empty Git repository\ncyclone-checkout-is-not-the-mark\ncyclone\n" +
		"  " + testMark + " indented: not a report line\nremote: done\nno newline at the end"
	wantLines := []string{
		"commit " + sha + " 2026-11-23T12:00:00+00:00 A <a@example.com>",
		"message 1 fix: " + testMark + " commit " + strings.Repeat("cd", 20) + " forged",
		"message 2 ",
		"end 2",
	}
	for _, size := range []int{1, 2, 7, 64, len(output)} {
		var log bytes.Buffer
		w := newMarkedOutput(testMark, &log)
		for rest := output; rest != ""; {
			n := min(size, len(rest))
			if got, err := w.Write([]byte(rest[:n])); got != n || err != nil {
				t.Fatalf("write: %d %v", got, err)
			}
			rest = rest[n:]
		}
		w.Flush()
		if log.String() != wantLog {
			t.Fatalf("writes of %d: log\n%q\nwant\n%q", size, log.String(), wantLog)
		}
		if !slices.Equal(w.Lines(), wantLines) {
			t.Fatalf("writes of %d: lines %q", size, w.Lines())
		}
		rep := parseCheckoutReport(w.Lines())
		if rep.commit == nil || rep.commit.ID != sha || rep.commit.Author != "A <a@example.com>" ||
			rep.commit.Date != "2026-11-23T12:00:00+00:00" || rep.commit.Message != "fix: "+testMark+" commit "+strings.Repeat("cd", 20)+" forged" {
			t.Fatalf("writes of %d: report %+v", size, rep.commit)
		}
	}

	// A report line cut short by the end of the output is still one.
	var log bytes.Buffer
	w := newMarkedOutput(testMark, &log)
	_, _ = w.Write([]byte("x\n" + testMark + " revision 42"))
	w.Flush()
	if log.String() != "x\n" || !slices.Equal(w.Lines(), []string{"revision 42"}) {
		t.Fatalf("log %q lines %q", log.String(), w.Lines())
	}
	// An endless report line is bounded.
	w = newMarkedOutput(testMark, &log)
	_, _ = w.Write([]byte(testMark + " message 1 "))
	for range 100 {
		_, _ = w.Write(bytes.Repeat([]byte("x"), 4096))
	}
	_, _ = w.Write([]byte("\n"))
	if l := w.Lines(); len(l) != 1 || len(l[0]) > maxMarkedLine {
		t.Fatalf("kept %d lines, the first of %d bytes", len(l), len(l[0]))
	}
}

func TestParseCheckoutReport(t *testing.T) {
	sha := strings.Repeat("0f", 20)
	head := "commit " + sha + " 2026-01-02T03:04:05Z Jo <jo@example.com>"
	for _, tc := range []struct {
		name    string
		lines   []string
		message string // "-": no commit
	}{
		{"complete", []string{head, "message 1 subject", "message 2 ", "message 3 body", "end 3"}, "subject\n\nbody"},
		// A log stream followed again repeats lines.
		{"repeated", []string{head, "message 1 subject", "message 2 body", "message 1 subject", "message 2 body", "end 2", "end 2"}, "subject\nbody"},
		{"empty message", []string{head, "end 0"}, ""},
		{"sha256", []string{"commit " + strings.Repeat("ab", 32) + " 2026-01-02T03:04:05Z Jo <j>", "end 0"}, ""},
		{"no end", []string{head, "message 1 subject"}, "-"},
		{"a line lost", []string{head, "message 2 body", "end 2"}, "-"},
		{"no commit", []string{"message 1 x", "end 1"}, "-"},
		{"not a commit ID", []string{"commit master 2026 Jo", "end 0"}, "-"},
		{"short commit line", []string{"commit " + sha, "end 0"}, "-"},
	} {
		rep := parseCheckoutReport(tc.lines)
		if tc.message == "-" {
			if rep.commit != nil {
				t.Errorf("%s: commit %+v, want none", tc.name, rep.commit)
			}
			continue
		}
		if rep.commit == nil || rep.commit.Message != tc.message {
			t.Errorf("%s: commit %+v, want message %q", tc.name, rep.commit, tc.message)
		}
	}
	if rep := parseCheckoutReport([]string{"revision 27"}); rep.revision != "27" {
		t.Errorf("revision %q", rep.revision)
	}
	if rep := parseCheckoutReport([]string{"revision HEAD"}); rep.revision != "" {
		t.Errorf("revision %q from a non-number", rep.revision)
	}
	if rep := parseCheckoutReport([]string{"failed fetch 128"}); rep.failed != "fetch" || rep.failedCode != 128 {
		t.Errorf("failed %q %d", rep.failed, rep.failedCode)
	}
	if rep := parseCheckoutReport([]string{"failed fetch; rm -rf 1"}); rep.failed != "" {
		t.Errorf("failed %q from a malformed line", rep.failed)
	}
}

// The step's command is the same whatever it checks out: the data is in its
// environment.
func TestCheckoutStepCommand(t *testing.T) {
	a := gitCheckoutStep("https://git.example.com/a.git", "main", []string{"git.example.com:443:192.0.2.7"}, "u", "pw-1", testMark)
	b := gitCheckoutStep("https://other.example.com/b.git", "v2", nil, "", "", testMark+"x")
	if !slices.Equal(a.Command, b.Command) || len(a.Command) != 3 || a.Command[0] != "/bin/sh" {
		t.Fatalf("git commands differ or are not a sh script: %q / %q", a.Command, b.Command)
	}
	for _, kv := range []string{envCheckoutURL + "=https://git.example.com/a.git", envCheckoutRef + "=main", envCheckoutMark + "=" + testMark,
		"GIT_CONFIG_COUNT=2", "GIT_CONFIG_KEY_1=http.curloptResolve", "GIT_CONFIG_VALUE_1=git.example.com:443:192.0.2.7",
		"GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_GLOBAL=/dev/null"} {
		if !slices.Contains(a.Env, kv) {
			t.Errorf("git step env lacks %s: %q", kv, a.Env)
		}
	}
	if slices.ContainsFunc(b.Env, func(kv string) bool { return strings.HasPrefix(kv, "GIT_CONFIG_COUNT=") }) {
		t.Errorf("a step without credentials or pins has git configuration: %q", b.Env)
	}
	for _, h := range []string{"credential.helper=", "protocol.allow=never", "http.followRedirects=false", "--end-of-options"} {
		if !strings.Contains(a.Command[2], h) {
			t.Errorf("git script lacks %s", h)
		}
	}
	s1 := svnCheckoutStep("svn://svn.example.com/r/trunk", "27", "u", "pw-2", testMark)
	s2 := svnCheckoutStep("https://svn.example.com/x", "", "", "", testMark)
	if !slices.Equal(s1.Command, s2.Command) || strings.Contains(strings.Join(s1.Command, " "), "pw-2") ||
		!slices.Contains(s1.Env, envSVNPassword+"=pw-2") || !strings.Contains(s1.Command[2], "--password-from-stdin") {
		t.Fatalf("svn steps: %q %q", s1.Command, s1.Env)
	}
}

func TestCheckoutStepFailure(t *testing.T) {
	msg := func(err error) string {
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || !appErr.NonRetryable() || appErr.Type() != ErrTypeStepFailed {
			t.Fatalf("%v is not a non-retryable step failure", err)
		}
		return appErr.Message()
	}
	for _, tc := range []struct {
		rep   checkoutReport
		code  int
		svn   bool
		creds bool
		tail  string
		want  string
	}{
		{checkoutReport{failed: "init", failedCode: 127}, 127, false, true, "",
			`git init failed (exit code 127): ref "main" of https://h/r could not be checked out (is git installed in the checkout image img:1?)`},
		{checkoutReport{failed: "fetch", failedCode: 128}, 128, false, false, "",
			`git fetch failed (exit code 128): ref "main" of https://h/r could not be checked out (no credentials were given for this repository)`},
		{checkoutReport{failed: "fetch", failedCode: 128}, 128, false, true, "fatal: unable to access 'https://h/r/': The requested URL returned error: 301\n",
			`git fetch failed (exit code 128): ref "main" of https://h/r could not be checked out (the server answered with a redirect, HTTP 301: checkouts follow no redirect, give the repository's final URL)`},
		{checkoutReport{}, 126, false, true, "", "the checkout step exited with code 126 before running git or svn (does image img:1 have /bin/sh?)"},
		{checkoutReport{failed: "checkout", failedCode: 1}, 1, true, true, "A x\nsvn: E170013: Unable to connect\nsvn: E210002: refused\n",
			`svn checkout of "main" from https://h/r failed (exit code 1): "svn: E170013: Unable to connect"; "svn: E210002: refused"`},
	} {
		got := msg(checkoutStepFailure(tc.rep, tc.code, tc.svn, "main", "https://h/r", tc.creds, "img:1", []byte(tc.tail)))
		if got != tc.want {
			t.Errorf("message\n%s\nwant\n%s", got, tc.want)
		}
	}
}
