package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cycloneci/cyclone/internal/devstack"
	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/secrets"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// The log tests run the production shape: `cyclone server` and `cyclone worker` as
// two processes of the freshly built binary, on an embedded FerretDB and an
// in-memory Temporal started by the test. Lines reach the API process only
// through MongoDB.

const lgToken = "tok-logs-s3cr3t-value"

type lgStack struct {
	base     string // http://127.0.0.1:port
	bin      string
	args     []string // connection flags shared by server and worker
	store    *store.Store
	worker   *lgProc
	workRoot string
}

type lgProc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *lgProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *lgProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// stop ends the process with SIGTERM (SIGKILL when kill is set or it lingers).
func (p *lgProc) stop(kill bool) {
	select {
	case <-p.done:
		return
	default:
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func startLogStack(t *testing.T) *lgStack {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "cyclone")
	build := exec.Command("go", "build", "-o", bin, "./cmd/cyclone")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build cyclone: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logger := testenv.Logger()
	mongo, err := devstack.StartMongo(ctx, devstack.MongoOptions{DataDir: filepath.Join(dir, "mongo"), Logger: logger})
	if err != nil {
		t.Fatalf("start FerretDB: %v", err)
	}
	t.Cleanup(mongo.Stop)
	temporal, err := devstack.StartTemporal(ctx, devstack.TemporalOptions{Logger: logger})
	if err != nil {
		t.Fatalf("start Temporal: %v", err)
	}
	t.Cleanup(temporal.Stop)

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

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	s := &lgStack{base: "http://" + addr, bin: bin, store: st, workRoot: filepath.Join(dir, "workspaces")}
	s.args = []string{
		"--mongo-uri", mongo.URI(), "--mongo-database", "cyclone",
		"--temporal-address", temporal.Address(), "--temporal-namespace", temporal.Namespace(),
		"--task-queue", "logs-e2e", "--secret-key", hex.EncodeToString(key),
	}
	serverArgs := append([]string{"server", "--listen", addr, "--admin-token", lgAdminToken}, s.args...)
	s.start(t, "server", serverArgs...)
	s.worker = s.startWorker(t)

	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(s.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API server never answered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

func (s *lgStack) startWorker(t *testing.T) *lgProc {
	t.Helper()
	return s.start(t, "worker", append([]string{"worker", "--executor", "local", "--workspace-root", s.workRoot, "--worker-id", "logs-w1"}, s.args...)...)
}

func (s *lgStack) start(t *testing.T, name string, args ...string) *lgProc {
	t.Helper()
	p := &lgProc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(s.bin, append(args, "--log-level", "warn")...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(false)
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.output())
		}
	})
	return p
}

type lgResponse struct {
	status int
	header http.Header
	body   []byte
}

func (s *lgStack) do(t *testing.T, method, path string, body any) lgResponse {
	t.Helper()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err == nil {
		req.Header.Set("Authorization", "Bearer "+lgAdminToken)
	}
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return lgResponse{status: resp.StatusCode, header: resp.Header, body: data}
}

func (s *lgStack) must(t *testing.T, method, path string, body any, status int) lgResponse {
	t.Helper()
	r := s.do(t, method, path, body)
	if r.status != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, status, r.body)
	}
	return r
}

// pipeline creates a pipeline of project "logs" and returns its path.
func (s *lgStack) pipeline(t *testing.T, name string, env []map[string]any, stages map[string]any) string {
	t.Helper()
	s.must(t, "POST", "/api/v1/projects/logs/pipelines", map[string]any{"name": name, "build": map[string]any{
		"builderImage": map[string]any{"image": "busybox", "envVars": env},
		"stages":       stages,
	}}, http.StatusCreated)
	return "/api/v1/projects/logs/pipelines/" + name
}

func (s *lgStack) run(t *testing.T, pipelinePath string) string {
	t.Helper()
	var rec model.Record
	if err := json.Unmarshal(s.must(t, "POST", pipelinePath+"/records", map[string]any{"ref": "master"}, http.StatusCreated).body, &rec); err != nil {
		t.Fatal(err)
	}
	return pipelinePath + "/records/" + rec.ID
}

