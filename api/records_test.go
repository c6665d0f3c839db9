package api_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/docker"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/reconcile"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/internal/testimage"
)

// fixture is a project with one pipeline, ready to run records.
type fixture struct {
	env      *testenv.Env
	git      *testenv.GitServer
	repoURL  string
	basePath string // /api/v1/projects/demo/pipelines/<name>
}

func newFixture(t *testing.T, o testenv.Options) *fixture {
	t.Helper()
	env := testenv.Start(t, o)
	git := testenv.StartGitServer(t)
	url := git.Repo("app", map[string]string{"README.md": "hello\n"}, map[string]string{"data.txt": "from-the-repo\n"})
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("demo")), http.StatusCreated)
	return &fixture{env: env, git: git, repoURL: url}
}

// pipeline creates a pipeline with a code checkout and the given stages.
func (f *fixture) pipeline(t *testing.T, name, image string, stages map[string]any) {
	t.Helper()
	stages["codeCheckout"] = map[string]any{"codeSources": []any{map[string]any{
		"type": "Github", "main": true, "gitHub": map[string]any{"url": f.repoURL},
	}}}
	body := map[string]any{"name": name, "build": map[string]any{
		"builderImage": map[string]any{"image": image, "envVars": []any{map[string]any{"name": "GREETING", "value": "hi"}}},
		"stages":       stages,
	}}
	wantStatus(t, f.env.Do("POST", "/api/v1/projects/demo/pipelines", body), http.StatusCreated)
	f.basePath = "/api/v1/projects/demo/pipelines/" + name
}

func (f *fixture) start(t *testing.T, params map[string]any) model.Record {
	t.Helper()
	r := f.env.Do("POST", f.basePath+"/records", params)
	wantStatus(t, r, http.StatusCreated)
	var rec model.Record
	r.JSON(t, &rec)
	if rec.ID == "" || rec.WorkflowID != rec.ID || rec.RunID == "" || rec.Status != model.StatusPending {
		t.Fatalf("new record %+v", rec)
	}
	return rec
}

func (f *fixture) get(t *testing.T, id string) model.Record {
	t.Helper()
	var rec model.Record
	r := f.env.Do("GET", f.basePath+"/records/"+id, nil)
	wantStatus(t, r, http.StatusOK)
	r.JSON(t, &rec)
	return rec
}

