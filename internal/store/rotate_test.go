package store

// Rotation deletes old records with their logs but keeps them counted in the stats;
// these tests read the store's internals (what a pass would count, the stats edges).

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/model"
)

// rotationFixture is a project of pipelines whose records carry logs.
type rotationFixture struct {
	t         *testing.T
	ferretWay *Store
	mongoWay  *Store
	pipelines map[string]string // name: ID
	day0      time.Time
}

const rotationProject = "proj"

func (f *rotationFixture) pipeline(name string) string {
	f.t.Helper()
	p := &model.Pipeline{Name: name, ProjectID: rotationProject, Build: &model.Build{}}
	if err := f.ferretWay.CreatePipeline(context.Background(), p); err != nil {
		f.t.Fatal(err)
	}
	f.pipelines[name] = p.ID
	return p.ID
}

// record creates record id of a pipeline with a stage log of one sealed chunk and
// a tail.
func (f *rotationFixture) record(pipeline, id, status string, start time.Time) {
	f.t.Helper()
	ctx := context.Background()
	r := &model.Record{ID: id, PipelineID: f.pipelines[pipeline], ProjectID: rotationProject, Status: status,
		StageStatus: &model.StageStatus{}, StartTime: start}
	if err := f.ferretWay.CreateRecord(ctx, r); err != nil {
		f.t.Fatal(err)
	}
	stream := logs.Stream{ProjectID: rotationProject, PipelineID: r.PipelineID, RecordID: id, Stage: model.StageUnitTest}
	chunk := &logs.Chunk{Stream: stream, Seq: 0, First: 0, Lines: []string{"line 0", "line 1"}, Attempt: 1}
	if err := f.ferretWay.InsertLogChunks(ctx, []*logs.Chunk{chunk}, false); err != nil {
		f.t.Fatal(err)
	}
	h := &logs.Head{Stream: stream, Chunks: 1, Sealed: 2, Tail: []string{"line 2"}, Lines: 3, Attempt: 1}
	if err := f.ferretWay.PutLogHead(ctx, h, 0); err != nil {
		f.t.Fatal(err)
	}
}

// hasLogs reports whether record id still has a log head and a log chunk.
func (f *rotationFixture) hasLogs(id string) (head, chunks bool) {
	f.t.Helper()
	ctx := context.Background()
	stream := logs.Stream{RecordID: id, Stage: model.StageUnitTest}
	h, err := f.ferretWay.GetLogHead(ctx, stream)
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	if err := f.ferretWay.LogChunks(ctx, stream, 0, 10, func(*logs.Chunk) error { n++; return nil }); err != nil {
		f.t.Fatal(err)
	}
	return h != nil, n > 0
}

// queries are the stats queries the fixture compares: whole UTC days, and ranges
// whose edges cut buckets holding rotated records, in UTC and in a DST zone.
func (f *rotationFixture) queries(scope counterScope) []StatsQuery {
	q := func(from, to time.Time, loc *time.Location) StatsQuery {
		sq := StatsQuery{From: from, To: to, Location: loc}
		if scope.kind == scopeProject {
			sq.ProjectID = scope.id
		} else {
			sq.PipelineID = scope.id
		}
		return sq
	}
	paris := mustZone(f.t, "Europe/Paris")
	return []StatsQuery{
		q(f.day0, f.day0.Add(5*24*time.Hour), nil),
		q(f.day0.Add(7*time.Minute), f.day0.Add(24*time.Hour+7*time.Minute+14*time.Second), nil),
		q(f.day0.Add(7*time.Minute+14*time.Second), f.day0.Add(4*24*time.Hour+time.Second), paris),
		q(f.day0.Add(-time.Hour), f.day0.Add(12*time.Hour+7*time.Minute), paris),
	}
}

// scopes are the project and its pipelines, by name.
func (f *rotationFixture) scopes() map[string]counterScope {
	out := map[string]counterScope{"project": {scopeProject, rotationProject}}
	for name, id := range f.pipelines {
		out["pipeline "+name] = counterScope{scopePipeline, id}
	}
	return out
}

