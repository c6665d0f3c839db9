package bench

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/local"
	"github.com/cycloneci/cyclone/internal/model"
)

func BenchmarkParts(b *testing.B) {
	e := startEnv(b, false)
	ctx := context.Background()
	e.runRecord(b, sevenStages)
	t0 := time.Now()
	for i := 0; i < 50; i++ {
		now := time.Now()
		_ = e.env.Store.UpdateStage(ctx, lastID, model.StageUpdate{Stage: "unitTest", Status: "Running", StartTime: &now})
	}
	fmt.Println("UpdateStage avg", time.Since(t0)/50)
	t0 = time.Now()
	for i := 0; i < 50; i++ {
		_ = exec.Command("/bin/sh", "-c", "true").Run()
	}
	fmt.Println("exec sh avg", time.Since(t0)/50)
	ex := local.New(b.TempDir())
	env, _ := ex.Setup(ctx, executor.Record{ID: "x"})
	t0 = time.Now()
	for i := 0; i < 50; i++ {
		_, _ = ex.Run(ctx, env, executor.Step{Name: "s", Command: []string{"/bin/sh", "-c", "true"}}, io.Discard)
	}
	fmt.Println("local executor run avg", time.Since(t0)/50)
	for b.Loop() {
	}
}
