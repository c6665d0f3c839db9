package devstack_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	_ "modernc.org/sqlite" // to inspect temporal.db directly

	"github.com/cycloneci/cyclone/internal/devstack"
	"github.com/cycloneci/cyclone/internal/searchattr"
)

const taskQueue = "devstack-test"

func greet(_ context.Context, name string) (string, error) {
	return "hello " + name, nil
}

// greetWorkflow runs one activity; when waitForSignal is set it first blocks
// on a "go" signal, which lets a test leave it in flight across a restart.
func greetWorkflow(ctx workflow.Context, name string, waitForSignal bool) (string, error) {
	if waitForSignal {
		workflow.GetSignalChannel(ctx, "go").Receive(ctx, nil)
	}
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 10 * time.Second})
	var out string
	err := workflow.ExecuteActivity(ctx, "greet", name).Get(ctx, &out)
	return out, err
}

// quiet keeps SDK and server chatter out of the test output unless it
// matters.
var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func startTemporal(t *testing.T, opts devstack.TemporalOptions) *devstack.Temporal {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	opts.Logger = quiet
	start := time.Now()
	srv, err := devstack.StartTemporal(ctx, opts)
	if err != nil {
		t.Fatalf("StartTemporal: %v", err)
	}
	t.Logf("temporal started in %v at %s", time.Since(start).Round(time.Millisecond), srv.Address())
	t.Cleanup(srv.Stop)
	return srv
}

