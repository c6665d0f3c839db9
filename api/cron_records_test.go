package api_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/starter"
)

// terminalRecords waits until the pipeline has n records, all ended, and returns them.
func terminalRecords(t *testing.T, env *testenv.Env, path string, n int) []model.Record {
	t.Helper()
	var recs []model.Record
	waitUntil(t, "the cron records to end", func() bool {
		var list struct {
			Items []model.Record `json:"items"`
		}
		env.Do("GET", path+"/records", nil).JSON(t, &list)
		recs = list.Items
		if len(recs) != n {
			return false
		}
		for _, r := range recs {
			if !model.IsTerminal(r.Status) {
				return false
			}
		}
		return true
	})
	return recs
}

// workflowMemo reads a string of the memo of the record's workflow.
func workflowMemo(t *testing.T, env *testenv.Env, recordID, key string) string {
	t.Helper()
	desc, err := env.Temporal.DescribeWorkflowExecution(context.Background(), recordID, "")
	if err != nil {
		t.Fatal(err)
	}
	payload := desc.GetWorkflowExecutionInfo().GetMemo().GetFields()[key]
	if payload == nil {
		return ""
	}
	var s string
	if err := converter.GetDefaultDataConverter().FromPayload(payload, &s); err != nil {
		t.Fatalf("memo %s: %v", key, err)
	}
	return s
}

// Two crons of one pipeline firing at the same time start a record each (each cron's
// schedule has its own workflow ID), and a cron record's workflow carries a memo
// linking back to the REST API, as a record started by the API does.
func TestCronsFiringTogetherStartOneRecordEach(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("demo")), http.StatusCreated)
	base := "/api/v1/projects/demo/pipelines"
	r := env.Do("POST", base, cronPipeline("twice",
		map[string]any{"expression": "0 2 * * *", "stages": []string{"unitTest"}},
		map[string]any{"expression": "0 2,14 * * *", "stages": []string{"package"}}))
	wantStatus(t, r, http.StatusCreated)
	var p model.Pipeline
	r.JSON(t, &p)

	// Both crons fire at 02:00 UTC yesterday: a backfill runs each schedule's action
	// for exactly that scheduled time.
	at := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -1).Add(2 * time.Hour)
	for i := range 2 {
		h := env.Temporal.ScheduleClient().GetHandle(ctx, starter.ScheduleID(p.ID, i))
		desc, err := h.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		action, ok := desc.Schedule.Action.(*client.ScheduleWorkflowAction)
		if !ok || action.ID != starter.ScheduleID(p.ID, i) {
			t.Fatalf("schedule %d starts workflow ID %q, want its own %q", i, action.ID, starter.ScheduleID(p.ID, i))
		}
		if err := h.Backfill(ctx, client.ScheduleBackfillOptions{Backfill: []client.ScheduleBackfill{{
			Start: at.Add(-time.Hour), End: at.Add(time.Hour),
		}}}); err != nil {
			t.Fatal(err)
		}
	}
	recs := terminalRecords(t, env, base+"/twice", 2)
	slices.SortFunc(recs, func(a, b model.Record) int { return strings.Compare(a.ID, b.ID) })
	for i, rec := range recs {
		prefix := starter.ScheduleID(p.ID, i) + "-"
		stages := strings.Join(rec.PerformParams.Stages, ",")
		if rec.Status != model.StatusSuccess || rec.Trigger != model.TriggerCron || !strings.HasPrefix(rec.ID, prefix) ||
			stages != []string{"unitTest", "package"}[i] {
			t.Fatalf("record %d: %s %s %s stages %s (%s); want an ID starting %q", i, rec.ID, rec.Status, rec.Trigger, stages, rec.ErrorMessage, prefix)
		}
		// Same scheduled time: the IDs differ only by the cron.
		if suffix, other := strings.TrimPrefix(rec.ID, prefix), strings.TrimPrefix(recs[1-i].ID, starter.ScheduleID(p.ID, 1-i)+"-"); suffix != other {
			t.Fatalf("records %s and %s were not scheduled for the same time", rec.ID, recs[1-i].ID)
		}
		if got, want := workflowMemo(t, env, rec.ID, "recordsURL"), base+"/twice/records"; got != want {
			t.Fatalf("cron record %s: memo recordsURL %q, want %q", rec.ID, got, want)
		}
		wantStatus(t, env.Do("GET", base+"/twice/records/"+rec.ID, nil), http.StatusOK)
	}

	// A record started by the API links to itself.
	r = env.Do("POST", base+"/twice/records", map[string]any{"ref": "master", "stages": []string{"unitTest"}})
	wantStatus(t, r, http.StatusCreated)
	var manual model.Record
	r.JSON(t, &manual)
	if got, want := workflowMemo(t, env, manual.ID, "recordURL"), base+"/twice/records/"+manual.ID; got != want {
		t.Fatalf("API record: memo recordURL %q, want %q", got, want)
	}
	terminalRecords(t, env, base+"/twice", 3)
}

// A cron record of a Subversion pipeline checks out the pipeline's URL and path at
// the latest revision (ref HEAD), not a "master" branch below it.
func TestCronOnSVNPipelineChecksOutHead(t *testing.T) {
	svn := testenv.StartSVNServer(t, "alice", "svn-s3cr3t")
	svn.Commit("first", map[string]string{"proj/trunk/main.go": "package main\n"})
	latest := svn.Commit("second", map[string]string{"proj/trunk/main.go": "package main // 2\n"})
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("svncron", "SVN", svn.URL,
		map[string]any{"username": "alice", "password": "svn-s3cr3t"})), http.StatusCreated)
	body := cronPipeline("nightly", map[string]any{"expression": "0 2 * * *", "stages": []string{"codeCheckout", "unitTest"}})
	body["build"].(map[string]any)["stages"].(map[string]any)["codeCheckout"] = map[string]any{"codeSources": []any{
		map[string]any{"type": "SVN", "main": true, "otherCodeSource": map[string]any{"url": svn.URL, "path": "proj/trunk"}},
	}}
	base := "/api/v1/projects/svncron/pipelines"
	r := env.Do("POST", base, body)
	wantStatus(t, r, http.StatusCreated)
	var p model.Pipeline
	r.JSON(t, &p)

	if err := env.Temporal.ScheduleClient().GetHandle(ctx, starter.ScheduleID(p.ID, 0)).Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
		t.Fatal(err)
	}
	rec := terminalRecords(t, env, base+"/nightly", 1)[0]
	co := rec.StageStatus.CodeCheckout
	if rec.Status != model.StatusSuccess || rec.Trigger != model.TriggerCron || rec.PerformParams.Ref != starter.SVNHead ||
		co == nil || co.Commits == nil || co.Commits.MainRepo.ID != latest {
		t.Fatalf("svn cron record %s ref %q status %s (%s), checkout %+v; want revision %s", rec.ID, rec.PerformParams.Ref, rec.Status, rec.ErrorMessage, co, latest)
	}
}
