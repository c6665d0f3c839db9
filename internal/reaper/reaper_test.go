package reaper_test

import (
	"context"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/cycloneci/cyclone/internal/app"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/docker"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/reaper"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/internal/testimage"
)

// orphan sets up a record's environment and starts a sleeping labelled container in
// it, as a worker that died mid-step leaves them.
func orphan(t *testing.T, cli *client.Client, ex *docker.Executor, image string, rec executor.Record) string {
	t.Helper()
	ctx := context.Background()
	env, err := ex.Setup(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ex.Teardown(context.Background(), rec) })
	labels := rec.Labels()
	labels[executor.LabelStage] = "unitTest"
	name := docker.ContainerName(rec.ID, "unitTest")
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Cmd: []string{"sleep", "300"}, Labels: labels},
		&container.HostConfig{NetworkMode: container.NetworkMode(env.Network)}, nil, nil, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// onlyRecords is the Docker executor as the reaper sees it, listing only the given
// records' resources: tests of other packages run at the same time on the same
// engine, and their records, unknown to this test's store, must not be reaped.
type onlyRecords struct {
	*docker.Executor
	ids map[string]bool
}

func mine(ex *docker.Executor, recs ...executor.Record) *onlyRecords {
	ids := map[string]bool{}
	for _, rec := range recs {
		ids[rec.ID] = true
	}
	return &onlyRecords{Executor: ex, ids: ids}
}

func (o *onlyRecords) List(ctx context.Context) ([]executor.Instance, error) {
	all, err := o.Executor.List(ctx)
	var kept []executor.Instance
	for _, in := range all {
		if o.ids[in.Record.ID] {
			kept = append(kept, in)
		}
	}
	return kept, err
}

func exists(t *testing.T, cli *client.Client, recordID string) (containerOK, networkOK, volumeOK bool) {
	t.Helper()
	ctx := context.Background()
	name := docker.ResourceName(recordID)
	_, err := cli.ContainerInspect(ctx, docker.ContainerName(recordID, "unitTest"))
	containerOK = err == nil
	if err != nil && !cerrdefs.IsNotFound(err) {
		t.Fatal(err)
	}
	_, err = cli.NetworkInspect(ctx, name, network.InspectOptions{})
	networkOK = err == nil
	_, err = cli.VolumeInspect(ctx, name)
	volumeOK = err == nil
	return
}

func TestReaperReclaimsOrphans(t *testing.T) {
	cli := testimage.RequireDocker(t)
	image := testimage.Busybox(t, cli)
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	ex := docker.New(cli, t.TempDir())
	ctx := context.Background()
	suffix := time.Now().Format("150405.000000")

	record := func(id, status string) executor.Record {
		t.Helper()
		if status != "" {
			if err := env.Store.CreateRecord(ctx, &model.Record{ID: id, ProjectID: "p", PipelineID: "pl", Status: status,
				StageStatus: &model.StageStatus{}, WorkflowID: id}); err != nil {
				t.Fatal(err)
			}
		}
		return executor.Record{ID: id, Project: "demo", Pipeline: "reap"}
	}
	aborted := record("reap-aborted-"+suffix, model.StatusAborted)
	deleted := record("reap-deleted-"+suffix, "")
	running := record("reap-running-"+suffix, model.StatusRunning)
	for _, rec := range []executor.Record{aborted, deleted, running} {
		orphan(t, cli, ex, image, rec)
	}

	// Within the grace period nothing is touched, even a finished record's.
	r := &reaper.Reaper{Store: env.Store, Backend: mine(ex, aborted, deleted, running), Logger: testenv.Logger(), Grace: time.Hour}
	if got, err := r.Once(ctx); err != nil || len(got) != 0 {
		t.Fatalf("reaped within the grace period: %v %v", got, err)
	}

	// The container's creation time has second precision: age the grace past it.
	time.Sleep(1100 * time.Millisecond)
	r.Grace = time.Millisecond
	got, err := r.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A record the store does not know waits its longer grace.
	if len(got) != 1 || got[0].ID != aborted.ID {
		t.Fatalf("reaped %v, want only the aborted record's", got)
	}
	if c, _, _ := exists(t, cli, deleted.ID); !c {
		t.Fatal("the unknown record's container went before its grace")
	}
	r.GoneGrace = time.Millisecond
	more, err := r.Once(ctx)
	got = append(got, more...)
	if err != nil {
		t.Fatal(err)
	}
	reaped := map[string]bool{}
	for _, rec := range got {
		reaped[rec.ID] = true
	}
	if len(got) != 2 || !reaped[aborted.ID] || !reaped[deleted.ID] {
		t.Fatalf("reaped %v, want the aborted and the deleted record's", got)
	}
	for _, rec := range []executor.Record{aborted, deleted} {
		if c, n, v := exists(t, cli, rec.ID); c || n || v {
			t.Fatalf("record %s: container %v, network %v, volume %v left", rec.ID, c, n, v)
		}
	}
	if c, n, v := exists(t, cli, running.ID); !c || !n || !v {
		t.Fatalf("the running record lost its container %v, network %v or volume %v", c, n, v)
	}
}

