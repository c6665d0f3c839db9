package bench

import (
	"context"
	"io"
	"os/exec"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/docker"
	"github.com/cycloneci/cyclone/internal/testimage"
)

// BenchmarkDockerStep: one step on the Docker executor (create, attach, start, wait,
// remove, in the record's network and workspace volume) against `docker run --rm`
// of the same image and command, in the same run.
func BenchmarkDockerStep(b *testing.B) {
	cli := testimage.RequireDocker(b)
	image := testimage.Busybox(b, cli)
	ex := docker.New(cli, b.TempDir())
	ctx := context.Background()
	rec := executor.Record{ID: "bench-docker", Project: "bench", Pipeline: "docker"}
	env, err := ex.Setup(ctx, rec)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ex.Teardown(context.Background(), rec) })
	cmd := []string{"/bin/sh", "-c", "echo hello"}

	const n = 20
	var step, run []time.Duration
	for b.Loop() {
		step, run = step[:0], run[:0]
		for range n {
			start := time.Now()
			res, err := ex.Run(ctx, env, executor.Step{Name: "unitTest", Stage: "unitTest", Image: image, Command: cmd}, io.Discard)
			if err != nil || res.ExitCode != 0 {
				b.Fatalf("step: %v %+v", err, res)
			}
			step = append(step, time.Since(start))

			start = time.Now()
			if out, err := exec.Command("docker", append([]string{"run", "--rm", image}, cmd...)...).CombinedOutput(); err != nil {
				b.Fatalf("docker run: %v %s", err, out)
			}
			run = append(run, time.Since(start))
		}
	}
	b.ReportMetric(ms(median(step)), "step-p50-ms")
	b.ReportMetric(ms(median(run)), "docker-run-p50-ms")
	b.ReportMetric(ms(median(step))/ms(median(run)), "ratio")
}
