package starter_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/starter"
)

func k8sCloud(name, namespace string) *model.Cloud {
	return &model.Cloud{Name: name, Type: model.CloudKubernetes, Kubernetes: &model.KubernetesCloud{Host: "https://k8s.example:6443", Namespace: namespace}}
}

func nsFixtures() (*model.Record, *model.Pipeline) {
	pipeline := &model.Pipeline{ID: "pl-1", Name: "pipe", Build: &model.Build{Stages: &model.Stages{}}}
	rec := &model.Record{ID: "r-1", PerformParams: &model.PerformParams{Ref: "main"}, StartTime: time.Now()}
	return rec, pipeline
}

// The record's namespace is the project's worker.location.namespace, else its
// worker.namespace, else its Kubernetes cloud's, else none (the executor's default).
func TestInputNamespace(t *testing.T) {
	rec, pipeline := nsFixtures()
	onK8s := func(namespace string) *model.Project {
		return &model.Project{ID: "p-1", Name: "proj", Worker: &model.WorkerConfig{
			Location: &model.WorkerLocation{CloudName: "k8s", Namespace: namespace}}}
	}
	legacy := &model.Project{ID: "p-1", Name: "proj", Worker: &model.WorkerConfig{
		Location: &model.WorkerLocation{CloudName: "k8s"}, Namespace: "legacy-ns"}}
	docker := &model.Cloud{Name: "k8s", Type: model.CloudDocker, Docker: &model.DockerCloud{Host: "tcp://docker:2375"}}
	onDefault := &model.Project{ID: "p-2", Name: "other"}
	for _, tc := range []struct {
		name    string
		project *model.Project
		cloud   *model.Cloud
		want    string
	}{
		{"project over cloud", onK8s("proj-ns"), k8sCloud("k8s", "cloud-ns"), "proj-ns"},
		{"cloud when the project names none", onK8s(""), k8sCloud("k8s", "cloud-ns"), "cloud-ns"},
		{"project's worker.namespace over cloud", legacy, k8sCloud("k8s", "cloud-ns"), "legacy-ns"},
		{"project without a cloud object", onK8s("proj-ns"), nil, "proj-ns"},
		{"no project namespace, no cloud", onK8s(""), nil, ""},
		{"a Docker cloud has no namespace", onK8s(""), docker, ""},
		{"another cloud than the project's", onK8s(""), k8sCloud("elsewhere", "cloud-ns"), ""},
		{"the default cloud", onDefault, k8sCloud(model.DefaultCloudName, "default-ns"), "default-ns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := starter.InputOnCloud(rec, tc.project, pipeline, tc.cloud)
			if in.Namespace != tc.want {
				t.Errorf("namespace %q, want %q", in.Namespace, tc.want)
			}
			if got := in.ExecutorRecord().Namespace; got != tc.want {
				t.Errorf("executor record namespace %q, want %q", got, tc.want)
			}
		})
	}
	if in := starter.Input(rec, onK8s("proj-ns"), pipeline); in.Namespace != "proj-ns" {
		t.Errorf("Input: namespace %q, want the project's proj-ns", in.Namespace)
	}
}

// fakeTemporal records the input of the workflows it is asked to start.
type fakeTemporal struct {
	client.Client
	inputs []activities.RecordInput
}

func (f *fakeTemporal) ExecuteWorkflow(_ context.Context, _ client.StartWorkflowOptions, _ any, args ...any) (client.WorkflowRun, error) {
	f.inputs = append(f.inputs, args[0].(activities.RecordInput))
	return fakeRun{}, nil
}

type fakeRun struct{ client.WorkflowRun }

func (fakeRun) GetRunID() string { return "run-1" }

type fakeClouds map[string]*model.Cloud

var errStoreDown = errors.New("store down")

func (f fakeClouds) GetCloud(_ context.Context, name string) (*model.Cloud, error) {
	if name == "broken" {
		return nil, errStoreDown
	}
	if c, ok := f[name]; ok {
		return c, nil
	}
	return nil, store.ErrNotFound
}

// Start looks the project's cloud up for its namespace; a cloud that is not stored
// leaves the namespace to the executor, a failing look-up fails the start.
func TestStartTakesTheCloudsNamespace(t *testing.T) {
	rec, pipeline := nsFixtures()
	tc := &fakeTemporal{}
	s := starter.New(tc)
	s.SearchAttributes = false
	s.Clouds = fakeClouds{"k8s": k8sCloud("k8s", "cloud-ns")}
	project := func(cloud, namespace string) *model.Project {
		return &model.Project{ID: "p-1", Name: "proj", Worker: &model.WorkerConfig{
			Location: &model.WorkerLocation{CloudName: cloud, Namespace: namespace}}}
	}
	for _, c := range []struct {
		project *model.Project
		want    string
	}{
		{project("k8s", ""), "cloud-ns"},
		{project("k8s", "proj-ns"), "proj-ns"},
		{project("unknown", ""), ""},
	} {
		if _, err := s.Start(context.Background(), rec, c.project, pipeline); err != nil {
			t.Fatalf("Start: %v", err)
		}
		in := tc.inputs[len(tc.inputs)-1]
		if in.Namespace != c.want || in.Cloud != c.project.Worker.Location.CloudName {
			t.Errorf("cloud %s: input cloud %q namespace %q, want namespace %q", c.project.Worker.Location.CloudName, in.Cloud, in.Namespace, c.want)
		}
	}
	started := len(tc.inputs)
	if _, err := s.Start(context.Background(), rec, project("broken", ""), pipeline); !errors.Is(err, errStoreDown) {
		t.Errorf("Start with a failing cloud look-up: %v, want the store's error", err)
	}
	if len(tc.inputs) != started {
		t.Error("a workflow was started although the cloud could not be read")
	}
}
