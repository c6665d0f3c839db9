package app_test

import (
	"context"
	"net/http"
	"testing"

	"go.temporal.io/sdk/client"

	"github.com/cycloneci/cyclone/internal/app"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/starter"
)

// ResyncSchedules brings every cron schedule back to what its pipeline says, as a
// server's start does: a schedule an earlier version wrote (here: another workflow
// ID) gets the current action and keeps an operator's pause; one deleted from the
// CLI is made again; pipelines without crons are left alone.
func TestResyncSchedules(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	ctx := context.Background()
	if r := env.Do("POST", "/api/v1/projects", map[string]any{"name": "sched", "scm": map[string]any{"type": "Github", "server": "https://github.com"}}); r.Status != http.StatusCreated {
		t.Fatalf("create project: %d %s", r.Status, r.Body)
	}
	pipeline := func(name string, crons ...string) *model.Pipeline {
		list := []any{}
		for _, c := range crons {
			list = append(list, map[string]any{"expression": c})
		}
		body := map[string]any{"name": name, "build": map[string]any{
			"builderImage": map[string]any{"image": "x"},
			"stages":       map[string]any{"unitTest": map[string]any{"command": []string{"true"}}},
		}}
		if len(crons) > 0 {
			body["autoTrigger"] = map[string]any{"cronTrigger": map[string]any{"crons": list}}
		}
		r := env.Do("POST", "/api/v1/projects/sched/pipelines", body)
		if r.Status != http.StatusCreated {
			t.Fatalf("create pipeline %s: %d %s", name, r.Status, r.Body)
		}
		var p model.Pipeline
		r.JSON(t, &p)
		return &p
	}
	old, gone := pipeline("old", "0 2 * * *"), pipeline("gone", "0 3 * * *")
	pipeline("plain")
	sc := env.Temporal.ScheduleClient()

	oldHandle := sc.GetHandle(ctx, starter.ScheduleID(old.ID, 0))
	err := oldHandle.Update(ctx, client.ScheduleUpdateOptions{DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
		sched := in.Description.Schedule
		sched.Action.(*client.ScheduleWorkflowAction).ID = "cyclone-cron-shared"
		return &client.ScheduleUpdate{Schedule: &sched}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := oldHandle.Pause(ctx, client.SchedulePauseOptions{Note: "maintenance"}); err != nil {
		t.Fatal(err)
	}
	if err := sc.GetHandle(ctx, starter.ScheduleID(gone.ID, 0)).Delete(ctx); err != nil {
		t.Fatal(err)
	}

	runs := starter.New(env.Temporal)
	runs.TaskQueue = testenv.TaskQueue
	n, err := app.ResyncSchedules(ctx, env.Store, runs)
	if err != nil || n != 2 {
		t.Fatalf("ResyncSchedules = %d, %v; want the 2 pipelines with crons", n, err)
	}
	desc, err := oldHandle.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	action, ok := desc.Schedule.Action.(*client.ScheduleWorkflowAction)
	if !ok || action.ID != starter.ScheduleID(old.ID, 0) {
		t.Fatalf("the old schedule's action %#v, want workflow ID %s", desc.Schedule.Action, starter.ScheduleID(old.ID, 0))
	}
	if !desc.Schedule.State.Paused || desc.Schedule.State.Note != "maintenance" {
		t.Fatalf("the operator's pause was lost: %+v", desc.Schedule.State)
	}
	if _, err := sc.GetHandle(ctx, starter.ScheduleID(gone.ID, 0)).Describe(ctx); err != nil {
		t.Fatalf("the deleted schedule was not made again: %v", err)
	}
}