// waitFor polls the record until cond holds or the deadline passes.
func (f *fixture) waitFor(t *testing.T, id string, what string, cond func(model.Record) bool) model.Record {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		rec := f.get(t, id)
		if cond(rec) {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("record never became %s: %+v", what, rec)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (f *fixture) waitTerminal(t *testing.T, id string) model.Record {
	t.Helper()
	return f.waitFor(t, id, "terminal", func(r model.Record) bool { return model.IsTerminal(r.Status) })
}

func (f *fixture) waitStageRunning(t *testing.T, id, stage string) {
	t.Helper()
	f.waitFor(t, id, stage+" running", func(r model.Record) bool {
		return r.StageStatus != nil && r.StageStatus.UnitTest != nil && r.StageStatus.UnitTest.Status == model.StatusRunning
	})
}

// abort aborts a record; the answer shows it Aborted, since the abort reaches the
// running stage within about a second.
func (f *fixture) abort(t *testing.T, id string) {
	t.Helper()
	r := f.env.Do("PATCH", f.basePath+"/records/"+id+"/status", map[string]any{"status": "Aborted"})
	wantStatus(t, r, http.StatusOK)
	var rec model.Record
	r.JSON(t, &rec)
	if rec.Status != model.StatusAborted {
		t.Fatalf("abort answered with the record %s", rec.Status)
	}
}

func commandStages() map[string]any {
	return map[string]any{
		"unitTest": map[string]any{"command": []string{"cat data.txt", `test "$GREETING" = hi`, "echo unit-ok > unit.out"}},
		"package":  map[string]any{"command": []string{"cat unit.out", "echo packaged"}},
	}
}

// checkSuccess asserts a record that ran checkout, unit test and package.
func (f *fixture) checkSuccess(t *testing.T, rec model.Record) {
	t.Helper()
	ss := rec.StageStatus
	if rec.Status != model.StatusSuccess || rec.EndTime == nil {
		t.Fatalf("record %+v", rec)
	}
	head := f.git.Head("app")
	if ss.CodeCheckout == nil || ss.CodeCheckout.Status != model.StatusSuccess || ss.CodeCheckout.Commits == nil ||
		ss.CodeCheckout.Commits.MainRepo.ID != head || ss.CodeCheckout.Commits.MainRepo.Message != "commit II" {
		t.Fatalf("checkout status %+v, want commit %s", ss.CodeCheckout, head)
	}
	wantName := head[:7] + "-" + rec.StartTime.UTC().Format("060102150405")
	if rec.Name != wantName {
		t.Fatalf("record name %q, want %q", rec.Name, wantName)
	}
	for name, st := range map[string]*model.GeneralStageStatus{"unitTest": ss.UnitTest, "package": ss.Package} {
		if st == nil || st.Status != model.StatusSuccess || st.StartTime == nil || st.EndTime == nil || st.EndTime.Before(*st.StartTime) {
			t.Fatalf("stage %s: %+v", name, st)
		}
	}
	if !ss.CodeCheckout.EndTime.After(rec.StartTime) && !ss.CodeCheckout.EndTime.Equal(rec.StartTime) {
		t.Fatalf("checkout ended before the record started")
	}
	desc, err := f.closedWorkflow(t, rec.WorkflowID, rec.RunID)
	if err != nil || desc.WorkflowExecutionInfo.Status != enums.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		t.Fatalf("workflow: %v %v", desc, err)
	}
}

// closedWorkflow describes a record's workflow once it has closed: the record is
// projected terminal by the workflow's last activity, a moment before the workflow
// itself completes.
func (f *fixture) closedWorkflow(t *testing.T, id, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	t.Helper()
	var desc *workflowservice.DescribeWorkflowExecutionResponse
	var err error
	waitUntil(t, "the workflow to close", func() bool {
		desc, err = f.env.Temporal.DescribeWorkflowExecution(context.Background(), id, runID)
		return err != nil || desc.WorkflowExecutionInfo.Status != enums.WORKFLOW_EXECUTION_STATUS_RUNNING
	})
	return desc, err
}

func TestRecordLocalExecutor(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	f.pipeline(t, "local", "ignored-by-local", commandStages())

	rec := f.start(t, map[string]any{"ref": "master"})
	f.checkSuccess(t, f.waitTerminal(t, rec.ID))

	t.Run("search attributes find the run in Temporal", func(t *testing.T) {
		query := fmt.Sprintf("CyclonePipeline = 'local' AND CycloneProject = 'demo' AND CycloneRecord = '%s' AND CycloneTrigger = 'user'", rec.ID)
		waitUntil(t, "the run to be listed by its search attributes", func() bool {
			resp, err := f.env.Temporal.ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{Query: query})
			return err == nil && len(resp.Executions) == 1 && resp.Executions[0].Execution.WorkflowId == rec.ID
		})
	})

	t.Run("list newest first", func(t *testing.T) {
		second := f.start(t, map[string]any{"ref": "refs/heads/master", "name": "v1.0.0", "description": "second"})
		done := f.waitTerminal(t, second.ID)
		if done.Name != "v1.0.0" || done.Status != model.StatusSuccess {
			t.Fatalf("named record %+v", done)
		}
		var list struct {
			Metadata struct{ Total int64 } `json:"metadata"`
			Items    []model.Record        `json:"items"`
		}
		f.env.Do("GET", f.basePath+"/records", nil).JSON(t, &list)
		if list.Metadata.Total != 2 || list.Items[0].ID != second.ID || list.Items[1].ID != rec.ID {
			t.Fatalf("records list %+v", list)
		}
		var pipelines struct {
			Items []model.ListedPipeline `json:"items"`
		}
		f.env.Do("GET", "/api/v1/projects/demo/pipelines?recentCount=1&recentSuccessCount=5&recentFailedCount=5", nil).JSON(t, &pipelines)
		lp := pipelines.Items[0]
		if len(lp.RecentRecords) != 1 || lp.RecentRecords[0].ID != second.ID || len(lp.RecentSuccessRecords) != 2 || len(lp.RecentFailedRecords) != 0 {
			t.Fatalf("listed pipeline recent records: %d %d %d", len(lp.RecentRecords), len(lp.RecentSuccessRecords), len(lp.RecentFailedRecords))
		}
	})

	t.Run("stage selection", func(t *testing.T) {
		sel := f.start(t, map[string]any{"ref": "master", "stages": []string{"codeCheckout"}})
		done := f.waitTerminal(t, sel.ID)
		if done.Status != model.StatusSuccess || done.StageStatus.UnitTest != nil || done.StageStatus.Package != nil {
			t.Fatalf("selected stages only: %+v", done.StageStatus)
		}
	})

	t.Run("missing ref fails the checkout clearly", func(t *testing.T) {
		bad := f.start(t, map[string]any{"ref": "no-such-branch"})
		done := f.waitTerminal(t, bad.ID)
		if done.Status != model.StatusFailed || !strings.Contains(done.ErrorMessage, "no-such-branch") ||
			done.StageStatus.CodeCheckout.Status != model.StatusFailed || done.StageStatus.UnitTest != nil {
			t.Fatalf("record with a missing ref: %+v", done)
		}
	})
}

