// Package testenv starts the whole of Cyclone for end-to-end tests: the embedded
// MongoDB-compatible store (FerretDB, real wire protocol), an in-memory Temporal
// server, a worker and the API on a loopback HTTP server. Nothing is mocked.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/cycloneci/cyclone/internal/app"
	"github.com/cycloneci/cyclone/internal/devstack"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/local"
	"github.com/cycloneci/cyclone/internal/metrics"
	"github.com/cycloneci/cyclone/internal/secrets"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/worker"
)

// TaskQueue is the task queue the test environment's workflows use.
const TaskQueue = "cyclone-test"

// AdminToken is the test API's admin token; Do sends it unless told otherwise.
const AdminToken = "cyc_test-admin-token"

// Env is a running Cyclone.
type Env struct {
	URL string // API base, e.g. http://127.0.0.1:1234
	// TemporalAddress is the Temporal frontend's host:port (for the temporal CLI).
	TemporalAddress string
	Store           *store.Store
	Temporal        client.Client
	Worker          *worker.Worker
	MongoURI        string
	Executor        executor.Executor
	Metrics         *metrics.Metrics // the API's /metrics; the env's workers record there too

	t        testing.TB
	server   *httptest.Server
	single   bool
	mongo    *devstack.Mongo    // nil when external
	temporal *devstack.Temporal // nil when external
	mongoDir string

	sonarImage string // the workers' scanner image
}

// RestartMongo starts the embedded MongoDB-compatible server again on the same data
// and address after StopMongo: clients reconnect by themselves.
func (e *Env) RestartMongo() {
	e.t.Helper()
	addr := strings.TrimSuffix(strings.TrimPrefix(e.MongoURI, "mongodb://"), "/")
	m, err := devstack.StartMongo(context.Background(), devstack.MongoOptions{DataDir: e.mongoDir, Address: addr, Logger: Logger()})
	if err != nil {
		e.t.Fatalf("restart FerretDB: %v", err)
	}
	e.t.Cleanup(m.Stop)
	e.mongo = m
}

// StopTemporal stops the embedded Temporal server, to test outages.
func (e *Env) StopTemporal() {
	e.t.Helper()
	if e.temporal == nil {
		e.t.Fatal("StopTemporal: Temporal is external")
	}
	e.temporal.Stop()
}

// StopMongo stops the embedded MongoDB-compatible server, to test outages.
func (e *Env) StopMongo() {
	e.t.Helper()
	if e.mongo == nil {
		e.t.Fatal("StopMongo: the store is external")
	}
	e.mongo.Stop()
}

// Options change what Start builds.
type Options struct {
	// Executor runs the steps; nil means a local executor in a temp dir.
	Executor executor.Executor
	// NoWorker starts no worker (tests that start their own).
	NoWorker bool
	// WorkerID of the worker (default "test").
	WorkerID string
	// SingleWorker runs stages on the shared task queue, as `cyclone dev` does.
	SingleWorker bool
	// DataDir, when set, keeps Temporal and the store on disk there (the `cyclone dev`
	// shape) instead of in memory and a temp dir.
	DataDir string
	// TemporalAddress and MongoURI point at external services instead of starting
	// embedded ones (benchmarks against a real cluster).
	TemporalAddress string
	MongoURI        string
	// SonarScannerImage is the image the worker's codeScan stage runs (default
	// activities.DefaultSonarScannerImage, which cannot be pulled here).
	SonarScannerImage string
}

