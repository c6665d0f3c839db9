// Package bench measures what the engine costs: records against a bare Temporal
// workflow on the same server in the same run, API list latency, and cold start.
// Run with `make bench`; figures go to bench/RESULTS.md.
//
// Point the record benchmarks at an external Temporal and MongoDB with
// CYCLONE_BENCH_TEMPORAL=host:port and CYCLONE_BENCH_MONGO_URI=mongodb://...
package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/searchattr"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/starter"
)

const bareQueue = "bench-bare"

// BareWorkflow is the baseline: seven sequential no-op activities.
func BareWorkflow(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
	for range 7 {
		if err := workflow.ExecuteActivity(ctx, NoopActivity).Get(ctx, nil); err != nil {
			return err
		}
	}
	return nil
}

// NoopActivity does nothing.
func NoopActivity(context.Context) error { return nil }

type benchEnv struct {
	env *testenv.Env
	f   fixtureRefs
}

type fixtureRefs struct {
	project  *model.Project
	pipeline *model.Pipeline
}

// startEnv starts Cyclone (in memory, on disk like `cyclone dev`, or external) with
// a bare-workflow worker beside it, and a pipeline of no-op command stages.
func startEnv(b *testing.B, onDisk bool) *benchEnv {
	b.Helper()
	o := testenv.Options{
		TemporalAddress: os.Getenv("CYCLONE_BENCH_TEMPORAL"),
		MongoURI:        os.Getenv("CYCLONE_BENCH_MONGO_URI"),
		SingleWorker:    true, // the `cyclone dev` shape
	}
	if onDisk {
		o.DataDir = b.TempDir()
	}
	env := testenv.Start(b, o)
	w := worker.New(env.Temporal, bareQueue, worker.Options{})
	w.RegisterWorkflow(BareWorkflow)
	w.RegisterActivity(NoopActivity)
	if err := w.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Stop)

	mustStatus(b, env.Do("POST", "/api/v1/projects", map[string]any{
		"name": "bench", "scm": map[string]any{"type": "Github", "server": "https://github.com"},
	}), http.StatusCreated)
	noop := map[string]any{"command": []string{"true"}}
	mustStatus(b, env.Do("POST", "/api/v1/projects/bench/pipelines", map[string]any{
		"name": "noop", "build": map[string]any{
			"builderImage": map[string]any{"image": "none"},
			"stages":       map[string]any{"unitTest": noop, "codeScan": noop, "package": noop},
		},
	}), http.StatusCreated)
	ctx := context.Background()
	proj, err := env.Store.GetProject(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	p, err := env.Store.GetPipeline(ctx, proj.ID, "noop")
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{env: env, f: fixtureRefs{project: proj, pipeline: p}}
}

func mustStatus(b *testing.B, r *testenv.Response, status int) {
	b.Helper()
	if r.Status != status {
		b.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
}

// sevenStages is a seven-stage record made of the no-op command stages. The pipeline
// can only run codeCheckout, unitTest, codeScan (command) and package today, so the
// seven activities are the three command stages repeated; each is a full stage
// activity (projection writes, executor step, heartbeats).
var sevenStages = []string{
	model.StageUnitTest, model.StageCodeScan, model.StagePackage,
	model.StageUnitTest, model.StageCodeScan, model.StagePackage, model.StageUnitTest,
}

// runRecord creates a record like the API does and waits until it succeeded.
func (e *benchEnv) runRecord(b *testing.B, stages []string) time.Duration {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	id := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	lastID = id
	rec := &model.Record{ID: id, ProjectID: e.f.project.ID, PipelineID: e.f.pipeline.ID, Trigger: model.TriggerUser,
		PerformParams: &model.PerformParams{Ref: "master"}, StageStatus: &model.StageStatus{}, Status: model.StatusPending, WorkflowID: id}
	if err := e.env.Store.CreateRecord(ctx, rec); err != nil {
		b.Fatal(err)
	}
	in := starter.Input(rec, e.f.project, e.f.pipeline)
	in.Stages = stages
	run, err := e.env.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: testenv.TaskQueue, EnableEagerStart: true,
		TypedSearchAttributes: temporal.NewSearchAttributes(searchattr.Record.ValueSet(id)),
	}, "PipelineRecord", in)
	if err != nil {
		b.Fatal(err)
	}
	if err := run.Get(ctx, nil); err != nil {
		b.Fatalf("record %s: %v", id, err)
	}
	return time.Since(start)
}