func TestRecordFailureAndAllowFailure(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	f.pipeline(t, "failing", "x", map[string]any{
		"unitTest": map[string]any{"command": []string{"echo before", "exit 3", "echo never"}},
		"package":  map[string]any{"command": []string{"echo packaged"}},
	})
	done := f.waitTerminal(t, f.start(t, map[string]any{"ref": "master"}).ID)
	if done.Status != model.StatusFailed || !strings.Contains(done.ErrorMessage, "unitTest") || !strings.Contains(done.ErrorMessage, "code 3") ||
		done.StageStatus.UnitTest.Status != model.StatusFailed || done.StageStatus.Package != nil {
		t.Fatalf("failed record %+v / %+v", done, done.StageStatus.UnitTest)
	}
	desc, err := f.closedWorkflow(t, done.ID, "")
	if err != nil || desc.WorkflowExecutionInfo.Status != enums.WORKFLOW_EXECUTION_STATUS_FAILED {
		t.Fatalf("workflow of a failed record: %v %v", desc, err)
	}

	f.pipeline(t, "allowed", "x", map[string]any{
		"unitTest": map[string]any{"command": []string{"echo ok"}},
		"package":  map[string]any{"command": []string{"exit 1"}, "allowFailure": true},
	})
	done = f.waitTerminal(t, f.start(t, map[string]any{"ref": "master"}).ID)
	if done.Status != model.StatusSuccess || done.StageStatus.Package.Status != model.StatusFailed {
		t.Fatalf("allowFailure record %+v / %+v", done, done.StageStatus.Package)
	}

	// The local executor cannot build images.
	f.pipeline(t, "unimplemented", "x", map[string]any{
		"imageBuild": map[string]any{"buildInfos": []any{map[string]any{"imageName": "app"}}},
	})
	done = f.waitTerminal(t, f.start(t, map[string]any{"ref": "master"}).ID)
	if done.Status != model.StatusFailed || !strings.Contains(done.ErrorMessage, "imageBuild needs the Docker executor") {
		t.Fatalf("a stage the executor cannot run must fail clearly: %+v", done)
	}
}

// processRunning reports whether a process whose command line contains marker runs.
func processRunning(t *testing.T, marker string) bool {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		data, err := os.ReadFile(d)
		if err == nil && strings.Contains(strings.ReplaceAll(string(data), "\x00", " "), marker) {
			return true
		}
	}
	return false
}

