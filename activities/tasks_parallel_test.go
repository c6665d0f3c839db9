package activities

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"

	"github.com/cycloneci/cyclone/internal/model"
)

// The tasks of a stage (imageBuild's build infos, imageRelease's policies) run at
// once: each task here waits until every other one has started, which tasks run
// one after the other would never see (the first would give up waiting).
func TestStageTasksRunAtOnce(t *testing.T) {
	const tasks = 3
	started := make(chan string, tasks)
	allStarted := make(chan struct{})
	go func() {
		for range tasks {
			<-started
		}
		close(allStarted)
	}()
	var runs []taskRun
	for i := range tasks {
		name := fmt.Sprintf("image-%d", i)
		runs = append(runs, taskRun{name: name, image: "example/" + name, run: func(ctx context.Context, log io.Writer) error {
			started <- name
			select {
			case <-allStarted:
				return nil
			case <-time.After(30 * time.Second):
				return failStep("task %s ran alone: the others had not started", name)
			}
		}})
	}

	st := &stageWrites{}
	a := &Activities{Store: st, HeartbeatInterval: time.Hour}
	in := StageInput{Stage: model.StageImageBuild, Record: RecordInput{RecordID: "r1", Project: "p", Pipeline: "q"}}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivityWithOptions(func(ctx context.Context) error {
		_, err := a.runTasks(ctx, in, runSecrets{}, io.Discard, runs)
		return err
	}, activity.RegisterOptions{Name: "tasks"})
	if _, err := env.ExecuteActivity("tasks"); err != nil {
		t.Fatal(err)
	}
	// The last write of the stage's tasks says each ended Success.
	last := st.updates[len(st.updates)-1]
	if len(last.Tasks) != tasks {
		t.Fatalf("tasks written %+v, want %d", last.Tasks, tasks)
	}
	for _, task := range last.Tasks {
		if task.Status != model.StatusSuccess {
			t.Errorf("task %s ended %s, want Success", task.Name, task.Status)
		}
	}
}