// runRecordHTTP runs a record through the REST API and waits for Success.
func (e *benchEnv) runRecordHTTP(b *testing.B) time.Duration {
	b.Helper()
	start := time.Now()
	r := e.env.Do("POST", "/api/v1/projects/bench/pipelines/noop/records", map[string]any{"ref": "master"})
	mustStatus(b, r, http.StatusCreated)
	var rec model.Record
	r.JSON(b, &rec)
	if err := e.env.Temporal.GetWorkflow(context.Background(), rec.ID, rec.RunID).Get(context.Background(), nil); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func (e *benchEnv) runBare(b *testing.B) time.Duration {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	run, err := e.env.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: bareQueue, EnableEagerStart: true}, BareWorkflow)
	if err != nil {
		b.Fatal(err)
	}
	if err := run.Get(ctx, nil); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// latency runs n sequential runs of each and reports medians and their ratio.
func latency(b *testing.B, onDisk bool) {
	e := startEnv(b, onDisk)
	const n = 20
	e.runRecord(b, sevenStages) // warm up both paths
	e.runBare(b)
	var rec, bare, api []time.Duration
	for b.Loop() {
		rec, bare, api = rec[:0], bare[:0], api[:0]
		for range n {
			rec = append(rec, e.runRecord(b, sevenStages))
			bare = append(bare, e.runBare(b))
			api = append(api, e.runRecordHTTP(b))
		}
	}
	b.ReportMetric(ms(median(rec)), "record7-p50-ms")
	b.ReportMetric(ms(median(bare)), "bare7-p50-ms")
	b.ReportMetric(ms(median(rec))/ms(median(bare)), "ratio")
	b.ReportMetric(ms(median(api)), "api-record3-p50-ms")
	b.ReportMetric(ms(slices.Max(rec)), "record7-max-ms")
	b.ReportMetric(ms(slices.Max(bare)), "bare7-max-ms")
}

// BenchmarkRecordLatencyMemory: in-memory Temporal (the test server).
func BenchmarkRecordLatencyMemory(b *testing.B) { latency(b, false) }

// BenchmarkRecordLatencyDisk: SQLite files on disk, the `cyclone dev` shape.
func BenchmarkRecordLatencyDisk(b *testing.B) { latency(b, true) }

// burst starts n runs of one at once and returns completions per second.
func burst(n int, one func()) float64 {
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(one)
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// throughputRuns is how many runs a throughput burst starts at once.
const throughputRuns = 200

// throughput starts throughputRuns at once and reports completions per second.
func throughput(b *testing.B, onDisk bool) {
	e := startEnv(b, onDisk)
	e.runRecord(b, sevenStages)
	e.runBare(b)
	var recRate, bareRate float64
	for b.Loop() {
		recRate = burst(throughputRuns, func() { e.runRecord(b, sevenStages) })
		bareRate = burst(throughputRuns, func() { e.runBare(b) })
	}
	b.ReportMetric(recRate, "records/s")
	b.ReportMetric(bareRate, "bare/s")
	b.ReportMetric(recRate/bareRate, "ratio")
}

// BenchmarkRecordBurstMemory is one burst of records alone (in memory), for a CPU
// profile of what a record costs: -cpuprofile, and BenchmarkBareBurstMemory to
// compare.
func BenchmarkRecordBurstMemory(b *testing.B) {
	e := startEnv(b, false)
	e.runRecord(b, sevenStages)
	for b.Loop() {
		b.ReportMetric(burst(throughputRuns, func() { e.runRecord(b, sevenStages) }), "records/s")
	}
}

// BenchmarkBareBurstMemory is BenchmarkRecordBurstMemory's baseline: one burst of
// bare workflows alone.
func BenchmarkBareBurstMemory(b *testing.B) {
	e := startEnv(b, false)
	e.runBare(b)
	for b.Loop() {
		b.ReportMetric(burst(throughputRuns, func() { e.runBare(b) }), "bare/s")
	}
}

// BenchmarkRecordThroughputMemory: 200 records at once, in-memory Temporal.
func BenchmarkRecordThroughputMemory(b *testing.B) { throughput(b, false) }

// BenchmarkRecordThroughputDisk: 200 records at once, on disk.
func BenchmarkRecordThroughputDisk(b *testing.B) { throughput(b, true) }

var lastID string