func TestRecordAbortLocal(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	marker := fmt.Sprintf("sleep %d.5", 3000+time.Now().Nanosecond()%1000)
	f.pipeline(t, "slow", "x", map[string]any{
		"unitTest": map[string]any{"command": []string{"echo started", marker}},
		"package":  map[string]any{"command": []string{"echo never"}},
	})
	rec := f.start(t, map[string]any{"ref": "master"})
	f.waitStageRunning(t, rec.ID, "unitTest")
	waitUntil(t, "the step's process to start", func() bool { return processRunning(t, marker) })

	f.abort(t, rec.ID)
	done := f.waitTerminal(t, rec.ID)
	if done.Status != model.StatusAborted || done.StageStatus.UnitTest.Status != model.StatusAborted ||
		done.StageStatus.UnitTest.EndTime == nil || done.StageStatus.Package != nil {
		t.Fatalf("aborted record %+v / %+v", done, done.StageStatus.UnitTest)
	}
	waitUntil(t, "the step's process to be killed", func() bool { return !processRunning(t, marker) })

	// Aborting a finished record is refused and changes nothing.
	r := f.env.Do("PATCH", f.basePath+"/records/"+rec.ID+"/status", map[string]any{"status": "Aborted"})
	wantError(t, r, http.StatusConflict, api.ReasonInvalidStateChange, "status")
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRecordDockerExecutor(t *testing.T) {
	cli := testimage.RequireDocker(t)
	image := testimage.Busybox(t, cli)
	ex := docker.New(cli, t.TempDir())
	f := newFixture(t, testenv.Options{Executor: ex})
	f.pipeline(t, "docker", image, commandStages())
	rec := f.start(t, map[string]any{"ref": "master"})
	f.checkSuccess(t, f.waitTerminal(t, rec.ID))

	containers := func(recordID string) int {
		list, err := cli.ContainerList(context.Background(), container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", executor.LabelRecord+"="+recordID))})
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	if n := containers(rec.ID); n != 0 {
		t.Fatalf("%d containers left after the record", n)
	}

	t.Run("abort leaves no container", func(t *testing.T) {
		f.pipeline(t, "docker-slow", image, map[string]any{"unitTest": map[string]any{"command": []string{"sleep 300"}}})
		slow := f.start(t, map[string]any{"ref": "master"})
		f.waitStageRunning(t, slow.ID, "unitTest")
		waitUntil(t, "the step's container", func() bool { return containers(slow.ID) > 0 })
		f.abort(t, slow.ID)
		done := f.waitTerminal(t, slow.ID)
		if done.Status != model.StatusAborted || done.StageStatus.UnitTest.Status != model.StatusAborted {
			t.Fatalf("aborted record %+v", done)
		}
		waitUntil(t, "the containers to go", func() bool { return containers(slow.ID) == 0 })
	})
}

func TestRecordSurvivesWorkerRestart(t *testing.T) {
	f := newFixture(t, testenv.Options{NoWorker: true})
	first := f.env.StartWorker("node-1")
	f.pipeline(t, "restart", "x", map[string]any{
		"unitTest": map[string]any{"command": []string{"sleep 2", "echo unit-done > unit.out"}},
		"package":  map[string]any{"command": []string{"cat unit.out"}},
	})
	rec := f.start(t, map[string]any{"ref": "master"})
	f.waitStageRunning(t, rec.ID, "unitTest")
	first.Stop()

	// A replacement worker with the same identity takes the stage over.
	f.env.StartWorker("node-1")
	done := f.waitTerminal(t, rec.ID)
	if done.Status != model.StatusSuccess || done.StageStatus.UnitTest.Status != model.StatusSuccess || done.StageStatus.Package.Status != model.StatusSuccess {
		t.Fatalf("record after a worker restart: %+v / %+v", done, done.StageStatus)
	}
}

func TestRecordBadInput(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	f.pipeline(t, "checked", "x", commandStages())
	count := func() int64 {
		var list struct {
			Metadata struct{ Total int64 } `json:"metadata"`
		}
		f.env.Do("GET", f.basePath+"/records", nil).JSON(t, &list)
		return list.Metadata.Total
	}
	cases := []struct {
		name, path string
		body       any
		status     int
		reason     string
		field      string
	}{
		{"unknown stage", f.basePath + "/records", map[string]any{"ref": "master", "stages": []string{"deploy"}}, 400, api.ReasonInvalidField, "stages[0]"},
		{"stage not configured", f.basePath + "/records", map[string]any{"ref": "master", "stages": []string{"imageBuild"}}, 400, api.ReasonInvalidField, "stages[0]"},
		{"missing ref", f.basePath + "/records", map[string]any{}, 400, api.ReasonInvalidField, "ref"},
		{"option-like ref", f.basePath + "/records", map[string]any{"ref": "--upload-pack=touch /tmp/x"}, 400, api.ReasonInvalidField, "ref"},
		{"ref with ..", f.basePath + "/records", map[string]any{"ref": "a..b"}, 400, api.ReasonInvalidField, "ref"},
		{"ref with a control character", f.basePath + "/records", map[string]any{"ref": "a\x01b"}, 400, api.ReasonInvalidField, "ref"},
		{"bad name", f.basePath + "/records", map[string]any{"ref": "master", "name": "Not Valid"}, 400, api.ReasonInvalidField, "name"},
		{"long description", f.basePath + "/records", map[string]any{"ref": "master", "description": strings.Repeat("d", 101)}, 400, api.ReasonInvalidField, "description"},
		{"missing pipeline", "/api/v1/projects/demo/pipelines/nope/records", map[string]any{"ref": "master"}, 404, api.ReasonNotFound, ""},
		{"missing project", "/api/v1/projects/nope/pipelines/checked/records", map[string]any{"ref": "master"}, 404, api.ReasonNotFound, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, f.env.Do("POST", tc.path, tc.body), tc.status, tc.reason, tc.field)
			if n := count(); n != 0 {
				t.Fatalf("%d records after a refused request", n)
			}
		})
	}
	t.Run("abort with another status", func(t *testing.T) {
		rec := f.start(t, map[string]any{"ref": "master"})
		wantError(t, f.env.Do("PATCH", f.basePath+"/records/"+rec.ID+"/status", map[string]any{"status": "Success"}), 400, api.ReasonInvalidField, "status")
		f.waitTerminal(t, rec.ID)
		wantError(t, f.env.Do("GET", f.basePath+"/records/nope", nil), 404, api.ReasonNotFound, "")
	})
}

func TestPipelineBadInput(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("demo")), http.StatusCreated)
	valid := func() map[string]any {
		return map[string]any{"name": "pipe", "build": map[string]any{
			"builderImage": map[string]any{"image": "golang"},
			"stages": map[string]any{
				"codeCheckout": map[string]any{"codeSources": []any{map[string]any{"type": "Github", "main": true, "gitHub": map[string]any{"url": "https://github.com/a/b"}}}},
				"unitTest":     map[string]any{"command": []string{"go test ./..."}},
			},
		}}
	}
	stages := func(b map[string]any) map[string]any { return b["build"].(map[string]any)["stages"].(map[string]any) }
	mut := func(f func(b map[string]any)) map[string]any { b := valid(); f(b); return b }
	cases := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"bad name", mut(func(b map[string]any) { b["name"] = "UPPER" }), "name"},
		{"missing builder image", mut(func(b map[string]any) { b["build"].(map[string]any)["builderImage"] = map[string]any{} }), "build.builderImage.image"},
		{"no main code source", mut(func(b map[string]any) {
			stages(b)["codeCheckout"] = map[string]any{"codeSources": []any{map[string]any{"type": "Github", "gitHub": map[string]any{"url": "https://x/y"}}}}
		}), "build.stages.codeCheckout.codeSources"},
		{"local path as repository", mut(func(b map[string]any) {
			stages(b)["codeCheckout"] = map[string]any{"codeSources": []any{map[string]any{"type": "Github", "main": true, "gitHub": map[string]any{"url": "/etc"}}}}
		}), "build.stages.codeCheckout.codeSources[0].url"},
		{"empty command list", mut(func(b map[string]any) { stages(b)["unitTest"] = map[string]any{"command": []string{}} }), "build.stages.unitTest.command"},
		{"bad release policy", mut(func(b map[string]any) {
			stages(b)["imageRelease"] = map[string]any{"releasePolicies": []any{map[string]any{"imageName": "a", "type": "Sometimes"}}}
		}), "build.stages.imageRelease.releasePolicies[0].type"},
		{"build info without image", mut(func(b map[string]any) {
			stages(b)["imageBuild"] = map[string]any{"buildInfos": []any{map[string]any{"contextDir": "."}}}
		}), "build.stages.imageBuild.buildInfos[0].imageName"},
		{"build info with a bad image name", mut(func(b map[string]any) {
			stages(b)["imageBuild"] = map[string]any{"buildInfos": []any{map[string]any{"imageName": "Team/Web!"}}}
		}), "build.stages.imageBuild.buildInfos[0].imageName"},
		{"release policy with a bad image name", mut(func(b map[string]any) {
			stages(b)["imageRelease"] = map[string]any{"releasePolicies": []any{map[string]any{"imageName": "web:", "type": "Always"}}}
		}), "build.stages.imageRelease.releasePolicies[0].imageName"},
		{"bad timeout", mut(func(b map[string]any) { b["timeout"] = "soon" }), "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, env.Do("POST", "/api/v1/projects/demo/pipelines", tc.body), 400, api.ReasonInvalidField, tc.field)
		})
	}
	wantStatus(t, env.Do("POST", "/api/v1/projects/demo/pipelines", valid()), http.StatusCreated)
	wantError(t, env.Do("POST", "/api/v1/projects/demo/pipelines", valid()), 409, api.ReasonAlreadyExists, "")
	var list struct {
		Metadata struct{ Total int64 } `json:"metadata"`
	}
	env.Do("GET", "/api/v1/projects/demo/pipelines", nil).JSON(t, &list)
	if list.Metadata.Total != 1 {
		t.Fatalf("%d pipelines, want 1", list.Metadata.Total)
	}
}

