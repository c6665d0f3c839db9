package api_test

import (
	"context"
	"net/http"
	"testing"

	"go.temporal.io/sdk/client"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/starter"
)

// A deactivated pipeline (an idea of the Rancher pipeline API) ignores SCM events
// and has its crons paused; activating it again resumes them, but keeps a pause an
// operator made; records can still be started by hand.
func TestPipelineDeactivation(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("act", "Github", "https://github.com", nil)), http.StatusCreated)
	body := func(active bool) map[string]any {
		return hookPipelineBody("p",
			map[string]any{"type": "Github", "main": true, "gitHub": map[string]any{"url": "https://github.com/baxterthehacker/public-repo.git"}},
			map[string]any{"push": map[string]any{"stages": []string{"unitTest"}}},
			map[string]any{"webhookSecret": hookSecret, "active": active,
				"autoTrigger": map[string]any{
					"scmTrigger":  map[string]any{"push": map[string]any{"stages": []string{"unitTest"}}},
					"cronTrigger": map[string]any{"crons": []any{map[string]any{"expression": "0 2 * * *"}}},
				}})
	}
	p := createHookPipeline(t, env, "act", body(false))
	if p.IsActive() {
		t.Fatalf("pipeline created active: %+v", p.Active)
	}
	paused := func() bool {
		t.Helper()
		var got model.Pipeline
		env.Do("GET", "/api/v1/projects/act/pipelines/p", nil).JSON(t, &got)
		return got.AutoTrigger.CronTrigger.Crons[0].Paused
	}
	if !paused() {
		t.Fatal("the cron of a deactivated pipeline is not paused")
	}
	push := hookPayload(t, "github_push.json")
	hookPath := "/api/v1/pipelines/" + p.ID + "/githubwebhook"
	wantHook(t, deliver(env, hookPath, push, githubHeaders("push", "d-1", hookSecret, push)...), "deactivated")
	if n := len(pipelineRecords(t, env, p.ID)); n != 0 {
		t.Fatalf("%d records started by an event of a deactivated pipeline", n)
	}
	// By hand it still runs.
	wantStatus(t, env.Do("POST", "/api/v1/projects/act/pipelines/p/records", map[string]any{"ref": "master"}), http.StatusCreated)

	// Activated again: the cron resumes and events trigger.
	wantStatus(t, env.Do("PUT", "/api/v1/projects/act/pipelines/p", body(true)), http.StatusOK)
	if paused() {
		t.Fatal("the cron stayed paused after the pipeline was activated")
	}
	wantHook(t, deliver(env, hookPath, push, githubHeaders("push", "d-2", hookSecret, push)...), "triggered")

	// A pause an operator made stays through an update of the active pipeline.
	ctx := context.Background()
	if err := env.Temporal.ScheduleClient().GetHandle(ctx, starter.ScheduleID(p.ID, 0)).Pause(ctx, client.SchedulePauseOptions{Note: "maintenance"}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, env.Do("PUT", "/api/v1/projects/act/pipelines/p", body(true)), http.StatusOK)
	if !paused() {
		t.Fatal("an operator's pause was lifted by an update")
	}
}