func (s *lgStack) record(t *testing.T, recordPath string) model.Record {
	t.Helper()
	var rec model.Record
	if err := json.Unmarshal(s.must(t, "GET", recordPath, nil, http.StatusOK).body, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func (s *lgStack) waitDone(t *testing.T, recordPath string) model.Record {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		rec := s.record(t, recordPath)
		if model.IsTerminal(rec.Status) {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("record never ended: %+v", rec)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logLines gets the plain log and splits it in lines.
func (s *lgStack) logLines(t *testing.T, recordPath, query string) []string {
	t.Helper()
	r := s.must(t, "GET", recordPath+"/logs"+query, nil, http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content type %q", ct)
	}
	return splitLines(string(r.body))
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// wsResult is what a websocket client got.
type wsResult struct {
	lines  []string
	times  []time.Time
	status websocket.StatusCode // -1: the client left first
	reason string
}

// stream reads a log stream until the server closes it, or until max lines when
// max > 0 (then the client goes away).
func (s *lgStack) stream(t *testing.T, path string, max int) wsResult {
	t.Helper()
	res, err := s.streamErr(path, max)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (s *lgStack) streamErr(path string, max int) (wsResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.base, "http")+path, lgDialOptions())
	if err != nil {
		return wsResult{}, fmt.Errorf("dial %s: %w", path, err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20) // a line may be 64 KiB and its truncation marker
	var res wsResult
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				return res, fmt.Errorf("read %s after %d lines: %w", path, len(res.lines), err)
			}
			res.status, res.reason = ce.Code, ce.Reason
			return res, nil
		}
		if typ != websocket.MessageText {
			return res, fmt.Errorf("message type %v", typ)
		}
		res.lines = append(res.lines, string(data))
		res.times = append(res.times, time.Now())
		if max > 0 && len(res.lines) == max {
			res.status = -1
			return res, nil
		}
	}
}

func lgEqual(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d lines, want %d:\n got %q\nwant %q", what, len(got), len(want), lgHead(got), lgHead(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: line %d is %q, want %q", what, i, got[i], want[i])
		}
	}
}

func lgHead(l []string) []string {
	if len(l) > 12 {
		return append(append([]string{}, l[:12]...), fmt.Sprintf("... %d more", len(l)-12))
	}
	return l
}

