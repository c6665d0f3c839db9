package api_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/starter"
)

func cronPipeline(name string, crons ...map[string]any) map[string]any {
	list := make([]any, len(crons))
	for i, c := range crons {
		list[i] = c
	}
	return map[string]any{"name": name,
		"autoTrigger": map[string]any{"cronTrigger": map[string]any{"crons": list}},
		"build": map[string]any{
			"builderImage": map[string]any{"image": "x", "envVars": []any{map[string]any{"name": "TOKEN", "value": "cron-secret", "secret": true}}},
			"stages": map[string]any{
				"unitTest": map[string]any{"command": []string{"echo unit"}},
				"package":  map[string]any{"command": []string{"echo package"}},
			},
		}}
}

// A pipeline's crons are Temporal Schedules: created, shown, triggered, updated and
// deleted with the pipeline.
func TestCronSchedules(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("demo")), http.StatusCreated)
	base := "/api/v1/projects/demo/pipelines"

	r := env.Do("POST", base, cronPipeline("nightly",
		map[string]any{"expression": "0 2 * * *", "timezone": "Asia/Shanghai", "stages": []string{"unitTest"}}))
	wantStatus(t, r, http.StatusCreated)
	var p model.Pipeline
	r.JSON(t, &p)
	cron := p.AutoTrigger.CronTrigger.Crons[0]
	if len(cron.NextRunTimes) == 0 || cron.NextRunTimes[0].UTC().Hour() != 18 || cron.Paused {
		t.Fatalf("cron as created: %+v (02:00 in Shanghai is 18:00 UTC)", cron)
	}

	// A pause made with the temporal CLI (here: the same API) shows up.
	handle := env.Temporal.ScheduleClient().GetHandle(ctx, starter.ScheduleID(p.ID, 0))
	if err := handle.Pause(ctx, client.SchedulePauseOptions{Note: "maintenance"}); err != nil {
		t.Fatal(err)
	}
	var got model.Pipeline
	env.Do("GET", base+"/nightly", nil).JSON(t, &got)
	if !got.AutoTrigger.CronTrigger.Crons[0].Paused {
		t.Fatalf("paused schedule not shown: %+v", got.AutoTrigger.CronTrigger.Crons[0])
	}

	// Triggering the schedule starts a record with trigger cronTrigger and the cron's stages.
	if err := handle.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
		t.Fatal(err)
	}
	var rec model.Record
	waitUntil(t, "a cron record", func() bool {
		var list struct {
			Items []model.Record `json:"items"`
		}
		env.Do("GET", base+"/nightly/records", nil).JSON(t, &list)
		if len(list.Items) == 1 && model.IsTerminal(list.Items[0].Status) {
			rec = list.Items[0]
			return true
		}
		return false
	})
	if rec.Status != model.StatusSuccess || rec.Trigger != model.TriggerCron || rec.StageStatus.UnitTest == nil ||
		rec.StageStatus.Package != nil || rec.Name == "" || rec.PerformParams.Ref != "master" {
		t.Fatalf("cron record %+v / %+v", rec, rec.StageStatus)
	}
	// The schedule's workflow input carries no secret.
	desc, err := handle.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	action, ok := desc.Schedule.Action.(*client.ScheduleWorkflowAction)
	if !ok || len(action.Args) != 1 {
		t.Fatalf("schedule action %#v", desc.Schedule.Action)
	}
	payload, ok := action.Args[0].(*commonpb.Payload)
	if !ok || !strings.Contains(string(payload.Data), `"trigger":"cronTrigger"`) || strings.Contains(string(payload.Data), "cron-secret") {
		t.Fatalf("schedule input: %T %s", action.Args[0], payload.GetData())
	}

	// Updating to two crons adds a schedule; a bad expression is a 400 that changes nothing.
	upd := cronPipeline("nightly", map[string]any{"expression": "0 3 * * *"}, map[string]any{"expression": "*/30 * * * *"})
	wantStatus(t, env.Do("PUT", base+"/nightly", upd), http.StatusOK)
	if _, err := env.Temporal.ScheduleClient().GetHandle(ctx, starter.ScheduleID(p.ID, 1)).Describe(ctx); err != nil {
		t.Fatalf("second schedule: %v", err)
	}
	bad := cronPipeline("nightly", map[string]any{"expression": "0 3 * * *"}, map[string]any{"expression": "every full moon"})
	wantError(t, env.Do("PUT", base+"/nightly", bad), http.StatusBadRequest, api.ReasonInvalidField, "autoTrigger.cronTrigger.crons[1].expression")
	env.Do("GET", base+"/nightly", nil).JSON(t, &got)
	if cs := got.AutoTrigger.CronTrigger.Crons; len(cs) != 2 || cs[1].Expression != "*/30 * * * *" {
		t.Fatalf("pipeline after a refused update: %+v", cs)
	}
	wantError(t, env.Do("POST", base, cronPipeline("broken", map[string]any{"expression": "61 * * * *"})),
		http.StatusBadRequest, api.ReasonInvalidField, "autoTrigger.cronTrigger.crons[0].expression")
	wantError(t, env.Do("GET", base+"/broken", nil), http.StatusNotFound, api.ReasonNotFound, "")

	// Deleting the pipeline deletes its schedules.
	wantStatus(t, env.Do("DELETE", base+"/nightly", nil), http.StatusNoContent)
	for i := range 2 {
		_, err := env.Temporal.ScheduleClient().GetHandle(ctx, starter.ScheduleID(p.ID, i)).Describe(ctx)
		var notFound *serviceerror.NotFound
		if !errors.As(err, &notFound) {
			t.Fatalf("schedule %d after the pipeline's deletion: %v", i, err)
		}
	}
}

// A cron's overlap policy reaches its schedule: skip by default, as set otherwise,
// and an unknown one is a 400 naming the field.
func TestCronOverlapPolicy(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	ctx := context.Background()
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("demo")), http.StatusCreated)
	base := "/api/v1/projects/demo/pipelines"
	wantError(t, env.Do("POST", base, cronPipeline("bad", map[string]any{"expression": "0 2 * * *", "overlap": "Sometimes"})),
		http.StatusBadRequest, api.ReasonInvalidField, "autoTrigger.cronTrigger.crons[0].overlap")

	r := env.Do("POST", base, cronPipeline("overlap",
		map[string]any{"expression": "0 2 * * *"}, map[string]any{"expression": "0 3 * * *", "overlap": "AllowAll"}))
	wantStatus(t, r, http.StatusCreated)
	var p model.Pipeline
	r.JSON(t, &p)
	policy := func(i int) string {
		t.Helper()
		desc, err := env.Temporal.ScheduleClient().GetHandle(ctx, starter.ScheduleID(p.ID, i)).Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return desc.Schedule.Policy.Overlap.String()
	}
	if a, b := policy(0), policy(1); a != "Skip" || b != "AllowAll" {
		t.Fatalf("overlap policies %s, %s; want Skip, AllowAll", a, b)
	}
	// An update changes the policy of the existing schedule.
	wantStatus(t, env.Do("PUT", base+"/overlap", cronPipeline("overlap",
		map[string]any{"expression": "0 2 * * *", "overlap": "BufferOne"}, map[string]any{"expression": "0 3 * * *", "overlap": "AllowAll"})), http.StatusOK)
	if a := policy(0); a != "BufferOne" {
		t.Fatalf("overlap after update %s, want BufferOne", a)
	}
}
