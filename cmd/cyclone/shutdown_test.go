package main_test

// Graceful shutdown of the production shape: `cyclone worker` and `cyclone server`
// subprocesses on a Temporal and a MongoDB-compatible store of the test process
// receive SIGTERM in the middle of their work.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/cycloneci/cyclone/internal/devstack"
)

// shutdownCluster runs cyclone subprocesses against an embedded Temporal and store.
type shutdownCluster struct {
	t        *testing.T
	bin      string
	env      []string
	temporal *devstack.Temporal
	api      string // the server's listen address
	base     string // its /api/v1 URL
}

func newShutdownCluster(t *testing.T) *shutdownCluster {
	t.Helper()
	bin := buildBinary(t)
	b := startBackends(t, "shutdowntest")
	apiToken = "cyc_shutdown-test-admin"
	api := freeAddr(t)
	return &shutdownCluster{t: t, bin: bin, temporal: b.temporal, api: api, base: "http://" + api + "/api/v1",
		env: append(b.env, "CYCLONE_ADMIN_TOKEN="+apiToken, "CYCLONE_LISTEN="+api)}
}

// backends are an embedded Temporal and store for cyclone subprocesses, and the
// environment that points them there (with a fresh secret key).
type backends struct {
	temporal *devstack.Temporal
	env      []string
}

// startBackends starts the backends, stopped when the test ends; the subprocesses'
// records go on taskQueue.
func startBackends(t *testing.T, taskQueue string) backends {
	t.Helper()
	ctx := context.Background()
	mongo, err := devstack.StartMongo(ctx, devstack.MongoOptions{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mongo.Stop)
	temporal, err := devstack.StartTemporal(ctx, devstack.TemporalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(temporal.Stop)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return backends{temporal: temporal, env: append(os.Environ(),
		"CYCLONE_MONGO_URI="+mongo.URI(), "CYCLONE_TEMPORAL_ADDRESS="+temporal.Address(),
		"CYCLONE_SECRET_KEY="+hex.EncodeToString(key), "CYCLONE_TASK_QUEUE="+taskQueue)}
}

// process is a cyclone subprocess whose output the test keeps.
type process struct {
	cmd    *exec.Cmd
	output *lockedBuffer
	exited chan struct{}
	err    error // Wait's answer, once exited is closed
}

// start runs cyclone with args; its output is shown if the test fails.
func (c *shutdownCluster) start(args ...string) *process {
	c.t.Helper()
	p := &process{cmd: exec.Command(c.bin, args...), output: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = c.env
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	c.t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if c.t.Failed() {
			c.t.Logf("output of cyclone %s:\n%s", strings.Join(args, " "), p.output.String())
		}
	})
	return p
}

// terminate sends SIGTERM and returns how long the process took to exit, failing
// unless it exited with status 0 within limit.
func (p *process) terminate(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(limit):
		t.Fatalf("cyclone did not exit within %s of SIGTERM", limit)
	}
	if p.err != nil {
		t.Fatalf("cyclone did not exit cleanly on SIGTERM: %v", p.err)
	}
	return time.Since(sent)
}

