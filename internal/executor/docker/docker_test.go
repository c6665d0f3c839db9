package docker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/google/uuid"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/docker"
	"github.com/cycloneci/cyclone/internal/testimage"
)

type fixture struct {
	cli   *client.Client
	image string
	root  string
	e     *docker.Executor
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	cli := testimage.RequireDocker(t)
	root := t.TempDir()
	return &fixture{cli: cli, image: testimage.Busybox(t, cli), root: root, e: docker.New(cli, root)}
}

func newRecord() executor.Record {
	return executor.Record{ID: "test-" + uuid.NewString(), Project: "proj", Pipeline: "pipe"}
}

// setup sets up a new record, torn down when the test ends.
func (f *fixture) setup(t *testing.T) executor.Environment {
	t.Helper()
	rec := newRecord()
	env, err := f.e.Setup(context.Background(), rec)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() {
		if err := f.e.Teardown(context.Background(), rec); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	})
	return env
}

func (f *fixture) sh(name, script string) executor.Step {
	return executor.Step{Name: name, Stage: "test", Image: f.image, Command: []string{"/bin/sh", "-ec", script}}
}

func (f *fixture) run(t *testing.T, ctx context.Context, env executor.Environment, step executor.Step) (executor.Result, string, error) {
	t.Helper()
	var out bytes.Buffer
	res, err := f.e.Run(ctx, env, step, &out)
	return res, out.String(), err
}

// mustRun runs a step that must exit 0 and returns its output.
func (f *fixture) mustRun(t *testing.T, env executor.Environment, step executor.Step) string {
	t.Helper()
	res, out, err := f.run(t, context.Background(), env, step)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run(%s) = %+v, %v; output %q", step.Name, res, err, out)
	}
	return out
}

// recordContainers lists the containers, running or not, labelled with the record.
func (f *fixture) recordContainers(t *testing.T, rec executor.Record) []container.Summary {
	t.Helper()
	cs, err := f.cli.ContainerList(context.Background(), container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", executor.LabelRecord+"="+rec.ID)),
	})
	if err != nil {
		t.Fatalf("ContainerList: %v", err)
	}
	return cs
}

