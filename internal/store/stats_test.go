package store_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"
	_ "time/tzdata"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

type seed struct {
	project, pipeline, status, start string
}

func seedRecords(t *testing.T, st *store.Store, seeds []seed) {
	t.Helper()
	for i, s := range seeds {
		r := &model.Record{ID: fmt.Sprintf("rec-%d-%s", i, s.start), ProjectID: s.project, PipelineID: s.pipeline,
			Status: s.status, StartTime: utc(s.start)}
		if err := st.CreateRecord(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

// day is the expected DayStats in a compact form.
type day struct {
	start                           string
	total, success, failed, aborted int64
}

func wantDays(t *testing.T, st *store.Store, q store.StatsQuery, want []day) {
	t.Helper()
	got, err := st.RecordStats(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	var g []day
	for _, d := range got {
		g = append(g, day{d.Start.UTC().Format(time.RFC3339), d.Total, d.Success, d.Failed, d.Aborted})
	}
	if !reflect.DeepEqual(g, want) {
		t.Fatalf("days\n got %v\nwant %v", g, want)
	}
}

func TestRecordStats(t *testing.T) {
	st, _ := startStore(t)
	seedRecords(t, st, []seed{
		{"p1", "a", model.StatusSuccess, "2024-03-01T10:00:00Z"},
		{"p1", "a", model.StatusFailed, "2024-03-01T23:30:00Z"},
		{"p1", "a", model.StatusAborted, "2024-03-03T00:00:00Z"},
		{"p1", "a", model.StatusRunning, "2024-03-03T12:00:00Z"},
		{"p1", "b", model.StatusSuccess, "2024-03-01T05:00:00Z"},
		{"p1", "b", model.StatusSuccess, "2024-02-29T23:59:59Z"}, // before the UTC range
		{"p1", "b", model.StatusSuccess, "2024-03-04T00:00:00Z"}, // at its exclusive end
		{"p2", "c", model.StatusSuccess, "2024-03-01T10:00:00Z"}, // another project
		// Kathmandu is UTC+05:45: its midnight is at 18:15 UTC.
		{"p3", "k", model.StatusSuccess, "2024-03-01T18:14:59Z"},
		{"p3", "k", model.StatusFailed, "2024-03-01T18:15:00Z"},
		// New York starts DST on 2024-03-10: that day has 23 hours.
		{"p4", "n", model.StatusSuccess, "2024-03-11T03:30:00Z"}, // 23:30 EDT on the 10th
		{"p4", "n", model.StatusFailed, "2024-03-11T04:15:00Z"},  // 00:15 EDT on the 11th
	})
	march := func(q store.StatsQuery, loc *time.Location) store.StatsQuery {
		q.From, q.To, q.Location = time.Date(2024, 3, 1, 0, 0, 0, 0, loc), time.Date(2024, 3, 4, 0, 0, 0, 0, loc), loc
		return q
	}
	shanghai := zone(t, "Asia/Shanghai")

	t.Run("project, UTC, a day without records", func(t *testing.T) {
		wantDays(t, st, march(store.StatsQuery{ProjectID: "p1"}, time.UTC), []day{
			{"2024-03-01T00:00:00Z", 3, 2, 1, 0},
			{"2024-03-02T00:00:00Z", 0, 0, 0, 0},
			{"2024-03-03T00:00:00Z", 2, 0, 0, 1},
		})
	})
	t.Run("pipeline", func(t *testing.T) {
		wantDays(t, st, march(store.StatsQuery{PipelineID: "a"}, time.UTC), []day{
			{"2024-03-01T00:00:00Z", 2, 1, 1, 0},
			{"2024-03-02T00:00:00Z", 0, 0, 0, 0},
			{"2024-03-03T00:00:00Z", 2, 0, 0, 1},
		})
	})
	t.Run("Asia/Shanghai moves 23:30 UTC to the next day", func(t *testing.T) {
		wantDays(t, st, march(store.StatsQuery{ProjectID: "p1"}, shanghai), []day{
			{"2024-02-29T16:00:00Z", 3, 3, 0, 0}, // 23:59:59 UTC on the 29th is 07:59:59 on the 1st
			{"2024-03-01T16:00:00Z", 1, 0, 1, 0},
			{"2024-03-02T16:00:00Z", 2, 0, 0, 1},
		})
	})
	t.Run("UTC+05:45", func(t *testing.T) {
		kathmandu := zone(t, "Asia/Kathmandu")
		q := store.StatsQuery{PipelineID: "k", Location: kathmandu,
			From: time.Date(2024, 3, 1, 0, 0, 0, 0, kathmandu), To: time.Date(2024, 3, 3, 0, 0, 0, 0, kathmandu)}
		wantDays(t, st, q, []day{
			{"2024-02-29T18:15:00Z", 1, 1, 0, 0},
			{"2024-03-01T18:15:00Z", 1, 0, 1, 0},
		})
	})
	t.Run("DST change", func(t *testing.T) {
		ny := zone(t, "America/New_York")
		q := store.StatsQuery{PipelineID: "n", Location: ny,
			From: time.Date(2024, 3, 9, 0, 0, 0, 0, ny), To: time.Date(2024, 3, 12, 0, 0, 0, 0, ny)}
		wantDays(t, st, q, []day{
			{"2024-03-09T05:00:00Z", 0, 0, 0, 0},
			{"2024-03-10T05:00:00Z", 1, 1, 0, 0},
			{"2024-03-11T04:00:00Z", 1, 0, 1, 0},
		})
	})
	t.Run("a day whose midnight does not exist", func(t *testing.T) {
		// Chile skips 2024-09-08 00:00-01:00: the day begins at 01:00 -03.
		santiago := zone(t, "America/Santiago")
		q := store.StatsQuery{PipelineID: "none", Location: santiago,
			From: time.Date(2024, 9, 7, 0, 0, 0, 0, santiago), To: time.Date(2024, 9, 9, 0, 0, 0, 0, santiago)}
		wantDays(t, st, q, []day{
			{"2024-09-07T04:00:00Z", 0, 0, 0, 0},
			{"2024-09-08T04:00:00Z", 0, 0, 0, 0},
		})
	})
	t.Run("partial days are whole entries, edges exact", func(t *testing.T) {
		q := store.StatsQuery{ProjectID: "p1", From: utc("2024-03-01T10:00:00Z"), To: utc("2024-03-03T00:00:01Z")}
		wantDays(t, st, q, []day{
			{"2024-03-01T00:00:00Z", 2, 1, 1, 0}, // 05:00 is before From
			{"2024-03-02T00:00:00Z", 0, 0, 0, 0},
			{"2024-03-03T00:00:00Z", 1, 0, 0, 1}, // 12:00 is after To
		})
	})
	t.Run("refusals", func(t *testing.T) {
		ctx := context.Background()
		from := utc("2024-01-01T00:00:00Z")
		for name, q := range map[string]store.StatsQuery{
			"no scope":   {From: from, To: from.Add(time.Hour)},
			"both":       {ProjectID: "p1", PipelineID: "a", From: from, To: from.Add(time.Hour)},
			"too long":   {ProjectID: "p1", From: from, To: from.AddDate(1, 0, 1)},
			"empty span": {ProjectID: "p1", From: from, To: from},
		} {
			days, err := st.RecordStats(ctx, q)
			if name == "empty span" {
				if err != nil || len(days) != 0 {
					t.Errorf("%s: %v, %v", name, days, err)
				}
			} else if err == nil {
				t.Errorf("%s: no error", name)
			}
		}
	})
}

func TestStatsDays(t *testing.T) {
	shanghai := zone(t, "Asia/Shanghai")
	cases := []struct {
		name     string
		from, to time.Time
		loc      *time.Location
		want     int
	}{
		{"one second", utc("2024-03-01T00:00:00Z"), utc("2024-03-01T00:00:01Z"), time.UTC, 1},
		{"one whole day", utc("2024-03-01T00:00:00Z"), utc("2024-03-02T00:00:00Z"), time.UTC, 1},
		{"spec style 00:00:00 to 23:59:59", utc("2024-03-01T00:00:00Z"), utc("2024-03-03T23:59:59Z").Add(time.Second), time.UTC, 3},
		{"leap year", utc("2024-01-01T00:00:00Z"), utc("2025-01-01T00:00:00Z"), time.UTC, 366},
		{"same span in another zone", utc("2024-03-01T00:00:00Z"), utc("2024-03-02T00:00:00Z"), shanghai, 2},
		{"reversed", utc("2024-03-02T00:00:00Z"), utc("2024-03-01T00:00:00Z"), time.UTC, 0},
	}
	for _, tc := range cases {
		if got := store.StatsDays(tc.from, tc.to, tc.loc); got != tc.want {
			t.Errorf("%s: %d days, want %d", tc.name, got, tc.want)
		}
	}
}

func TestStatsStartBucket(t *testing.T) {
	for in, want := range map[string]int64{
		"2024-03-01T10:07:30Z": utc("2024-03-01T10:00:00Z").Unix(),
		"2024-03-01T10:15:00Z": utc("2024-03-01T10:15:00Z").Unix(),
		"2024-03-01T10:29:59Z": utc("2024-03-01T10:15:00Z").Unix(),
		"1969-12-31T23:59:59Z": -900,
	} {
		if got := store.StartBucket(utc(in)); got != want {
			t.Errorf("StartBucket(%s) = %d, want %d", in, got, want)
		}
	}

	// CreateRecord writes the bucket, and a store opened on records written before
	// the bucket existed fills it in.
	st, uri := startStore(t)
	ctx := context.Background()
	seedRecords(t, st, []seed{{"p", "a", model.StatusSuccess, "2024-03-01T10:07:30Z"}})
	if doc := rawDoc(t, uri, "records", "rec-0-2024-03-01T10:07:30Z"); doc["startBucket"] != utc("2024-03-01T10:00:00Z").Unix() {
		t.Fatalf("startBucket %v (%T)", doc["startBucket"], doc["startBucket"])
	}
	c, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	db := c.Database("cyclone")
	if _, err := db.Collection("records").InsertOne(ctx, bson.D{
		{Key: "_id", Value: "old"}, {Key: "projectID", Value: "p"}, {Key: "pipelineID", Value: "a"},
		{Key: "status", Value: model.StatusFailed}, {Key: "startTime", Value: utc("2024-03-01T23:59:00Z")},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection("migrations").DeleteMany(ctx, bson.D{}); err != nil {
		t.Fatal(err)
	}
	st2, err := store.Open(ctx, uri, "cyclone", newBox(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close(ctx)
	if doc := rawDoc(t, uri, "records", "old"); doc["startBucket"] != utc("2024-03-01T23:45:00Z").Unix() {
		t.Fatalf("backfilled startBucket %v", doc["startBucket"])
	}
	wantDays(t, st2, store.StatsQuery{PipelineID: "a", From: utc("2024-03-01T00:00:00Z"), To: utc("2024-03-02T00:00:00Z")},
		[]day{{"2024-03-01T00:00:00Z", 2, 1, 1, 0}})
}
