// Package docker is an executor.Executor that runs every step in its own container on
// a Docker engine.
//
// For a record, Setup makes:
//
//   - the workspace directory <root>/<recordID>/workspace on the worker's host, where
//     the worker checks out the code;
//   - a Docker volume cyclone-<recordID> of the local driver that bind-mounts that
//     directory, mounted at executor.WorkspaceMount in every step's container;
//   - a bridge network cyclone-<recordID> that every step's container joins.
//
// The engine must therefore see the worker's file system at the same paths (the worker
// runs on the engine's host, or shares root with it at the same path).
//
// Run pulls a step's image when the engine lacks it (anonymously). Everything
// created carries the record's labels (executor.Record.Labels), which is how Teardown
// finds leftover containers, integration-test services included.
//
// The executor also has the optional capabilities of package executor: it builds
// images from a tar of the workspace with the engine's classic builder (build.go),
// pushes them with the project's registry credentials (push.go) and runs services on
// the record's network under their names (services.go). Built images carry the
// record's labels and stay on the engine after Teardown.
package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/strslice"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/cycloneci/cyclone/internal/executor"
)

const (
	// cleanupTimeout bounds the engine calls that clean up after a step, which use a
	// context of their own since the step's may be cancelled.
	cleanupTimeout = 30 * time.Second
	// drainTimeout bounds how long Run waits for the rest of a step's output once the
	// container has exited.
	drainTimeout = 10 * time.Second
)

// Executor runs steps in containers. The zero value is not usable; call New or
// NewFromEnv.
type Executor struct {
	cli       *client.Client
	root      string
	ownClient bool
}

var _ executor.Executor = (*Executor)(nil)

// New returns an executor that uses the engine of cli and keeps the records'
// workspaces under root, a directory on the worker's host that the engine can
// bind-mount. cli should negotiate the API version (client.WithAPIVersionNegotiation).
func New(cli *client.Client, root string) *Executor {
	return &Executor{cli: cli, root: root}
}

// NewFromEnv is New with a client configured from the environment (DOCKER_HOST,
// DOCKER_API_VERSION, DOCKER_CERT_PATH, DOCKER_TLS_VERIFY) that negotiates the API
// version. Close closes that client.
func NewFromEnv(root string) (*Executor, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker executor: client: %w", err)
	}
	return &Executor{cli: cli, root: root, ownClient: true}, nil
}

// Close closes the Docker client if the executor made it (NewFromEnv); a client given
// to New is left to its owner.
func (e *Executor) Close() error {
	if e.ownClient {
		return e.cli.Close()
	}
	return nil
}

// ResourceName is the name of the volume and of the network of a record.
func ResourceName(recordID string) string {
	return "cyclone-" + sanitize(recordID)
}

// ContainerName is the name of the container of a record's step.
func ContainerName(recordID, stepName string) string {
	return ResourceName(recordID) + "-" + sanitize(stepName)
}

// sanitize maps s to Docker's name character set [a-zA-Z0-9_.-]. When that changes s,
// a short hash of s is appended so that different names stay different.
func sanitize(s string) string {
	b := []byte(s)
	changed := len(b) == 0
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' && c != '.' && c != '-' {
			b[i] = '_'
			changed = true
		}
	}
	if !changed {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return string(b) + "-" + hex.EncodeToString(sum[:4])
}

// recordDir returns <root>/<id> as an absolute path, refusing IDs that are not a
// single path element (Teardown removes this directory).
func (e *Executor) recordDir(id string) (string, error) {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\\\x00") {
		return "", fmt.Errorf("docker executor: invalid record ID %q", id)
	}
	root, err := filepath.Abs(e.root)
	if err != nil {
		return "", fmt.Errorf("docker executor: root %q: %w", e.root, err)
	}
	return filepath.Join(root, id), nil
}

// Setup creates (or finds again) the record's workspace directory, volume and network.
func (e *Executor) Setup(ctx context.Context, rec executor.Record) (executor.Environment, error) {
	dir, err := e.recordDir(rec.ID)
	if err != nil {
		return executor.Environment{}, err
	}
	ws := filepath.Join(dir, "workspace")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		return executor.Environment{}, fmt.Errorf("docker executor: create workspace: %w", err)
	}
	name := ResourceName(rec.ID)
	if err := e.ensureVolume(ctx, name, ws, rec.Labels()); err != nil {
		return executor.Environment{}, err
	}
	if err := e.ensureNetwork(ctx, name, rec.Labels()); err != nil {
		return executor.Environment{}, err
	}
	return executor.Environment{Record: rec, Workspace: ws, Network: name}, nil
}

