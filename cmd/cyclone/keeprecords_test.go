package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/cycloneci/cyclone/internal/app"
	"github.com/cycloneci/cyclone/internal/devstack"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/secrets"
	"github.com/cycloneci/cyclone/internal/store"
)

// parseKeepRecords parses a command line as main does and returns the commands'
// --keep-records.
func parseKeepRecords(t *testing.T, args ...string) (dev, server int64) {
	t.Helper()
	var c cli
	k, err := kong.New(&c, kong.Name("cyclone"), kong.DefaultEnvars("CYCLONE"),
		kong.Exit(func(int) { t.Fatalf("cyclone %v exited", args) }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Parse(args); err != nil {
		t.Fatalf("cyclone %v: %v", args, err)
	}
	return c.Dev.KeepRecords, c.Server.KeepRecords
}

// TestKeepRecordsReachesRotation: --keep-records defaults to 50 on the commands that
// rotate (dev, server), is set by its flag and its environment variable, and the
// value parsed is what the rotation loop (app.StartRotation, which both commands'
// Run start with it) keeps of a pipeline.
func TestKeepRecordsReachesRotation(t *testing.T) {
	if dev, _ := parseKeepRecords(t, "dev"); dev != 50 {
		t.Errorf("cyclone dev keeps %d records by default, want 50", dev)
	}
	if _, server := parseKeepRecords(t, "server"); server != 50 {
		t.Errorf("cyclone server keeps %d records by default, want 50", server)
	}
	if _, server := parseKeepRecords(t, "server", "--keep-records", "7"); server != 7 {
		t.Errorf("cyclone server --keep-records 7 keeps %d", server)
	}
	t.Setenv("CYCLONE_KEEP_RECORDS", "3")
	keep, _ := parseKeepRecords(t, "dev")
	if keep != 3 {
		t.Fatalf("CYCLONE_KEEP_RECORDS=3 cyclone dev keeps %d", keep)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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
	st, err := store.Open(ctx, m.URI(), "cyclone", box)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(context.Background())
	p := &model.Pipeline{Name: "kept", ProjectID: "proj", Build: &model.Build{}}
	if err := st.CreatePipeline(ctx, p); err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Hour)
	for i := range 6 {
		r := &model.Record{ID: fmt.Sprintf("r%d", i), PipelineID: p.ID, ProjectID: "proj", Status: model.StatusSuccess,
			StageStatus: &model.StageStatus{}, StartTime: start.Add(time.Duration(i) * time.Minute)}
		if err := st.CreateRecord(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// The loop's first pass runs at once; the next would come a minute later.
	app.StartRotation(ctx, st, keep, slog.New(slog.DiscardHandler))
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, total, err := st.ListRecords(ctx, p.ID, store.ListOptions{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if total == keep {
			break
		}
		if total < keep || time.Now().After(deadline) {
			t.Fatalf("the rotation loop left %d of 6 records, want %d", total, keep)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
