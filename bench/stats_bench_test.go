package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// Issue 8's measures: stats over 100,000 records and the pipeline list with each
// pipeline's 5 newest records over 1,000 pipelines of 100 records, each at a tenth
// of the data first and then, after seeding the other nine tenths into the same
// store, at the full data; with GET /healthz and the same reads straight from the
// store as baselines, all in one process. CYCLONE_BENCH_MONGO_URI points them at a
// MongoDB instead of the embedded FerretDB (which reads the whole collection for
// every query but a lone _id lookup: both reads come from data the store derives
// from the records and reads by _id, see internal/store/counters.go and cards.go).

// seedDays is how far back the seeded records start.
const seedDays = 90

// seedEpoch is the end of the seeded records' time range (fixed, so runs compare).
var seedEpoch = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)

// seedStatuses weights the statuses of seeded records: mostly finished, some still
// Pending or Running.
var seedStatuses = []string{
	model.StatusSuccess, model.StatusSuccess, model.StatusSuccess, model.StatusSuccess, model.StatusSuccess,
	model.StatusSuccess, model.StatusFailed, model.StatusFailed, model.StatusAborted, model.StatusRunning,
}

// seedUnfinishedNewest is how many of a pipeline's newest seeded records may still
// be unfinished (drawn from seedStatuses); older ones are drawn again until
// finished, as in a running system, where a record started days ago has long
// ended (or been reconciled). Session 4 let any record be unfinished: a tenth of
// all of them, four in ten pipelines with one among their 5 newest.
const seedUnfinishedNewest = 2

// fakeRecord is a record of a pipeline as a run leaves it: its stages' statuses
// and times and the checked-out commit, started at start.
func fakeRecord(rng *rand.Rand, projectID, pipelineID string, seq int, start time.Time, mayBeUnfinished bool) *model.Record {
	id := fmt.Sprintf("%s-%06d", pipelineID, seq)
	status := seedStatuses[rng.IntN(len(seedStatuses))]
	for !mayBeUnfinished && !model.IsTerminal(status) {
		status = seedStatuses[rng.IntN(len(seedStatuses))]
	}
	stage := func(d time.Duration) model.GeneralStageStatus {
		s, e := start.Add(d), start.Add(d+20*time.Second)
		st := status
		if st == model.StatusAborted {
			st = model.StatusSuccess
		}
		return model.GeneralStageStatus{Status: st, StartTime: &s, EndTime: &e}
	}
	r := &model.Record{
		ID: id, Name: fmt.Sprintf("v%d", seq), ProjectID: projectID, PipelineID: pipelineID,
		Trigger: model.TriggerUser, PerformParams: &model.PerformParams{Ref: "master"},
		Status: status, StartTime: start, WorkflowID: id, RunID: fmt.Sprintf("run-%d", rng.Int64()),
		StageStatus: &model.StageStatus{
			CodeCheckout: &model.CodeCheckoutStatus{GeneralStageStatus: stage(0), Commits: &model.Commits{MainRepo: &model.Commit{
				ID: fmt.Sprintf("%040x", rng.Uint64()), Author: "Dev <dev@example.com>", Date: start.Format(time.RFC3339),
				Message: "Fix the build"}}},
			UnitTest: &model.GeneralStageStatus{},
			Package:  &model.GeneralStageStatus{},
		},
	}
	*r.StageStatus.UnitTest = stage(20 * time.Second)
	*r.StageStatus.Package = stage(40 * time.Second)
	if model.IsTerminal(status) {
		end := start.Add(time.Minute)
		r.EndTime = &end
	}
	if status == model.StatusFailed {
		r.ErrorMessage = "stage package failed: exit status 1"
	}
	return r
}

