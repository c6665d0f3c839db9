package local_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/local"
)

// setup returns an executor under a fresh root and the environment of a record set up
// in it; the record is torn down when the test ends.
func setup(t *testing.T) (*local.Executor, executor.Environment) {
	t.Helper()
	e := local.New(t.TempDir())
	rec := executor.Record{ID: "rec-" + strings.ReplaceAll(t.Name(), "/", "_"), Project: "p", Pipeline: "pl"}
	env, err := e.Setup(context.Background(), rec)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Teardown(context.Background(), rec); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	})
	return e, env
}

// run runs a shell script as a step and returns its result and output.
func run(t *testing.T, ctx context.Context, e *local.Executor, env executor.Environment, step executor.Step) (executor.Result, string, error) {
	t.Helper()
	var out bytes.Buffer
	res, err := e.Run(ctx, env, step, &out)
	return res, out.String(), err
}

func sh(name, script string) executor.Step {
	return executor.Step{Name: name, Stage: "test", Command: []string{"/bin/sh", "-ec", script}}
}

func TestRun(t *testing.T) {
	e, env := setup(t)
	tests := []struct {
		name     string
		step     executor.Step
		wantCode int
		wantOut  string
	}{
		{
			name:    "stdout and stderr in order",
			step:    sh("order", "echo one; echo two >&2; echo three; echo four >&2"),
			wantOut: "one\ntwo\nthree\nfour\n",
		},
		{
			name:     "non-zero exit is a result",
			step:     sh("fail", "echo failing; exit 3"),
			wantCode: 3,
			wantOut:  "failing\n",
		},
		{
			name:     "killed by a signal",
			step:     sh("signal", "kill -9 $$"),
			wantCode: 128 + 9,
		},
		{
			name: "environment",
			step: executor.Step{
				Name:    "env",
				Command: []string{"/bin/sh", "-ec", `echo "$FOO|$BAR|$WORKSPACE|$HOME|$(pwd)"`},
				Env:     []string{"FOO=foo", "BAR=bar baz"},
			},
			wantOut: "foo|bar baz|" + env.Workspace + "|" + env.Workspace + "|" + env.Workspace + "\n",
		},
		{
			name:    "worker environment is not inherited",
			step:    sh("noinherit", `echo "[${CYCLONE_LOCAL_TEST_SECRET:-}]"`),
			wantOut: "[]\n",
		},
		{
			name:    "argv without a shell",
			step:    executor.Step{Name: "argv", Command: []string{"echo", "a  b", "$HOME"}},
			wantOut: "a  b $HOME\n",
		},
		{
			name:    "work dir",
			step:    executor.Step{Name: "workdir", Command: []string{"pwd"}, WorkDir: "sub/dir"},
			wantOut: filepath.Join(env.Workspace, "sub/dir") + "\n",
		},
	}
	t.Setenv("CYCLONE_LOCAL_TEST_SECRET", "leaked")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out, err := run(t, context.Background(), e, env, tt.step)
			if err != nil {
				t.Fatalf("Run: %v (output %q)", err, out)
			}
			if res.ExitCode != tt.wantCode {
				t.Errorf("exit code = %d, want %d (output %q)", res.ExitCode, tt.wantCode, out)
			}
			if out != tt.wantOut {
				t.Errorf("output = %q, want %q", out, tt.wantOut)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	e, env := setup(t)
	tests := []struct {
		name string
		step executor.Step
	}{
		{"work dir escapes", executor.Step{Name: "escape", Command: []string{"true"}, WorkDir: "../x"}},
		{"work dir escapes after cleaning", executor.Step{Name: "escape2", Command: []string{"true"}, WorkDir: "a/../../x"}},
		{"absolute work dir", executor.Step{Name: "abs", Command: []string{"true"}, WorkDir: "/tmp"}},
		{"no command", executor.Step{Name: "empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res, out, err := run(t, context.Background(), e, env, tt.step); err == nil {
				t.Fatalf("Run = %+v, nil (output %q); want an error", res, out)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(env.Workspace), "x")); !os.IsNotExist(err) {
		t.Errorf("escaping work dir was created: %v", err)
	}
}

func TestCommandCannotRun(t *testing.T) {
	e, env := setup(t)
	if err := os.WriteFile(filepath.Join(env.Workspace, "notexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		command  []string
		wantCode int
	}{
		{"not in PATH", []string{"cyclone-no-such-command"}, 127},
		{"no such file", []string{"./no-such-file"}, 127},
		{"not executable", []string{"./notexec"}, 126},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out, err := run(t, context.Background(), e, env, executor.Step{Name: "x", Command: tt.command})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			t.Logf("output: %s", out)
			if res.ExitCode != tt.wantCode || !strings.HasPrefix(out, "cyclone: cannot run") {
				t.Errorf("Run = %+v, output %q; want exit code %d and an explanation", res, out, tt.wantCode)
			}
		})
	}
}

func TestWorkspaceSharedBetweenSteps(t *testing.T) {
	e, env := setup(t)
	if err := os.WriteFile(filepath.Join(env.Workspace, "from-worker"), []byte("checked out\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, out, err := run(t, context.Background(), e, env, sh("write", "cat from-worker; echo built > artifact")); err != nil || res.ExitCode != 0 || out != "checked out\n" {
		t.Fatalf("step 1: %+v, %q, %v", res, out, err)
	}
	res, out, err := run(t, context.Background(), e, env, sh("read", "cat artifact"))
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("step 2: %+v, %q, %v", res, out, err)
	}
	if out != "built\n" {
		t.Errorf("step 2 output = %q, want %q", out, "built\n")
	}
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d still alive", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCancelKillsProcessTree(t *testing.T) {
	e, env := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pidFile := filepath.Join(env.Workspace, "child.pid")
	step := sh("sleep", "sleep 60 & echo $! > child.pid; echo started; sleep 60")

	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		_, err := e.Run(ctx, env, step, &out)
		done <- err
	}()
	var childPID int
	for deadline := time.Now().Add(10 * time.Second); ; {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			childPID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("step did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run error = %v, want one wrapping context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run took %v to return after cancel", d)
	}
	if out.String() != "started\n" {
		t.Errorf("output = %q", out.String())
	}
	waitDead(t, childPID)
}