// Operators may cancel or terminate a run from Temporal (CLI, Web UI): the record ends
// terminal either way.
func TestRecordClosedFromTemporal(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	f.pipeline(t, "ops", "x", map[string]any{"unitTest": map[string]any{"command": []string{"sleep 300"}}})
	ctx := context.Background()

	cancelled := f.start(t, map[string]any{"ref": "master"})
	f.waitStageRunning(t, cancelled.ID, "unitTest")
	if err := f.env.Temporal.CancelWorkflow(ctx, cancelled.ID, ""); err != nil {
		t.Fatal(err)
	}
	if done := f.waitTerminal(t, cancelled.ID); done.Status != model.StatusAborted || done.StageStatus.UnitTest.Status != model.StatusAborted {
		t.Fatalf("record cancelled in Temporal: %+v", done)
	}

	terminated := f.start(t, map[string]any{"ref": "master"})
	f.waitStageRunning(t, terminated.ID, "unitTest")
	if err := f.env.Temporal.TerminateWorkflow(ctx, terminated.ID, "", "operator says stop"); err != nil {
		t.Fatal(err)
	}
	rec := &reconcile.Reconciler{Store: f.env.Store, Temporal: f.env.Temporal, Logger: testenv.Logger(), Grace: time.Nanosecond}
	if err := rec.Once(ctx); err != nil {
		t.Fatal(err)
	}
	done := f.get(t, terminated.ID)
	if done.Status != model.StatusAborted || done.StageStatus.UnitTest.Status != model.StatusAborted ||
		!strings.Contains(done.ErrorMessage, "terminated") || done.EndTime == nil {
		t.Fatalf("record terminated in Temporal: %+v", done)
	}
}