// TestReaperFreesQueuePlaces: a record that ended without releasing its place in the
// capacity queue (workflow terminated) loses it to the reaper; a waiting one keeps it.
func TestReaperFreesQueuePlaces(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	ctx := context.Background()
	for id, status := range map[string]string{"q-done": model.StatusAborted, "q-waiting": model.StatusPending} {
		if err := env.Store.CreateRecord(ctx, &model.Record{ID: id, Status: status, StageStatus: &model.StageStatus{}, WorkflowID: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Store.EnqueueSlot(ctx, id, "default", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.Store.EnqueueSlot(ctx, "q-gone", "default", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := (&reaper.Reaper{Store: env.Store, Logger: testenv.Logger()}).Once(ctx); err != nil {
		t.Fatal(err)
	}
	slots, err := env.Store.ListSlots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) != 1 || slots[0].RecordID != "q-waiting" {
		t.Fatalf("slots after reaping: %+v", slots)
	}
}

// TestReclaimWithinAMinute: with its defaults the reaper reclaims a finished
// record's leftovers within a minute of its end, as issue 8 asks.
func TestReclaimWithinAMinute(t *testing.T) {
	if reaper.ReclaimWithin > time.Minute {
		t.Fatalf("leftovers may stay %v after their record ended, over a minute", reaper.ReclaimWithin)
	}
}

// TestReaperLoopReclaimsOrphans runs the reaper as the servers start it
// (app.StartReaper, default interval and grace) against real Docker: the container,
// network and volume of a record aborted while they ran are gone within
// ReclaimWithin (plus the teardown), a running record's stay.
func TestReaperLoopReclaimsOrphans(t *testing.T) {
	cli := testimage.RequireDocker(t)
	image := testimage.Busybox(t, cli)
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	ex := docker.New(cli, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	suffix := time.Now().Format("150405.000000")

	aborted := executor.Record{ID: "loop-aborted-" + suffix, Project: "demo", Pipeline: "reap"}
	running := executor.Record{ID: "loop-running-" + suffix, Project: "demo", Pipeline: "reap"}
	for _, rec := range []executor.Record{aborted, running} {
		if err := env.Store.CreateRecord(ctx, &model.Record{ID: rec.ID, ProjectID: "p", PipelineID: "pl",
			Status: model.StatusRunning, StageStatus: &model.StageStatus{}, WorkflowID: rec.ID}); err != nil {
			t.Fatal(err)
		}
		orphan(t, cli, ex, image, rec)
	}
	// The record is aborted (its workflow terminated) while its container runs.
	if err := env.Store.FinishRecord(ctx, aborted.ID, model.StatusAborted, "terminated", time.Now()); err != nil {
		t.Fatal(err)
	}
	ended := time.Now()
	app.StartReaper(ctx, env.Store, mine(ex, aborted, running), testenv.Logger())

	const teardown = 15 * time.Second // removing a container, its network and volume
	deadline := ended.Add(reaper.ReclaimWithin + teardown)
	for {
		c, n, v := exists(t, cli, aborted.ID)
		if !c && !n && !v {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after the record ended: container %v, network %v, volume %v still there",
				time.Since(ended).Round(time.Second), c, n, v)
		}
		time.Sleep(time.Second)
	}
	t.Logf("reclaimed %v after the record ended", time.Since(ended).Round(time.Second))
	if c, n, v := exists(t, cli, running.ID); !c || !n || !v {
		t.Fatalf("the running record lost its container %v, network %v or volume %v", c, n, v)
	}
}
