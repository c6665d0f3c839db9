package sonar_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/sonar"
	"github.com/cycloneci/cyclone/internal/sonar/sonartest"
)

const token = "squ_0123456789abcdef"

func newClient(t *testing.T, address, tok string) *sonar.Client {
	t.Helper()
	c, err := sonar.New(context.Background(), address, tok)
	if err != nil {
		t.Fatal(err)
	}
	c.PollInterval, c.PollMaxInterval, c.PollTimeout = 10*time.Millisecond, 40*time.Millisecond, 5*time.Second
	return c
}

func TestValidate(t *testing.T) {
	srv := sonartest.Start(t, token)
	ctx := context.Background()
	if err := newClient(t, srv.URL, token).Validate(ctx); err != nil {
		t.Fatalf("good token: %v", err)
	}
	// {"valid":false}, as SonarQube answers a bad token by default...
	err := newClient(t, srv.URL, "squ_wrong").Validate(ctx)
	if !errors.Is(err, sonar.ErrUnauthorized) {
		t.Fatalf("bad token: got %v, want ErrUnauthorized", err)
	}
	// ...or 401 where authentication is forced.
	srv.SetStrictValidate(true)
	err = newClient(t, srv.URL, "squ_wrong").Validate(ctx)
	if !errors.Is(err, sonar.ErrUnauthorized) || strings.Contains(err.Error(), "squ_wrong") {
		t.Fatalf("bad token, strict server: got %v, want ErrUnauthorized without the token", err)
	}
}

func TestUnreachableAndBadAddress(t *testing.T) {
	ctx := context.Background()
	// A loopback port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	if err := newClient(t, addr, token).Validate(ctx); !errors.Is(err, sonar.ErrUnreachable) {
		t.Fatalf("closed port: got %v, want ErrUnreachable", err)
	}
	// A server that is not SonarQube.
	other := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("<html>hello</html>")) })}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = other.Serve(ln2) }()
	t.Cleanup(func() { _ = other.Close() })
	if err := newClient(t, "http://"+ln2.Addr().String(), token).Validate(ctx); !errors.Is(err, sonar.ErrUnreachable) {
		t.Fatalf("not SonarQube: got %v, want ErrUnreachable", err)
	}
	for _, bad := range []string{"http://169.254.169.254", "ftp://sonar.example.com", "http://user:pw@127.0.0.1", "sonar.example.com"} {
		if _, err := sonar.New(ctx, bad, token); !errors.Is(err, sonar.ErrBadURL) {
			t.Errorf("New(%q): got %v, want ErrBadURL", bad, err)
		}
	}
}

func TestProjectLifecycle(t *testing.T) {
	srv := sonartest.Start(t, token)
	ctx := context.Background()
	c := newClient(t, srv.URL, token)
	key := sonar.ProjectKey("proj", "pipe")
	for i := 0; i < 2; i++ { // the second call finds it
		if err := c.EnsureProject(ctx, key, "proj/pipe"); err != nil {
			t.Fatalf("EnsureProject #%d: %v", i, err)
		}
	}
	if !srv.HasProject(key) {
		t.Fatal("project not created")
	}
	if n := countCalls(srv.Calls(), "POST /api/projects/create"); n != 1 {
		t.Fatalf("projects/create called %d times, want 1", n)
	}
	if err := c.SelectQualityGate(ctx, key, "strict"); err != nil || srv.ProjectGate(key) != "strict" {
		t.Fatalf("select gate: %v, selected %q", err, srv.ProjectGate(key))
	}
	if err := c.SelectQualityGate(ctx, key, "no such gate"); !errors.Is(err, sonar.ErrNotFound) {
		t.Fatalf("unknown gate: got %v, want ErrNotFound", err)
	}
	if got, want := c.OverviewLink(key), srv.URL+"/dashboard?id=proj%3Apipe"; got != want {
		t.Fatalf("overview link %q, want %q", got, want)
	}
	if err := c.DeleteProject(ctx, key); err != nil || srv.HasProject(key) {
		t.Fatalf("delete: %v, still there: %v", err, srv.HasProject(key))
	}
	if err := c.DeleteProject(ctx, key); err != nil {
		t.Fatalf("deleting a missing project: %v", err)
	}
	// A refused token is ErrUnauthorized on every call.
	if err := newClient(t, srv.URL, "squ_wrong").EnsureProject(ctx, key, "x"); !errors.Is(err, sonar.ErrUnauthorized) {
		t.Fatalf("EnsureProject with a bad token: %v", err)
	}
}

func TestWaitTaskMeasuresAndGate(t *testing.T) {
	srv := sonartest.Start(t, token)
	ctx := context.Background()
	c := newClient(t, srv.URL, token)
	key := sonar.ProjectKey("proj", "pipe")
	if err := c.EnsureProject(ctx, key, "proj/pipe"); err != nil {
		t.Fatal(err)
	}
	srv.AddTask("AXtask1", key, sonar.TaskPending, sonar.TaskPending, sonar.TaskInProgress, sonar.TaskSuccess)
	var seen []string
	task, err := c.WaitTask(ctx, "AXtask1", func(s string) { seen = append(seen, s) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"PENDING", "IN_PROGRESS", "SUCCESS"}; !slices.Equal(seen, want) || task.AnalysisID == "" {
		t.Fatalf("statuses seen %v (want %v), task %+v", seen, want, task)
	}
	ms, err := c.Measures(ctx, key, sonar.Metrics)
	if err != nil {
		t.Fatal(err)
	}
	want := []model.Measure{{Metric: "reliability_rating", Value: "1.0"}, {Metric: "sqale_rating", Value: "1.0"},
		{Metric: "security_rating", Value: "2.0"}, {Metric: "coverage", Value: "81.5"}, {Metric: "duplicated_lines_density", Value: "3.2"}}
	if !slices.Equal(ms, want) {
		t.Fatalf("measures %v, want %v", ms, want)
	}
	if st, err := c.GateStatus(ctx, key, task.AnalysisID); err != nil || st != sonar.GateOK {
		t.Fatalf("gate: %q, %v", st, err)
	}
	if err := c.SelectQualityGate(ctx, key, "strict"); err != nil {
		t.Fatal(err)
	}
	if st, err := c.GateStatus(ctx, key, ""); err != nil || st != sonar.GateError {
		t.Fatalf("gate by project key after selecting strict: %q, %v", st, err)
	}

	srv.AddTask("AXtask2", key, sonar.TaskInProgress, sonar.TaskFailed)
	if _, err := c.WaitTask(ctx, "AXtask2", nil); !errors.Is(err, sonar.ErrTaskFailed) || !strings.Contains(err.Error(), "Unsupported language") {
		t.Fatalf("failed task: %v", err)
	}
	if _, err := c.WaitTask(ctx, "nope", nil); !errors.Is(err, sonar.ErrNotFound) {
		t.Fatalf("unknown task: %v", err)
	}
	// Bounded: a task that never ends gives up after PollTimeout.
	srv.AddTask("AXstuck", key, sonar.TaskPending)
	c.PollTimeout = 200 * time.Millisecond
	start := time.Now()
	if _, err := c.WaitTask(ctx, "AXstuck", nil); err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("stuck task: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("stuck task waited %s", d)
	}
}

func countCalls(calls []string, call string) int {
	n := 0
	for _, c := range calls {
		if c == call {
			n++
		}
	}
	return n
}
