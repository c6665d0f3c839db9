package api_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/devstack"
	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/secrets"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// These tests play the worker's part themselves: they write a stage's log and its
// tasks' logs into the store (with no in-process wake-up, as a worker in another
// process would) and set the record's statuses, at a pace they choose, while
// websocket clients follow the log through the real API handlers. So they can
// check the order of a multi-task stage's lines, live, and the keepalive, with
// short intervals, without Docker or Temporal.

type lsEnv struct {
	st   *store.Store
	url  string // http://host:port of the API
	proj *model.Project
	pipe *model.Pipeline
	sink *logs.Sink
	n    atomic.Int64
}

// lsLogs is what the API reads logs and records from, as the app wires it.
type lsLogs struct {
	*logs.Reader
	st *store.Store
}

func (l lsLogs) GetRecordByID(ctx context.Context, id string) (*model.Record, error) {
	return l.st.GetRecordByID(ctx, id)
}

func startLogStreamEnv(t *testing.T, opts api.LogStreamOptions) *lsEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mongo, err := devstack.StartMongo(ctx, devstack.MongoOptions{DataDir: t.TempDir(), Logger: testenv.Logger()})
	if err != nil {
		t.Fatalf("start FerretDB: %v", err)
	}
	t.Cleanup(mongo.Stop)
	key := make([]byte, secrets.KeySize)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, mongo.URI(), "cyclone", box)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	e := startLogStreamEnvOn(t, &lsEnv{st: st, sink: &logs.Sink{Store: st, Logger: testenv.Logger()}}, opts)
	e.proj = &model.Project{Name: "ls"}
	if err := st.CreateProject(ctx, e.proj); err != nil {
		t.Fatal(err)
	}
	e.pipe = &model.Pipeline{Name: "ls", ProjectID: e.proj.ID, Build: &model.Build{}}
	if err := st.CreatePipeline(ctx, e.pipe); err != nil {
		t.Fatal(err)
	}
	return e
}

// startLogStreamEnvOn serves another API on e's store, with opts: a copy of e
// whose requests go to it.
func startLogStreamEnvOn(t *testing.T, e *lsEnv, opts api.LogStreamOptions) *lsEnv {
	t.Helper()
	// No Hub: followers learn of new lines by polling MongoDB, as across processes.
	srv := httptest.NewServer(api.New(api.Config{
		Store: e.st, Logger: testenv.Logger(), LogStream: opts,
		Logs: lsLogs{Reader: &logs.Reader{Store: e.st}, st: e.st},
	}))
	t.Cleanup(srv.Close)
	return &lsEnv{st: e.st, sink: e.sink, url: srv.URL, proj: e.proj, pipe: e.pipe}
}

