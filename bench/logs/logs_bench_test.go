// Package logsbench measures stage logs (issue "Stage logs", Measure section):
//
//   - latency from a line printed by a step to a websocket client receiving it,
//     p50/p99, with the API server and the worker as separate processes (lines go
//     through MongoDB) and in one process (the in-process notification fast path);
//   - ingestion of a step printing 50 MB: MB/s and the worker's RSS growth, against
//     the same step writing its output to a local file in the same run.
//
// Run with `go test -run '^$' -bench . -benchtime 3x ./bench/logs/`; figures go to
// bench/RESULTS.md.
package logsbench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cycloneci/cyclone/internal/devstack"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/local"
	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/secrets"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// stack is Cyclone in the production shape: `cyclone server` and `cyclone worker`
// processes on an embedded FerretDB and in-memory Temporal started here. It is
// shared by the benchmarks and stopped by TestMain.
type stack struct {
	base    string
	store   *store.Store
	worker  *exec.Cmd
	cleanup []func()
}

var (
	shared     *stack
	sharedErr  error
	sharedOnce sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		for i := len(shared.cleanup) - 1; i >= 0; i-- {
			shared.cleanup[i]()
		}
	}
	os.Exit(code)
}

func getStack(b *testing.B) *stack {
	b.Helper()
	sharedOnce.Do(func() { shared, sharedErr = startStack() })
	if sharedErr != nil {
		b.Fatal(sharedErr)
	}
	return shared
}

func startStack() (*stack, error) {
	s := &stack{}
	dir, err := os.MkdirTemp("", "cyclone-logs-bench-")
	if err != nil {
		return nil, err
	}
	s.cleanup = append(s.cleanup, func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "cyclone")
	build := exec.Command("go", "build", "-o", bin, "./cmd/cyclone")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		return s, fmt.Errorf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mongo, err := devstack.StartMongo(ctx, devstack.MongoOptions{DataDir: filepath.Join(dir, "mongo"), Logger: testenv.Logger()})
	if err != nil {
		return s, err
	}
	s.cleanup = append(s.cleanup, mongo.Stop)
	temporal, err := devstack.StartTemporal(ctx, devstack.TemporalOptions{Logger: testenv.Logger()})
	if err != nil {
		return s, err
	}
	s.cleanup = append(s.cleanup, temporal.Stop)
	key := make([]byte, secrets.KeySize)
	_, _ = rand.Read(key)
	box, _ := secrets.New(key)
	if s.store, err = store.Open(ctx, mongo.URI(), "cyclone", box); err != nil {
		return s, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s, err
	}
	addr := ln.Addr().String()
	ln.Close()
	s.base = "http://" + addr
	common := []string{
		"--mongo-uri", mongo.URI(), "--temporal-address", temporal.Address(), "--temporal-namespace", temporal.Namespace(),
		"--task-queue", "logs-bench", "--secret-key", hex.EncodeToString(key), "--log-level", "warn",
	}
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, append(args, common...)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			return nil
		}
		s.cleanup = append(s.cleanup, func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		})
		return cmd
	}
	if start("server", "--listen", addr, "--no-auth") == nil {
		return s, fmt.Errorf("start server")
	}
	if s.worker = start("worker", "--executor", "local", "--workspace-root", filepath.Join(dir, "ws"), "--worker-id", "bench"); s.worker == nil {
		return s, fmt.Errorf("start worker")
	}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(s.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("server not ready: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s, nil
}

// api is the HTTP side of a running Cyclone (the process stack, which runs without
// authentication, or testenv's, which needs its admin token).
type api struct{ base, token string }

// header is what every request sends.
func (a api) header() http.Header {
	h := http.Header{}
	if a.token != "" {
		h.Set("Authorization", "Bearer "+a.token)
	}
	return h
}

func (a api) do(b *testing.B, method, path string, body any, status int) []byte {
	b.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, a.base+path, rd)
	req.Header = a.header()
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		b.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	return data
}

var names int

// pipeline creates a project and a pipeline with one unitTest command.
func (a api) pipeline(b *testing.B, command string) string {
	b.Helper()
	names++
	project := fmt.Sprintf("bench%d", names)
	a.do(b, "POST", "/api/v1/projects", map[string]any{"name": project, "scm": map[string]any{"type": "Github", "server": "https://github.com"}}, http.StatusCreated)
	a.do(b, "POST", "/api/v1/projects/"+project+"/pipelines", map[string]any{"name": "logs", "build": map[string]any{
		"builderImage": map[string]any{"image": "busybox"},
		"stages":       map[string]any{"unitTest": map[string]any{"command": []string{command}}},
	}}, http.StatusCreated)
	return "/api/v1/projects/" + project + "/pipelines/logs"
}

func (a api) run(b *testing.B, pipeline string) (string, model.Record) {
	b.Helper()
	var rec model.Record
	_ = json.Unmarshal(a.do(b, "POST", pipeline+"/records", map[string]any{"ref": "master"}, http.StatusCreated), &rec)
	return pipeline + "/records/" + rec.ID, rec
}

func (a api) waitDone(b *testing.B, path string, poll time.Duration) model.Record {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var rec model.Record
		_ = json.Unmarshal(a.do(b, "GET", path, nil, http.StatusOK), &rec)
		if model.IsTerminal(rec.Status) {
			if rec.Status != model.StatusSuccess {
				b.Fatalf("record %s: %s", rec.Status, rec.ErrorMessage)
			}
			return rec
		}
		if time.Now().After(deadline) {
			b.Fatal("record did not end")
		}
		time.Sleep(poll)
	}
}

