package docker_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"

	"github.com/cycloneci/cyclone/internal/executor"
)

// writeFiles writes path -> content under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// removeImage removes an image the test built when it ends.
func (f *fixture) removeImage(t *testing.T, ref string) {
	t.Cleanup(func() {
		_, _ = f.cli.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true, PruneChildren: true})
	})
}

func TestBuildImage(t *testing.T) {
	f := newFixture(t)
	env := f.setup(t)
	writeFiles(t, env.Workspace, map[string]string{
		"app/hello.txt":     "hello from the context\n",
		"app/sub/deep.txt":  "deep\n",
		"docker/Dockerfile": "FROM " + f.image + "\nCOPY . /app/\nRUN cat /app/hello.txt /app/sub/deep.txt\n",
	})
	if err := os.Symlink("hello.txt", filepath.Join(env.Workspace, "app", "link.txt")); err != nil {
		t.Fatal(err)
	}
	labels := env.Record.Labels()

	t.Run("Dockerfile outside the context directory", func(t *testing.T) {
		tag := "cyclone-test/build-outside:" + strings.ToLower(env.Record.ID)
		f.removeImage(t, tag)
		var out bytes.Buffer
		err := f.e.BuildImage(context.Background(), env, executor.BuildSpec{
			ContextDir: "app", DockerfilePath: "docker/Dockerfile", Tag: tag, Labels: labels,
		}, &out)
		if err != nil {
			t.Fatalf("BuildImage: %v\n%s", err, out.String())
		}
		for _, want := range []string{"Building image " + tag, ": FROM " + f.image, "hello from the context", "Successfully tagged " + tag} {
			if !strings.Contains(out.String(), want) {
				t.Fatalf("build output lacks %q:\n%s", want, out.String())
			}
		}
		inspect, err := f.cli.ImageInspect(context.Background(), tag)
		if err != nil {
			t.Fatal(err)
		}
		if inspect.Config.Labels[executor.LabelRecord] != env.Record.ID {
			t.Fatalf("image labels %v", inspect.Config.Labels)
		}
		// The symbolic link stays a link; the extra Dockerfile is in the context too.
		got := f.mustRun(t, env, executor.Step{Name: "check", Stage: "test", Image: tag,
			Command: []string{"/bin/sh", "-ec", "readlink /app/link.txt; cat /app/link.txt; ls -a /app"}})
		if !strings.HasPrefix(got, "hello.txt\nhello from the context\n") || !strings.Contains(got, "sub") {
			t.Fatalf("image content: %q", got)
		}
	})

	t.Run("inline Dockerfile", func(t *testing.T) {
		tag := "cyclone-test/build-inline:" + strings.ToLower(env.Record.ID)
		f.removeImage(t, tag)
		var out bytes.Buffer
		err := f.e.BuildImage(context.Background(), env, executor.BuildSpec{
			Dockerfile: "FROM " + f.image + "\nCOPY app/hello.txt /inline.txt\n", Tag: tag,
		}, &out)
		if err != nil {
			t.Fatalf("BuildImage: %v\n%s", err, out.String())
		}
		if got := f.mustRun(t, env, executor.Step{Name: "check-inline", Stage: "test", Image: tag, Command: []string{"cat", "/inline.txt"}}); got != "hello from the context\n" {
			t.Fatalf("image content: %q", got)
		}
	})

	t.Run("the pipeline's failures", func(t *testing.T) {
		if err := os.Symlink("/etc", filepath.Join(env.Workspace, "etc-link")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/etc/passwd", filepath.Join(env.Workspace, "passwd-link")); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name string
			spec executor.BuildSpec
			want string
		}{
			{"context escapes", executor.BuildSpec{ContextDir: "../.."}, `contextDir "../.." is not inside the workspace`},
			{"context through a link out", executor.BuildSpec{ContextDir: "etc-link"}, `contextDir "etc-link"`},
			{"context missing", executor.BuildSpec{ContextDir: "nope"}, `contextDir "nope" is not a directory of the workspace`},
			{"Dockerfile escapes", executor.BuildSpec{DockerfilePath: "../../../etc/passwd"}, `dockerfilePath "../../../etc/passwd" is not inside the workspace`},
			{"Dockerfile through a link out", executor.BuildSpec{DockerfilePath: "passwd-link"}, "the Dockerfile passwd-link is not in the workspace"},
			{"Dockerfile missing", executor.BuildSpec{ContextDir: "app"}, "the Dockerfile app/Dockerfile is not in the workspace"},
			{"build fails", executor.BuildSpec{Dockerfile: "FROM " + f.image + "\nRUN echo about-to-fail && exit 7\n"}, "returned a non-zero code: 7"},
			{"base image missing", executor.BuildSpec{Dockerfile: "FROM cyclone-test/no-such-image:1\n"}, "build of cyclone-test/build-bad:"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				c.spec.Tag = "cyclone-test/build-bad:" + strings.ToLower(env.Record.ID)
				f.removeImage(t, c.spec.Tag)
				var out bytes.Buffer
				err := f.e.BuildImage(context.Background(), env, c.spec, &out)
				fe, ok := executor.IsFailed(err)
				if !ok || !strings.Contains(fe.Message, c.want) {
					t.Fatalf("BuildImage = %v, want a FailedError with %q; output:\n%s", err, c.want, out.String())
				}
				if c.name == "build fails" && !strings.Contains(out.String(), "about-to-fail") {
					t.Fatalf("the build's output is not in the log:\n%s", out.String())
				}
			})
		}
		// The classic builder's intermediate containers are gone.
		list, err := f.cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("ancestor", f.image))})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			if strings.Contains(c.Command, "about-to-fail") {
				t.Fatalf("leftover build container %s (%s)", c.ID, c.Command)
			}
		}
	})
}

func TestServices(t *testing.T) {
	f := newFixture(t)
	env := f.setup(t)
	rec := env.Record
	err := f.e.StartService(context.Background(), env, executor.ServiceSpec{
		Name: "websrv", Image: f.image,
		Command: []string{"/bin/sh", "-ec", `mkdir -p /www && echo "page $GREETING" > /www/index.html && exec httpd -f -p 8080 -h /www`},
		Env:     []string{"GREETING=hi"},
	})
	if err != nil {
		t.Fatalf("StartService: %v", err)
	}
	got := f.mustRun(t, env, f.sh("client", `i=0; until wget -q -O - http://websrv:8080/index.html; do i=$((i+1)); [ $i -lt 50 ]; sleep 0.1; done`))
	if got != "page hi\n" {
		t.Fatalf("the step got %q from the service", got)
	}
	if n := len(f.recordContainers(t, rec)); n != 1 {
		t.Fatalf("%d containers for the record, want the service's", n)
	}

	t.Run("image that does not exist", func(t *testing.T) {
		err := f.e.StartService(context.Background(), env, executor.ServiceSpec{Name: "db", Image: "cyclone-test/no-such-image:1"})
		if fe, ok := executor.IsFailed(err); !ok || !strings.Contains(fe.Message, "service db: image cyclone-test/no-such-image:1 is not on the Docker engine") {
			t.Fatalf("StartService = %v", err)
		}
	})
	if err := f.e.StopServices(context.Background(), env); err != nil {
		t.Fatalf("StopServices: %v", err)
	}
	if err := f.e.StopServices(context.Background(), env); err != nil {
		t.Fatalf("StopServices again: %v", err)
	}
	if list := f.recordContainers(t, rec); len(list) != 0 {
		t.Fatalf("%d containers left after StopServices", len(list))
	}
}