// Logger is quiet unless CYCLONE_TEST_LOG is set.
func Logger() *slog.Logger {
	level := slog.LevelError
	if os.Getenv("CYCLONE_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// Start starts everything and stops it when the test ends.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logger := Logger()

	mongoURI, temporalAddr, namespace := o.MongoURI, o.TemporalAddress, devstack.DefaultNamespace
	var embedded *devstack.Mongo
	var embeddedTemporal *devstack.Temporal
	var mongoDir string
	if mongoURI == "" {
		dir := t.TempDir()
		if o.DataDir != "" {
			dir = filepath.Join(o.DataDir, "mongo")
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		mongo, err := devstack.StartMongo(ctx, devstack.MongoOptions{DataDir: dir, Logger: logger})
		if err != nil {
			t.Fatalf("start FerretDB: %v", err)
		}
		t.Cleanup(mongo.Stop)
		mongoURI, embedded, mongoDir = mongo.URI(), mongo, dir
	}
	if temporalAddr == "" {
		var dir string
		if o.DataDir != "" {
			dir = filepath.Join(o.DataDir, "temporal")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		temporal, err := devstack.StartTemporal(ctx, devstack.TemporalOptions{DataDir: dir, Logger: logger})
		if err != nil {
			t.Fatalf("start Temporal: %v", err)
		}
		t.Cleanup(temporal.Stop)
		temporalAddr, namespace, embeddedTemporal = temporal.Address(), temporal.Namespace(), temporal
	}

	key := make([]byte, secrets.KeySize)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	dbName := "cyclone"
	if o.MongoURI != "" { // never touch a real deployment's database
		dbName = fmt.Sprintf("cyclone_test_%d", time.Now().UnixNano())
	}
	st, err := store.Open(ctx, mongoURI, dbName, box)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	if embedded != nil {
		if err := embedded.IndexIDLookups(ctx, dbName); err != nil {
			t.Fatal(err)
		}
	}
	tc, err := app.DialTemporal(ctx, temporalAddr, namespace, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)

	env := &Env{TemporalAddress: temporalAddr, Store: st, Temporal: tc, MongoURI: mongoURI, Executor: o.Executor, single: o.SingleWorker, mongo: embedded, mongoDir: mongoDir, temporal: embeddedTemporal, t: t,
		Metrics: metrics.New()}
	env.sonarImage = o.SonarScannerImage
	if env.Executor == nil {
		env.Executor = local.New(t.TempDir())
	}
	if !o.NoWorker {
		env.Worker = env.StartWorker(o.WorkerID)
	}
	// The URL is known before the API is built: it is the public URL webhooks are
	// registered with.
	env.server = httptest.NewUnstartedServer(nil)
	env.URL = "http://" + env.server.Listener.Addr().String()
	env.server.Config.Handler = app.NewAPI(st, tc, app.APIOptions{
		Namespace: namespace, TaskQueue: TaskQueue, AdminToken: AdminToken, Logger: logger, Metrics: env.Metrics,
		PublicURL: env.URL,
	})
	env.server.Start()
	t.Cleanup(env.server.Close)
	return env
}

// StartWorker starts a worker with the given ID (default "test") on the env's
// executor; it stops when the test ends or when the caller stops it.
func (e *Env) StartWorker(id string) *worker.Worker {
	e.t.Helper()
	return e.StartCloudWorker(id, e.Executor)
}

// StartCloudWorker starts a worker with its own executor that also runs the
// records of the given clouds.
func (e *Env) StartCloudWorker(id string, ex executor.Executor, clouds ...string) *worker.Worker {
	e.t.Helper()
	if id == "" {
		id = "test"
	}
	w, err := app.NewWorker(e.Store, e.Temporal, ex, app.WorkerConfig{TaskQueue: TaskQueue, WorkerID: id, SingleWorker: e.single,
		Logger: Logger(), Metrics: e.Metrics, SonarScannerImage: e.sonarImage, Clouds: clouds})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(w.Stop)
	return w
}

// Response is an HTTP answer with its body read.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test on error.
func (r *Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Do sends a request with a JSON body (a string is sent as is, anything else is
// marshalled) and reads the answer.
func (e *Env) Do(method, path string, body any, header ...string) *Response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	case []byte:
		rd = bytes.NewBuffer(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewBuffer(data)
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+AdminToken)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1]) // "Authorization", "" sends none
	}
	if req.Header.Get("Authorization") == "" {
		req.Header.Del("Authorization")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}
