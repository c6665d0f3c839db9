package store

// These tests live inside the package: they hold the day counters to the records
// themselves (recordStatsFromRecords) and read the counter documents.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/cycloneci/cyclone/internal/devstack"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/secrets"
)

// openCountersStore opens a store on a fresh embedded FerretDB, as the server does
// (startStore does it for the tests outside the package), and a second store on the same database that
// reads the MongoDB way (counters by _id $in, $group for the records).
func openCountersStore(t testing.TB) (ferretWay, mongoWay *Store) {
	t.Helper()
	ctx := context.Background()
	m, err := devstack.StartMongo(ctx, devstack.MongoOptions{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	key := sha256.Sum256([]byte(t.Name()))
	box, err := secrets.New(key[:])
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []**Store{&ferretWay, &mongoWay} {
		if *s, err = Open(ctx, m.URI(), "cyclone", box); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = (*s).Close(ctx) })
	}
	// As the server does: FerretDB's own _id index does not serve its _id lookups.
	if err := m.IndexIDLookups(ctx, "cyclone"); err != nil {
		t.Fatal(err)
	}
	UseMongoDBPaths(mongoWay)
	if !ScansQueries(ferretWay) || ScansQueries(mongoWay) {
		t.Fatal("the embedded FerretDB is not recognised, or the MongoDB way is not forced")
	}
	return ferretWay, mongoWay
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// statsText renders days compactly, to compare and to show.
func statsText(days []DayStats) string {
	var b strings.Builder
	for _, d := range days {
		fmt.Fprintf(&b, "%s %d/%d/%d/%d; ", d.Start.UTC().Format(time.RFC3339), d.Total, d.Success, d.Failed, d.Aborted)
	}
	return b.String()
}

// wantCountersMatchRecords checks that RecordStats, both ways, answers what the
// records say for q, and returns that answer.
func wantCountersMatchRecords(t *testing.T, ferretWay, mongoWay *Store, q StatsQuery) []DayStats {
	t.Helper()
	ctx := context.Background()
	// Both are views of one database: each waits for its own updates only.
	ferretWay.awaitDerived(ctx)
	mongoWay.awaitDerived(ctx)
	want, err := ferretWay.recordStatsFromRecords(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*Store{"FerretDB way": ferretWay, "MongoDB way": mongoWay} {
		got, err := s.RecordStats(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := statsText(got), statsText(want); g != w {
			t.Fatalf("%s, %s %s from %s to %s in %s:\n got %s\nwant %s", name, q.ProjectID, q.PipelineID,
				q.From.Format(time.RFC3339Nano), q.To.Format(time.RFC3339Nano), q.Location, g, w)
		}
	}
	return want
}

// counterDocs reads every counter document by _id.
func counterDocs(t *testing.T, s *Store) map[string]counterDoc {
	t.Helper()
	s.awaitDerived(context.Background())
	ctx := context.Background()
	cur, err := s.recordCounts().Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	var docs []counterDoc
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	out := map[string]counterDoc{}
	for _, d := range docs {
		out[d.ID] = d
	}
	return out
}

// nonZeroCounts are the counts of the documents without the zeros that taking
// records out leaves behind.
func nonZeroCounts(docs map[string]counterDoc) map[string]map[string]counts {
	out := map[string]map[string]counts{}
	for id, d := range docs {
		for key, c := range d.Buckets {
			if c == (counts{}) {
				continue
			}
			if out[id] == nil {
				out[id] = map[string]counts{}
			}
			out[id][key] = c
		}
	}
	return out
}

// wantPipelinesSumToProjects checks that every project's counters are the sum of
// its pipelines'.
func wantPipelinesSumToProjects(t *testing.T, s *Store) {
	t.Helper()
	docs := counterDocs(t, s)
	sums := map[string]map[string]counts{}
	for _, d := range docs {
		if d.Scope != scopePipeline {
			continue
		}
		id := counterScope{scopeProject, d.ProjectID}.docID(d.Day)
		if sums[id] == nil {
			sums[id] = map[string]counts{}
		}
		for key, c := range d.Buckets {
			sum := sums[id][key]
			sum.plus(c)
			sums[id][key] = sum
		}
	}
	projects := map[string]counterDoc{}
	for id, d := range docs {
		if d.Scope == scopeProject {
			projects[id] = d
		}
	}
	summed := map[string]counterDoc{}
	for id, b := range sums {
		summed[id] = counterDoc{Buckets: b}
	}
	if got, want := nonZeroCounts(projects), nonZeroCounts(summed); !reflect.DeepEqual(got, want) {
		t.Fatalf("project counters\n got %v\nwant the pipelines' sum %v", got, want)
	}
}

// TestCountersMatchRecords runs a random mix of record creations, retried creations,
// finishes, retried finishes, deletions and bulk inserts on three pipelines of two
// projects, across a DST change, and checks after it, after a pipeline's deletion
// and after rebuilds that the counters answer what the records say, in UTC, in New
// York and in Kathmandu (+05:45), on day-aligned ranges and on ranges whose edges
// cut buckets, both ways of reading; that the pipelines' counters sum to their
// project's; and that a rebuild finds what incremental counting kept and a second
// rebuild changes nothing.
func TestCountersMatchRecords(t *testing.T) {
	ferretWay, mongoWay := openCountersStore(t)
	ctx := context.Background()
	var pipelines []*model.Pipeline
	for _, p := range []struct{ project, pipeline string }{{"one", "a"}, {"one", "b"}, {"two", "c"}} {
		proj, err := ferretWay.GetProject(ctx, p.project)
		if errors.Is(err, ErrNotFound) {
			proj = &model.Project{Name: p.project}
			err = ferretWay.CreateProject(ctx, proj)
		}
		if err != nil {
			t.Fatal(err)
		}
		pl := &model.Pipeline{Name: p.pipeline, ProjectID: proj.ID, Build: &model.Build{}}
		if err := ferretWay.CreatePipeline(ctx, pl); err != nil {
			t.Fatal(err)
		}
		pipelines = append(pipelines, pl)
	}

	// Five days around New York's DST start (2024-03-10 07:00 UTC).
	base := time.Date(2024, 3, 8, 0, 0, 0, 0, time.UTC)
	const span = 5 * 24 * time.Hour
	rng := rand.New(rand.NewPCG(8, 2024))
	statuses := []string{model.StatusPending, model.StatusRunning, model.StatusPending, model.StatusSuccess, model.StatusFailed, model.StatusAborted}
	terminal := []string{model.StatusSuccess, model.StatusFailed, model.StatusAborted}
	seq := 0
	newRecord := func() *model.Record {
		p := pipelines[rng.IntN(len(pipelines))]
		seq++
		return &model.Record{ID: fmt.Sprintf("r%04d", seq), ProjectID: p.ProjectID, PipelineID: p.ID,
			Status: statuses[rng.IntN(len(statuses))], StageStatus: &model.StageStatus{},
			StartTime: base.Add(time.Duration(rng.Int64N(int64(span)))).Truncate(time.Millisecond)}
	}
	var records []*model.Record // as created; some since finished or deleted
	pick := func() *model.Record { return records[rng.IntN(len(records))] }
	for range 250 {
		switch op := rng.IntN(20); {
		case op < 9 || len(records) == 0:
			r := newRecord()
			if err := ferretWay.CreateRecord(ctx, r); err != nil {
				t.Fatal(err)
			}
			records = append(records, r)
		case op < 14: // a finish, maybe of a finished record (a retry) or a deleted one
			err := ferretWay.FinishRecord(ctx, pick().ID, terminal[rng.IntN(len(terminal))], "", time.Now())
			if err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatal(err)
			}
		case op < 16: // a retried create, maybe of a deleted record (then it is back)
			r := *pick()
			r.CountedLevel = 0
			if err := ferretWay.CreateRecord(ctx, &r); err != nil && !errors.Is(err, ErrConflict) {
				t.Fatal(err)
			}
		case op < 19:
			if err := ferretWay.DeleteRecord(ctx, pick().ID); err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatal(err)
			}
		default:
			bulk := make([]*model.Record, 25)
			for i := range bulk {
				bulk[i] = newRecord()
			}
			if err := ferretWay.InsertRecords(ctx, bulk); err != nil {
				t.Fatal(err)
			}
			records = append(records, bulk...)
		}
	}

	zones := []*time.Location{time.UTC, mustZone(t, "America/New_York"), mustZone(t, "Asia/Kathmandu")}
	checkAll := func(t *testing.T) {
		t.Helper()
		for _, loc := range zones {
			y, m, d := base.In(loc).Date()
			dayStart := time.Date(y, m, d-1, 0, 0, 0, 0, loc)
			queries := []StatsQuery{{ProjectID: pipelines[0].ProjectID}, {ProjectID: pipelines[2].ProjectID}}
			for _, p := range pipelines {
				queries = append(queries, StatsQuery{PipelineID: p.ID})
			}
			for _, q := range queries {
				q.Location = loc
				q.From, q.To = dayStart, time.Date(y, m, d+6, 0, 0, 0, 0, loc)
				if days := wantCountersMatchRecords(t, ferretWay, mongoWay, q); q.PipelineID != "" && len(days) != 7 {
					t.Fatalf("%d days, want 7", len(days))
				}
				// Edges inside buckets, at random.
				q.From = base.Add(time.Duration(rng.Int64N(int64(span / 2))))
				q.To = q.From.Add(time.Duration(rng.Int64N(int64(span))))
				wantCountersMatchRecords(t, ferretWay, mongoWay, q)
				// Both edges inside one bucket.
				q.To = q.From.Add(time.Duration(rng.Int64N(int64(BucketSeconds * time.Second))))
				wantCountersMatchRecords(t, ferretWay, mongoWay, q)
			}
		}
		wantPipelinesSumToProjects(t, ferretWay)
	}
	t.Run("after the mix", checkAll)

	if err := ferretWay.DeletePipeline(ctx, pipelines[1].ID); err != nil {
		t.Fatal(err)
	}
	for id, d := range counterDocs(t, ferretWay) {
		if d.PipelineID == pipelines[1].ID {
			t.Fatalf("counter document %s of the deleted pipeline is left", id)
		}
	}
	t.Run("after a pipeline's deletion", checkAll)

	incremental := counterDocs(t, ferretWay)
	if err := ferretWay.RebuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	rebuilt := counterDocs(t, ferretWay)
	if got, want := nonZeroCounts(rebuilt), nonZeroCounts(incremental); !reflect.DeepEqual(got, want) {
		t.Fatalf("rebuilt counters\n got %v\nwant %v", got, want)
	}
	for name, s := range map[string]*Store{"FerretDB way": ferretWay, "MongoDB way": mongoWay} {
		if err := s.RebuildDerived(ctx); err != nil {
			t.Fatal(err)
		}
		if again := counterDocs(t, ferretWay); !reflect.DeepEqual(again, rebuilt) {
			t.Fatalf("a second rebuild (%s) changed the counters:\n got %v\nwant %v", name, again, rebuilt)
		}
	}
	t.Run("after rebuilds", checkAll)

	// The rebuild set the records' counted levels: changes after it count once.
	for _, r := range records[:40] {
		if err := ferretWay.FinishRecord(ctx, r.ID, model.StatusFailed, "", time.Now()); err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	}
	t.Run("after finishes that follow a rebuild", checkAll)
}

// TestCountersCountOnce: a retried create (ErrConflict), retried finishes and a
// finish of a record created finished count each record once; records created at
// once in a day without counters yet (racing to create, then to update, the same
// documents) are all counted.
func TestCountersCountOnce(t *testing.T) {
	s, _ := openCountersStore(t)
	ctx := context.Background()
	start := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	pending := &model.Record{ID: "pending", ProjectID: "proj", PipelineID: "p", Status: model.StatusPending, StartTime: start}
	if err := s.CreateRecord(ctx, pending); err != nil {
		t.Fatal(err)
	}
	again := *pending
	if err := s.CreateRecord(ctx, &again); !errors.Is(err, ErrConflict) {
		t.Fatalf("a retried create: %v, want ErrConflict", err)
	}
	for _, status := range []string{model.StatusSuccess, model.StatusSuccess, model.StatusFailed} {
		if err := s.FinishRecord(ctx, "pending", status, "", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	failed := &model.Record{ID: "failed", ProjectID: "proj", PipelineID: "p", Status: model.StatusFailed, StartTime: start}
	if err := s.CreateRecord(ctx, failed); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishRecord(ctx, "failed", model.StatusAborted, "", time.Now()); err != nil {
		t.Fatal(err)
	}

	next := start.AddDate(0, 0, 1)
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			r := &model.Record{ID: fmt.Sprintf("racing-%d", i), ProjectID: "proj", PipelineID: "p", Status: model.StatusRunning,
				StartTime: next.Add(time.Duration(i) * time.Second)}
			if err := s.CreateRecord(ctx, r); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	want := "2024-03-01T00:00:00Z 2/1/1/0; 2024-03-02T00:00:00Z 24/0/0/0; "
	for _, q := range []StatsQuery{{PipelineID: "p"}, {ProjectID: "proj"}} {
		q.From, q.To = start.Truncate(24*time.Hour), next.AddDate(0, 0, 1).Truncate(24*time.Hour)
		got, err := s.RecordStats(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if statsText(got) != want {
			t.Fatalf("%+v:\n got %s\nwant %s", q, statsText(got), want)
		}
	}
}

// TestCountersForgetDeleted: deleting a record, a pipeline and a project takes their
// counts out, and the deleted pipeline's and project's counter documents go.
func TestCountersForgetDeleted(t *testing.T) {
	s, _ := openCountersStore(t)
	ctx := context.Background()
	var projects []*model.Project
	var pipelines []*model.Pipeline
	for _, name := range []string{"kept", "deleted"} {
		proj := &model.Project{Name: name}
		if err := s.CreateProject(ctx, proj); err != nil {
			t.Fatal(err)
		}
		projects = append(projects, proj)
		for _, pname := range []string{"x", "y"} {
			p := &model.Pipeline{Name: pname, ProjectID: proj.ID, Build: &model.Build{}}
			if err := s.CreatePipeline(ctx, p); err != nil {
				t.Fatal(err)
			}
			pipelines = append(pipelines, p)
		}
	}
	day := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	for i, p := range pipelines {
		for j, status := range []string{model.StatusSuccess, model.StatusFailed, model.StatusRunning} {
			r := &model.Record{ID: fmt.Sprintf("r%d-%d", i, j), ProjectID: p.ProjectID, PipelineID: p.ID, Status: status,
				StartTime: day.Add(time.Duration(i*3+j) * time.Hour)}
			if err := s.CreateRecord(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	stats := func(q StatsQuery) string {
		t.Helper()
		q.From, q.To = day, day.AddDate(0, 0, 1)
		days, err := s.RecordStats(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return statsText(days)
	}
	want := func(q StatsQuery, total, success, failed int64) {
		t.Helper()
		if got, w := stats(q), fmt.Sprintf("2024-03-01T00:00:00Z %d/%d/%d/0; ", total, success, failed); got != w {
			t.Fatalf("%+v: %s, want %s", q, got, w)
		}
	}
	kept, deleted := projects[0].ID, projects[1].ID
	want(StatsQuery{ProjectID: kept}, 6, 2, 2)

	if err := s.DeleteRecord(ctx, "r0-0"); err != nil {
		t.Fatal(err)
	}
	want(StatsQuery{PipelineID: pipelines[0].ID}, 2, 0, 1)
	want(StatsQuery{ProjectID: kept}, 5, 1, 2)

	if err := s.DeletePipeline(ctx, pipelines[1].ID); err != nil {
		t.Fatal(err)
	}
	want(StatsQuery{PipelineID: pipelines[1].ID}, 0, 0, 0)
	want(StatsQuery{ProjectID: kept}, 2, 0, 1)

	if err := s.DeleteProject(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	want(StatsQuery{ProjectID: deleted}, 0, 0, 0)
	want(StatsQuery{PipelineID: pipelines[2].ID}, 0, 0, 0)
	want(StatsQuery{ProjectID: kept}, 2, 0, 1)
	var ids []string
	for id, d := range counterDocs(t, s) {
		if d.ProjectID != kept || d.PipelineID == pipelines[1].ID {
			ids = append(ids, id)
		}
	}
	if len(ids) > 0 {
		t.Fatalf("counter documents of deleted pipelines and projects are left: %v", ids)
	}
}

// TestRebuildCountsRepairs: a rebuild counts records the counters missed (written
// around the store), corrects wrong counts, deletes documents that count nothing
// and sets the records' counted levels, so a later finish counts once.
func TestRebuildCountsRepairs(t *testing.T) {
	s, _ := openCountersStore(t)
	ctx := context.Background()
	start := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	if err := s.CreateRecord(ctx, &model.Record{ID: "counted", ProjectID: "proj", PipelineID: "p", Status: model.StatusSuccess, StartTime: start}); err != nil {
		t.Fatal(err)
	}
	missed := &model.Record{ID: "missed", ProjectID: "proj", PipelineID: "p", Status: model.StatusRunning,
		StartTime: start.Add(time.Hour), StartBucket: StartBucket(start.Add(time.Hour))}
	if _, err := s.records.InsertOne(ctx, missed); err != nil {
		t.Fatal(err)
	}
	wrong := bson.D{{Key: "$inc", Value: counts{Failed: 3}.incFields(bucketKey(StartBucket(start)), 1)}}
	if _, err := s.recordCounts().UpdateOne(ctx, bson.D{{Key: "_id", Value: counterScope{scopePipeline, "p"}.docID(utcDay(start.Unix()))}}, wrong); err != nil {
		t.Fatal(err)
	}
	stale := counterScope{scopeProject, "gone"}.docID(0)
	if _, err := s.recordCounts().InsertOne(ctx, bson.D{{Key: "_id", Value: stale}, {Key: "scope", Value: scopeProject}, {Key: "projectID", Value: "gone"}}); err != nil {
		t.Fatal(err)
	}

	if err := s.RebuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishRecord(ctx, "missed", model.StatusAborted, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, q := range []StatsQuery{{PipelineID: "p"}, {ProjectID: "proj"}} {
		q.From, q.To = start.Truncate(24*time.Hour), start.Truncate(24*time.Hour).AddDate(0, 0, 1)
		got, err := s.RecordStats(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if want := "2024-03-01T00:00:00Z 2/1/0/1; "; statsText(got) != want {
			t.Fatalf("%+v: %s, want %s", q, statsText(got), want)
		}
	}
	if ids := slices.Sorted(maps.Keys(counterDocs(t, s))); len(ids) != 2 || slices.Contains(ids, stale) {
		t.Fatalf("counter documents after the rebuild: %v", ids)
	}
}

// TestRecordStatsEdgesInsideBuckets: a range whose edges are not on 15-minute edges
// counts exactly the records that started inside it.
func TestRecordStatsEdgesInsideBuckets(t *testing.T) {
	s, mongoWay := openCountersStore(t)
	ctx := context.Background()
	at := func(clock string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, "2024-03-01T"+clock+"Z")
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for i, clock := range []string{"09:59:59", "10:00:00", "10:07:30", "10:14:59.999", "10:15:00", "10:20:00", "10:30:00", "23:59:59"} {
		r := &model.Record{ID: fmt.Sprintf("r%d", i), ProjectID: "proj", PipelineID: "p", Status: model.StatusSuccess, StartTime: at(clock)}
		if err := s.CreateRecord(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		from, to string
		want     int64
	}{
		{"10:07:30", "10:20:00", 3},         // 10:07:30, 10:14:59.999, 10:15:00
		{"10:07:30.001", "10:20:00.001", 3}, // 10:14:59.999, 10:15:00, 10:20:00
		{"10:00:00", "10:15:00", 3},         // aligned: from the counters alone
		{"10:00:01", "10:14:59.999", 1},     // both edges in one bucket
		{"09:59:59", "10:30:00.5", 7},
		{"00:00:00", "23:59:59.5", 8},
	} {
		q := StatsQuery{PipelineID: "p", From: at(c.from), To: at(c.to)}
		for _, st := range []*Store{s, mongoWay} {
			got, err := st.RecordStats(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Total != c.want || got[0].Success != c.want {
				t.Fatalf("from %s to %s: %s, want %d", c.from, c.to, statsText(got), c.want)
			}
		}
	}
}

// TestConcurrentFinishesCountOnce: finishes of one record run by several callers at
// once count it once.
func TestConcurrentFinishesCountOnce(t *testing.T) {
	s, _ := openCountersStore(t)
	ctx := context.Background()
	start := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	r := &model.Record{ID: "r", ProjectID: "proj", PipelineID: "p", Status: model.StatusRunning, StartTime: start}
	if err := s.CreateRecord(ctx, r); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := s.FinishRecord(ctx, "r", model.StatusSuccess, "", time.Now()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := s.RecordStats(ctx, StatsQuery{PipelineID: "p", From: start.Truncate(24 * time.Hour), To: start.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if want := "2024-03-01T00:00:00Z 1/1/0/0; "; statsText(got) != want {
		t.Fatalf("%s, want %s", statsText(got), want)
	}
}

// Packed bucket counts add up lane by lane, also with changes that take records out,
// up to the largest count a lane holds.
func TestPackedCounts(t *testing.T) {
	const most = 1<<countLaneBits - 1
	for _, tc := range []struct{ start, change counts }{
		{counts{}, counts{Total: 1}},
		{counts{Total: 5, Success: 3, Failed: 1, Aborted: 1}, counts{Success: -1, Failed: 1}},
		{counts{Total: most, Success: most, Failed: most, Aborted: most}, counts{Total: -most, Aborted: -1}},
		{counts{Total: 2, Aborted: 2}, counts{Total: most - 2, Success: most, Failed: most, Aborted: most - 2}},
	} {
		want := tc.start
		want.plus(tc.change)
		if got := unpackCounts(tc.start.pack() + tc.change.pack()); got != want {
			t.Errorf("%+v + %+v = %+v, want %+v", tc.start, tc.change, got, want)
		}
		raw, err := bson.Marshal(bson.D{{Key: "c", Value: want}})
		if err != nil {
			t.Fatal(err)
		}
		var back struct{ C counts }
		if err := bson.Unmarshal(raw, &back); err != nil || back.C != want {
			t.Errorf("%+v through BSON: %+v %v", want, back.C, err)
		}
	}
}

// TestRepairDerived: records whose derived update a stop cut short (written, not
// counted: a create never counted, a finish counted only as started) are caught
// up by RepairDerived, once: a second pass finds nothing, and the stats and the
// pipeline's newest records then show them.
func TestRepairDerived(t *testing.T) {
	s, _ := openCountersStore(t)
	ctx := context.Background()
	start := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	counted := &model.Record{ID: "counted", ProjectID: "proj", PipelineID: "p", Status: model.StatusRunning, StartTime: start}
	if err := s.CreateRecord(ctx, counted); err != nil {
		t.Fatal(err)
	}
	s.awaitDerived(ctx)
	// As a stop would leave them: a record inserted without its update, and the
	// counted one finished in the records alone.
	lost := &model.Record{ID: "lost", ProjectID: "proj", PipelineID: "p", Status: model.StatusFailed, StartTime: start.Add(time.Minute),
		StartBucket: StartBucket(start.Add(time.Minute)), CountedLevel: countedNothing}
	if _, err := s.records.InsertOne(ctx, lost); err != nil {
		t.Fatal(err)
	}
	if _, err := s.records.UpdateOne(ctx, bson.D{{Key: "_id", Value: "counted"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: model.StatusSuccess}}}}); err != nil {
		t.Fatal(err)
	}
	q := StatsQuery{PipelineID: "p", From: start.Truncate(24 * time.Hour), To: start.Truncate(24*time.Hour).AddDate(0, 0, 1)}
	stats := func() string {
		got, err := s.RecordStats(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return statsText(got)
	}
	if got := stats(); got != "2024-03-01T00:00:00Z 1/0/0/0; " {
		t.Fatalf("before the repair: %s, want the running record counted as started only", got)
	}
	n, err := s.RepairDerived(ctx)
	if err != nil || n != 2 {
		t.Fatalf("RepairDerived = %d, %v; want 2 records repaired", n, err)
	}
	if n, err := s.RepairDerived(ctx); err != nil || n != 0 {
		t.Fatalf("a second RepairDerived = %d, %v; want nothing left to repair", n, err)
	}
	if got, want := stats(), "2024-03-01T00:00:00Z 2/1/1/0; "; got != want {
		t.Fatalf("after the repair: %s, want %s", got, want)
	}
	all, _ := shelfToRead(recentAll, recentKept)
	cards, err := s.readCards(ctx, nil, []string{all.id("p")})
	if err != nil || cards[all.id("p")] == nil {
		t.Fatalf("the pipeline's newest records: %v (%v)", cards, err)
	}
	var onCard []string
	for _, r := range cards[all.id("p")].Records {
		onCard = append(onCard, r.ID+":"+r.Status)
	}
	if !slices.Contains(onCard, "lost:Failed") || !slices.Contains(onCard, "counted:Success") {
		t.Fatalf("records on the card %v, want both as they ended", onCard)
	}
}
