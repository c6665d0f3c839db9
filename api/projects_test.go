package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// fakeGitHub verifies the projects' credentials (any token starting "tok-"): it
// lives as long as the test process.
var fakeGitHub = sync.OnceValue(func() *testenv.GitHub { return testenv.NewGitHub("") })

func projectBody(name string) map[string]any {
	return map[string]any{
		"name": name, "alias": "Alias " + name, "description": "demo",
		"scm": map[string]any{"type": "github", "server": fakeGitHub().URL, "username": "bot", "token": "tok-" + name + "-s3cr3t"},
	}
}

func wantStatus(t *testing.T, r *testenv.Response, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
}

// wantError checks the one error shape, with the field named when one is given.
func wantError(t *testing.T, r *testenv.Response, status int, reason, field string) {
	t.Helper()
	wantStatus(t, r, status)
	var e api.Error
	r.JSON(t, &e)
	if e.Reason != reason || e.Message == "" {
		t.Fatalf("error %+v, want reason %s and a message", e, reason)
	}
	if field != "" && e.Details["field"] != field {
		t.Fatalf("error details %v, want field %q", e.Details, field)
	}
	if m := strings.TrimSpace(e.Message); strings.HasPrefix(m, "{") && json.Valid([]byte(m)) {
		t.Fatalf("error body nests JSON in a string: %s", r.Body)
	}
}

func countProjects(t *testing.T, env *testenv.Env) int64 {
	t.Helper()
	_, total, err := env.Store.ListProjects(context.Background(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

func TestProjectsCRUD(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})

	r := env.Do("POST", "/api/v1/projects", projectBody("alpha"), "X-User", "alice")
	wantStatus(t, r, http.StatusCreated)
	var p model.Project
	r.JSON(t, &p)
	if p.Name != "alpha" || p.Owner != "alice" || p.SCM.Type != "Github" || p.CreationTime.IsZero() || p.LastUpdateTime.IsZero() {
		t.Fatalf("created project %+v", p)
	}
	if p.SCM.Token != "" || !p.SCM.TokenSet || strings.Contains(string(r.Body), "s3cr3t") {
		t.Fatalf("token leaked or not flagged: %s", r.Body)
	}

	r = env.Do("GET", "/api/v1/projects/alpha", nil)
	wantStatus(t, r, http.StatusOK)
	if strings.Contains(string(r.Body), "s3cr3t") {
		t.Fatalf("GET returned the token: %s", r.Body)
	}

	// The token is stored encrypted and opens with the key.
	creds, err := env.Store.ProjectCredentials(context.Background(), p.ID)
	if err != nil || creds.SCMToken != "tok-alpha-s3cr3t" {
		t.Fatalf("credentials %+v, %v", creds, err)
	}

	// Update without a token keeps the stored one; PATCH works like PUT.
	upd := projectBody("alpha")
	upd["description"] = "changed"
	delete(upd["scm"].(map[string]any), "token")
	for _, method := range []string{"PUT", "PATCH"} {
		r = env.Do(method, "/api/v1/projects/alpha", upd)
		wantStatus(t, r, http.StatusOK)
		var got model.Project
		r.JSON(t, &got)
		if got.Description != "changed" || !got.SCM.TokenSet || got.Owner != "alice" || !got.CreationTime.Equal(p.CreationTime) {
			t.Fatalf("%s: updated project %+v", method, got)
		}
	}
	if creds, _ := env.Store.ProjectCredentials(context.Background(), p.ID); creds.SCMToken != "tok-alpha-s3cr3t" {
		t.Fatalf("token lost on update: %+v", creds)
	}

	for _, name := range []string{"beta", "gamma"} {
		wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody(name)), http.StatusCreated)
	}
	var list struct {
		Metadata struct{ Total int64 } `json:"metadata"`
		Items    []model.Project       `json:"items"`
	}
	env.Do("GET", "/api/v1/projects?start=1&limit=1", nil).JSON(t, &list)
	if list.Metadata.Total != 3 || len(list.Items) != 1 || list.Items[0].Name != "beta" {
		t.Fatalf("page: %+v", list)
	}
	env.Do("GET", "/api/v1/projects?filter=name=gamma", nil).JSON(t, &list)
	if list.Metadata.Total != 1 || list.Items[0].Name != "gamma" {
		t.Fatalf("filter: %+v", list)
	}
	// A regex in a filter value is a literal, never a pattern.
	env.Do("GET", "/api/v1/projects?filter=name=.*", nil).JSON(t, &list)
	if list.Metadata.Total != 0 || list.Items == nil {
		t.Fatalf("regex filter matched or items null: %+v", list)
	}

	wantStatus(t, env.Do("DELETE", "/api/v1/projects/alpha", nil), http.StatusNoContent)
	wantError(t, env.Do("GET", "/api/v1/projects/alpha", nil), http.StatusNotFound, api.ReasonNotFound, "")
	wantError(t, env.Do("DELETE", "/api/v1/projects/alpha", nil), http.StatusNotFound, api.ReasonNotFound, "")
}

