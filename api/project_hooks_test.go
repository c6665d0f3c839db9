package api_test

import (
	"net/http"
	"testing"

	"github.com/cycloneci/cyclone/internal/testenv"
)

// Deleting a project removes its pipelines' webhooks from the SCM (with the project's
// credentials, before they go with it), and leaves another project's hooks alone.
func TestDeleteProjectRemovesWebhooks(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	gh := testenv.StartGitHub(t, "tok-admin-s3cr3t")
	gh.AddRepo("octo/hello", testenv.GitHubRepo{Branches: []string{"master"}})
	gh.AddRepo("octo/other", testenv.GitHubRepo{Branches: []string{"master"}})
	creds := map[string]any{"username": "bot", "token": "tok-admin-s3cr3t"}
	push := map[string]any{"push": map[string]any{"stages": []string{"unitTest"}}}
	source := func(repo string) map[string]any {
		return map[string]any{"type": "Github", "main": true, "gitHub": map[string]any{"url": gh.URL + "/" + repo + ".git", "ref": "refs/heads/master"}}
	}

	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("doomed", "Github", gh.URL, creds)), http.StatusCreated)
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("kept", "Github", gh.URL, creds)), http.StatusCreated)
	createHookPipeline(t, env, "doomed", hookPipelineBody("app", source("octo/hello"), push, nil))
	createHookPipeline(t, env, "doomed", hookPipelineBody("lib", source("octo/other"), push, nil))
	kept := createHookPipeline(t, env, "kept", hookPipelineBody("app", source("octo/other"), push, nil))
	if a, b := len(gh.Hooks("octo/hello")), len(gh.Hooks("octo/other")); a != 1 || b != 2 {
		t.Fatalf("registered hooks: octo/hello %d, octo/other %d; want 1, 2", a, b)
	}

	wantStatus(t, env.Do("DELETE", "/api/v1/projects/doomed", nil), http.StatusNoContent)
	if hooks := gh.Hooks("octo/hello"); len(hooks) != 0 {
		t.Fatalf("hook left on octo/hello after the project's deletion: %v", hooks)
	}
	other := gh.Hooks("octo/other")
	if len(other) != 1 {
		t.Fatalf("hooks on octo/other after the deletion: %v, want the other project's only", other)
	}
	for _, h := range other {
		cfg, _ := h["config"].(map[string]any)
		if cfg["url"] != env.URL+"/api/v1/pipelines/"+kept.ID+"/githubwebhook" {
			t.Fatalf("the hook left on octo/other is not the kept project's: %v", cfg)
		}
	}
	wantStatus(t, env.Do("GET", "/api/v1/projects/doomed", nil), http.StatusNotFound)
}