// ensureVolume creates the volume name binding dir, or checks that the existing one
// does.
func (e *Executor) ensureVolume(ctx context.Context, name, dir string, labels map[string]string) error {
	check := func(v volume.Volume) error {
		if v.Driver != "local" || v.Options["device"] != dir {
			return fmt.Errorf("docker executor: volume %s exists but is not a bind of %s (driver %q, options %v)", name, dir, v.Driver, v.Options)
		}
		return nil
	}
	v, err := e.cli.VolumeInspect(ctx, name)
	if err == nil {
		return check(v)
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker executor: inspect volume %s: %w", name, err)
	}
	v, err = e.cli.VolumeCreate(ctx, volume.CreateOptions{
		Name:       name,
		Driver:     "local",
		DriverOpts: map[string]string{"type": "none", "o": "bind", "device": dir},
		Labels:     labels,
	})
	if err != nil {
		// Created concurrently by another attempt?
		if v2, err2 := e.cli.VolumeInspect(ctx, name); err2 == nil {
			return check(v2)
		}
		return fmt.Errorf("docker executor: create volume %s: %w", name, err)
	}
	return check(v)
}

// ensureNetwork creates the bridge network name, or finds the existing one.
func (e *Executor) ensureNetwork(ctx context.Context, name string, labels map[string]string) error {
	_, err := e.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker executor: inspect network %s: %w", name, err)
	}
	_, err = e.cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Labels: labels})
	if err != nil {
		if cerrdefs.IsConflict(err) {
			// Created concurrently by another attempt.
			if _, err2 := e.cli.NetworkInspect(ctx, name, network.InspectOptions{}); err2 == nil {
				return nil
			}
		}
		return fmt.Errorf("docker executor: create network %s: %w", name, err)
	}
	return nil
}

// Teardown removes the record's containers (running or not), network, volume and
// workspace directory. What does not exist is skipped; the other removals are tried
// even when one fails.
func (e *Executor) Teardown(ctx context.Context, rec executor.Record) error {
	dir, err := e.recordDir(rec.ID)
	if err != nil {
		return err
	}
	var errs []error
	containers, err := e.cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", executor.LabelRecord+"="+rec.ID)),
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("list containers: %w", err))
	}
	for _, c := range containers {
		if err := e.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove container %s: %w", c.ID, err))
		}
	}
	name := ResourceName(rec.ID)
	if err := e.cli.NetworkRemove(ctx, name); err != nil && !cerrdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("remove network %s: %w", name, err))
	}
	if err := e.cli.VolumeRemove(ctx, name, false); err != nil && !cerrdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("remove volume %s: %w", name, err))
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("docker executor: teardown of record %s: %w", rec.ID, err)
	}
	return nil
}

// workingDir is the container path of a step's WorkDir, which must stay inside the
// workspace.
func workingDir(rel string) (string, error) {
	if rel == "" || rel == "." {
		return executor.WorkspaceMount, nil
	}
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("docker executor: work dir %q is not inside the workspace", rel)
	}
	return path.Join(executor.WorkspaceMount, filepath.ToSlash(rel)), nil
}

// stepEnv is the step's environment: Step.Env, then WORKSPACE (which a step cannot
// override).
func stepEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "WORKSPACE=") {
			out = append(out, kv)
		}
	}
	return append(out, "WORKSPACE="+executor.WorkspaceMount)
}