// stats answers every query of every scope, as text, the FerretDB way; both ways
// must agree.
func (f *rotationFixture) stats() map[string]string {
	f.t.Helper()
	// Both are views of one database: each waits for its own updates only.
	f.ferretWay.awaitDerived(context.Background())
	f.mongoWay.awaitDerived(context.Background())
	out := map[string]string{}
	for name, scope := range f.scopes() {
		for i, q := range f.queries(scope) {
			key := fmt.Sprintf("%s, query %d", name, i)
			for way, s := range map[string]*Store{"FerretDB way": f.ferretWay, "MongoDB way": f.mongoWay} {
				days, err := s.RecordStats(context.Background(), q)
				if err != nil {
					f.t.Fatal(err)
				}
				if have, ok := out[key]; ok && have != statsText(days) {
					f.t.Fatalf("%s: %s answers\n%s\nthe other way\n%s", key, way, statsText(days), have)
				}
				out[key] = statsText(days)
			}
		}
	}
	return out
}

func (f *rotationFixture) wantStats(when string, want map[string]string) {
	f.t.Helper()
	got := f.stats()
	for _, key := range slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
	}) {
		if got[key] != want[key] {
			f.t.Errorf("%s, %s:\n got %s\nwant %s", when, key, got[key], want[key])
		}
	}
}

// recentIDs are the IDs of a pipeline's up to 10 newest records the pipeline list
// shows (from its cards).
func (f *rotationFixture) recentIDs(pipeline string) []string {
	f.t.Helper()
	items, _, err := f.ferretWay.ListPipelinesRecent(context.Background(), rotationProject, ListOptions{Limit: 100}, RecentCounts{All: 10})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, lp := range items {
		if lp.ID == f.pipelines[pipeline] {
			var ids []string
			for _, r := range lp.RecentRecords {
				ids = append(ids, r.ID)
			}
			return ids
		}
	}
	f.t.Fatalf("pipeline %s not listed", pipeline)
	return nil
}