func TestRun(t *testing.T) {
	f := newFixture(t)
	env := f.setup(t)
	entrypointImage := f.imageWithEntrypoint(t)
	tests := []struct {
		name     string
		step     executor.Step
		wantCode int
		wantOut  string
	}{
		{
			// stdout and stderr reach the engine through different pipes; the
			// pauses make the order of arrival certain.
			name:    "stdout and stderr in order",
			step:    f.sh("order", "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three; sleep 0.2; echo four >&2"),
			wantOut: "one\ntwo\nthree\nfour\n",
		},
		{
			name:     "non-zero exit is a result",
			step:     f.sh("fail", "echo failing; exit 3"),
			wantCode: 3,
			wantOut:  "failing\n",
		},
		{
			name: "environment",
			step: executor.Step{
				Name: "env", Image: f.image,
				Command: []string{"/bin/sh", "-ec", `echo "$FOO|$BAR|$WORKSPACE|$(pwd)"`},
				Env:     []string{"FOO=foo", "BAR=bar baz", "WORKSPACE=/elsewhere"},
			},
			wantOut: "foo|bar baz|/workspace|/workspace\n",
		},
		{
			name:    "argv without a shell",
			step:    executor.Step{Name: "argv", Image: f.image, Command: []string{"echo", "a  b", "$HOME"}},
			wantOut: "a  b $HOME\n",
		},
		{
			name:    "work dir",
			step:    executor.Step{Name: "workdir", Image: f.image, Command: []string{"pwd"}, WorkDir: "sub/dir"},
			wantOut: "/workspace/sub/dir\n",
		},
		{
			name:    "image entrypoint is overridden",
			step:    executor.Step{Name: "entrypoint", Image: entrypointImage, Command: []string{"echo", "argv ran"}},
			wantOut: "argv ran\n",
		},
		{
			name:    "step name sanitised",
			step:    f.sh("build web/api #1", "echo ok"),
			wantOut: "ok\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out, err := f.run(t, context.Background(), env, tt.step)
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
	if cs := f.recordContainers(t, env.Record); len(cs) != 0 {
		t.Errorf("%d containers left after the steps", len(cs))
	}
}

// imageWithEntrypoint builds, from the busybox image, one whose entrypoint fails.
func (f *fixture) imageWithEntrypoint(t *testing.T) string {
	t.Helper()
	const tag = "cyclone-test/entrypoint:latest"
	dockerfile := fmt.Sprintf("FROM %s\nENTRYPOINT [\"/bin/false\"]\n", f.image)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(dockerfile)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := f.cli.ImageBuild(context.Background(), &buf, build.ImageBuildOptions{Tags: []string{tag}, Remove: true, Version: build.BuilderV1})
	if err != nil {
		t.Fatalf("ImageBuild: %v", err)
	}
	defer resp.Body.Close()
	var log bytes.Buffer
	if err := jsonmessage.DisplayJSONMessagesStream(resp.Body, &log, 0, false, nil); err != nil {
		t.Fatalf("ImageBuild: %v\n%s", err, log.String())
	}
	return tag
}

func TestCommandCannotRun(t *testing.T) {
	f := newFixture(t)
	env := f.setup(t)
	tests := []struct {
		name     string
		command  []string
		wantCode int
	}{
		{"not in PATH", []string{"cyclone-no-such-command"}, 127},
		{"no such file", []string{"/no/such/file"}, 127},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out, err := f.run(t, context.Background(), env, executor.Step{Name: "x", Image: f.image, Command: tt.command})
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

func TestRunErrors(t *testing.T) {
	f := newFixture(t)
	env := f.setup(t)
	tests := []struct {
		name    string
		step    executor.Step
		wantErr string
	}{
		{"missing image", executor.Step{Name: "img", Image: "cyclone-test/no-such-image:1", Command: []string{"true"}}, "image cyclone-test/no-such-image:1 not found on the Docker engine and it could not be pulled"},
		{"work dir escapes", executor.Step{Name: "escape", Image: f.image, Command: []string{"true"}, WorkDir: "../x"}, "not inside the workspace"},
		{"absolute work dir", executor.Step{Name: "abs", Image: f.image, Command: []string{"true"}, WorkDir: "/etc"}, "not inside the workspace"},
		{"no command", executor.Step{Name: "empty", Image: f.image}, "no command"},
		{"no image", executor.Step{Name: "noimage", Command: []string{"true"}}, "no image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out, err := f.run(t, context.Background(), env, tt.step)
			if err == nil {
				t.Fatalf("Run = %+v, nil (output %q); want an error", res, out)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	if cs := f.recordContainers(t, env.Record); len(cs) != 0 {
		t.Errorf("%d containers left", len(cs))
	}
}

func TestWorkspace(t *testing.T) {
	f := newFixture(t)
	env := f.setup(t)
	// The worker writes the checked-out code on the host.
	if err := os.WriteFile(filepath.Join(env.Workspace, "from-worker"), []byte("checked out\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := f.mustRun(t, env, f.sh("write", "cat /workspace/from-worker; mkdir -p out; echo built > out/artifact")); out != "checked out\n" {
		t.Errorf("step 1 output = %q", out)
	}
	if out := f.mustRun(t, env, executor.Step{Name: "read", Image: f.image, Command: []string{"cat", "artifact"}, WorkDir: "out"}); out != "built\n" {
		t.Errorf("step 2 output = %q", out)
	}
	b, err := os.ReadFile(filepath.Join(env.Workspace, "out", "artifact"))
	if err != nil || string(b) != "built\n" {
		t.Errorf("artifact on the host = %q, %v", b, err)
	}
}

func TestLargeOutputIsComplete(t *testing.T) {
	f := newFixture(t)
	env := f.setup(t)
	// stdout and stderr reach the engine through different pipes: the pause keeps
	// stdout last.
	out := f.mustRun(t, env, f.sh("seq", "seq 1 1000 >&2; sleep 0.3; seq 1 50000; echo end"))
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 51001 || lines[len(lines)-1] != "end" {
		t.Errorf("got %d lines ending with %q, want 51001 ending with end", len(lines), lines[len(lines)-1])
	}
}

func TestConcurrentSteps(t *testing.T) {
	f := newFixture(t)
	env := f.setup(t)
	var wg sync.WaitGroup
	outs := make([]string, 3)
	errs := make([]error, 3)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			step := f.sh(fmt.Sprintf("task-%d", i), fmt.Sprintf("sleep 0.5; echo %d > task-%d; echo task %d", i, i, i))
			res, err := f.e.Run(context.Background(), env, step, &out)
			if err == nil && res.ExitCode != 0 {
				err = fmt.Errorf("exit code %d", res.ExitCode)
			}
			outs[i], errs[i] = out.String(), err
		}()
	}
	wg.Wait()
	for i := range outs {
		if errs[i] != nil || outs[i] != fmt.Sprintf("task %d\n", i) {
			t.Errorf("task %d: %q, %v", i, outs[i], errs[i])
		}
		if _, err := os.Stat(filepath.Join(env.Workspace, fmt.Sprintf("task-%d", i))); err != nil {
			t.Errorf("task %d: %v", i, err)
		}
	}
}

func TestCancel(t *testing.T) {
	f := newFixture(t)
	env := f.setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	step := f.sh("sleep", "sleep 60 & echo started; sleep 60")
	step.Stage = "build"
	name := docker.ContainerName(env.Record.ID, step.Name)

	done := make(chan error, 1)
	var out lockedBuffer
	go func() {
		_, err := f.e.Run(ctx, env, step, &out)
		done <- err
	}()

	// While it runs, check how the container was made.
	var c container.InspectResponse
	for deadline := time.Now().Add(30 * time.Second); ; {
		var err error
		c, err = f.cli.ContainerInspect(context.Background(), name)
		if err == nil && c.State != nil && c.State.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s not running: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantLabels := env.Record.Labels()
	wantLabels[executor.LabelStage] = "build"
	for k, v := range wantLabels {
		if c.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Config.Labels[k], v)
		}
	}
	if _, ok := c.NetworkSettings.Networks[env.Network]; !ok {
		t.Errorf("container networks = %v, want %s", c.NetworkSettings.Networks, env.Network)
	}
	if len(c.Mounts) != 1 || c.Mounts[0].Name != env.Network || c.Mounts[0].Destination != executor.WorkspaceMount {
		t.Errorf("container mounts = %+v", c.Mounts)
	}

	// Cancel once the step's output has arrived (the container runs a moment
	// before its first line is read).
	for deadline := time.Now().Add(30 * time.Second); out.String() != "started\n"; {
		if time.Now().After(deadline) {
			t.Fatalf("output = %q, want the step's first line", out.String())
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
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v to return after cancel", d)
	}
	if out.String() != "started\n" {
		t.Errorf("output = %q", out.String())
	}
	if cs := f.recordContainers(t, env.Record); len(cs) != 0 {
		t.Errorf("containers left after cancel: %+v", cs)
	}
}

// lockedBuffer is a bytes.Buffer a test may read while a step writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestLeftoverContainerReplaced(t *testing.T) {
	f := newFixture(t)
	env := f.setup(t)
	ctx := context.Background()
	step := f.sh("unitTest", "echo fresh")
	name := docker.ContainerName(env.Record.ID, step.Name)

	// A crashed attempt left a running container of the same name.
	old, err := f.cli.ContainerCreate(ctx,
		&container.Config{Image: f.image, Cmd: []string{"sleep", "60"}, Labels: env.Record.Labels()},
		&container.HostConfig{}, nil, nil, name)
	if err != nil {
		t.Fatalf("ContainerCreate: %v", err)
	}
	t.Cleanup(func() { _ = f.cli.ContainerRemove(ctx, old.ID, container.RemoveOptions{Force: true}) })
	if err := f.cli.ContainerStart(ctx, old.ID, container.StartOptions{}); err != nil {
		t.Fatalf("ContainerStart: %v", err)
	}

	if out := f.mustRun(t, env, step); out != "fresh\n" {
		t.Errorf("output = %q", out)
	}
	if _, err := f.cli.ContainerInspect(ctx, old.ID); !cerrdefs.IsNotFound(err) {
		t.Errorf("leftover container still there: %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rec := newRecord()
	name := docker.ResourceName(rec.ID)

	if err := f.e.Teardown(ctx, rec); err != nil {
		t.Fatalf("Teardown without Setup: %v", err)
	}

	env, err := f.e.Setup(ctx, rec)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = f.e.Teardown(ctx, rec) })
	want := executor.Environment{Record: rec, Workspace: filepath.Join(f.root, rec.ID, "workspace"), Network: name}
	if env != want {
		t.Errorf("Setup = %+v, want %+v", env, want)
	}
	if err := os.WriteFile(filepath.Join(env.Workspace, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Setup again reuses everything.
	env2, err := f.e.Setup(ctx, rec)
	if err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	if env2 != env {
		t.Errorf("second Setup = %+v, want %+v", env2, env)
	}
	if out := f.mustRun(t, env2, f.sh("ls", "cat keep")); out != "x" {
		t.Errorf("workspace after second Setup: %q", out)
	}
	nets, err := f.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", executor.LabelRecord+"="+rec.ID))})
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) != 1 || nets[0].Name != name || nets[0].Driver != "bridge" {
		t.Errorf("networks of the record = %+v, want one bridge named %s", nets, name)
	}
	vol, err := f.cli.VolumeInspect(ctx, name)
	if err != nil {
		t.Fatalf("VolumeInspect: %v", err)
	}
	if vol.Labels[executor.LabelRecord] != rec.ID || vol.Options["device"] != env.Workspace {
		t.Errorf("volume = %+v", vol)
	}

	// A container left behind (say, by a worker that died) goes with the record.
	stray, err := f.cli.ContainerCreate(ctx,
		&container.Config{Image: f.image, Cmd: []string{"sleep", "60"}, Labels: rec.Labels()},
		&container.HostConfig{NetworkMode: container.NetworkMode(name)}, nil, nil, "")
	if err != nil {
		t.Fatalf("ContainerCreate: %v", err)
	}
	if err := f.cli.ContainerStart(ctx, stray.ID, container.StartOptions{}); err != nil {
		t.Fatalf("ContainerStart: %v", err)
	}

	for i := range 2 {
		if err := f.e.Teardown(ctx, rec); err != nil {
			t.Fatalf("Teardown #%d: %v", i+1, err)
		}
	}
	if _, err := f.cli.ContainerInspect(ctx, stray.ID); !cerrdefs.IsNotFound(err) {
		t.Errorf("container after Teardown: %v", err)
	}
	if _, err := f.cli.NetworkInspect(ctx, name, network.InspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("network after Teardown: %v", err)
	}
	if _, err := f.cli.VolumeInspect(ctx, name); !cerrdefs.IsNotFound(err) {
		t.Errorf("volume after Teardown: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.root, rec.ID)); !os.IsNotExist(err) {
		t.Errorf("record dir after Teardown: %v", err)
	}
}

func TestContainerName(t *testing.T) {
	tests := []struct {
		record, step, want string
	}{
		{"65f0c0ffee", "unitTest", "cyclone-65f0c0ffee-unitTest"},
		{"r1", "imageBuild-web", "cyclone-r1-imageBuild-web"},
		{"r1", "a_b.c", "cyclone-r1-a_b.c"},
	}
	for _, tt := range tests {
		if got := docker.ContainerName(tt.record, tt.step); got != tt.want {
			t.Errorf("ContainerName(%q, %q) = %q, want %q", tt.record, tt.step, got, tt.want)
		}
	}
	// Names that need sanitising stay distinct.
	a, b := docker.ContainerName("r1", "a/b"), docker.ContainerName("r1", "a b")
	if a == b || strings.ContainsAny(a+b, "/ ") {
		t.Errorf("sanitised names %q and %q", a, b)
	}
}
