// Package local is an executor.Executor that runs steps as processes on the worker's
// host. It has no isolation and ignores Step.Image; it exists for development and
// tests, where a Docker engine is not wanted.
//
// A record's workspace is <root>/<recordID>/workspace. Each step runs in its own
// process group with a minimal environment (PATH of the worker, HOME and WORKSPACE
// set to the workspace, then Step.Env); when the step's main process exits, or when
// the step is cancelled, the whole process group is killed, so background children
// do not outlive the step.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cycloneci/cyclone/internal/executor"
)

const (
	// waitDelay bounds how long Run waits, after the step was cancelled, for the
	// process to exit before os/exec kills it directly.
	waitDelay = 5 * time.Second
	// drainTimeout bounds how long Run keeps copying output after the step's
	// process group was killed; it only matters when a process that left the group
	// (setsid) still holds the output pipe.
	drainTimeout = 2 * time.Second
	// defaultPath is used when the worker itself has no PATH.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Executor runs steps as host processes. The zero value is not usable; call New.
type Executor struct {
	root string
}

var _ executor.Executor = (*Executor)(nil)

// New returns an executor that keeps the records' workspaces under root.
func New(root string) *Executor {
	return &Executor{root: root}
}

// recordDir returns <root>/<id> as an absolute path, refusing IDs that are not a
// single path element (Teardown removes this directory).
func (e *Executor) recordDir(id string) (string, error) {
	if err := checkRecordID(id); err != nil {
		return "", err
	}
	root, err := filepath.Abs(e.root)
	if err != nil {
		return "", fmt.Errorf("local executor: root %q: %w", e.root, err)
	}
	return filepath.Join(root, id), nil
}

func checkRecordID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\\\x00") {
		return fmt.Errorf("local executor: invalid record ID %q", id)
	}
	return nil
}

// Setup creates the record's workspace (if it does not exist yet) and returns its
// environment. Existing workspace content is kept.
func (e *Executor) Setup(ctx context.Context, rec executor.Record) (executor.Environment, error) {
	dir, err := e.recordDir(rec.ID)
	if err != nil {
		return executor.Environment{}, err
	}
	ws := filepath.Join(dir, "workspace")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		return executor.Environment{}, fmt.Errorf("local executor: create workspace: %w", err)
	}
	return executor.Environment{Record: rec, Workspace: ws}, nil
}

// Teardown removes <root>/<recordID> and everything in it. Removing a directory that
// does not exist is not an error.
func (e *Executor) Teardown(ctx context.Context, rec executor.Record) error {
	dir, err := e.recordDir(rec.ID)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("local executor: remove %s: %w", dir, err)
	}
	return nil
}

// workDir resolves a step's WorkDir inside the workspace, rejecting absolute paths and
// paths that leave the workspace.
func workDir(workspace, rel string) (string, error) {
	if rel == "" || rel == "." {
		return workspace, nil
	}
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("local executor: work dir %q is not inside the workspace", rel)
	}
	return filepath.Join(workspace, rel), nil
}

// Run runs step.Command (an argv, no shell is added) in the workspace and copies its
// stdout and stderr, through one pipe and thus in the order written, to out.
func (e *Executor) Run(ctx context.Context, env executor.Environment, step executor.Step, out io.Writer) (executor.Result, error) {
	if len(step.Command) == 0 || step.Command[0] == "" {
		return executor.Result{}, fmt.Errorf("local executor: step %q has no command", step.Name)
	}
	if env.Workspace == "" {
		return executor.Result{}, fmt.Errorf("local executor: step %q: environment has no workspace", step.Name)
	}
	dir, err := workDir(env.Workspace, step.WorkDir)
	if err != nil {
		return executor.Result{}, err
	}
	// Docker creates a missing working directory; behave the same.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return executor.Result{}, fmt.Errorf("local executor: step %q: create work dir: %w", step.Name, err)
	}
	if err := ctx.Err(); err != nil {
		return executor.Result{}, fmt.Errorf("local executor: step %q not started: %w", step.Name, err)
	}
	if out == nil {
		out = io.Discard
	}

	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	cmd := exec.CommandContext(ctx, step.Command[0], step.Command[1:]...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + path, "HOME=" + env.Workspace}, step.Env...)
	// Last, so that it wins over Step.Env (os/exec keeps the last duplicate).
	cmd.Env = append(cmd.Env, "WORKSPACE="+env.Workspace)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The process group ID is the step's PID (Setpgid with Pgid 0).
		return killGroup(cmd.Process.Pid)
	}
	cmd.WaitDelay = waitDelay

	// One pipe for stdout and stderr keeps their order. It is an *os.File, so os/exec
	// hands it to the child as is and Wait returns as soon as the main process has
	// exited, instead of waiting for every holder of the pipe to close it.
	pr, pw, err := os.Pipe()
	if err != nil {
		return executor.Result{}, fmt.Errorf("local executor: step %q: %w", step.Name, err)
	}
	defer pr.Close()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pw.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return executor.Result{}, fmt.Errorf("local executor: step %q not started: %w", step.Name, ctxErr)
		}
		if code, ok := startExitCode(err); ok {
			// The command cannot run: a result of the step, not worth a retry.
			fmt.Fprintf(out, "cyclone: cannot run %q: %v\n", step.Command[0], err)
			return executor.Result{ExitCode: code}, nil
		}
		return executor.Result{}, fmt.Errorf("local executor: start step %q: %w", step.Name, err)
	}
	pw.Close()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, pr)
	}()

	waitErr := cmd.Wait()
	// Whatever the main process left behind in its group goes with it, like the
	// processes of a container whose init exits.
	_ = killGroup(cmd.Process.Pid)
	select {
	case <-copied:
	case <-time.After(drainTimeout):
		// Something outside the group still holds the pipe; stop reading.
		pr.Close()
		<-copied
	}

	if waitErr == nil {
		return executor.Result{ExitCode: 0}, nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return executor.Result{}, fmt.Errorf("local executor: step %q cancelled: %w", step.Name, ctxErr)
	}
	var exitErr *exec.ExitError
	if errors.As(waitErr, &exitErr) {
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			// Like a shell (and Docker): 128 + signal number.
			return executor.Result{ExitCode: 128 + int(ws.Signal())}, nil
		}
		return executor.Result{ExitCode: exitErr.ExitCode()}, nil
	}
	return executor.Result{}, fmt.Errorf("local executor: step %q: %w", step.Name, waitErr)
}

// killGroup sends SIGKILL to process group pgid; a group that is already gone is
// not an error.
func killGroup(pgid int) error {
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// startExitCode maps the errors of a command that cannot be executed to a shell's
// exit codes: 127 for a command that does not exist, 126 for one that cannot be
// executed.
func startExitCode(err error) (int, bool) {
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return 127, true
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ENOEXEC):
		return 126, true
	}
	return 0, false
}
