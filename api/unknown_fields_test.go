package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// TestUnknownFieldsIgnored: a body with fields the API does not know (a newer
// client's, a typo) is accepted, the known fields are applied, and the unknown ones
// are neither stored nor echoed back; a server-owned field in the body is ignored.
func TestUnknownFieldsIgnored(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})

	body := projectBody("extra")
	body["colour"] = "blue"
	body["creationTime"] = "1999-01-01T00:00:00Z"
	body["scm"].(map[string]any)["webhookMode"] = "fancy"
	r := env.Do("POST", "/api/v1/projects", body)
	wantStatus(t, r, http.StatusCreated)
	var p model.Project
	r.JSON(t, &p)
	if p.Name != "extra" || p.Description != "demo" || p.SCM.Type != model.SCMGithub {
		t.Fatalf("known fields not applied: %+v", p)
	}
	if p.CreationTime.Year() == 1999 {
		t.Errorf("creationTime taken from the body: %v", p.CreationTime)
	}

	r = env.Do("GET", "/api/v1/projects/extra", nil)
	wantStatus(t, r, http.StatusOK)
	for _, unknown := range []string{"colour", "blue", "webhookMode", "fancy"} {
		if strings.Contains(string(r.Body), unknown) {
			t.Errorf("unknown field stored and returned (%q): %s", unknown, r.Body)
		}
	}
}