// Deleting a running record, or its pipeline, or its project cancels its workflow.
func TestDeletionCancelsRuns(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	ctx := context.Background()
	waitClosed := func(t *testing.T, id string) {
		t.Helper()
		waitUntil(t, "workflow "+id+" to be cancelled", func() bool {
			desc, err := f.env.Temporal.DescribeWorkflowExecution(ctx, id, "")
			return err == nil && desc.WorkflowExecutionInfo.Status == enums.WORKFLOW_EXECUTION_STATUS_CANCELED
		})
	}
	for _, target := range []string{"record", "pipeline", "project"} {
		t.Run(target, func(t *testing.T) {
			f.pipeline(t, "doomed", "x", map[string]any{"unitTest": map[string]any{"command": []string{"sleep 300"}}})
			rec := f.start(t, map[string]any{"ref": "master"})
			f.waitStageRunning(t, rec.ID, "unitTest")
			path := map[string]string{
				"record":   f.basePath + "/records/" + rec.ID,
				"pipeline": f.basePath,
				"project":  "/api/v1/projects/demo",
			}[target]
			wantStatus(t, f.env.Do("DELETE", path, nil), http.StatusNoContent)
			waitClosed(t, rec.ID)
			wantError(t, f.env.Do("GET", f.basePath+"/records/"+rec.ID, nil), http.StatusNotFound, api.ReasonNotFound, "")
			if target == "record" {
				wantStatus(t, f.env.Do("DELETE", f.basePath, nil), http.StatusNoContent)
			}
		})
	}
}

