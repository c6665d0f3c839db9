package api_test

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/sonar"
	"github.com/cycloneci/cyclone/internal/sonar/sonartest"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/internal/testenv"
)

const sonarToken = "squ_1f2e3d4c5b6a-s3cr3t"

func sonarBody(name, address, token string) map[string]any {
	return map[string]any{"name": name, "alias": "Sonar " + name, "type": "SonarQube",
		"sonarqube": map[string]any{"description": "the team's SonarQube", "address": address, "token": token, "user": "ci-bot"}}
}

func countIntegrations(t *testing.T, env *testenv.Env) int64 {
	t.Helper()
	_, total, err := env.Store.ListIntegrations(context.Background(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// wantNoToken fails when an answer carries the token.
func wantNoToken(t *testing.T, r *testenv.Response, tokens ...string) {
	t.Helper()
	for _, tok := range tokens {
		if strings.Contains(string(r.Body), tok) {
			t.Fatalf("the token is in the answer: %s", r.Body)
		}
	}
}

func TestIntegrationsCRUD(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	srv := sonartest.Start(t, sonarToken)

	r := env.Do("POST", "/api/v1/integrations", sonarBody("sonar1", srv.URL, sonarToken))
	wantStatus(t, r, http.StatusCreated)
	wantNoToken(t, r, sonarToken)
	var in model.Integration
	r.JSON(t, &in)
	if in.Name != "sonar1" || in.Type != model.IntegrationSonarQube || in.SonarQube == nil || !in.SonarQube.TokenSet ||
		in.SonarQube.Address != srv.URL || in.SonarQube.User != "ci-bot" || in.CreationTime.IsZero() {
		t.Fatalf("created %+v %+v", in, in.SonarQube)
	}
	if calls := srv.Calls(); len(calls) != 1 || calls[0] != "GET /api/authentication/validate" {
		t.Fatalf("SonarQube calls %v, want one token check", calls)
	}

	r = env.Do("GET", "/api/v1/integrations/sonar1", nil)
	wantStatus(t, r, http.StatusOK)
	wantNoToken(t, r, sonarToken)
	r = env.Do("GET", "/api/v1/integrations", nil)
	wantStatus(t, r, http.StatusOK)
	wantNoToken(t, r, sonarToken)
	var list struct {
		Metadata struct{ Total int }
		Items    []model.Integration
	}
	r.JSON(t, &list)
	if list.Metadata.Total != 1 || len(list.Items) != 1 || list.Items[0].Name != "sonar1" || !list.Items[0].SonarQube.TokenSet {
		t.Fatalf("list %s", r.Body)
	}
	if sec, err := env.Store.IntegrationSecret(context.Background(), "sonar1"); err != nil || sec.Token != sonarToken {
		t.Fatalf("stored secret %+v, %v", sec, err)
	}
	wantError(t, env.Do("POST", "/api/v1/integrations", sonarBody("sonar1", srv.URL, sonarToken)), http.StatusConflict, "AlreadyExists", "")

	// An update without a token keeps it (same address) and does not ask SonarQube.
	before := len(srv.Calls())
	body := sonarBody("sonar1", srv.URL, "")
	body["sonarqube"].(map[string]any)["description"] = "edited"
	r = env.Do("PUT", "/api/v1/integrations/sonar1", body)
	wantStatus(t, r, http.StatusOK)
	r.JSON(t, &in)
	if in.SonarQube.Description != "edited" || !in.SonarQube.TokenSet || len(srv.Calls()) != before {
		t.Fatalf("updated %+v; SonarQube calls %v", in.SonarQube, srv.Calls()[before:])
	}
	if sec, _ := env.Store.IntegrationSecret(context.Background(), "sonar1"); sec.Token != sonarToken {
		t.Fatalf("token lost by an update without one: %+v", sec)
	}
	// A body without name and type keeps them.
	r = env.Do("PUT", "/api/v1/integrations/sonar1", map[string]any{"sonarqube": map[string]any{"address": srv.URL + "/", "token": sonarToken}})
	wantStatus(t, r, http.StatusOK)
	wantNoToken(t, r, sonarToken)
	r.JSON(t, &in)
	if in.Name != "sonar1" || in.Type != "SonarQube" || in.SonarQube.Address != srv.URL {
		t.Fatalf("updated %+v %+v", in, in.SonarQube)
	}

	snapshot, err := env.Store.GetIntegration(context.Background(), "sonar1")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("bad input changes nothing", func(t *testing.T) {
		other := sonartest.Start(t, "squ_other")
		other.SetStrictValidate(true)
		closed := fmt.Sprintf("http://127.0.0.1:%d", closedPort(t))
		cases := []struct {
			name   string
			method string
			path   string
			body   any
			status int
			reason string
			field  string
		}{
			{"bad name", "POST", "", sonarBody("Bad Name", srv.URL, sonarToken), 400, "InvalidField", "name"},
			{"bad type", "POST", "", map[string]any{"name": "s2", "type": "Jenkins", "sonarqube": map[string]any{"address": srv.URL, "token": sonarToken}}, 400, "InvalidField", "type"},
			{"no sonarqube", "POST", "", map[string]any{"name": "s2", "type": "SonarQube"}, 400, "InvalidField", "sonarqube"},
			{"no address", "POST", "", sonarBody("s2", "", sonarToken), 400, "InvalidField", "sonarqube.address"},
			{"ftp address", "POST", "", sonarBody("s2", "ftp://sonar.example.com", sonarToken), 400, "InvalidField", "sonarqube.address"},
			{"metadata address", "POST", "", sonarBody("s2", "http://169.254.169.254", sonarToken), 400, "InvalidField", "sonarqube.address"},
			{"credentials in address", "POST", "", sonarBody("s2", "http://admin:pw@127.0.0.1:9000", sonarToken), 400, "InvalidField", "sonarqube.address"},
			{"no token", "POST", "", sonarBody("s2", srv.URL, ""), 400, "InvalidField", "sonarqube.token"},
			{"token refused (valid false)", "POST", "", sonarBody("s2", srv.URL, "squ_wrong"), 400, "InvalidField", "sonarqube.token"},
			{"token refused (401)", "POST", "", sonarBody("s2", other.URL, "squ_wrong"), 400, "InvalidField", "sonarqube.token"},
			{"not SonarQube", "POST", "", sonarBody("s2", env.URL+"/nothing", sonarToken), 400, "InvalidField", "sonarqube.address"},
			{"unreachable", "POST", "", sonarBody("s2", closed, sonarToken), 502, "SonarQubeUnreachable", "sonarqube.address"},
			{"malformed JSON", "POST", "", `{"name":`, 400, "MalformedJSON", ""},
			{"rename", "PUT", "/sonar1", sonarBody("sonar2", srv.URL, ""), 400, "InvalidField", "name"},
			{"new address without token", "PUT", "/sonar1", sonarBody("sonar1", other.URL, ""), 400, "InvalidField", "sonarqube.token"},
			{"new token refused", "PUT", "/sonar1", sonarBody("sonar1", srv.URL, "squ_wrong"), 400, "InvalidField", "sonarqube.token"},
			{"update unreachable", "PUT", "/sonar1", sonarBody("sonar1", closed, sonarToken), 502, "SonarQubeUnreachable", "sonarqube.address"},
			{"update missing", "PUT", "/nope", sonarBody("nope", srv.URL, sonarToken), 404, "NotFound", ""},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := env.Do(c.method, "/api/v1/integrations"+c.path, c.body)
				wantError(t, r, c.status, c.reason, c.field)
				wantNoToken(t, r, sonarToken, "squ_wrong")
				if n := countIntegrations(t, env); n != 1 {
					t.Fatalf("%d integrations after a refused request", n)
				}
				got, err := env.Store.GetIntegration(context.Background(), "sonar1")
				if err != nil || !reflect.DeepEqual(got.SonarQube, snapshot.SonarQube) || !got.LastUpdateTime.Equal(snapshot.LastUpdateTime) {
					t.Fatalf("sonar1 changed: %+v, %v", got.SonarQube, err)
				}
				if sec, _ := env.Store.IntegrationSecret(context.Background(), "sonar1"); sec.Token != sonarToken {
					t.Fatalf("token changed by a refused request")
				}
			})
		}
	})

	wantStatus(t, env.Do("DELETE", "/api/v1/integrations/sonar1", nil), http.StatusNoContent)
	wantError(t, env.Do("GET", "/api/v1/integrations/sonar1", nil), http.StatusNotFound, "NotFound", "")
	wantError(t, env.Do("DELETE", "/api/v1/integrations/sonar1", nil), http.StatusNotFound, "NotFound", "")
}

func codeScanPipeline(name, integration, image string) map[string]any {
	return map[string]any{"name": name, "build": map[string]any{
		"builderImage": map[string]any{"image": image},
		"stages": map[string]any{"codeScan": map[string]any{"sonarqube": map[string]any{
			"name": integration, "config": map[string]any{"sourcePath": "./", "threshold": "strict"}}}},
	}}
}

// Deleting a pipeline deletes its SonarQube project; a SonarQube that cannot be
// reached does not stop the deletion.
func TestPipelineDeletionDeletesSonarProject(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	srv := sonartest.Start(t, sonarToken)
	wantStatus(t, env.Do("POST", "/api/v1/integrations", sonarBody("sonar1", srv.URL, sonarToken)), http.StatusCreated)
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("scanned")), http.StatusCreated)

	wantError(t, env.Do("POST", "/api/v1/projects/scanned/pipelines", codeScanPipeline("p0", "nope", "busybox")),
		http.StatusBadRequest, "InvalidField", "build.stages.codeScan.sonarqube.name")

	for _, p := range []string{"p1", "p2"} {
		wantStatus(t, env.Do("POST", "/api/v1/projects/scanned/pipelines", codeScanPipeline(p, "sonar1", "busybox")), http.StatusCreated)
		srv.AddProject(sonar.ProjectKey("scanned", p))
	}
	// An integration pipelines scan with cannot be deleted.
	r := env.Do("DELETE", "/api/v1/integrations/sonar1", nil)
	wantError(t, r, http.StatusConflict, "Conflict", "")
	if !strings.Contains(string(r.Body), `"pipelines":["p1","p2"]`) {
		t.Fatalf("conflict does not name the pipelines: %s", r.Body)
	}
	wantStatus(t, env.Do("DELETE", "/api/v1/projects/scanned/pipelines/p1", nil), http.StatusNoContent)
	if srv.HasProject(sonar.ProjectKey("scanned", "p1")) || !srv.HasProject(sonar.ProjectKey("scanned", "p2")) {
		t.Fatalf("after deleting p1: p1 project %v (want gone), p2 project %v (want kept)",
			srv.HasProject(sonar.ProjectKey("scanned", "p1")), srv.HasProject(sonar.ProjectKey("scanned", "p2")))
	}

	// Deleting the project deletes its pipelines' SonarQube projects too.
	wantStatus(t, env.Do("DELETE", "/api/v1/projects/scanned", nil), http.StatusNoContent)
	if srv.HasProject(sonar.ProjectKey("scanned", "p2")) {
		t.Fatal("the deleted project's pipeline kept its SonarQube project")
	}

	// SonarQube down: the pipeline is deleted all the same.
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("scanned2")), http.StatusCreated)
	wantStatus(t, env.Do("POST", "/api/v1/projects/scanned2/pipelines", codeScanPipeline("p3", "sonar1", "busybox")), http.StatusCreated)
	srv.Close()
	wantStatus(t, env.Do("DELETE", "/api/v1/projects/scanned2/pipelines/p3", nil), http.StatusNoContent)
	wantError(t, env.Do("GET", "/api/v1/projects/scanned2/pipelines/p3", nil), http.StatusNotFound, "NotFound", "")
	// No pipeline uses it any more.
	wantStatus(t, env.Do("DELETE", "/api/v1/integrations/sonar1", nil), http.StatusNoContent)
}
