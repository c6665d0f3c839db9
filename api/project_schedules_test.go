package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/client"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/starter"
)

// TestProjectUpdateRewritesCronSchedules: a cron's records run with the project's
// name, cloud and worker quota as its schedule was written; updating those on the
// project rewrites the schedules of its pipelines, so the next cron record runs with
// the new ones.
func TestProjectUpdateRewritesCronSchedules(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	ctx := context.Background()
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("sched")), http.StatusCreated)
	r := env.Do("POST", "/api/v1/projects/sched/pipelines", cronPipeline("nightly", map[string]any{"expression": "0 2 * * *"}))
	wantStatus(t, r, http.StatusCreated)
	var p model.Pipeline
	r.JSON(t, &p)

	input := func() string {
		t.Helper()
		desc, err := env.Temporal.ScheduleClient().GetHandle(ctx, starter.ScheduleID(p.ID, 0)).Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		action, ok := desc.Schedule.Action.(*client.ScheduleWorkflowAction)
		if !ok || len(action.Args) != 1 {
			t.Fatalf("schedule action %#v", desc.Schedule.Action)
		}
		payload, _ := action.Args[0].(*commonpb.Payload)
		return string(payload.GetData())
	}
	if in := input(); strings.Contains(in, `"quota"`) || !strings.Contains(in, `"project":"sched"`) {
		t.Fatalf("schedule input before the update: %s", in)
	}

	upd := projectBody("sched")
	upd["name"] = "renamed"
	upd["worker"] = map[string]any{"quota": map[string]any{"limits.cpu": "2"}}
	wantStatus(t, env.Do("PUT", "/api/v1/projects/sched", upd), http.StatusOK)
	in := input()
	if !strings.Contains(in, `"quota":{"limits.cpu":"2"}`) || !strings.Contains(in, `"project":"renamed"`) {
		t.Fatalf("schedule input after the project's update: %s", in)
	}
}
