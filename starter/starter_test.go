package starter_test

import (
	"maps"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/starter"
)

// The workflow input carries a snapshot of the project's worker quota.
func TestInputCarriesTheWorkerQuota(t *testing.T) {
	quota := map[string]string{"requests.cpu": "0.5", "limits.memory": "2G"}
	project := &model.Project{ID: "p-1", Name: "proj", Worker: &model.WorkerConfig{Quota: quota}}
	pipeline := &model.Pipeline{ID: "pl-1", Name: "pipe", Build: &model.Build{Stages: &model.Stages{}}}
	rec := &model.Record{ID: "r-1", PerformParams: &model.PerformParams{Ref: "main"}, StartTime: time.Now()}
	in := starter.Input(rec, project, pipeline)
	if !maps.Equal(in.Quota, quota) {
		t.Fatalf("quota %v, want %v", in.Quota, quota)
	}
	quota["limits.memory"] = "4G"
	if in.Quota["limits.memory"] != "2G" {
		t.Fatal("the input shares the project's quota map")
	}
	for _, p := range []*model.Project{{ID: "p-2"}, {ID: "p-3", Worker: &model.WorkerConfig{}}} {
		if in := starter.Input(rec, p, pipeline); in.Quota != nil {
			t.Fatalf("quota %v for a project without one", in.Quota)
		}
	}
}