func TestProjectNameFromAlias(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	body := func() map[string]any {
		b := projectBody("")
		delete(b, "name")
		b["alias"] = "My Great_Project!"
		return b
	}
	var first, second model.Project
	r := env.Do("POST", "/api/v1/projects", body())
	wantStatus(t, r, http.StatusCreated)
	r.JSON(t, &first)
	r = env.Do("POST", "/api/v1/projects", body())
	wantStatus(t, r, http.StatusCreated)
	r.JSON(t, &second)
	if first.Name != "my-great-project" || !strings.HasPrefix(second.Name, "my-great-project-") || !model.ValidName(second.Name) {
		t.Fatalf("generated names %q and %q", first.Name, second.Name)
	}
}

func TestProjectBadInput(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("taken")), http.StatusCreated)
	before := countProjects(t, env)

	with := func(mut func(b map[string]any)) map[string]any {
		b := projectBody("fresh")
		mut(b)
		return b
	}
	cases := []struct {
		name        string
		contentType string
		body        any
		status      int
		reason      string
		field       string
	}{
		{"uppercase name", "", with(func(b map[string]any) { b["name"] = "Bad_Name" }), 400, api.ReasonInvalidField, "name"},
		{"name with a leading dash", "", with(func(b map[string]any) { b["name"] = "-abc" }), 400, api.ReasonInvalidField, "name"},
		{"name too long", "", with(func(b map[string]any) { b["name"] = strings.Repeat("a", 64) }), 400, api.ReasonInvalidField, "name"},
		{"long description", "", with(func(b map[string]any) { b["description"] = strings.Repeat("x", 101) }), 400, api.ReasonInvalidField, "description"},
		{"missing scm", "", with(func(b map[string]any) { delete(b, "scm") }), 400, api.ReasonInvalidField, "scm"},
		{"unknown scm type", "", with(func(b map[string]any) { b["scm"].(map[string]any)["type"] = "Bitbucket" }), 400, api.ReasonInvalidField, "scm.type"},
		{"missing scm server", "", with(func(b map[string]any) { delete(b["scm"].(map[string]any), "server") }), 400, api.ReasonInvalidField, "scm.server"},
		{"wrong field type", "", with(func(b map[string]any) { b["description"] = 42 }), 400, api.ReasonInvalidField, "description"},
		{"no name and unusable alias", "", with(func(b map[string]any) { delete(b, "name"); b["alias"] = "!!!" }), 400, api.ReasonInvalidField, "name"},
		{"duplicate", "", projectBody("taken"), 409, api.ReasonAlreadyExists, ""},
		{"malformed JSON", "", `{"name": "x",`, 400, api.ReasonMalformedJSON, ""},
		{"not JSON at all", "", `name=x`, 400, api.ReasonMalformedJSON, ""},
		{"empty body", "", ``, 400, api.ReasonMalformedJSON, ""},
		{"oversize body", "", fmt.Sprintf(`{"name":"big","description":%q}`, strings.Repeat("x", api.MaxBodyBytes+1)), 413, api.ReasonTooLarge, ""},
		{"wrong content type", "text/plain", projectBody("fresh"), 415, api.ReasonUnsupportedMedia, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var header []string
			if tc.contentType != "" {
				header = []string{"Content-Type", tc.contentType}
			}
			r := env.Do("POST", "/api/v1/projects", tc.body, header...)
			wantError(t, r, tc.status, tc.reason, tc.field)
			if n := countProjects(t, env); n != before {
				t.Fatalf("%d projects after a refused request, want %d", n, before)
			}
		})
	}

	t.Run("bad paging", func(t *testing.T) {
		wantError(t, env.Do("GET", "/api/v1/projects?limit=abc", nil), 400, api.ReasonInvalidField, "limit")
		wantError(t, env.Do("GET", "/api/v1/projects?start=-1", nil), 400, api.ReasonInvalidField, "start")
		wantError(t, env.Do("GET", "/api/v1/projects?filter=token=x", nil), 400, api.ReasonInvalidField, "filter")
	})
	t.Run("update to a taken name", func(t *testing.T) {
		wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("other")), http.StatusCreated)
		wantError(t, env.Do("PUT", "/api/v1/projects/other", projectBody("taken")), 409, api.ReasonAlreadyExists, "")
	})
}