// dialWithWorker connects to srv and runs a worker for the test workflow
// until stop is called or the test ends. Stopping the worker before the
// server keeps its shutdown from failing against a dead frontend.
func dialWithWorker(t *testing.T, srv *devstack.Temporal) (c client.Client, stop func()) {
	t.Helper()
	var err error
	c, err = client.Dial(client.Options{
		HostPort:  srv.Address(),
		Namespace: srv.Namespace(),
		Logger:    sdklog.NewStructuredLogger(quiet),
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	w := worker.New(c, taskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(greetWorkflow, workflow.RegisterOptions{Name: "greet"})
	w.RegisterActivityWithOptions(greet, activity.RegisterOptions{Name: "greet"})
	if err := w.Start(); err != nil {
		t.Fatalf("worker start: %v", err)
	}
	stop = sync.OnceFunc(func() {
		w.Stop()
		c.Close()
	})
	// Registered after srv.Stop, so it runs first.
	t.Cleanup(stop)
	return c, stop
}

func startWorkflow(t *testing.T, c client.Client, id, name string, wait bool) client.WorkflowRun {
	t.Helper()
	run, err := c.ExecuteWorkflow(t.Context(), client.StartWorkflowOptions{
		ID:        id,
		TaskQueue: taskQueue,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword("CycloneProject").ValueSet("demo"),
		),
	}, "greet", name, wait)
	if err != nil {
		t.Fatalf("start workflow %s: %v", id, err)
	}
	return run
}

func wantResult(t *testing.T, run client.WorkflowRun, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var got string
	if err := run.Get(ctx, &got); err != nil {
		t.Fatalf("workflow %s: %v", run.GetID(), err)
	}
	if got != want {
		t.Fatalf("workflow %s = %q, want %q", run.GetID(), got, want)
	}
}

func TestTemporalFileModeSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	opts := devstack.TemporalOptions{DataDir: dir, Namespace: "cyclone"}

	// First life: one finished workflow, one left waiting for a signal.
	srv1 := startTemporal(t, opts)
	c1, stopWorker1 := dialWithWorker(t, srv1)
	start := time.Now()
	wantResult(t, startWorkflow(t, c1, "done", "first", false), "hello first")
	t.Logf("first workflow took %v", time.Since(start).Round(time.Millisecond))
	startWorkflow(t, c1, "in-flight", "second", true)

	// Simulate a database from before an attribute existed: the restart has
	// to add it back through the operator service.
	if _, err := c1.OperatorService().RemoveSearchAttributes(t.Context(), &operatorservice.RemoveSearchAttributesRequest{
		Namespace:        srv1.Namespace(),
		SearchAttributes: []string{"CycloneTrigger"},
	}); err != nil {
		t.Fatalf("remove search attribute: %v", err)
	}
	if resp, err := c1.OperatorService().ListSearchAttributes(t.Context(), &operatorservice.ListSearchAttributesRequest{Namespace: srv1.Namespace()}); err != nil {
		t.Fatalf("list search attributes: %v", err)
	} else if _, ok := resp.GetCustomAttributes()["CycloneTrigger"]; ok {
		t.Fatal("CycloneTrigger still present after removal; the restart check below would prove nothing")
	}
	stopWorker1()
	srv1.Stop()
	srv1.Stop() // must be harmless

	dbFile := filepath.Join(dir, devstack.DBFileName)
	if _, err := os.Stat(dbFile + "-wal"); err != nil {
		t.Errorf("no WAL file next to %s: %v", dbFile, err)
	}
	db, err := sql.Open("sqlite", "file:"+dbFile+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	var journal string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&journal); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if journal != "wal" {
		t.Errorf("journal_mode = %q, want wal", journal)
	}

	// Second life on the same directory (and a different port).
	srv2 := startTemporal(t, opts)
	c2, _ := dialWithWorker(t, srv2)

	desc, err := c2.DescribeWorkflowExecution(t.Context(), "done", "")
	if err != nil {
		t.Fatalf("describe finished workflow after restart: %v", err)
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		t.Errorf("finished workflow status after restart = %v", st)
	}
	wantResult(t, c2.GetWorkflow(t.Context(), "done", ""), "hello first")

	if err := c2.SignalWorkflow(t.Context(), "in-flight", "", "go", nil); err != nil {
		t.Fatalf("signal in-flight workflow: %v", err)
	}
	wantResult(t, c2.GetWorkflow(t.Context(), "in-flight", ""), "hello second")

	resp, err := c2.OperatorService().ListSearchAttributes(t.Context(), &operatorservice.ListSearchAttributesRequest{Namespace: srv2.Namespace()})
	if err != nil {
		t.Fatalf("list search attributes: %v", err)
	}
	for name := range searchattr.All {
		if typ := resp.GetCustomAttributes()[name]; typ != enumspb.INDEXED_VALUE_TYPE_KEYWORD {
			t.Errorf("search attribute %s: type %v, want Keyword", name, typ)
		}
	}
}

func TestTemporalMemoryModeWithUI(t *testing.T) {
	srv := startTemporal(t, devstack.TemporalOptions{UIAddress: "127.0.0.1:0"})
	c, stopWorker := dialWithWorker(t, srv)
	wantResult(t, startWorkflow(t, c, "mem", "memory", false), "hello memory")

	if srv.UIURL() == "" {
		t.Fatal("UIURL is empty although a UI address was given")
	}
	resp, err := http.Get(srv.UIURL() + "/")
	if err != nil {
		t.Fatalf("GET UI: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(strings.ToLower(string(body)), "<html") {
		t.Fatalf("GET %s: %s, body starts %.100q", srv.UIURL(), resp.Status, body)
	}

	stopWorker()
	srv.Stop()
	if _, err := http.Get(srv.UIURL() + "/"); err == nil {
		t.Error("UI still serving after Stop")
	}
}

func TestTemporalWithoutUI(t *testing.T) {
	// Address and UIURL are what `cyclone dev` prints; without a UI there
	// must be nothing to print.
	srv := startTemporal(t, devstack.TemporalOptions{})
	if srv.UIURL() != "" {
		t.Errorf("UIURL = %q without UI", srv.UIURL())
	}
	if !strings.HasPrefix(srv.Address(), "127.0.0.1:") {
		t.Errorf("Address = %q, want loopback", srv.Address())
	}
}

func TestMongoPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()

	withCollection := func(f func(*mongo.Collection)) {
		t.Helper()
		m, err := devstack.StartMongo(ctx, devstack.MongoOptions{DataDir: dir, Logger: quiet})
		if err != nil {
			t.Fatalf("StartMongo: %v", err)
		}
		defer m.Stop()
		cl, err := mongo.Connect(ctx, options.Client().ApplyURI(m.URI()))
		if err != nil {
			t.Fatalf("connect %s: %v", m.URI(), err)
		}
		// Disconnect before Stop so FerretDB need not wait out its grace
		// period for open connections.
		defer cl.Disconnect(context.Background())
		f(cl.Database("cyclone").Collection("projects"))
	}

	withCollection(func(coll *mongo.Collection) {
		if _, err := coll.InsertOne(ctx, bson.M{"_id": "p1", "name": "demo"}); err != nil {
			t.Fatalf("insert: %v", err)
		}
		var got bson.M
		if err := coll.FindOne(ctx, bson.M{"name": "demo"}).Decode(&got); err != nil {
			t.Fatalf("find: %v", err)
		}
		if got["_id"] != "p1" {
			t.Fatalf("found %v", got)
		}

		if _, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{
			Keys:    bson.D{{Key: "name", Value: 1}},
			Options: options.Index().SetUnique(true),
		}); err != nil {
			t.Fatalf("create unique index: %v", err)
		}
		_, err := coll.InsertOne(ctx, bson.M{"_id": "p2", "name": "demo"})
		if !mongo.IsDuplicateKeyError(err) {
			t.Fatalf("duplicate insert: got %v, want duplicate key error", err)
		}
	})

	withCollection(func(coll *mongo.Collection) {
		var got bson.M
		err := coll.FindOne(ctx, bson.M{"_id": "p1"}).Decode(&got)
		if errors.Is(err, mongo.ErrNoDocuments) {
			t.Fatal("document lost across restart")
		}
		if err != nil {
			t.Fatalf("find after restart: %v", err)
		}
		if got["name"] != "demo" {
			t.Fatalf("found %v after restart", got)
		}
		// The unique index must have survived too.
		if _, err := coll.InsertOne(ctx, bson.M{"_id": "p3", "name": "demo"}); !mongo.IsDuplicateKeyError(err) {
			t.Fatalf("duplicate insert after restart: got %v, want duplicate key error", err)
		}
	})
}

func TestMongoRequiresDataDir(t *testing.T) {
	if _, err := devstack.StartMongo(t.Context(), devstack.MongoOptions{}); err == nil {
		t.Fatal("StartMongo without DataDir succeeded")
	}
}