// Run runs the step in a new container and copies its output to out. The container is
// removed before Run returns.
func (e *Executor) Run(ctx context.Context, env executor.Environment, step executor.Step, out io.Writer) (executor.Result, error) {
	fail := func(format string, a ...any) (executor.Result, error) {
		return executor.Result{}, fmt.Errorf("docker executor: step %q: "+format, append([]any{step.Name}, a...)...)
	}
	if step.Name == "" {
		return executor.Result{}, errors.New("docker executor: step has no name")
	}
	if len(step.Command) == 0 || step.Command[0] == "" {
		return fail("no command")
	}
	if step.Image == "" {
		return fail("no image")
	}
	if _, err := e.recordDir(env.Record.ID); err != nil {
		return executor.Result{}, err
	}
	wd, err := workingDir(step.WorkDir)
	if err != nil {
		return executor.Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return fail("not started: %w", err)
	}
	if out == nil {
		out = io.Discard
	}

	if _, err := e.cli.ImageInspect(ctx, step.Image); err != nil {
		if !cerrdefs.IsNotFound(err) {
			return fail("inspect image %s: %w", step.Image, err)
		}
		if err := e.pull(ctx, step.Image, out); err != nil {
			return fail("image %s not found on the Docker engine and it could not be pulled: %w", step.Image, err)
		}
	}

	// Clean-up calls must work when ctx is cancelled.
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	}

	// A container of the same name is a leftover of a crashed attempt.
	name := ContainerName(env.Record.ID, step.Name)
	if err := e.cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fail("remove leftover container %s: %w", name, err)
	}

	labels := env.Record.Labels()
	labels[executor.LabelStage] = step.Stage
	created, err := e.cli.ContainerCreate(ctx,
		&container.Config{
			Image:        step.Image,
			Entrypoint:   strslice.StrSlice{""}, // [""] resets the image's entrypoint
			Cmd:          strslice.StrSlice(step.Command),
			Env:          stepEnv(step.Env),
			WorkingDir:   wd,
			Labels:       labels,
			AttachStdout: true,
			AttachStderr: true,
		},
		&container.HostConfig{
			NetworkMode: container.NetworkMode(env.Network),
			Mounts: []mount.Mount{{
				Type:   mount.TypeVolume,
				Source: ResourceName(env.Record.ID),
				Target: executor.WorkspaceMount,
			}},
		},
		nil, nil, name)
	if err != nil {
		if ctx.Err() != nil {
			e.removeContainer(cleanupCtx, name)
			return fail("cancelled: %w", ctx.Err())
		}
		return fail("create container %s: %w", name, err)
	}
	id := created.ID
	defer e.removeContainer(cleanupCtx, id)

	// Attach before starting, so that no output is missed.
	attach, err := e.cli.ContainerAttach(ctx, id, container.AttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		if ctx.Err() != nil {
			return fail("cancelled: %w", ctx.Err())
		}
		return fail("attach to container %s: %w", name, err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		// Not a TTY: stdout and stderr come multiplexed on the one stream, in the
		// order the engine received them.
		_, _ = stdcopy.StdCopy(out, out, attach.Reader)
	}()
	// stopCopy ends the copy of the output; out is not written to after it returns.
	stopCopy := func() {
		attach.Close()
		<-copied
	}
	cancelled := func() (executor.Result, error) {
		// Removing with force kills the container, which ends the output stream.
		e.removeContainer(cleanupCtx, id)
		stopCopy()
		return fail("cancelled: %w", ctx.Err())
	}

	// Wait for the next exit before starting, so that the exit is not missed.
	waitCtx, cancelWait := context.WithCancel(ctx)
	waitC, waitErrC := e.cli.ContainerWait(waitCtx, id, container.WaitConditionNextExit)
	waited := false
	defer func() {
		cancelWait()
		if !waited {
			// The client's goroutine sends on exactly one of the channels, and
			// blocks until a result is received: receive it.
			go func() {
				select {
				case <-waitC:
				case err := <-waitErrC:
					_ = err // the container is being removed: its wait error is moot
				}
			}()
		}
	}()
	if err := e.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		if ctx.Err() != nil {
			return cancelled()
		}
		stopCopy()
		if code, ok := startExitCode(err); ok {
			// The command cannot run: a result of the step, not worth a retry.
			fmt.Fprintf(out, "cyclone: cannot run %q: %v\n", step.Command[0], err)
			return executor.Result{ExitCode: code}, nil
		}
		return fail("start container %s: %w", name, err)
	}

	select {
	case <-ctx.Done():
		return cancelled()
	case err := <-waitErrC:
		waited = true
		if ctx.Err() != nil {
			return cancelled()
		}
		stopCopy()
		return fail("wait for container %s: %w", name, err)
	case res := <-waitC:
		waited = true
		if res.Error != nil && res.Error.Message != "" {
			stopCopy()
			return fail("wait for container %s: %s", name, res.Error.Message)
		}
		// The engine closes the stream once it has sent all the output.
		select {
		case <-copied:
		case <-ctx.Done():
			return cancelled()
		case <-time.After(drainTimeout):
		}
		stopCopy()
		return executor.Result{ExitCode: int(res.StatusCode)}, nil
	}
}

// removeContainer force-removes a container, with a context of its own.
func (e *Executor) removeContainer(cleanupCtx func() (context.Context, context.CancelFunc), idOrName string) {
	ctx, cancel := cleanupCtx()
	defer cancel()
	_ = e.cli.ContainerRemove(ctx, idOrName, container.RemoveOptions{Force: true, RemoveVolumes: true})
}

// startExitCode recognises the engine's errors for a command that cannot be executed
// and maps them to a shell's exit codes, as the docker CLI does: 127 for a command
// that does not exist, 126 for one that cannot be executed.
func startExitCode(err error) (int, bool) {
	msg := err.Error()
	if !strings.Contains(msg, `exec: "`) {
		return 0, false
	}
	switch {
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		return 127, true
	case strings.Contains(msg, "permission denied"), strings.Contains(msg, "is a directory"):
		return 126, true
	}
	return 0, false
}

// pull fetches an image the engine lacks, saying so in the step's log.
func (e *Executor) pull(ctx context.Context, ref string, out io.Writer) error {
	fmt.Fprintf(out, "Pulling image %s\n", ref)
	rc, err := e.cli.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	// The progress stream reports a failed pull as an error message in it.
	return jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil)
}
