package activities

import (
	"context"
	"io"
	"maps"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/local"
	"github.com/cycloneci/cyclone/internal/model"
)

// recordingExecutor runs steps on the local executor and keeps them.
type recordingExecutor struct {
	*local.Executor
	steps []executor.Step
}

func (r *recordingExecutor) Run(ctx context.Context, env executor.Environment, step executor.Step, out io.Writer) (executor.Result, error) {
	r.steps = append(r.steps, step)
	return r.Executor.Run(ctx, env, step, out)
}

// A command stage's step is sized by the record's worker quota, a copy of it.
func TestCommandStepsCarryTheQuota(t *testing.T) {
	ex := &recordingExecutor{Executor: local.New(t.TempDir())}
	a := &Activities{Executor: ex, HeartbeatInterval: time.Hour}
	quota := map[string]string{"requests.cpu": "0.5", "limits.memory": "2G"}
	in := StageInput{Stage: model.StageUnitTest, Record: RecordInput{RecordID: "r1", Project: "p", Pipeline: "q", Quota: quota,
		Build: &model.Build{BuilderImage: &model.BuilderImage{Image: "x"}}}}
	env, err := ex.Setup(context.Background(), in.Record.ExecutorRecord())
	if err != nil {
		t.Fatal(err)
	}
	in.Env = env
	if err := a.runCommands(context.Background(), in, []string{"true"}, runSecrets{}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if len(ex.steps) != 1 || !maps.Equal(ex.steps[0].Resources, quota) {
		t.Fatalf("steps %+v, want one with resources %v", ex.steps, quota)
	}
	ex.steps[0].Resources["limits.memory"] = "1T"
	if quota["limits.memory"] != "2G" {
		t.Fatal("the step shares the record's quota map")
	}
	// No quota: the executor's defaults.
	in.Record.Quota = nil
	if err := a.runCommands(context.Background(), in, []string{"true"}, runSecrets{}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if ex.steps[1].Resources != nil {
		t.Fatalf("resources %v without a quota", ex.steps[1].Resources)
	}
}