// seedRecords inserts n records into each pipeline, numbering them from first,
// started at random times in the seedDays before seedEpoch.
func seedRecords(b *testing.B, st *store.Store, rng *rand.Rand, projectID string, pipelineIDs []string, first, n int) {
	b.Helper()
	recs := make([]*model.Record, 0, len(pipelineIDs)*n)
	starts := make([]time.Time, n)
	for _, p := range pipelineIDs {
		for i := range starts {
			starts[i] = seedEpoch.Add(-time.Duration(rng.Int64N(int64(seedDays * 24 * time.Hour)))).Truncate(time.Millisecond)
		}
		slices.SortFunc(starts, func(a, b time.Time) int { return b.Compare(a) }) // newest first
		for i, start := range starts {
			recs = append(recs, fakeRecord(rng, projectID, p, first+i, start, i < seedUnfinishedNewest))
		}
	}
	start := time.Now()
	if err := st.InsertRecords(context.Background(), recs); err != nil {
		b.Fatal(err)
	}
	progress("seeded %d records in %v", len(recs), time.Since(start).Round(time.Millisecond))
}

// benchProject creates a project and n pipelines in it (through the API, as users
// do) and returns the project's and the pipelines' IDs.
func benchProject(b *testing.B, env *testenv.Env, name string, from, n int) (string, []string) {
	b.Helper()
	if from == 0 {
		mustStatus(b, env.Do("POST", "/api/v1/projects", map[string]any{
			"name": name, "scm": map[string]any{"type": "Github", "server": "https://github.com"},
		}), http.StatusCreated)
	}
	ctx := context.Background()
	proj, err := env.Store.GetProject(ctx, name)
	if err != nil {
		b.Fatal(err)
	}
	cmd := map[string]any{"command": []string{"make", "test"}}
	ids := make([]string, 0, n)
	for i := from; i < from+n; i++ {
		r := env.Do("POST", "/api/v1/projects/"+name+"/pipelines", map[string]any{
			"name": pipelineName(i), "build": map[string]any{
				"builderImage": map[string]any{"image": "golang:1.26"},
				"stages":       map[string]any{"unitTest": cmd, "package": cmd},
			},
		})
		mustStatus(b, r, http.StatusCreated)
		var p model.Pipeline
		r.JSON(b, &p)
		ids = append(ids, p.ID)
	}
	return proj.ID, ids
}

func pipelineName(i int) string { return fmt.Sprintf("pipeline-%04d", i) }

// sample times f up to max times, stopping early (after at least min) once budget
// has passed: a slow query on a big store is measured fewer times.
func sample(f func(), min, max int, budget time.Duration) []time.Duration {
	out := make([]time.Duration, 0, max)
	start := time.Now()
	for len(out) < max && (len(out) < min || time.Since(start) < budget) {
		t := time.Now()
		f()
		out = append(out, time.Since(t))
	}
	return out
}

// latencies is one measured read: its samples and their p50 and p99.
type latencies struct {
	n        int
	p50, p99 time.Duration
}

// nearestRank is the p-th percentile of ds by the nearest-rank method: of a few
// samples, p99 is the slowest.
func nearestRank(ds []time.Duration, p float64) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return s[max(int(math.Ceil(p*float64(len(s))))-1, 0)]
}

func summarize(name string, ds []time.Duration) latencies {
	l := latencies{n: len(ds), p50: nearestRank(ds, 0.5), p99: nearestRank(ds, 0.99)}
	progress("%-20s n=%-4d p50 %8.2f ms  p99 %8.2f ms", name, l.n, ms(l.p50), ms(l.p99))
	return l
}

func (l latencies) report(b *testing.B, name string) {
	b.ReportMetric(ms(l.p50), name+"-p50-ms")
	b.ReportMetric(ms(l.p99), name+"-p99-ms")
	b.Logf("%-24s n=%-4d p50 %8.2f ms  p99 %8.2f ms", name, l.n, ms(l.p50), ms(l.p99))
}

// progress tells on stderr how a long benchmark is getting on (b.Logf prints only at
// its end).
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

const (
	statsPipelines = 10
	statsFull      = 100_000 // records in the project at the full data
	listPipelines  = 1000
	listRecords    = 100 // records per pipeline
	listPage       = 100 // the API's default page of pipelines
	// Each read at each size is sampled at least minSamples times and then until
	// budget has passed (at most 200 times): on the embedded FerretDB one read of
	// 100,000 records takes tens of seconds, so p99 is then the worst of a few.
	minSamples = 3
	budget     = 20 * time.Second
)