// BenchmarkLogLatency measures how long a printed line takes to reach a websocket
// client. The step prints the wall clock in nanoseconds every 20 ms; the client
// subtracts it from the time it received the line (same machine, same clock).
func BenchmarkLogLatency(b *testing.B) {
	const lines = 100
	command := fmt.Sprintf(`for i in $(seq 1 %d); do date +%%s%%N; sleep 0.02; done`, lines)
	measure := func(b *testing.B, a api) {
		pipeline := a.pipeline(b, command)
		var samples []time.Duration
		for b.Loop() {
			path, _ := a.run(b, pipeline)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.base, "http")+path+"/logstream?stage=unitTest", &websocket.DialOptions{HTTPHeader: a.header()})
			if err != nil {
				b.Fatal(err)
			}
			for {
				_, data, err := c.Read(ctx)
				if err != nil {
					break
				}
				got := time.Now()
				if ns, err := strconv.ParseInt(string(data), 10, 64); err == nil {
					samples = append(samples, got.Sub(time.Unix(0, ns)))
				}
			}
			c.CloseNow()
			cancel()
		}
		if len(samples) < lines*b.N/2 {
			b.Fatalf("only %d samples", len(samples))
		}
		slices.Sort(samples)
		pct := func(p float64) float64 {
			return float64(samples[int(p*float64(len(samples)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(pct(0.50), "p50-ms")
		b.ReportMetric(pct(0.99), "p99-ms")
		b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "max-ms")
		b.ReportMetric(float64(len(samples)), "lines")
	}
	b.Run("processes", func(b *testing.B) { measure(b, api{base: getStack(b).base}) })
	b.Run("oneprocess", func(b *testing.B) {
		env := testenv.Start(b, testenv.Options{})
		measure(b, api{base: env.URL, token: testenv.AdminToken})
	})
}

// fiftyMB prints 50 MiB of 100-byte lines.
const fiftyMB = 50 << 20

// floodCommands print 50 MiB of 100-byte lines: one line over and over (which the
// stored chunks' compression all but removes), and random base64 text (which it
// cannot shrink below three quarters).
var floodCommands = []struct{ name, command string }{
	{"repeated", fmt.Sprintf(`yes '%s' | head -c %d`, strings.Repeat("0123456789", 10)[:99], fiftyMB)},
	{"random", fmt.Sprintf(`head -c %d /dev/urandom | base64 -w 99`, fiftyMB/100*99/4*3)},
}

// BenchmarkLogIngest runs a step printing 50 MiB through a record (the worker
// stores every line in MongoDB) and, in the same run, the same step through the
// same executor into a local file.
func BenchmarkLogIngest(b *testing.B) {
	for _, flood := range floodCommands {
		b.Run(flood.name, func(b *testing.B) { logIngest(b, flood.command) })
	}
}

func logIngest(b *testing.B, floodCommand string) {
	s := getStack(b)
	a := api{base: s.base}
	pipeline := a.pipeline(b, floodCommand)
	noop := a.pipeline(b, "true")
	ex := local.New(b.TempDir())
	ctx := context.Background()
	env, err := ex.Setup(ctx, executor.Record{ID: "file-baseline"})
	if err != nil {
		b.Fatal(err)
	}
	var fileDur, recordDur, noopDur time.Duration
	var rssGrowth int64
	for b.Loop() {
		// Baseline: the same step into a file.
		f, err := os.Create(filepath.Join(b.TempDir(), "out.log"))
		if err != nil {
			b.Fatal(err)
		}
		w := bufio.NewWriterSize(f, 64<<10)
		t0 := time.Now()
		res, err := ex.Run(ctx, env, executor.Step{Name: "flood", Command: []string{"/bin/sh", "-c", floodCommand}}, w)
		if err == nil {
			err = w.Flush()
		}
		if err == nil {
			err = f.Sync()
		}
		fileDur += time.Since(t0)
		f.Close()
		if err != nil || res.ExitCode != 0 {
			b.Fatalf("file baseline: %v, %+v", err, res)
		}

		// The record's fixed cost, without output.
		t0 = time.Now()
		path, _ := a.run(b, noop)
		a.waitDone(b, path, 5*time.Millisecond)
		noopDur += time.Since(t0)

		// The step through Cyclone, its worker's memory watched.
		pid := s.worker.Process.Pid
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) // reset the peak RSS
		before := procKB(pid, "VmRSS")
		t0 = time.Now()
		path, rec := a.run(b, pipeline)
		a.waitDone(b, path, 5*time.Millisecond)
		recordDur += time.Since(t0)
		hwm := procKB(pid, "VmHWM")
		b.Logf("worker RSS before %d kB, peak %d kB", before, hwm)
		rssGrowth = max(rssGrowth, hwm-before)

		n, err := (&logs.Reader{Store: s.store}).Len(ctx, logs.Stream{RecordID: rec.ID, Stage: model.StageUnitTest})
		if want := int64(fiftyMB/100 + 3); err != nil || n != want {
			b.Fatalf("stored %d lines (%v), want %d", n, err, want)
		}
		a.do(b, "DELETE", path, nil, http.StatusNoContent)
	}
	mb := float64(fiftyMB) / (1 << 20)
	n := float64(b.N)
	b.ReportMetric(mb/(fileDur.Seconds()/n), "file-MB/s")
	b.ReportMetric(mb/(recordDur.Seconds()/n), "record-MB/s")
	b.ReportMetric(mb/((recordDur-noopDur).Seconds()/n), "ingest-MB/s")
	b.ReportMetric(float64(noopDur.Milliseconds())/n, "noop-record-ms")
	b.ReportMetric(float64(rssGrowth)/1024, "worker-rss-growth-MB")
}

// procKB reads a "kB" field of /proc/<pid>/status.
func procKB(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
