package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/internal/testenv"
)

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkListProjects: GET /api/v1/projects?limit=50 with 1,000 projects, against
// the same page read straight from the store and against GET /healthz (the HTTP
// floor), all in the same run; and GET of one project by name, which every request
// under /projects/{project} does first.
func BenchmarkListProjects(b *testing.B) {
	env := testenv.Start(b, testenv.Options{NoWorker: true})
	for i := range 1000 {
		r := env.Do("POST", "/api/v1/projects", map[string]any{
			"name": fmt.Sprintf("project-%04d", i),
			"scm":  map[string]any{"type": "Github", "server": "https://github.com"},
		})
		mustStatus(b, r, http.StatusCreated)
	}
	const n = 200
	measure := func(f func()) []time.Duration {
		out := make([]time.Duration, 0, n)
		for range n {
			start := time.Now()
			f()
			out = append(out, time.Since(start))
		}
		return out
	}
	var api, direct, health, one []time.Duration
	for b.Loop() {
		api = measure(func() { mustStatus(b, env.Do("GET", "/api/v1/projects?limit=50", nil), http.StatusOK) })
		direct = measure(func() {
			if _, _, err := env.Store.ListProjects(context.Background(), store.ListOptions{Limit: 50}); err != nil {
				b.Fatal(err)
			}
		})
		health = measure(func() { mustStatus(b, env.Do("GET", "/healthz", nil), http.StatusOK) })
		one = measure(func() { mustStatus(b, env.Do("GET", "/api/v1/projects/project-0500", nil), http.StatusOK) })
	}
	b.ReportMetric(ms(percentile(api, 0.5)), "api-p50-ms")
	b.ReportMetric(ms(percentile(api, 0.99)), "api-p99-ms")
	b.ReportMetric(ms(percentile(direct, 0.5)), "store-p50-ms")
	b.ReportMetric(ms(percentile(health, 0.5)), "healthz-p50-ms")
	b.ReportMetric(ms(percentile(one, 0.5)), "get-one-p50-ms")
	b.ReportMetric(ms(percentile(one, 0.99)), "get-one-p99-ms")
	b.ReportMetric(ms(percentile(api, 0.5))/ms(percentile(direct, 0.5)), "api/store")
}

// BenchmarkDevColdStart: `cyclone dev` from process start to a ready API, on a new
// data dir (cold) and again on the same dir (warm).
func BenchmarkDevColdStart(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "cyclone")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/cyclone").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	var cold, warm time.Duration
	for b.Loop() {
		dir := b.TempDir()
		cold = startUntilReady(b, bin, dir)
		warm = startUntilReady(b, bin, dir)
	}
	b.ReportMetric(ms(cold), "cold-ms")
	b.ReportMetric(ms(warm), "warm-ms")
	b.ReportMetric(ms(cold)/ms(warm), "cold/warm")
}

func freePort(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startUntilReady(b *testing.B, bin, dir string) time.Duration {
	b.Helper()
	api := freePort(b)
	cmd := exec.Command(bin, "dev", "--data-dir", dir, "--listen", api, "--temporal-address", freePort(b),
		"--ui-address", freePort(b), "--mongo-address", freePort(b), "--executor", "local")
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	for {
		resp, err := http.Get("http://" + api + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start)
			}
		}
		if time.Since(start) > 2*time.Minute {
			b.Fatal("cyclone dev never became ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