// BenchmarkStats: GET /projects/{p}/stats and /pipelines/{p}/stats over the 90 days
// of a project of 10 pipelines, at 10,000 and at 100,000 records (goal: p99 <= 200 ms
// at 100,000; 10x the records at most 2x the time). Baselines: the same project
// stats straight from the store, a record read by _id (FerretDB's one indexed
// lookup) and GET /healthz.
func BenchmarkStats(b *testing.B) {
	env := testenv.Start(b, testenv.Options{NoWorker: true, MongoURI: os.Getenv("CYCLONE_BENCH_MONGO_URI")})
	rng := rand.New(rand.NewPCG(8, 1))
	projID, pipeIDs := benchProject(b, env, "stats", 0, statsPipelines)
	from, to := seedEpoch.Add(-seedDays*24*time.Hour), seedEpoch.Add(-time.Second)
	rangeQ := fmt.Sprintf("?startTime=%d&endTime=%d", from.Unix(), to.Unix())
	projectURL := "/api/v1/projects/stats/stats" + rangeQ
	pipelineURL := "/api/v1/projects/stats/pipelines/" + pipelineName(0) + "/stats" + rangeQ
	ctx := context.Background()

	type scale struct{ project, pipeline, store, byID, health latencies }
	measure := func(records int) scale {
		// Every answer is checked: every seeded record counted, every day present.
		get := func(url string, want int) func() {
			return func() {
				r := env.Do("GET", url, nil)
				mustStatus(b, r, http.StatusOK)
				var got struct {
					Overview struct{ Total int64 } `json:"overview"`
					Details  []any                 `json:"details"`
				}
				r.JSON(b, &got)
				if got.Overview.Total != int64(want) || len(got.Details) != seedDays {
					b.Fatalf("%s: total %d over %d days, want %d over %d", url, got.Overview.Total, len(got.Details), want, seedDays)
				}
			}
		}
		var s scale
		s.project = summarize(fmt.Sprintf("project stats %d", records), sample(get(projectURL, records), minSamples, 200, budget))
		s.pipeline = summarize(fmt.Sprintf("pipeline stats %d", records/statsPipelines), sample(get(pipelineURL, records/statsPipelines), minSamples, 200, budget))
		s.store = summarize("store project stats", sample(func() {
			if _, err := env.Store.RecordStats(ctx, store.StatsQuery{ProjectID: projID, From: from, To: to.Add(time.Second)}); err != nil {
				b.Fatal(err)
			}
		}, minSamples, 200, budget))
		s.byID = summarize("record by id", sample(func() {
			if _, err := env.Store.GetRecordByID(ctx, fmt.Sprintf("%s-%06d", pipeIDs[0], 7)); err != nil {
				b.Fatal(err)
			}
		}, 10, 200, 5*time.Second))
		s.health = summarize("healthz", sample(func() { mustStatus(b, env.Do("GET", "/healthz", nil), http.StatusOK) }, 10, 200, 2*time.Second))
		return s
	}

	var small, full scale
	for b.Loop() {
		seedRecords(b, env.Store, rng, projID, pipeIDs, 0, statsFull/10/statsPipelines)
		small = measure(statsFull / 10)
		seedRecords(b, env.Store, rng, projID, pipeIDs, statsFull/10/statsPipelines, (statsFull-statsFull/10)/statsPipelines)
		full = measure(statsFull)
	}
	small.project.report(b, "project-10k")
	small.pipeline.report(b, "pipeline-1k")
	small.store.report(b, "store-project-10k")
	small.byID.report(b, "by-id-10k")
	full.project.report(b, "project-100k")
	full.pipeline.report(b, "pipeline-10k")
	full.store.report(b, "store-project-100k")
	full.byID.report(b, "by-id-100k")
	full.health.report(b, "healthz")
	b.ReportMetric(ms(full.project.p99)/ms(small.project.p99), "project-p99-10x-ratio")
	b.ReportMetric(ms(full.pipeline.p99)/ms(small.pipeline.p99), "pipeline-p99-10x-ratio")
	b.ReportMetric(ms(full.project.p50)/ms(full.store.p50), "api/store")
	b.ReportMetric(ms(full.byID.p50)/ms(small.byID.p50), "by-id-10x-ratio")
	b.ReportMetric(ms(full.project.p50)/ms(full.health.p50), "stats/healthz")
}

