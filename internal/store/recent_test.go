package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// RecentRecordsOf (one query for many pipelines on FerretDB) answers what
// RecentRecords answers pipeline by pipeline (the MongoDB path), with and without a
// status; records inserted in bulk by InsertRecords carry their start bucket.
func TestRecentRecordsOf(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	base := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	statuses := []string{model.StatusSuccess, model.StatusFailed, model.StatusSuccess, model.StatusRunning}
	var recs []*model.Record
	for p, n := range map[string]int{"pa": 7, "pb": 2, "pc": 0, "other": 5} {
		for i := range n {
			recs = append(recs, &model.Record{ID: fmt.Sprintf("%s-%d", p, i), PipelineID: p, ProjectID: "proj",
				Status: statuses[i%len(statuses)], StageStatus: &model.StageStatus{},
				StartTime: base.Add(time.Duration((i*37)%11) * time.Hour).Add(time.Duration(i) * time.Second)})
		}
	}
	if err := st.InsertRecords(ctx, recs); err != nil {
		t.Fatal(err)
	}
	stats, err := st.RecordStats(ctx, store.StatsQuery{ProjectID: "proj", From: base.Add(-12 * time.Hour), To: base.Add(12 * time.Hour)})
	if err != nil || len(stats) != 1 || stats[0].Total != int64(len(recs)) {
		t.Fatalf("stats of bulk-inserted records: %+v %v", stats, err)
	}
	pipelines := []string{"pa", "pb", "pc", "pa"}
	for _, status := range []string{"", model.StatusSuccess, model.StatusFailed} {
		got, err := st.RecentRecordsOf(ctx, pipelines, status, 3)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got["other"]; ok {
			t.Fatalf("status %q: a pipeline not asked for is in the answer", status)
		}
		for _, p := range pipelines {
			want, err := st.RecentRecords(ctx, p, status, 3)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := ids(got[p]), ids(want); !slices.Equal(g, w) {
				t.Fatalf("status %q, pipeline %s: %v, want %v", status, p, g, w)
			}
		}
		if len(got["pa"]) == 0 || len(got["pc"]) != 0 {
			t.Fatalf("status %q: pa %v, pc %v", status, ids(got["pa"]), ids(got["pc"]))
		}
	}
	if got, _ := st.RecentRecordsOf(ctx, []string{"pa"}, "", 3); len(got["pa"]) != 3 || got["pa"][0].StartTime.Before(got["pa"][1].StartTime) {
		t.Fatalf("newest first, 3 of 7: %v", ids(got["pa"]))
	}
}

// openMongoWay opens a second store on the database at uri that reads as it does on
// MongoDB (see store.UseMongoDBPaths).
func openMongoWay(t *testing.T, uri string) *store.Store {
	t.Helper()
	ctx := context.Background()
	mongoWay, err := store.Open(ctx, uri, "cyclone", newBox(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mongoWay.Close(ctx) })
	store.UseMongoDBPaths(mongoWay)
	return mongoWay
}

// On FerretDB the store reads stats and a page's recent records its own way (counting
// in Go, one query for all pipelines); those answer exactly what the MongoDB way
// ($group, one query per pipeline) answers, which runs here too when forced.
func TestFerretDBPathsMatchMongoDBPaths(t *testing.T) {
	st, uri := startStore(t)
	ctx := context.Background()
	mongoWay := openMongoWay(t, uri)
	if !store.ScansQueries(st) || store.ScansQueries(mongoWay) {
		t.Fatal("the embedded FerretDB is not recognised, or the MongoDB way is not forced")
	}

	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	statuses := []string{model.StatusSuccess, model.StatusFailed, model.StatusAborted, model.StatusRunning, model.StatusPending}
	var recs []*model.Record
	for i := range 400 {
		p := fmt.Sprintf("p%d", i%4)
		recs = append(recs, &model.Record{ID: fmt.Sprintf("r%03d", i), PipelineID: p, ProjectID: "proj",
			Status: statuses[(i*7)%len(statuses)], StageStatus: &model.StageStatus{},
			StartTime: base.Add(time.Duration(i*i%(40*24*60)) * time.Minute)})
	}
	if err := st.InsertRecords(ctx, recs); err != nil {
		t.Fatal(err)
	}
	berlin := zone(t, "Europe/Berlin") // DST starts on March 29 2026
	for _, q := range []store.StatsQuery{
		{ProjectID: "proj", From: base, To: base.Add(40 * 24 * time.Hour)},
		{ProjectID: "proj", From: base.Add(90 * time.Minute), To: base.Add(31 * 24 * time.Hour), Location: berlin},
		{PipelineID: "p2", From: base, To: base.Add(40 * 24 * time.Hour), Location: zone(t, "Asia/Kolkata")},
	} {
		got, err := st.RecordStats(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		want, err := mongoWay.RecordStats(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, d := range got {
			total += d.Total
		}
		if total == 0 || len(got) != len(want) {
			t.Fatalf("%+v: %d days (%d records), want %d days", q, len(got), total, len(want))
		}
		for i := range got {
			if !got[i].Start.Equal(want[i].Start) || got[i].Total != want[i].Total || got[i].Success != want[i].Success ||
				got[i].Failed != want[i].Failed || got[i].Aborted != want[i].Aborted {
				t.Fatalf("%+v, day %d: %+v, want %+v", q, i, got[i], want[i])
			}
		}
	}
	pipelines := []string{"p0", "p1", "p3", "none"}
	for _, status := range []string{"", model.StatusFailed} {
		got, err := st.RecentRecordsOf(ctx, pipelines, status, 5)
		if err != nil {
			t.Fatal(err)
		}
		want, err := mongoWay.RecentRecordsOf(ctx, pipelines, status, 5)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pipelines {
			if g, w := ids(got[p]), ids(want[p]); !slices.Equal(g, w) || (p != "none" && len(g) != 5) {
				t.Fatalf("status %q, pipeline %s: %v, want %v", status, p, g, w)
			}
		}
	}
}
