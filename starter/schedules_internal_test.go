package starter

import (
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
)

func sourcePipeline(src *model.CodeSource) *model.Pipeline {
	stages := &model.Stages{}
	if src != nil {
		stages.CodeCheckout = &model.CodeCheckoutStage{CodeSources: []model.CodeSource{*src}}
	}
	return &model.Pipeline{ID: "pl-1", Name: "pipe", Build: &model.Build{Stages: stages}}
}

// A cron record builds the main source's ref; without one, HEAD for Subversion (the
// source's URL at its latest revision) and master for git.
func TestCronDefaultRef(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  *model.CodeSource
		want string
	}{
		{"github ref", &model.CodeSource{Type: model.SCMGithub, Main: true, GitHub: &model.GitSource{URL: "https://github.com/o/r", Ref: "refs/heads/dev"}}, "refs/heads/dev"},
		{"github without ref", &model.CodeSource{Type: model.SCMGithub, Main: true, GitHub: &model.GitSource{URL: "https://github.com/o/r"}}, "master"},
		{"svn", &model.CodeSource{Type: model.SCMSVN, Main: true, OtherCodeSource: &model.OtherCodeSource{URL: "svn://h/repo/trunk"}}, SVNHead},
		{"svn lower case", &model.CodeSource{Type: "svn", Main: true, OtherCodeSource: &model.OtherCodeSource{URL: "svn://h/repo"}}, SVNHead},
		{"no code source", nil, "master"},
	} {
		if got := defaultRef(sourcePipeline(tc.src)); got != tc.want {
			t.Errorf("%s: ref %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Each cron's action has its own workflow ID (its schedule's), and a memo linking to
// the pipeline's records.
func TestScheduleActionPerCron(t *testing.T) {
	s := &Starter{TaskQueue: DefaultTaskQueue}
	project := &model.Project{ID: "p-1", Name: "proj"}
	p := sourcePipeline(nil)
	a0 := s.scheduleAction(project, p, 0, model.Cron{Expression: "0 2 * * *"}, nil)
	a1 := s.scheduleAction(project, p, 1, model.Cron{Expression: "0 2 * * *"}, nil)
	if a0.ID != ScheduleID(p.ID, 0) || a1.ID != ScheduleID(p.ID, 1) || a0.ID == a1.ID {
		t.Fatalf("workflow IDs %q, %q; want one per cron", a0.ID, a1.ID)
	}
	if got := a0.Memo["recordsURL"]; got != "/api/v1/projects/proj/pipelines/pipe/records" {
		t.Fatalf("memo %v", a0.Memo)
	}
}

// A cron's record runs where the project's records run: on its cloud, in its
// namespace (the cloud's when the project names none), with its worker quota.
func TestScheduleInputRunsOnTheProjectsCloud(t *testing.T) {
	cloud := &model.Cloud{Name: "k8s", Type: model.CloudKubernetes, Kubernetes: &model.KubernetesCloud{Namespace: "ci-builds"}}
	project := &model.Project{ID: "p-1", Name: "proj", Worker: &model.WorkerConfig{
		Location: &model.WorkerLocation{CloudName: "k8s"},
		Quota:    map[string]string{"limits.cpu": "2"},
	}}
	in := scheduleInput(project, sourcePipeline(nil), model.Cron{Expression: "0 2 * * *"}, cloud)
	if in.Cloud != "k8s" || in.Namespace != "ci-builds" || in.Quota["limits.cpu"] != "2" || in.Trigger != model.TriggerCron {
		t.Fatalf("cron input on cloud %q, namespace %q, quota %v, trigger %q", in.Cloud, in.Namespace, in.Quota, in.Trigger)
	}
	project.Worker.Location.Namespace = "team-a"
	if in := scheduleInput(project, sourcePipeline(nil), model.Cron{}, cloud); in.Namespace != "team-a" {
		t.Fatalf("namespace %q, want the project's own", in.Namespace)
	}
}