func TestHealth(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	wantStatus(t, env.Do("GET", "/healthz", nil), http.StatusOK)
	r := env.Do("GET", "/readyz", nil)
	wantStatus(t, r, http.StatusOK)
	if !strings.Contains(string(r.Body), `"mongodb":"ok"`) || !strings.Contains(string(r.Body), `"temporal":"ok"`) {
		t.Fatalf("readyz: %s", r.Body)
	}
}

func TestStoreOutageIs503(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("before")), http.StatusCreated)
	env.StopMongo()

	r := env.Do("GET", "/readyz", nil)
	wantError(t, r, http.StatusServiceUnavailable, api.ReasonUnavailable, "")
	if !strings.Contains(string(r.Body), "mongodb") {
		t.Fatalf("readyz does not name MongoDB: %s", r.Body)
	}
	r = env.Do("GET", "/api/v1/projects", nil)
	wantError(t, r, http.StatusServiceUnavailable, api.ReasonUnavailable, "")
	if strings.Contains(string(r.Body), "127.0.0.1") || strings.Contains(string(r.Body), "connection") {
		t.Fatalf("503 leaks internals: %s", r.Body)
	}
	wantError(t, env.Do("POST", "/api/v1/projects", projectBody("during")), http.StatusServiceUnavailable, api.ReasonUnavailable, "")
}

// A body over the limit is refused with 413 however it is sent, and a body with
// anything after its JSON value is malformed.
func TestBodyLimitsAndTrailingData(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	big := fmt.Sprintf(`{"name":"big","scm":{"type":"Github","server":"https://x"},"description":%q}`, strings.Repeat("x", api.MaxBodyBytes))
	for name, body := range map[string]io.Reader{
		"chunked, far over":  io.MultiReader(strings.NewReader(big), strings.NewReader(strings.Repeat(" ", 2<<20))),
		"chunked, just over": strings.NewReader(big),
	} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", env.URL+"/api/v1/projects", io.NopCloser(body)) // no Content-Length: chunked
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+testenv.AdminToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			wantError(t, &testenv.Response{Status: resp.StatusCode, Body: data}, http.StatusRequestEntityTooLarge, api.ReasonTooLarge, "")
		})
	}
	wantError(t, env.Do("POST", "/api/v1/projects", `{"name":"a","scm":{"type":"Github","server":"https://x"}} {"more":1}`),
		http.StatusBadRequest, api.ReasonMalformedJSON, "")
	if n := countProjects(t, env); n != 0 {
		t.Fatalf("%d projects created by refused requests", n)
	}
}