// BenchmarkListPipelinesRecent: GET /projects/{p}/pipelines?recentCount=5 (a page of
// 100 pipelines, each with its 5 newest records) at 100 pipelines x 100 records and
// at 1,000 pipelines x 100 records (goal: p99 <= 50 ms at the full data; 10x at
// most 2x). The page holds the same 100 pipelines at both sizes. Baselines: the same
// page straight from the store, GET /healthz and, at the tenth, what the list did
// before for each pipeline of the page (count its records and find its 5 newest).
func BenchmarkListPipelinesRecent(b *testing.B) {
	env := testenv.Start(b, testenv.Options{NoWorker: true, MongoURI: os.Getenv("CYCLONE_BENCH_MONGO_URI")})
	rng := rand.New(rand.NewPCG(8, 2))
	const url = "/api/v1/projects/list/pipelines?recentCount=5&limit=100"
	ctx := context.Background()

	type scale struct{ api, store, oldOne, health latencies }
	var projID string
	var firstIDs []string
	measure := func(pipelines int) scale {
		var s scale
		// The page is checked once, untimed; each timed request (to its body's last
		// byte) must give the same bytes. Decoding the page is the client's work, not
		// the server's latency.
		page := env.Do("GET", url, nil)
		mustStatus(b, page, http.StatusOK)
		var got struct {
			Metadata struct{ Total int64 } `json:"metadata"`
			Items    []struct {
				RecentRecords []*model.Record `json:"recentRecords"`
			} `json:"items"`
		}
		page.JSON(b, &got)
		if got.Metadata.Total != int64(pipelines) || len(got.Items) != listPage ||
			len(got.Items[0].RecentRecords) != 5 || len(got.Items[listPage-1].RecentRecords) != 5 {
			b.Fatalf("list: total %d, %d items, want %d and %d with 5 records each", got.Metadata.Total, len(got.Items), pipelines, listPage)
		}
		s.api = summarize(fmt.Sprintf("list %dx%d", pipelines, listRecords), sample(func() {
			r := env.Do("GET", url, nil)
			mustStatus(b, r, http.StatusOK)
			if !bytes.Equal(r.Body, page.Body) {
				b.Fatalf("list: the page changed between two reads")
			}
		}, minSamples, 200, budget))
		s.store = summarize("store page", sample(func() {
			if _, _, err := env.Store.ListPipelinesRecent(ctx, projID, store.ListOptions{Limit: listPage}, store.RecentCounts{All: 5}); err != nil {
				b.Fatal(err)
			}
		}, minSamples, 200, budget))
		if pipelines < listPipelines {
			s.oldOne = summarize("before, one pipeline", sample(func() {
				if _, _, err := env.Store.ListRecords(ctx, firstIDs[0], store.ListOptions{Limit: 5}); err != nil {
					b.Fatal(err)
				}
			}, minSamples, 200, 5*time.Second))
		}
		s.health = summarize("healthz", sample(func() { mustStatus(b, env.Do("GET", "/healthz", nil), http.StatusOK) }, 10, 200, 2*time.Second))
		return s
	}

	var small, full scale
	for b.Loop() {
		projID, firstIDs = benchProject(b, env, "list", 0, listPipelines/10)
		seedRecords(b, env.Store, rng, projID, firstIDs, 0, listRecords)
		small = measure(listPipelines / 10)
		_, ids := benchProject(b, env, "list", listPipelines/10, listPipelines-listPipelines/10)
		seedRecords(b, env.Store, rng, projID, ids, 0, listRecords)
		full = measure(listPipelines)
	}
	small.api.report(b, "list-100x100")
	small.store.report(b, "store-100x100")
	small.oldOne.report(b, "before-one-pipeline-100x100")
	full.api.report(b, "list-1000x100")
	full.store.report(b, "store-1000x100")
	full.health.report(b, "healthz")
	b.ReportMetric(ms(full.api.p99)/ms(small.api.p99), "list-p99-10x-ratio")
	b.ReportMetric(ms(full.api.p50)/ms(full.store.p50), "api/store")
	b.ReportMetric(listPage*ms(small.oldOne.p50)/ms(small.api.p50), "before/after-100x100")
}
