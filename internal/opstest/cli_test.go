package opstest_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/reconcile"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/starter"
)

// temporalCLI finds the temporal CLI that make test-deps installs.
func temporalCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("temporal"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "temporal")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("the temporal CLI is required: make test-deps installs it (go install github.com/temporalio/cli/cmd/temporal@v1.5.1)")
	return ""
}

type ops struct {
	t    *testing.T
	env  *testenv.Env
	cli  string
	base string // the pipeline's API path
}

// temporal runs the CLI against the test's Temporal server and returns its output.
func (o *ops) temporal(args ...string) string {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args = append(args, "--address", o.env.TemporalAddress, "--namespace", "default")
	out, err := exec.CommandContext(ctx, o.cli, args...).CombinedOutput()
	if err != nil {
		o.t.Fatalf("temporal %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (o *ops) record(id string) model.Record {
	o.t.Helper()
	r := o.env.Do("GET", o.base+"/records/"+id, nil)
	if r.Status != http.StatusOK {
		o.t.Fatalf("GET record: %d %s", r.Status, r.Body)
	}
	var rec model.Record
	r.JSON(o.t, &rec)
	return rec
}

func (o *ops) waitFor(what string, cond func() bool) {
	o.t.Helper()
	for deadline := time.Now().Add(90 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			o.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (o *ops) startRunning() string {
	o.t.Helper()
	r := o.env.Do("POST", o.base+"/records", map[string]any{"ref": "master"})
	if r.Status != http.StatusCreated {
		o.t.Fatalf("start record: %d %s", r.Status, r.Body)
	}
	var rec model.Record
	r.JSON(o.t, &rec)
	o.waitFor("the unit test to run", func() bool {
		ss := o.record(rec.ID).StageStatus
		return ss != nil && ss.UnitTest != nil && ss.UnitTest.Status == model.StatusRunning
	})
	return rec.ID
}

// TestTemporalCLIOperations runs the README's commands with the temporal CLI.
func TestTemporalCLIOperations(t *testing.T) {
	cli := temporalCLI(t)
	env := testenv.Start(t, testenv.Options{})
	git := testenv.StartGitServer(t)
	repo := git.Repo("app", map[string]string{"README.md": "hi\n"})
	if r := env.Do("POST", "/api/v1/projects", map[string]any{"name": "ops", "scm": map[string]any{"type": "Github", "server": "https://github.com"}}); r.Status != http.StatusCreated {
		t.Fatalf("create project: %d %s", r.Status, r.Body)
	}
	pipeline := map[string]any{"name": "hello", "build": map[string]any{
		"builderImage": map[string]any{"image": "x"},
		"stages": map[string]any{
			"codeCheckout": map[string]any{"codeSources": []any{map[string]any{"type": "Github", "main": true, "gitHub": map[string]any{"url": repo}}}},
			"unitTest":     map[string]any{"command": []string{"sleep 300"}},
		},
	}, "autoTrigger": map[string]any{"cronTrigger": map[string]any{"crons": []any{map[string]any{"expression": "0 0 1 1 *", "stages": []string{"codeCheckout"}}}}}}
	if r := env.Do("POST", "/api/v1/projects/ops/pipelines", pipeline); r.Status != http.StatusCreated {
		t.Fatalf("create pipeline: %d %s", r.Status, r.Body)
	}
	o := &ops{t: t, env: env, cli: cli, base: "/api/v1/projects/ops/pipelines/hello"}

	// list by search attributes, and describe.
	cancelled := o.startRunning()
	if out := o.temporal("workflow", "list", "--query", `CyclonePipeline="hello" AND CycloneTrigger="user"`); !strings.Contains(out, cancelled) {
		t.Fatalf("workflow list does not show %s:\n%s", cancelled, out)
	}
	if out := o.temporal("workflow", "list", "--query", `CyclonePipeline="other"`); strings.Contains(out, cancelled) {
		t.Fatalf("workflow list for another pipeline shows %s:\n%s", cancelled, out)
	}
	if out := o.temporal("workflow", "describe", "--workflow-id", cancelled, "--output", "json"); !strings.Contains(out, cancelled) || !strings.Contains(out, "PipelineRecord") {
		t.Fatalf("workflow describe:\n%s", out)
	}

	// cancel -> the record ends Aborted.
	o.temporal("workflow", "cancel", "--workflow-id", cancelled)
	o.waitFor("the cancelled record to end", func() bool { return o.record(cancelled).Status == model.StatusAborted })

	// terminate -> the reconciler closes the record.
	terminated := o.startRunning()
	o.temporal("workflow", "terminate", "--workflow-id", terminated, "--reason", "operator says stop")
	rec := &reconcile.Reconciler{Store: env.Store, Temporal: env.Temporal, Logger: testenv.Logger(), Grace: time.Nanosecond}
	if err := rec.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := o.record(terminated); !model.IsTerminal(got.Status) || got.EndTime == nil {
		t.Fatalf("terminated record: %s", got.Status)
	}

	// schedule list / pause / trigger.
	p, err := env.Store.GetProject(context.Background(), "ops")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := env.Store.GetPipeline(context.Background(), p.ID, "hello")
	if err != nil {
		t.Fatal(err)
	}
	scheduleID := starter.ScheduleID(pl.ID, 0)
	if out := o.temporal("schedule", "list"); !strings.Contains(out, scheduleID) {
		t.Fatalf("schedule list does not show %s:\n%s", scheduleID, out)
	}
	o.temporal("schedule", "toggle", "--schedule-id", scheduleID, "--pause", "--reason", "maintenance")
	var got model.Pipeline
	env.Do("GET", o.base, nil).JSON(t, &got)
	if crons := got.AutoTrigger.CronTrigger.Crons; len(crons) != 1 || !crons[0].Paused {
		t.Fatalf("a schedule paused with the CLI is not shown paused: %+v", crons)
	}
	o.temporal("schedule", "trigger", "--schedule-id", scheduleID)
	var cronRecord string
	o.waitFor("the triggered cron record", func() bool {
		var list struct{ Items []model.Record }
		env.Do("GET", o.base+"/records", nil).JSON(t, &list)
		for _, r := range list.Items {
			if r.Trigger == model.TriggerCron {
				cronRecord = r.ID
				return true
			}
		}
		return false
	})
	if out := o.temporal("workflow", "list", "--query", fmt.Sprintf(`CycloneTrigger=%q`, model.TriggerCron)); !strings.Contains(out, cronRecord) {
		t.Fatalf("the cron record %s is not listed by its trigger:\n%s", cronRecord, out)
	}
}