func (f *rotationFixture) listedIDs(pipeline string) []string {
	f.t.Helper()
	recs, _, err := f.ferretWay.ListRecords(context.Background(), f.pipelines[pipeline], ListOptions{Limit: 100})
	if err != nil {
		f.t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	return ids
}

func TestRotationKeepsStatsAndDeletesLogs(t *testing.T) {
	ferretWay, mongoWay := openCountersStore(t)
	ctx := context.Background()
	f := &rotationFixture{t: t, ferretWay: ferretWay, mongoWay: mongoWay, pipelines: map[string]string{},
		day0: time.Now().UTC().Truncate(24 * time.Hour).Add(-4 * 24 * time.Hour)}
	f.pipeline("a")
	f.pipeline("b")
	f.pipeline("c")
	// Pipeline a: a0 oldest ... a11 newest, 6 hours apart, off the bucket edges. The
	// old a1 (Running) and a5 (Pending) are never rotated and count towards the kept.
	aStatus := []string{model.StatusSuccess, model.StatusRunning, model.StatusFailed, model.StatusAborted,
		model.StatusSuccess, model.StatusPending, model.StatusFailed, model.StatusSuccess,
		model.StatusSuccess, model.StatusFailed, model.StatusRunning, model.StatusSuccess}
	for i, status := range aStatus {
		f.record("a", fmt.Sprintf("a%d", i), status, f.day0.Add(time.Duration(i)*6*time.Hour+7*time.Minute+13*time.Second))
	}
	for i := range 6 {
		status := model.StatusSuccess
		if i%2 == 1 {
			status = model.StatusFailed
		}
		f.record("b", fmt.Sprintf("b%d", i), status, f.day0.Add(time.Duration(i)*5*time.Hour+3*time.Minute))
	}
	for i := range 2 {
		f.record("c", fmt.Sprintf("c%d", i), model.StatusSuccess, f.day0.Add(time.Duration(i)*time.Hour+8*time.Minute))
	}
	before := f.stats()
	days, err := ferretWay.RecordStats(ctx, f.queries(counterScope{scopeProject, rotationProject})[0])
	if err != nil {
		t.Fatal(err)
	}
	var total DayStats
	for _, d := range days {
		total.Total, total.Success, total.Failed, total.Aborted = total.Total+d.Total, total.Success+d.Success, total.Failed+d.Failed, total.Aborted+d.Aborted
	}
	if total != (DayStats{Total: 20, Success: 10, Failed: 6, Aborted: 1}) {
		t.Fatalf("the project counts %+v before rotation", total)
	}
	// The counters match the records before anything is rotated.
	for _, scope := range f.scopes() {
		for _, q := range f.queries(scope) {
			wantCountersMatchRecords(t, ferretWay, mongoWay, q)
		}
	}

	const keep = 4
	n, err := ferretWay.RotateRecords(ctx, keep)
	if err != nil || n != 8 {
		t.Fatalf("rotated %d records (%v), want 6 of a and 2 of b", n, err)
	}
	kept := map[string][]string{
		"a": {"a11", "a10", "a9", "a8", "a5", "a1"},
		"b": {"b5", "b4", "b3", "b2"},
		"c": {"c1", "c0"},
	}
	rotated := []string{"a0", "a2", "a3", "a4", "a6", "a7", "b0", "b1"}
	for name, ids := range kept {
		if got := f.listedIDs(name); !slices.Equal(got, ids) {
			t.Errorf("records of %s after rotation: %v, want %v", name, got, ids)
		}
		if got := f.recentIDs(name); !slices.Equal(got, ids) {
			t.Errorf("recent records of %s listed after rotation: %v, want %v", name, got, ids)
		}
		for _, id := range ids {
			if head, chunks := f.hasLogs(id); !head || !chunks {
				t.Errorf("kept record %s lost its logs: head %v, chunks %v", id, head, chunks)
			}
		}
	}
	for _, id := range rotated {
		if _, err := ferretWay.GetRecordByID(ctx, id); err != ErrNotFound {
			t.Errorf("rotated record %s: %v, want it gone", id, err)
		}
		if head, chunks := f.hasLogs(id); head || chunks {
			t.Errorf("rotated record %s kept logs: head %v, chunks %v", id, head, chunks)
		}
	}
	f.wantStats("after rotation", before)
	if err := ferretWay.RebuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	f.wantStats("after a rebuild", before)

	// A pass with nothing new counts no records and deletes none.
	if got, err := ferretWay.pipelinesToCount(ctx, slices.Collect(func(yield func(string) bool) {
		for _, id := range f.pipelines {
			yield(id)
		}
	}), keep); err != nil || len(got) != 0 {
		t.Fatalf("pipelines to count with nothing new: %v %v", got, err)
	}
	if n, err := ferretWay.RotateRecords(ctx, keep); err != nil || n != 0 {
		t.Fatalf("a second pass rotated %d (%v)", n, err)
	}

	// A new record within keep (c: 3 of 4) is noticed from the shelf without a
	// count; one beyond it (a) has the pipeline counted and its oldest finished one
	// rotated.
	f.record("c", "c2", model.StatusFailed, f.day0.Add(3*24*time.Hour))
	f.record("a", "a12", model.StatusAborted, f.day0.Add(3*24*time.Hour+time.Minute))
	got, err := ferretWay.pipelinesToCount(ctx, []string{f.pipelines["a"], f.pipelines["c"]}, keep)
	if err != nil || !slices.Equal(got, []string{f.pipelines["a"]}) {
		t.Fatalf("pipelines to count: %v (%v), want only a", got, err)
	}
	before = f.stats()
	if n, err := ferretWay.RotateRecords(ctx, keep); err != nil || n != 1 {
		t.Fatalf("rotated %d records (%v), want a8", n, err)
	}
	if _, err := ferretWay.GetRecordByID(ctx, "a8"); err != ErrNotFound {
		t.Fatalf("a8 not rotated: %v", err)
	}
	f.wantStats("after rotating a new record's predecessor", before)

	// A record deleted on request leaves the stats (rotated ones stay).
	if err := ferretWay.DeleteRecord(ctx, "c2"); err != nil {
		t.Fatal(err)
	}
	days, err = ferretWay.RecordStats(ctx, StatsQuery{PipelineID: f.pipelines["c"], From: f.day0, To: f.day0.Add(5 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var cTotal int64
	for _, d := range days {
		cTotal += d.Total
	}
	if cTotal != 2 {
		t.Fatalf("pipeline c counts %d records after deleting c2, want 2", cTotal)
	}

	// A deleted pipeline's records, rotated ones too, leave its project's stats:
	// the project then counts what its pipelines a and c count.
	if err := ferretWay.DeletePipeline(ctx, f.pipelines["b"]); err != nil {
		t.Fatal(err)
	}
	delete(f.pipelines, "b")
	checkProjectIsSum := func(when string) {
		t.Helper()
		for _, way := range []*Store{ferretWay, mongoWay} {
			projectQueries := f.queries(counterScope{scopeProject, rotationProject})
			for i, pq := range projectQueries {
				project, err := way.RecordStats(ctx, pq)
				if err != nil {
					t.Fatal(err)
				}
				for _, name := range []string{"a", "c"} {
					pl, err := way.RecordStats(ctx, f.queries(counterScope{scopePipeline, f.pipelines[name]})[i])
					if err != nil {
						t.Fatal(err)
					}
					for d := range project {
						project[d].Total -= pl[d].Total
						project[d].Success -= pl[d].Success
						project[d].Failed -= pl[d].Failed
						project[d].Aborted -= pl[d].Aborted
					}
				}
				for _, d := range project {
					if d != (DayStats{Start: d.Start}) {
						t.Errorf("%s, query %d: the project counts more than its pipelines: %+v", when, i, d)
					}
				}
			}
		}
	}
	checkProjectIsSum("after deleting pipeline b")
	if err := ferretWay.RebuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	checkProjectIsSum("after deleting pipeline b and a rebuild")
}

// TestRotateRecordsOnlyFinished: a pipeline whose old records are all unfinished
// loses none of them, however small keep is.
func TestRotateRecordsOnlyFinished(t *testing.T) {
	ferretWay, mongoWay := openCountersStore(t)
	ctx := context.Background()
	f := &rotationFixture{t: t, ferretWay: ferretWay, mongoWay: mongoWay, pipelines: map[string]string{},
		day0: time.Now().UTC().Truncate(24 * time.Hour)}
	f.pipeline("u")
	for i, status := range []string{model.StatusRunning, model.StatusPending, model.StatusRunning, model.StatusSuccess} {
		f.record("u", fmt.Sprintf("u%d", i), status, f.day0.Add(time.Duration(i)*time.Minute))
	}
	n, err := mongoWay.RotateRecords(ctx, 1)
	if err != nil || n != 0 {
		t.Fatalf("rotated %d (%v), want none: the newest is kept, the older ones are unfinished", n, err)
	}
	if got := f.listedIDs("u"); !slices.Equal(got, []string{"u3", "u2", "u1", "u0"}) {
		t.Fatalf("records after rotation: %v", got)
	}
	// Once one of them ends, the next pass rotates it, though nothing new came.
	if err := mongoWay.FinishRecord(ctx, "u2", model.StatusFailed, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if n, err := mongoWay.RotateRecords(ctx, 1); err != nil || n != 1 {
		t.Fatalf("rotated %d (%v), want the finished u2", n, err)
	}
	if got := f.listedIDs("u"); !slices.Equal(got, []string{"u3", "u1", "u0"}) {
		t.Fatalf("records after u2 ended: %v", got)
	}
}

// TestDeleteOrphanLogsWatchesDeletedRecords: after its first full sweep, a pass
// reads only the logs of records this process deleted.
func TestDeleteOrphanLogsWatchesDeletedRecords(t *testing.T) {
	ferretWay, mongoWay := openCountersStore(t)
	ctx := context.Background()
	f := &rotationFixture{t: t, ferretWay: ferretWay, mongoWay: mongoWay, pipelines: map[string]string{}, day0: time.Now().UTC()}
	f.pipeline("o")
	f.record("o", "kept", model.StatusSuccess, f.day0)
	f.record("o", "deleted", model.StatusAborted, f.day0)
	if n, err := ferretWay.DeleteOrphanLogs(ctx, 0); err != nil || n != 0 {
		t.Fatalf("first sweep deleted the logs of %d records (%v)", n, err)
	}
	if err := ferretWay.DeleteRecord(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	// The aborted record's stage writes its last lines after the deletion, and so
	// does a record another server deleted.
	for _, id := range []string{"deleted", "elsewhere"} {
		h := &logs.Head{Stream: logs.Stream{RecordID: id, PipelineID: f.pipelines["o"], Stage: model.StageUnitTest}, Tail: []string{"late"}, Lines: 1, Attempt: 1}
		if err := ferretWay.PutLogHead(ctx, h, 0); err != nil {
			t.Fatal(err)
		}
	}
	n, err := ferretWay.DeleteOrphanLogs(ctx, 0)
	if err != nil || n != 1 {
		t.Fatalf("deleted the logs of %d records (%v), want the deleted record's only", n, err)
	}
	for id, want := range map[string]bool{"kept": true, "deleted": false, "elsewhere": true} {
		if head, _ := f.hasLogs(id); head != want {
			t.Errorf("log head of %s present = %v, want %v", id, head, want)
		}
	}
	// The next full sweep (another process's store here) finds the other orphan.
	if n, err := mongoWay.DeleteOrphanLogs(ctx, 0); err != nil || n != 1 {
		t.Fatalf("a full sweep deleted the logs of %d records (%v), want 1", n, err)
	}
	if head, _ := f.hasLogs("elsewhere"); head {
		t.Fatal("the full sweep left an orphan log")
	}
}
