package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/executor/local"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// A project's worker.location.cloudName picks where its records run: a worker
// serving that cloud sets the environment up and runs the stages; records of the
// default cloud go to any worker (the edge worker serves the default cloud too).
func TestRecordsRunOnTheirProjectsCloud(t *testing.T) {
	env := testenv.Start(t, testenv.Options{}) // worker "test" serves the default cloud only
	edgeRoot := t.TempDir()
	env.StartCloudWorker("edge-worker", local.New(edgeRoot), "edge")
	git := testenv.StartGitServer(t)
	repo := git.Repo("app", map[string]string{"README.md": "hi\n"})

	run := func(project, cloud string) string {
		t.Helper()
		body := projectBody(project)
		if cloud != "" {
			body["worker"] = map[string]any{"location": map[string]any{"cloudName": cloud}}
		}
		wantStatus(t, env.Do("POST", "/api/v1/projects", body), http.StatusCreated)
		f := &fixture{env: env, git: git, repoURL: repo}
		f.basePath = "/api/v1/projects/" + project + "/pipelines/p"
		pipeline := map[string]any{"name": "p", "build": map[string]any{
			"builderImage": map[string]any{"image": "x"},
			"stages": map[string]any{
				"codeCheckout": map[string]any{"codeSources": []any{map[string]any{"type": "Github", "main": true, "gitHub": map[string]any{"url": repo}}}},
				"unitTest":     map[string]any{"command": []string{"pwd"}},
			},
		}}
		wantStatus(t, env.Do("POST", "/api/v1/projects/"+project+"/pipelines", pipeline), http.StatusCreated)
		rec := f.waitTerminal(t, f.start(t, map[string]any{"ref": "master"}).ID)
		if rec.Status != model.StatusSuccess {
			t.Fatalf("%s: record %s %q", project, rec.Status, rec.ErrorMessage)
		}
		return f.stageLog(t, rec.ID, "unitTest")
	}
	// Both workers poll the shared queue; only the edge worker the edge cloud's.
	for _, project := range []string{"edge1", "edge2", "edge3"} {
		if log := run(project, "edge"); !strings.Contains(log, edgeRoot) {
			t.Fatalf("a record of the edge cloud ran elsewhere:\n%s", log)
		}
	}
	if log := run("ondefault", ""); !strings.Contains(log, "/workspace") {
		t.Fatalf("a record of the default cloud:\n%s", log)
	}

	// A cloud no worker serves: the record waits for one (no stage starts), and
	// can be aborted while it waits.
	body := projectBody("onmars")
	body["worker"] = map[string]any{"location": map[string]any{"cloudName": "mars"}}
	wantStatus(t, env.Do("POST", "/api/v1/projects", body), http.StatusCreated)
	f := &fixture{env: env, git: git, repoURL: repo}
	wantStatus(t, env.Do("POST", "/api/v1/projects/onmars/pipelines", map[string]any{"name": "p", "build": map[string]any{
		"builderImage": map[string]any{"image": "x"},
		"stages":       map[string]any{"unitTest": map[string]any{"command": []string{"true"}}},
	}}), http.StatusCreated)
	f.basePath = "/api/v1/projects/onmars/pipelines/p"
	waiting := f.start(t, map[string]any{"ref": "master"})
	time.Sleep(3 * time.Second)
	if rec := f.get(t, waiting.ID); model.IsTerminal(rec.Status) || rec.StageStatus.Of(model.StageUnitTest) != nil {
		t.Fatalf("a record of a cloud no worker serves ran: %+v", rec)
	}
	f.abort(t, waiting.ID)
}