func TestLogsEndToEnd(t *testing.T) {
	top := t
	s := startLogStack(t)
	s.must(t, "POST", "/api/v1/projects", map[string]any{
		"name": "logs", "scm": map[string]any{"type": "github", "server": fakeGitHub().URL, "username": "bot", "token": lgToken},
	}, http.StatusCreated)

	followCmd := `for i in $(seq 1 5); do echo line $i; sleep 0.3; done`
	followPath := s.pipeline(t, "follow", nil, map[string]any{"unitTest": map[string]any{"command": []string{followCmd}}})
	followWant := []string{"Stage: UnitTest status: start", "+ " + followCmd, "line 1", "line 2", "line 3", "line 4", "line 5", "Stage: UnitTest status: finish"}

	t.Run("follow a running stage to its end", func(t *testing.T) {
		rec := s.run(t, followPath)
		res := s.stream(t, rec+"/logstream?stage=unitTest", 0)
		if res.status != websocket.StatusNormalClosure {
			t.Fatalf("closed with %v %q, want a normal closure", res.status, res.reason)
		}
		lgEqual(t, "streamed", res.lines, followWant)
		// The lines came while the step printed them, 0.3 s apart, not at the end.
		if gap := res.times[6].Sub(res.times[2]); gap < 900*time.Millisecond {
			t.Fatalf("line 1 to line 5 arrived within %v: not followed live", gap)
		}
		if r := s.waitDone(t, rec); r.Status != model.StatusSuccess || r.StageStatus.UnitTest.Status != model.StatusSuccess {
			t.Fatalf("record %+v", r)
		}
		lgEqual(t, "stored", s.logLines(t, rec, "?stage=unitTest"), followWant)
		// After the end the stream sends everything and closes.
		res = s.stream(t, rec+"/logstream?stage=unitTest", 0)
		if res.status != websocket.StatusNormalClosure {
			t.Fatalf("closed with %v", res.status)
		}
		lgEqual(t, "replayed", res.lines, followWant)
	})

	t.Run("reconnect with an offset", func(t *testing.T) {
		rec := s.run(t, followPath)
		first := s.stream(t, rec+"/logstream?stage=unitTest", 3)
		rest := s.stream(t, rec+"/logstream?stage=unitTest&offset=3", 0)
		if rest.status != websocket.StatusNormalClosure {
			t.Fatalf("closed with %v %q", rest.status, rest.reason)
		}
		if s.record(t, rec).Status == model.StatusPending {
			t.Fatal("the record did not start")
		}
		lgEqual(t, "first connection then resumed", append(first.lines, rest.lines...), followWant)
	})

	t.Run("whole record across stages", func(t *testing.T) {
		unit := `for i in 1 2 3; do echo u$i; sleep 0.2; done`
		pkg := `for i in 1 2 3; do echo p$i; sleep 0.2; done`
		path := s.pipeline(t, "twostages", nil, map[string]any{
			"unitTest": map[string]any{"command": []string{unit}},
			"package":  map[string]any{"command": []string{pkg}},
		})
		want := []string{
			"Stage: UnitTest status: start", "+ " + unit, "u1", "u2", "u3", "Stage: UnitTest status: finish",
			"Stage: Package status: start", "+ " + pkg, "p1", "p2", "p3", "Stage: Package status: finish",
		}
		rec := s.run(t, path)
		// Leave inside the second stage, come back at the offset.
		first := s.stream(t, rec+"/logstream", 8)
		rest := s.stream(t, rec+"/logstream?offset=8", 0)
		if rest.status != websocket.StatusNormalClosure {
			t.Fatalf("closed with %v %q", rest.status, rest.reason)
		}
		lgEqual(t, "resumed across stages", append(first.lines, rest.lines...), want)
		s.waitDone(t, rec)
		lgEqual(t, "plain log", s.logLines(t, rec, ""), want)
		for _, offset := range []int{0, 5, 6, 7, 12} {
			res := s.stream(t, fmt.Sprintf("%s/logstream?offset=%d", rec, offset), 0)
			lgEqual(t, fmt.Sprintf("offset %d after the end", offset), res.lines, want[offset:])
		}
		lgEqual(t, "package only", s.logLines(t, rec, "?stage=package"), want[6:])
	})

	t.Run("secrets are masked", func(t *testing.T) {
		cmds := []string{
			`printf 'sec'; sleep 0.3; printf 'ret\n'`,
			`echo "value: $PLAIN_VAR"`,
			`printf 'BEGIN KEY\n'; sleep 0.3; printf 'key-material-123\nEND KEY\n'`,
			`echo ` + lgToken,
			`printf '%s\n' "$MULTI" | tail -n 2`,
		}
		path := s.pipeline(t, "secrets", []map[string]any{
			{"name": "SECRET_VAR", "value": "secret", "secret": true},
			{"name": "MULTI", "value": "BEGIN KEY\nkey-material-123\nEND KEY", "secret": true},
			{"name": "PLAIN_VAR", "value": "visible"},
		}, map[string]any{"unitTest": map[string]any{"command": cmds}})
		want := []string{
			"Stage: UnitTest status: start",
			"+ " + cmds[0], "********",
			"+ " + cmds[1], "value: visible",
			"+ " + strings.NewReplacer("BEGIN KEY", "********", "key-material-123", "********").Replace(cmds[2]), "********",
			"+ echo ********", "********",
			"+ " + cmds[4], "********", "END KEY",
			"Stage: UnitTest status: finish",
		}
		rec := s.run(t, path)
		res := s.stream(t, rec+"/logstream?stage=unitTest", 0)
		lgEqual(t, "streamed", res.lines, want)
		s.waitDone(t, rec)
		lgEqual(t, "stored", s.logLines(t, rec, "?stage=unitTest"), want)

		// A stage error message and the record's error hide secrets too.
		failPath := s.pipeline(t, "secretfail", []map[string]any{{"name": "SECRET_VAR", "value": "secret", "secret": true}},
			map[string]any{"codeCheckout": map[string]any{"codeSources": []any{map[string]any{
				"type": "Github", "main": true, "gitHub": map[string]any{"url": "http://127.0.0.1:9/secret-repo.git"},
			}}}})
		failRec := s.run(t, failPath)
		r := s.waitDone(t, failRec)
		msg := r.StageStatus.CodeCheckout.ErrorMessage
		if r.Status != model.StatusFailed || !strings.Contains(msg, "********-repo.git") || strings.Contains(msg, "secret") {
			t.Fatalf("stage error %q of record %s", msg, r.Status)
		}
		if !strings.Contains(r.ErrorMessage, "********") || strings.Contains(r.ErrorMessage, "secret") {
			t.Fatalf("record error %q", r.ErrorMessage)
		}
		plain := strings.Join(s.logLines(t, failRec, ""), "\n")
		if strings.Contains(plain, "secret") || !strings.Contains(plain, "********-repo.git") {
			t.Fatalf("checkout log:\n%s", plain)
		}
	})

	t.Run("registry and SCM passwords are masked", func(t *testing.T) {
		// A project whose SCM signs in with a password (the fake GitHub takes any
		// password starting "tok-") and whose registry has a password: the worker
		// knows both and masks them, also when a step prints one in two writes.
		const scmPass, regPass = "tok-scm-pw-4e1f9a", "reg-pw-77c2b0"
		s.must(t, "POST", "/api/v1/projects", map[string]any{
			"name":     "logsmask",
			"scm":      map[string]any{"type": "github", "server": fakeGitHub().URL, "username": "bot", "password": scmPass},
			"registry": map[string]any{"server": "127.0.0.1:5999", "repository": "team", "username": "pusher", "password": regPass},
		}, http.StatusCreated)
		cmds := []string{
			`echo "scm=` + scmPass + ` registry=` + regPass + `"`,
			`printf 'tok-scm-'; sleep 0.3; printf 'pw-4e1f9a\n'`,
			`printf 'reg-pw'; sleep 0.3; printf '%s\n' '-77c2b0 end'`,
		}
		s.must(t, "POST", "/api/v1/projects/logsmask/pipelines", map[string]any{"name": "pw", "build": map[string]any{
			"builderImage": map[string]any{"image": "busybox"},
			"stages":       map[string]any{"unitTest": map[string]any{"command": cmds}},
		}}, http.StatusCreated)
		mask := strings.NewReplacer(scmPass, "********", regPass, "********")
		want := []string{
			"Stage: UnitTest status: start",
			"+ " + mask.Replace(cmds[0]), "scm=******** registry=********",
			"+ " + cmds[1], "********",
			"+ " + cmds[2], "******** end",
			"Stage: UnitTest status: finish",
		}
		rec := s.run(t, "/api/v1/projects/logsmask/pipelines/pw")
		res := s.stream(t, rec+"/logstream?stage=unitTest", 0)
		if res.status != websocket.StatusNormalClosure {
			t.Fatalf("closed with %v %q", res.status, res.reason)
		}
		lgEqual(t, "streamed", res.lines, want)
		if r := s.waitDone(t, rec); r.Status != model.StatusSuccess {
			t.Fatalf("record %+v", r)
		}
		lgEqual(t, "stored", s.logLines(t, rec, "?stage=unitTest"), want)
		download := string(s.must(t, "GET", rec+"/logs?download=true", nil, http.StatusOK).body)
		if strings.Contains(download, scmPass) || strings.Contains(download, regPass) {
			t.Fatalf("a password is in the downloaded log:\n%s", download)
		}
	})

	t.Run("100000 lines", func(t *testing.T) {
		path := s.pipeline(t, "big", nil, map[string]any{"unitTest": map[string]any{"command": []string{"seq 1 100000"}}})
		rec := s.run(t, path)
		r := s.waitDone(t, rec)
		if r.Status != model.StatusSuccess {
			t.Fatalf("record %+v", r)
		}
		want := []string{"Stage: UnitTest status: start", "+ seq 1 100000"}
		for i := 1; i <= 100000; i++ {
			want = append(want, fmt.Sprint(i))
		}
		want = append(want, "Stage: UnitTest status: finish")

		resp := s.must(t, "GET", rec+"/logs?stage=unitTest&download=true", nil, http.StatusOK)
		wantDisp := fmt.Sprintf(`attachment; filename="logs-big-%s-log.txt"`, r.ID)
		if got := resp.header.Get("Content-Disposition"); got != wantDisp {
			t.Fatalf("Content-Disposition %q, want %q", got, wantDisp)
		}
		if ct := resp.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Fatalf("Content-Type %q", ct)
		}
		lgEqual(t, "downloaded", splitLines(string(resp.body)), want)
		if plain := s.do(t, "GET", rec+"/logs", nil); plain.header.Get("Content-Disposition") != "" || !bytes.Equal(plain.body, resp.body) {
			t.Fatalf("the plain log differs from the download (or is an attachment: %q)", plain.header.Get("Content-Disposition"))
		}

		// Stored in chunks: neither a document per line nor one document.
		ctx := context.Background()
		stream := logs.Stream{RecordID: r.ID, Stage: model.StageUnitTest}
		h, err := s.store.GetLogHead(ctx, stream)
		if err != nil || h == nil || !h.Closed || h.Lines != 100003 || h.Sealed != h.Lines || h.Chunks < 10 || h.Chunks > 100 {
			t.Fatalf("head %+v, %v", h, err)
		}
		var sizes []int
		if err := s.store.LogChunks(ctx, stream, 0, 1000, func(c *logs.Chunk) error {
			sizes = append(sizes, len(c.Lines))
			return nil
		}); err != nil || int64(len(sizes)) != h.Chunks || sizes[0] < 1000 {
			t.Fatalf("chunk sizes %v, %v", sizes, err)
		}

		start := time.Now()
		res := s.stream(t, rec+"/logstream", 0)
		if res.status != websocket.StatusNormalClosure {
			t.Fatalf("closed with %v %q", res.status, res.reason)
		}
		lgEqual(t, "streamed", res.lines, want)
		t.Logf("streamed %d lines in %v", len(res.lines), time.Since(start))
	})

	t.Run("a client too slow is closed, the stage does not wait", func(t *testing.T) {
		// 20 MB of output: more than the server's queue and the sockets' buffers.
		path := s.pipeline(t, "flood", nil, map[string]any{"unitTest": map[string]any{"command": []string{
			`yes "$(printf '%01000d' 0)" | head -n 20000`,
		}}})
		rec := s.run(t, path)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		connected := time.Now()
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.base, "http")+rec+"/logstream?stage=unitTest", lgDialOptions())
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
		// The client stops reading; the stage goes on at full speed.
		if r := s.waitDone(t, rec); r.Status != model.StatusSuccess {
			t.Fatalf("record %+v", r)
		}
		stall := 9 * time.Second
		if time.Since(connected) > stall {
			t.Fatalf("the stage took %v with a stalled client", time.Since(connected))
		}
		time.Sleep(stall - time.Since(connected))
		n := 1
		for {
			_, _, err := c.Read(ctx)
			if err != nil {
				var ce websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "client too slow" {
					t.Fatalf("after %d lines: %v, want a policy violation closure", n, err)
				}
				break
			}
			n++
		}
		if n >= 20003 {
			t.Fatalf("the stalled client got all %d lines", n)
		}
		t.Logf("the stalled client got %d lines before the closure", n)
	})

	t.Run("retried after the worker died", func(t *testing.T) {
		cmd := `for i in $(seq 1 15); do echo r$i; sleep 0.2; done`
		path := s.pipeline(t, "retried", nil, map[string]any{"unitTest": map[string]any{"command": []string{cmd}}})
		rec := s.run(t, path)
		type streamed struct {
			res wsResult
			err error
		}
		followed := make(chan streamed, 1)
		go func() {
			res, err := s.streamErr(rec+"/logstream?stage=unitTest", 0)
			followed <- streamed{res, err}
		}()

		// Kill the worker in the middle of the step, then start its replacement.
		deadline := time.Now().Add(time.Minute)
		for !strings.Contains(strings.Join(s.logLines(t, rec, "?stage=unitTest"), "\n"), "r3") {
			if time.Now().After(deadline) {
				t.Fatal("the step never printed r3")
			}
			time.Sleep(50 * time.Millisecond)
		}
		s.worker.stop(true)
		s.worker = s.startWorker(top) // it outlives this subtest

		r := s.waitDone(t, rec)
		if r.Status != model.StatusSuccess {
			t.Fatalf("record %+v", r)
		}
		lines := s.logLines(t, rec, "?stage=unitTest")
		banner := -1
		for i, l := range lines {
			if l == "Stage: UnitTest attempt 2" {
				if banner >= 0 {
					t.Fatalf("two attempt-2 banners: %q", lines)
				}
				banner = i
			}
		}
		if banner < 5 {
			t.Fatalf("no attempt-2 banner after the first attempt's lines: %q", lines)
		}
		// The dead attempt's lines are kept, each once, in order.
		dead := lines[:banner]
		if dead[0] != "Stage: UnitTest status: start" || dead[1] != "+ "+cmd {
			t.Fatalf("first attempt %q", dead)
		}
		for i, l := range dead[2:] {
			if l != fmt.Sprintf("r%d", i+1) {
				t.Fatalf("first attempt line %d is %q: %q", i+2, l, dead)
			}
		}
		want := []string{"Stage: UnitTest status: start", "+ " + cmd}
		for i := 1; i <= 15; i++ {
			want = append(want, fmt.Sprintf("r%d", i))
		}
		want = append(want, "Stage: UnitTest status: finish")
		lgEqual(t, "second attempt", lines[banner+1:], want)

		f := <-followed
		if f.err != nil {
			t.Fatal(f.err)
		}
		res := f.res
		if res.status != websocket.StatusNormalClosure {
			t.Fatalf("the follower closed with %v %q", res.status, res.reason)
		}
		lgEqual(t, "followed through the retry", res.lines, lines)
	})

	t.Run("errors", func(t *testing.T) {
		multi := s.pipeline(t, "multi", nil, map[string]any{
			"unitTest":   map[string]any{"command": []string{"echo unit"}},
			"imageBuild": map[string]any{"buildInfos": []any{map[string]any{"taskName": "web", "imageName": "web:latest"}}},
		})
		rec := s.run(t, multi)
		s.waitDone(t, rec)
		missing := multi + "/records/00000000-0000-0000-0000-000000000000"
		tests := []struct {
			name, path string
			status     int
			reason     string
		}{
			{"unknown stage", rec + "/logs?stage=deploy", http.StatusBadRequest, "InvalidField"},
			{"task without stage", rec + "/logs?task=web", http.StatusBadRequest, "InvalidField"},
			{"bad download flag", rec + "/logs?download=yes", http.StatusBadRequest, "InvalidField"},
			{"stage not performed", rec + "/logs?stage=package", http.StatusNotFound, "NotFound"},
			{"task of a single-task stage", rec + "/logs?stage=unitTest&task=web", http.StatusNotFound, "NotFound"},
			{"unknown task", rec + "/logs?stage=imageBuild&task=nope", http.StatusNotFound, "NotFound"},
			{"unknown record", missing + "/logs", http.StatusNotFound, "NotFound"},
			{"unknown pipeline", "/api/v1/projects/logs/pipelines/nope/records/x/logs", http.StatusNotFound, "NotFound"},
			{"stream: unknown stage", rec + "/logstream?stage=deploy", http.StatusBadRequest, "InvalidField"},
			{"stream: stage not performed", rec + "/logstream?stage=integrationTest", http.StatusNotFound, "NotFound"},
			{"stream: unknown task", rec + "/logstream?stage=imageBuild&task=nope", http.StatusNotFound, "NotFound"},
			{"stream: unknown record", missing + "/logstream", http.StatusNotFound, "NotFound"},
			{"stream: bad offset", rec + "/logstream?offset=-1", http.StatusBadRequest, "InvalidField"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := s.do(t, "GET", tt.path, nil)
				var e struct{ Reason, Message string }
				if r.status != tt.status || json.Unmarshal(r.body, &e) != nil || e.Reason != tt.reason || e.Message == "" {
					t.Fatalf("status %d, body %s; want %d %s", r.status, r.body, tt.status, tt.reason)
				}
				if strings.Contains(tt.path, "/logstream") {
					// A websocket client gets the same answer instead of an upgrade.
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.base, "http")+tt.path, lgDialOptions())
					if err == nil {
						c.CloseNow()
						t.Fatal("upgraded")
					}
					if resp == nil || resp.StatusCode != tt.status {
						t.Fatalf("dial: %v, %+v", err, resp)
					}
				}
			})
		}
		// A configured task of a multi-task stage is known, its log empty so far.
		if r := s.must(t, "GET", rec+"/logs?stage=imageBuild&task=web", nil, http.StatusOK); len(r.body) != 0 {
			t.Fatalf("task log %q", r.body)
		}
		if lines := s.logLines(t, rec, "?stage=imageBuild"); len(lines) < 2 || lines[0] != "Stage: ImageBuild status: start" {
			t.Fatalf("imageBuild log %q", lines)
		}
		// Deleting the record deletes its log.
		s.must(t, "DELETE", rec, nil, http.StatusNoContent)
		id := rec[strings.LastIndex(rec, "/")+1:]
		gone := logs.Stream{RecordID: id, Stage: model.StageUnitTest}
		if h, err := s.store.GetLogHead(context.Background(), gone); err != nil || h != nil {
			t.Fatalf("log head left after the record was deleted: %+v, %v", h, err)
		}
		if seq, err := s.store.LogChunkAt(context.Background(), gone, 0); err != nil || seq != -1 {
			t.Fatalf("log chunk %d left after the record was deleted: %v", seq, err)
		}
	})
}

// lgAdminToken is the admin token of the server process the end-to-end test starts.
const lgAdminToken = "cyc_logs-e2e-admin"

func lgDialOptions() *websocket.DialOptions {
	return &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + lgAdminToken}}}
}
