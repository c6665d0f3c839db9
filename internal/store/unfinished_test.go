package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/model"
)

// TestListUnfinishedRecordsPagesThroughTies: paging by the last record's (start
// time, ID) visits every unfinished record once, in the order (start time, ID), even
// where records that started at the same instant straddle a page boundary; finished
// records and those that started at or after `before` are left out.
func TestListUnfinishedRecordsPagesThroughTies(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	tied := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	before := tied.Add(time.Minute)
	create := func(id, status string, start time.Time) {
		t.Helper()
		r := &model.Record{ID: id, PipelineID: "p", ProjectID: "proj", Status: status,
			StageStatus: &model.StageStatus{}, StartTime: start}
		if err := st.CreateRecord(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Created out of order: the store sorts.
	create("tied-e", model.StatusRunning, tied)
	create("late", model.StatusRunning, tied.Add(time.Second))
	create("tied-b", model.StatusPending, tied)
	create("tied-d", model.StatusRunning, tied)
	create("early", model.StatusRunning, tied.Add(-time.Second))
	create("tied-a", model.StatusRunning, tied)
	create("tied-c", model.StatusRunning, tied)
	create("tied-done", model.StatusSuccess, tied)
	create("too-young", model.StatusRunning, before)
	want := []string{"early", "tied-a", "tied-b", "tied-c", "tied-d", "tied-e", "late"}

	var got []string
	var after time.Time
	var afterID string
	for page := 0; ; page++ {
		if page > len(want) {
			t.Fatalf("still paging after %d pages: %v", page, got)
		}
		recs, err := st.ListUnfinishedRecords(ctx, after, afterID, before, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(recs)...)
		if len(recs) < 2 {
			break
		}
		last := recs[len(recs)-1]
		after, afterID = last.StartTime, last.ID
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged through %v, want %v", got, want)
	}

	// From inside the tie: the rest of it, then what started later.
	recs, err := st.ListUnfinishedRecords(ctx, tied, "tied-b", before, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(recs), []string{"tied-c", "tied-d", "tied-e", "late"}; !slices.Equal(got, want) {
		t.Fatalf("after (tie, tied-b): %v, want %v", got, want)
	}
}