// startServer starts `cyclone server` and waits until it is ready.
func (c *shutdownCluster) startServer(args ...string) *process {
	c.t.Helper()
	p := c.start(append([]string{"server"}, args...)...)
	waitFor(c.t, func() bool {
		resp, err := http.Get("http://" + c.api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// startRecord creates project k (once), pipeline name with the given stages and a
// record of it, and returns the record's URL and ID.
func (c *shutdownCluster) startRecord(name, stages string) (string, string) {
	c.t.Helper()
	if s, b := request(c.t, "GET", c.base+"/projects/k", ""); s == http.StatusNotFound {
		if s, b := request(c.t, "POST", c.base+"/projects", `{"name":"k","scm":{"type":"Github","server":"https://github.com"}}`); s != http.StatusCreated {
			c.t.Fatalf("project: %d %s", s, b)
		}
	} else if s != http.StatusOK {
		c.t.Fatalf("get project: %d %s", s, b)
	}
	pipeline := `{"name":"` + name + `","build":{"builderImage":{"image":"x"},"stages":` + stages + `}}`
	if s, b := request(c.t, "POST", c.base+"/projects/k/pipelines", pipeline); s != http.StatusCreated {
		c.t.Fatalf("pipeline: %d %s", s, b)
	}
	s, b := request(c.t, "POST", c.base+"/projects/k/pipelines/"+name+"/records", `{"ref":"master"}`)
	if s != http.StatusCreated {
		c.t.Fatalf("record: %d %s", s, b)
	}
	var rec struct{ ID string }
	if err := json.Unmarshal(b, &rec); err != nil || rec.ID == "" {
		c.t.Fatalf("record: %v %s", err, b)
	}
	return c.base + "/projects/k/pipelines/" + name + "/records/" + rec.ID, rec.ID
}

type shutdownRecord struct {
	Status      string
	StageStatus map[string]struct{ Status string } `json:"stageStatus"`
}

func getRecord(t *testing.T, url string) shutdownRecord {
	t.Helper()
	s, b := request(t, "GET", url, "")
	var rec shutdownRecord
	if s != http.StatusOK {
		t.Fatalf("get record: %d %s", s, b)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("record: %v %s", err, b)
	}
	return rec
}

// requireAllStages fails unless every stage of the record has the status want.
func requireAllStages(t *testing.T, rec shutdownRecord, want string, stages ...string) {
	t.Helper()
	for _, stage := range stages {
		if got := rec.StageStatus[stage].Status; got != want {
			t.Errorf("stage %s is %q, want %s (record %+v)", stage, got, want, rec)
		}
	}
}

// attempts counts the lines the stage appended to the file (outside the record's
// workspace, which goes when the record ends).
func attempts(t *testing.T, file string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}

// waitAttempt waits until the stage's command has started (its first line is in
// the file): the Running mark can come before the command runs.
func waitAttempt(t *testing.T, file string) {
	t.Helper()
	waitFor(t, func() bool {
		_, err := os.Stat(file)
		return err == nil
	})
}

// A worker told to stop while a short stage runs lets the stage finish within its
// stop timeout and exits 0; its replacement runs the rest of the record, without
// running the finished stage again.
func TestWorkerSIGTERMFinishesRunningStage(t *testing.T) {
	c := newShutdownCluster(t)
	c.startServer()
	workspaces := t.TempDir()
	workerArgs := []string{"worker", "--executor", "local", "--workspace-root", workspaces, "--worker-id", "w1", "--stop-timeout", "30s"}
	w := c.start(workerArgs...)

	counter := filepath.Join(t.TempDir(), "attempts")
	recURL, _ := c.startRecord("short", `{
		"unitTest":{"command":["echo attempt >> `+counter+`","sleep 2","echo slept"]},
		"package":{"command":["echo packaged"]}}`)
	waitAttempt(t, counter)
	took := w.terminate(t, 30*time.Second)
	if took < time.Second {
		t.Errorf("the worker exited %s after SIGTERM, before its 2 s stage could finish", took)
	}

	// The stage finished on the stopping worker and is not run again.
	rec := getRecord(t, recURL)
	requireAllStages(t, rec, "Success", "unitTest")
	if rec.Status != "Running" || rec.StageStatus["package"].Status == "Success" {
		t.Fatalf("with no worker up the record is %+v, want it Running with package to do", rec)
	}
	if !strings.Contains(w.output.String(), "worker stopped") {
		t.Errorf("the worker did not log its stop:\n%s", w.output.String())
	}

	c.start(workerArgs...)
	waitRecord(t, recURL, "Success")
	requireAllStages(t, getRecord(t, recURL), "Success", "unitTest", "package")
	if n := attempts(t, counter); n != 1 {
		t.Fatalf("unitTest ran %d times, want once: it had finished before the worker stopped", n)
	}
}

// A worker told to stop while a stage runs past its stop timeout stops the stage,
// hands it back to Temporal (a retryable failure, reported before the worker
// exits, not a heartbeat timeout) and exits 0; the record stays Running, and the
// replacement worker retries the stage and finishes the record.
func TestWorkerSIGTERMHandsBackLongStage(t *testing.T) {
	c := newShutdownCluster(t)
	c.startServer()
	workspaces := t.TempDir()
	workerArgs := []string{"worker", "--executor", "local", "--workspace-root", workspaces, "--worker-id", "w1", "--stop-timeout", "1s"}
	w := c.start(workerArgs...)

	// The first attempt would sleep two minutes; the retry is quick.
	counter := filepath.Join(t.TempDir(), "attempts")
	recURL, recID := c.startRecord("long", `{
		"unitTest":{"command":["echo attempt >> `+counter+`","if [ $(wc -l < `+counter+`) -lt 2 ]; then sleep 120; fi","echo done"]},
		"package":{"command":["echo packaged"]}}`)
	waitAttempt(t, counter)
	// 1 s of stop timeout and the hand-back grace (10 s), far less than the stage.
	if took := w.terminate(t, 25*time.Second); took < time.Second {
		t.Errorf("the worker exited %s after SIGTERM, before its 1 s stop timeout", took)
	}

	rec := getRecord(t, recURL)
	if rec.Status != "Running" || rec.StageStatus["unitTest"].Status != "Running" {
		t.Fatalf("after the worker stopped the record is %+v, want it and unitTest Running (handed back, not failed)", rec)
	}
	// Temporal already knows the attempt ended: the stage waits for its retry.
	tc, err := client.Dial(client.Options{HostPort: c.temporal.Address(), Namespace: c.temporal.Namespace()})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	desc, err := tc.DescribeWorkflowExecution(context.Background(), recID, "")
	if err != nil {
		t.Fatal(err)
	}
	var handedBack bool
	for _, pa := range desc.GetPendingActivities() {
		if pa.GetActivityType().GetName() == "RunStage" {
			handedBack = pa.GetAttempt() == 2 && strings.Contains(pa.GetLastFailure().GetMessage(), "worker stopped during the stage")
			if !handedBack {
				t.Fatalf("pending stage: attempt %d, last failure %q; want attempt 2 after \"worker stopped during the stage\"",
					pa.GetAttempt(), pa.GetLastFailure().GetMessage())
			}
		}
	}
	if !handedBack {
		t.Fatalf("no stage pending in %s", desc.String())
	}

	c.start(workerArgs...)
	waitRecord(t, recURL, "Success")
	requireAllStages(t, getRecord(t, recURL), "Success", "unitTest", "package")
	if n := attempts(t, counter); n != 2 {
		t.Fatalf("unitTest ran %d times, want twice (stopped, then retried)", n)
	}
}

// An API server told to stop answers the requests it has begun: a request whose
// body is still arriving when SIGTERM comes gets its full answer (and its effect
// is kept), while new connections are refused; a request that outlives
// --shutdown-timeout is cut, and the server still exits 0 right after.
func TestServerSIGTERMFinishesRequestsInFlight(t *testing.T) {
	c := newShutdownCluster(t)
	srv := c.startServer("--shutdown-timeout", "4s")

	body := `{"name":"drained","scm":{"type":"Github","server":"https://github.com"}}`
	begin := func() net.Conn {
		conn, err := net.Dial("tcp", c.api)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		head := fmt.Sprintf("POST /api/v1/projects HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", c.api, apiToken, len(body))
		if _, err := conn.Write([]byte(head + body[:10])); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	inFlight := begin()
	stuck := begin() // never sends the rest of its body
	time.Sleep(500 * time.Millisecond)

	sent := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The server is stopping: it takes no new connection...
	waitFor(t, func() bool {
		conn, err := net.DialTimeout("tcp", c.api, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
	select {
	case <-srv.exited:
		t.Fatalf("the server exited with requests in flight: %v", srv.err)
	default:
	}
	// ...but answers the request in flight in full.
	if _, err := inFlight.Write([]byte(body[10:])); err != nil {
		t.Fatalf("the request in flight was cut: %v", err)
	}
	_ = inFlight.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(inFlight), nil)
	if err != nil {
		t.Fatalf("no answer to the request in flight: %v", err)
	}
	var created struct{ Name string }
	err = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || err != nil || created.Name != "drained" {
		t.Fatalf("request in flight: %d %+v %v", resp.StatusCode, created, err)
	}

	// The stuck request holds the server until --shutdown-timeout, no longer.
	select {
	case <-srv.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not exit after its shutdown timeout")
	}
	if srv.err != nil {
		t.Fatalf("the server did not exit cleanly: %v", srv.err)
	}
	if took := time.Since(sent); took < 3*time.Second {
		t.Errorf("the server exited %s after SIGTERM: it did not wait for the stuck request", took)
	}
	_ = stuck.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := stuck.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the stuck request's connection is still open after the server exited: %d %v", n, err)
	}
	if !strings.Contains(srv.output.String(), "cut short") {
		t.Errorf("the server did not say it cut a request short:\n%s", srv.output.String())
	}

	// What the drained request did is kept.
	c.startServer()
	if s, b := request(t, "GET", c.base+"/projects/drained", ""); s != http.StatusOK {
		t.Fatalf("the drained request's project: %d %s", s, b)
	}
}

// The shutdown flags are in --help (with their environment variables and
// defaults) and in README.md's configuration tables.
func TestHelpDocumentsShutdownFlags(t *testing.T) {
	bin := buildBinary(t)
	for cmd, flags := range map[string][]string{
		"worker": {"--stop-timeout", "CYCLONE_STOP_TIMEOUT"},
		"dev":    {"--stop-timeout", "CYCLONE_STOP_TIMEOUT", "--shutdown-timeout", "CYCLONE_SHUTDOWN_TIMEOUT"},
		"server": {"--shutdown-timeout", "CYCLONE_SHUTDOWN_TIMEOUT"},
	} {
		out, err := exec.Command(bin, cmd, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --help: %v", cmd, err)
		}
		for _, f := range flags {
			if !bytes.Contains(out, []byte(f)) {
				t.Errorf("cyclone %s --help does not document %s:\n%s", cmd, f, out)
			}
		}
		// Kong prints a duration's default as given: the README shows the same.
		for flag, def := range map[string]string{"--stop-timeout": "30s", "--shutdown-timeout": "10s"} {
			if bytes.Contains(out, []byte(flag)) && !bytes.Contains(out, []byte(flag+"="+def)) {
				t.Errorf("cyclone %s --help does not show %s's default %s:\n%s", cmd, flag, def, out)
			}
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range []string{
		"| `--stop-timeout` | `CYCLONE_STOP_TIMEOUT` | `30s` |",
		"| `--shutdown-timeout` (server, dev) | `CYCLONE_SHUTDOWN_TIMEOUT` | `10s` |",
	} {
		if !bytes.Contains(readme, []byte(row)) {
			t.Errorf("README.md's configuration has no row %s", row)
		}
	}
}

// lockedBuffer is a bytes.Buffer a subprocess's output goes into while the test
// reads it.
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