// record creates a running record performing stage and returns its API path.
func (e *lsEnv) record(t *testing.T, stage string) (string, *model.Record) {
	t.Helper()
	r := &model.Record{
		ID: fmt.Sprintf("ls-%d-%d", time.Now().UnixNano(), e.n.Add(1)), Name: "r", ProjectID: e.proj.ID, PipelineID: e.pipe.ID,
		Trigger: "manual", Status: model.StatusRunning, StageStatus: &model.StageStatus{}, PerformParams: &model.PerformParams{Ref: "master", Stages: []string{stage}},
	}
	if err := e.st.CreateRecord(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return "/api/v1/projects/ls/pipelines/ls/records/" + r.ID, r
}

// open opens the log of a stage (task "") or a task for one attempt, as a worker does.
func (e *lsEnv) open(t *testing.T, r *model.Record, stage, task string, attempt int, secrets ...string) *logs.Writer {
	t.Helper()
	w, err := e.sink.Open(context.Background(), logs.Target{Attempt: attempt, Secrets: secrets, Stream: logs.Stream{
		ProjectID: r.ProjectID, PipelineID: r.PipelineID, RecordID: r.ID, Stage: stage, Task: task,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func lsWrite(t *testing.T, w io.Writer, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if _, err := io.WriteString(w, l+"\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func lsClose(t *testing.T, w io.Closer) {
	t.Helper()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func (e *lsEnv) update(t *testing.T, r *model.Record, u model.StageUpdate) {
	t.Helper()
	if err := e.st.UpdateStage(context.Background(), r.ID, u); err != nil {
		t.Fatal(err)
	}
}

func (e *lsEnv) tasks(t *testing.T, r *model.Record, stage string, statuses map[string]string, order ...string) {
	t.Helper()
	var ts []model.TaskStatus
	for _, name := range order {
		ts = append(ts, model.TaskStatus{Name: name, Status: statuses[name]})
	}
	e.update(t, r, model.StageUpdate{Stage: stage, Tasks: ts})
}

func (e *lsEnv) finish(t *testing.T, r *model.Record, stage string) {
	t.Helper()
	end := time.Now()
	e.update(t, r, model.StageUpdate{Stage: stage, Status: model.StatusSuccess, EndTime: &end})
	if err := e.st.FinishRecord(context.Background(), r.ID, model.StatusSuccess, "", end); err != nil {
		t.Fatal(err)
	}
}

func (e *lsEnv) get(t *testing.T, path string) []string {
	t.Helper()
	resp, err := http.Get(e.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s %v", path, resp.StatusCode, body, err)
	}
	return splitLines(string(body))
}

// lsClient is a websocket client reading a log stream in the background.
type lsClient struct {
	mu     sync.Mutex
	lines  []string
	times  []time.Time
	pings  atomic.Int64
	err    error // the read error that ended it
	closed chan struct{}
}

// follow reads path's stream until the server closes it, or max lines (max > 0).
func (e *lsEnv) follow(t *testing.T, path string, max int) *lsClient {
	t.Helper()
	c := &lsClient{closed: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+path, &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool { c.pings.Add(1); return true },
	})
	if err != nil {
		cancel()
		t.Fatalf("dial %s: %v", path, err)
	}
	conn.SetReadLimit(1 << 20)
	go func() {
		defer close(c.closed)
		defer cancel()
		defer conn.CloseNow()
		for {
			_, data, err := conn.Read(ctx)
			c.mu.Lock()
			if err != nil {
				c.err = err
				c.mu.Unlock()
				return
			}
			c.lines = append(c.lines, string(data))
			c.times = append(c.times, time.Now())
			n := len(c.lines)
			c.mu.Unlock()
			if max > 0 && n == max {
				return
			}
		}
	}()
	return c
}

// wait waits for the end of the client and returns its lines; a normal closure
// is required unless the client left by itself after max lines.
func (c *lsClient) wait(t *testing.T, normal bool) []string {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(time.Minute):
		t.Fatal("the stream never ended")
	}
	if normal && websocket.CloseStatus(c.err) != websocket.StatusNormalClosure {
		t.Fatalf("the stream ended with %v after %q", c.err, c.lines)
	}
	return c.lines
}

// arrived returns when the client received line l (zero time: never).
func (c *lsClient) arrived(l string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.lines {
		if x == l {
			return c.times[i]
		}
	}
	return time.Time{}
}

func TestLogStreamMultiTaskStage(t *testing.T) {
	e := startLogStreamEnv(t, api.LogStreamOptions{})
	stage := model.StageImageBuild

	t.Run("tasks are followed live, between the stage's banners", func(t *testing.T) {
		path, r := e.record(t, stage)
		byStage := e.follow(t, path+"/logstream?stage=imageBuild", 0)
		whole := e.follow(t, path+"/logstream", 0)
		// A client that leaves in the middle of the first task and comes back.
		early := e.follow(t, path+"/logstream?stage=imageBuild", 3)

		s := e.open(t, r, stage, "", 1)
		lsWrite(t, s, "Stage: ImageBuild status: start")
		e.update(t, r, model.StageUpdate{Stage: stage, Status: model.StatusRunning})
		e.tasks(t, r, stage, map[string]string{"web": model.StatusRunning, "api": model.StatusRunning}, "web", "api")
		web, apiLog := e.open(t, r, stage, "web", 1), e.open(t, r, stage, "api", 1)
		lsWrite(t, web, "Task: web status: start")
		lsWrite(t, apiLog, "Task: api status: start")
		for i := 1; i <= 3; i++ {
			lsWrite(t, web, fmt.Sprintf("web %d", i))
			lsWrite(t, apiLog, fmt.Sprintf("api %d", i))
			time.Sleep(300 * time.Millisecond)
		}
		lsWrite(t, web, "Task: web status: finish")
		lsClose(t, web)
		e.tasks(t, r, stage, map[string]string{"web": model.StatusSuccess, "api": model.StatusRunning}, "web", "api")
		// The second task goes on after the first ended: followed live too.
		for i := 4; i <= 6; i++ {
			lsWrite(t, apiLog, fmt.Sprintf("api %d", i))
			time.Sleep(300 * time.Millisecond)
		}
		lsWrite(t, apiLog, "Task: api status: finish")
		lsClose(t, apiLog)
		e.tasks(t, r, stage, map[string]string{"web": model.StatusSuccess, "api": model.StatusSuccess}, "web", "api")
		time.Sleep(300 * time.Millisecond)
		stageEnd := time.Now()
		lsWrite(t, s, "Task web: Success", "Task api: Success", "Stage: ImageBuild status: finish")
		lsClose(t, s)
		e.finish(t, r, stage)

		want := []string{"Stage: ImageBuild status: start",
			"Task: web status: start", "web 1", "web 2", "web 3", "Task: web status: finish",
			"Task: api status: start", "api 1", "api 2", "api 3", "api 4", "api 5", "api 6", "Task: api status: finish",
			"Task web: Success", "Task api: Success", "Stage: ImageBuild status: finish"}
		lgEqual(t, "download of the stage", e.get(t, path+"/logs?stage=imageBuild"), want)
		lgEqual(t, "download of the record", e.get(t, path+"/logs"), want)
		lgEqual(t, "stream of the stage", byStage.wait(t, true), want)
		lgEqual(t, "stream of the record", whole.wait(t, true), want)
		lgEqual(t, "one task", e.get(t, path+"/logs?stage=imageBuild&task=api"), want[6:14])

		// Live: each task's lines came while it ran, long before the stage ended.
		for _, l := range []string{"web 1", "api 4"} {
			got := byStage.arrived(l)
			if got.IsZero() || stageEnd.Sub(got) < 500*time.Millisecond {
				t.Fatalf("%q arrived at %v, the stage ended at %v: not live", l, got, stageEnd)
			}
		}
		if gap := byStage.arrived("api 6").Sub(byStage.arrived("api 4")); gap < 400*time.Millisecond {
			t.Fatalf("api 4 to api 6 arrived within %v: not followed live", gap)
		}

		// Resumed at its offset: no duplicate, no gap; every offset after the end.
		first := early.wait(t, false)
		lgEqual(t, "left then resumed", append(first, e.follow(t, path+"/logstream?stage=imageBuild&offset=3", 0).wait(t, true)...), want)
		for off := 0; off <= len(want); off++ {
			got := e.follow(t, fmt.Sprintf("%s/logstream?offset=%d", path, off), 0).wait(t, true)
			lgEqual(t, fmt.Sprintf("offset %d", off), got, want[off:])
		}
	})

	t.Run("a retried attempt comes after the earlier attempt's lines", func(t *testing.T) {
		path, r := e.record(t, stage)
		live := e.follow(t, path+"/logstream?stage=imageBuild", 0)
		// A client that leaves inside the first attempt and comes back after the
		// retry began.
		early := e.follow(t, path+"/logstream?stage=imageBuild", 4)

		// Attempt 1: web ends, the worker dies while api runs.
		s := e.open(t, r, stage, "", 1)
		lsWrite(t, s, "Stage: ImageBuild status: start")
		lsClose(t, s)
		e.tasks(t, r, stage, map[string]string{"web": model.StatusRunning, "api": model.StatusRunning}, "web", "api")
		web, apiLog := e.open(t, r, stage, "web", 1), e.open(t, r, stage, "api", 1)
		lsWrite(t, web, "Task: web status: start", "w1")
		lsWrite(t, apiLog, "Task: api status: start", "a1")
		time.Sleep(300 * time.Millisecond)
		lsWrite(t, web, "Task: web status: finish")
		lsClose(t, web)
		e.tasks(t, r, stage, map[string]string{"web": model.StatusSuccess, "api": model.StatusRunning}, "web", "api")
		lsWrite(t, apiLog, "a2")
		lsClose(t, apiLog) // what the dead worker had stored
		time.Sleep(600 * time.Millisecond)

		// Attempt 2 runs both tasks again.
		s = e.open(t, r, stage, "", 2)
		lsWrite(t, s, "Stage: ImageBuild attempt 2", "Stage: ImageBuild status: start")
		e.tasks(t, r, stage, map[string]string{"web": model.StatusRunning, "api": model.StatusRunning}, "web", "api")
		web, apiLog = e.open(t, r, stage, "web", 2), e.open(t, r, stage, "api", 2)
		lsWrite(t, web, "Task: web attempt 2", "Task: web status: start", "w1'")
		lsWrite(t, apiLog, "Task: api attempt 2", "Task: api status: start", "a1'")
		time.Sleep(300 * time.Millisecond)
		resumed := early.wait(t, false)
		lsWrite(t, web, "Task: web status: finish")
		lsWrite(t, apiLog, "Task: api status: finish")
		lsClose(t, web)
		lsClose(t, apiLog)
		e.tasks(t, r, stage, map[string]string{"web": model.StatusSuccess, "api": model.StatusSuccess}, "web", "api")
		lsWrite(t, s, "Task web: Success", "Task api: Success", "Stage: ImageBuild status: finish")
		lsClose(t, s)
		e.finish(t, r, stage)

		want := []string{"Stage: ImageBuild status: start",
			"Task: web status: start", "w1", "Task: web status: finish",
			"Task: api status: start", "a1", "a2",
			"Task: web attempt 2", "Task: web status: start", "w1'", "Task: web status: finish",
			"Task: api attempt 2", "Task: api status: start", "a1'", "Task: api status: finish",
			"Stage: ImageBuild attempt 2", "Stage: ImageBuild status: start",
			"Task web: Success", "Task api: Success", "Stage: ImageBuild status: finish"}
		lgEqual(t, "download", e.get(t, path+"/logs?stage=imageBuild"), want)
		lgEqual(t, "followed through the retry", live.wait(t, true), want)
		rest := e.follow(t, fmt.Sprintf("%s/logstream?stage=imageBuild&offset=%d", path, len(resumed)), 0).wait(t, true)
		lgEqual(t, "resumed after the retry began", append(resumed, rest...), want)
	})
}

func TestLogStreamKeepalive(t *testing.T) {
	e := startLogStreamEnv(t, api.LogStreamOptions{PingInterval: 100 * time.Millisecond, PongTimeout: 300 * time.Millisecond})
	path, r := e.record(t, model.StageUnitTest)
	answering := e.follow(t, path+"/logstream?stage=unitTest", 0)

	// A client that reads one line, then neither reads nor answers pings.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stalled, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+path+"/logstream?stage=unitTest", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.CloseNow()

	// The stage prints a line every 100 ms for 2.5 s: many ping intervals.
	const lines = 25
	w := e.open(t, r, model.StageUnitTest, "", 1)
	lsWrite(t, w, "Stage: UnitTest status: start")
	if _, _, err := stalled.Read(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var slowest time.Duration
	for i := 1; i <= lines; i++ {
		t0 := time.Now()
		lsWrite(t, w, fmt.Sprintf("line %d", i))
		slowest = max(slowest, time.Since(t0))
		time.Sleep(100 * time.Millisecond)
	}
	lsWrite(t, w, "Stage: UnitTest status: finish")
	lsClose(t, w)
	took := time.Since(start)
	e.finish(t, r, model.StageUnitTest)

	// The stage was not slowed by the stalled client: no write waited.
	if slowest > 100*time.Millisecond || took > lines*100*time.Millisecond+time.Second {
		t.Fatalf("the stage took %v (slowest write %v) with a stalled client", took, slowest)
	}
	// The answering client stayed to the end, through many pings.
	got := answering.wait(t, true)
	if len(got) != lines+2 || got[len(got)-1] != "Stage: UnitTest status: finish" {
		t.Fatalf("the answering client got %q", got)
	}
	if n := answering.pings.Load(); n < 10 {
		t.Fatalf("the answering client got %d pings in %v", n, took)
	}
	// The stalled client was closed for not answering, long before the log ended.
	n := 1
	var closeErr error
	for {
		if _, _, err := stalled.Read(ctx); err != nil {
			closeErr = err
			break
		}
		n++
	}
	var ce websocket.CloseError
	if !errors.As(closeErr, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "no pong" {
		t.Fatalf("the stalled client ended with %v, want a policy violation \"no pong\"", closeErr)
	}
	if n >= lines+2 {
		t.Fatalf("the stalled client got all %d lines: it was not closed early", n)
	}
}

func TestLogStreamSecretsMasked(t *testing.T) {
	// The worker masks what it stores; the stream and the download only ever see
	// the masked lines. Here the writer is given the secrets a worker gives it.
	e := startLogStreamEnv(t, api.LogStreamOptions{})
	path, r := e.record(t, model.StageUnitTest)
	follower := e.follow(t, path+"/logstream?stage=unitTest", 0)
	const scmPass, regPass = "scm-pass-91ab", "reg-pass-33cd"
	w := e.open(t, r, model.StageUnitTest, "", 1, scmPass, regPass)
	lsWrite(t, w, "Stage: UnitTest status: start", "login "+regPass)
	for _, part := range []string{"clone with scm-pa", "ss-91ab and reg-", "pass-33cd\n"} {
		if _, err := io.WriteString(w, part); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	lsWrite(t, w, "Stage: UnitTest status: finish")
	lsClose(t, w)
	e.finish(t, r, model.StageUnitTest)
	want := []string{"Stage: UnitTest status: start", "login ********", "clone with ******** and ********", "Stage: UnitTest status: finish"}
	lgEqual(t, "streamed", follower.wait(t, true), want)
	lgEqual(t, "stored", e.get(t, path+"/logs"), want)
}

// A server that stops closes its open log streams with StatusGoingAway "server
// stopping" (StreamDrain.Stop returns once they are closed), the client reconnects
// at its offset and gets the rest; a stream asked for while the server stops is
// refused with 503.
func TestLogStreamServerStopping(t *testing.T) {
	drain := new(api.StreamDrain)
	e := startLogStreamEnv(t, api.LogStreamOptions{Drain: drain})
	path, r := e.record(t, model.StageUnitTest)
	w := e.open(t, r, model.StageUnitTest, "", 1)
	lsWrite(t, w, "Stage: UnitTest status: start")
	lsWrite(t, w, "line 1")
	first := e.follow(t, path+"/logstream?stage=unitTest", 0)
	deadline := time.Now().Add(time.Minute)
	for first.arrived("line 1").IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("line 1 never arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	drain.Stop(ctx)
	if ctx.Err() != nil {
		t.Fatal("Stop did not return once the stream was closed")
	}
	got := first.wait(t, false)
	var ce websocket.CloseError
	if !errors.As(first.err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "server stopping" {
		t.Fatalf("the stream ended with %v, want going away \"server stopping\"", first.err)
	}
	resp, err := http.Get(e.url + path + "/logstream?stage=unitTest")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a stream asked for while the server stops: %d, want 503", resp.StatusCode)
	}

	// The client goes on elsewhere (here: a server that is not stopping) from where
	// it was.
	other := startLogStreamEnvOn(t, e, api.LogStreamOptions{})
	again := other.follow(t, fmt.Sprintf("%s/logstream?stage=unitTest&offset=%d", path, len(got)), 0)
	lsWrite(t, w, "line 2")
	lsWrite(t, w, "Stage: UnitTest status: finish")
	lsClose(t, w)
	e.finish(t, r, model.StageUnitTest)
	rest := again.wait(t, true)
	if all := append(slices.Clone(got), rest...); !slices.Equal(all, []string{"Stage: UnitTest status: start", "line 1", "line 2", "Stage: UnitTest status: finish"}) {
		t.Fatalf("the lines before and after the reconnection: %q + %q", got, rest)
	}
}