func TestBackgroundChildDoesNotHangRun(t *testing.T) {
	e, env := setup(t)
	start := time.Now()
	// The background sleep keeps the output pipe open after the shell exits.
	res, out, err := run(t, context.Background(), e, env, sh("bg", "sleep 60 & echo $! > bg.pid; echo done"))
	if err != nil || res.ExitCode != 0 || out != "done\n" {
		t.Fatalf("Run = %+v, %q, %v", res, out, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run took %v", d)
	}
	b, err := os.ReadFile(filepath.Join(env.Workspace, "bg.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	waitDead(t, pid)
}

func TestCancelledBeforeStart(t *testing.T) {
	e, env := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := run(t, ctx, e, env, sh("never", "touch ran")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error = %v, want one wrapping context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(env.Workspace, "ran")); !os.IsNotExist(err) {
		t.Errorf("step ran: %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	e := local.New(root)
	rec := executor.Record{ID: "rec1", Project: "p", Pipeline: "pl"}

	// Teardown without Setup.
	if err := e.Teardown(ctx, rec); err != nil {
		t.Fatalf("Teardown without Setup: %v", err)
	}

	env, err := e.Setup(ctx, rec)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if want := filepath.Join(root, "rec1", "workspace"); env.Workspace != want {
		t.Errorf("Workspace = %q, want %q", env.Workspace, want)
	}
	if env.Network != "" || env.Record != rec {
		t.Errorf("env = %+v", env)
	}
	if fi, err := os.Stat(env.Workspace); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Fatalf("workspace: %v, %v", fi, err)
	}
	if err := os.WriteFile(filepath.Join(env.Workspace, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Setup again keeps the workspace content.
	env2, err := e.Setup(ctx, rec)
	if err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	if env2 != env {
		t.Errorf("second Setup = %+v, want %+v", env2, env)
	}
	if _, err := os.Stat(filepath.Join(env.Workspace, "keep")); err != nil {
		t.Errorf("second Setup lost workspace content: %v", err)
	}

	for i := range 2 {
		if err := e.Teardown(ctx, rec); err != nil {
			t.Fatalf("Teardown #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "rec1")); !os.IsNotExist(err) {
		t.Errorf("record dir still there: %v", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Errorf("root removed: %v", err)
	}
}

func TestInvalidRecordID(t *testing.T) {
	root := t.TempDir()
	e := local.New(filepath.Join(root, "r"))
	for _, id := range []string{"", ".", "..", "../r", "a/b"} {
		if _, err := e.Setup(context.Background(), executor.Record{ID: id}); err == nil {
			t.Errorf("Setup(%q) succeeded", id)
		}
		if err := e.Teardown(context.Background(), executor.Record{ID: id}); err == nil {
			t.Errorf("Teardown(%q) succeeded", id)
		}
	}
	if _, err := os.Stat(root); err != nil {
		t.Errorf("root's parent: %v", err)
	}
}