// With Temporal down a new record is refused with a 503 and leaves nothing behind.
func TestRecordStartWithTemporalDown(t *testing.T) {
	f := newFixture(t, testenv.Options{NoWorker: true})
	f.pipeline(t, "later", "x", commandStages())
	f.env.StopTemporal()
	r := f.env.Do("POST", f.basePath+"/records", map[string]any{"ref": "master"})
	wantError(t, r, http.StatusServiceUnavailable, api.ReasonUnavailable, "")
	var list struct {
		Metadata struct{ Total int64 } `json:"metadata"`
	}
	f.env.Do("GET", f.basePath+"/records", nil).JSON(t, &list)
	if list.Metadata.Total != 0 {
		t.Fatalf("%d records left after a failed start", list.Metadata.Total)
	}
	if r := f.env.Do("GET", "/readyz", nil); r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "temporal") {
		t.Fatalf("readyz with Temporal down: %d %s", r.Status, r.Body)
	}
}

// A MongoDB outage in the middle of a run loses nothing: the projection writes wait
// for it and the record ends Success once it is back.
func TestRecordSurvivesStoreOutage(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	f.pipeline(t, "outage", "x", map[string]any{
		"unitTest": map[string]any{"command": []string{"sleep 4", "echo unit-done > unit.out"}},
		"package":  map[string]any{"command": []string{"cat unit.out"}},
	})
	rec := f.start(t, map[string]any{"ref": "master"})
	f.waitStageRunning(t, rec.ID, "unitTest")
	f.env.StopMongo()
	time.Sleep(3 * time.Second)
	f.env.RestartMongo()
	done := f.waitTerminal(t, rec.ID)
	if done.Status != model.StatusSuccess || done.StageStatus.UnitTest.Status != model.StatusSuccess || done.StageStatus.Package.Status != model.StatusSuccess {
		t.Fatalf("record after a store outage: %+v / unit %+v / package %+v", done, done.StageStatus.UnitTest, done.StageStatus.Package)
	}
}

// A secret environment variable reaches the step, and nothing else: it is sealed at
// rest, never returned, kept out of the workflow history and masked in the log.
func TestSecretEnvVar(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	const secret = "hunter2-very-secret"
	body := map[string]any{"name": "secretive", "build": map[string]any{
		"builderImage": map[string]any{"image": "x", "envVars": []any{
			map[string]any{"name": "PLAIN", "value": "visible"},
			map[string]any{"name": "TOKEN", "value": secret, "secret": true},
		}},
		// The log line shows "token is ********" only if $TOKEN held the secret.
		"stages": map[string]any{"unitTest": map[string]any{"command": []string{
			`echo "token is $TOKEN"`, `echo "plain is $PLAIN"`}}},
	}}
	r := f.env.Do("POST", "/api/v1/projects/demo/pipelines", body)
	wantStatus(t, r, http.StatusCreated)
	f.basePath = "/api/v1/projects/demo/pipelines/secretive"
	for _, resp := range []*testenv.Response{r, f.env.Do("GET", f.basePath, nil), f.env.Do("GET", "/api/v1/projects/demo/pipelines", nil)} {
		if strings.Contains(string(resp.Body), secret) || !strings.Contains(string(resp.Body), `"valueSet":true`) {
			t.Fatalf("pipeline response leaks the secret or hides that it is set: %s", resp.Body)
		}
	}
	// An update that leaves the value empty keeps it.
	body["description"] = "edited"
	body["build"].(map[string]any)["builderImage"].(map[string]any)["envVars"].([]any)[1].(map[string]any)["value"] = ""
	wantStatus(t, f.env.Do("PUT", f.basePath, body), http.StatusOK)

	rec := f.start(t, map[string]any{"ref": "master"})
	done := f.waitTerminal(t, rec.ID)
	if done.Status != model.StatusSuccess {
		t.Fatalf("the step did not get the secret: %+v / %+v", done, done.StageStatus.UnitTest)
	}
	logResp := f.env.Do("GET", f.basePath+"/records/"+rec.ID+"/logs?stage=unitTest", nil)
	wantStatus(t, logResp, http.StatusOK)
	if strings.Contains(string(logResp.Body), secret) || !strings.Contains(string(logResp.Body), "token is ********") ||
		!strings.Contains(string(logResp.Body), "plain is visible") {
		t.Fatalf("log: %s", logResp.Body)
	}
	iter := f.env.Temporal.GetWorkflowHistory(context.Background(), rec.ID, "", false, 0)
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(ev.String(), secret) {
			t.Fatalf("workflow history event %s holds the secret", ev.EventType)
		}
	}
}

// With Temporal down, aborting or deleting a running record is a 503 and changes nothing.
func TestCancelWithTemporalDown(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	f.pipeline(t, "stuck", "x", map[string]any{"unitTest": map[string]any{"command": []string{"sleep 300"}}})
	rec := f.start(t, map[string]any{"ref": "master"})
	f.waitStageRunning(t, rec.ID, "unitTest")
	f.env.StopTemporal()
	wantError(t, f.env.Do("PATCH", f.basePath+"/records/"+rec.ID+"/status", map[string]any{"status": "Aborted"}),
		http.StatusServiceUnavailable, api.ReasonUnavailable, "")
	wantError(t, f.env.Do("DELETE", f.basePath+"/records/"+rec.ID, nil), http.StatusServiceUnavailable, api.ReasonUnavailable, "")
	wantStatus(t, f.env.Do("GET", f.basePath+"/records/"+rec.ID, nil), http.StatusOK)
}

// A stage that runs past the pipeline's timeout fails (it is not an abort) and is not
// run again.
func TestStageTimeout(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	body := map[string]any{"name": "slowpoke", "timeout": "2s", "build": map[string]any{
		"builderImage": map[string]any{"image": "x"},
		"stages":       map[string]any{"unitTest": map[string]any{"command": []string{"echo started", "sleep 30"}}},
	}}
	wantStatus(t, f.env.Do("POST", "/api/v1/projects/demo/pipelines", body), http.StatusCreated)
	f.basePath = "/api/v1/projects/demo/pipelines/slowpoke"
	rec := f.start(t, map[string]any{"ref": "master"})
	done := f.waitTerminal(t, rec.ID)
	if done.Status != model.StatusFailed || done.StageStatus.UnitTest.Status != model.StatusFailed ||
		!strings.Contains(done.ErrorMessage, "timed out") {
		t.Fatalf("timed-out record %+v / %+v", done, done.StageStatus.UnitTest)
	}
	logs := f.env.Do("GET", f.basePath+"/records/"+rec.ID+"/logs?stage=unitTest", nil)
	if n := strings.Count(string(logs.Body), "echo started"); n != 1 {
		t.Fatalf("the timed-out stage ran %d times:\n%s", n, logs.Body)
	}
}

// A finished record can be rerun: a new record with the same parameters and a
// fresh name; a running one cannot.
func TestRecordRerun(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	f.pipeline(t, "rerun", "x", map[string]any{
		"unitTest": map[string]any{"command": []string{"test -f data.txt"}},
		"package":  map[string]any{"command": []string{"sleep 300"}},
	})
	first := f.start(t, map[string]any{"ref": "master", "description": "first try", "stages": []string{"codeCheckout", "unitTest"}})
	done := f.waitTerminal(t, first.ID)
	if done.Status != model.StatusSuccess {
		t.Fatalf("first record %s %q", done.Status, done.ErrorMessage)
	}
	r := f.env.Do("POST", f.basePath+"/records/"+first.ID+"/rerun", nil)
	wantStatus(t, r, http.StatusCreated)
	var again model.Record
	r.JSON(t, &again)
	if again.ID == first.ID || again.Trigger != model.TriggerUser || again.PerformParams.Ref != "master" ||
		again.PerformParams.Description != "first try" || strings.Join(again.PerformParams.Stages, ",") != "codeCheckout,unitTest" {
		t.Fatalf("rerun record %+v", again)
	}
	rerun := f.waitTerminal(t, again.ID)
	if rerun.Status != model.StatusSuccess || rerun.Name == "" || rerun.Name == done.Name && rerun.StartTime.Equal(done.StartTime) ||
		rerun.StageStatus.Package != nil {
		t.Fatalf("rerun %+v (first %s)", rerun, done.Name)
	}

	running := f.start(t, map[string]any{"ref": "master"})
	f.waitFor(t, running.ID, "package running", func(r model.Record) bool {
		return r.StageStatus != nil && r.StageStatus.Package != nil && r.StageStatus.Package.Status == model.StatusRunning
	})
	wantError(t, f.env.Do("POST", f.basePath+"/records/"+running.ID+"/rerun", nil), http.StatusConflict, api.ReasonInvalidStateChange, "")
	f.abort(t, running.ID)
	wantError(t, f.env.Do("POST", f.basePath+"/records/nope/rerun", nil), http.StatusNotFound, api.ReasonNotFound, "")
}
