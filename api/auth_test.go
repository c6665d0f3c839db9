package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/internal/testenv"
)

func TestAuthentication(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	none := []string{"Authorization", ""}

	// Every /api/v1 route needs a token, the OpenAPI document too; health and metrics
	// do not (TestAuthOnEveryRoute walks every route).
	wantError(t, f.env.Do("GET", "/api/v1/projects", nil, none...), http.StatusUnauthorized, api.ReasonUnauthorized, "")
	wantError(t, f.env.Do("GET", "/api/v1/projects", nil, "Authorization", "Bearer nope"), http.StatusUnauthorized, api.ReasonUnauthorized, "")
	wantError(t, f.env.Do("POST", "/api/v1/projects", projectBody("sneaky"), none...), http.StatusUnauthorized, api.ReasonUnauthorized, "")
	wantError(t, f.env.Do("GET", "/api/v1/openapi.json", nil, none...), http.StatusUnauthorized, api.ReasonUnauthorized, "")
	wantStatus(t, f.env.Do("GET", "/api/v1/openapi.json", nil), http.StatusOK)
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		wantStatus(t, f.env.Do("GET", path, nil, none...), http.StatusOK)
	}

	// The admin token makes tokens; their secret is shown once and stored hashed.
	r := f.env.Do("POST", "/api/v1/tokens", map[string]any{"name": "ci-bot"})
	wantStatus(t, r, http.StatusCreated)
	var tok model.APIToken
	r.JSON(t, &tok)
	if tok.ID == "" || !strings.HasPrefix(tok.Token, "cyc_") || tok.Impersonate {
		t.Fatalf("new token %+v", tok)
	}
	list := f.env.Do("GET", "/api/v1/tokens", nil)
	wantStatus(t, list, http.StatusOK)
	if strings.Contains(string(list.Body), tok.Token) || !strings.Contains(string(list.Body), tok.ID) {
		t.Fatalf("token list: %s", list.Body)
	}
	if _, err := f.env.Store.LookupToken(context.Background(), store.TokenHash(tok.Token)); err == nil {
		t.Fatal("a token's hash opens it: the hash must be of the secret, looked up by secret")
	}
	bot := []string{"Authorization", "Bearer " + tok.Token}

	// A token that may not impersonate acts as itself whatever X-User says.
	r = f.env.Do("POST", "/api/v1/projects", projectBody("botproject"), append(bot, "X-User", "alice")...)
	wantStatus(t, r, http.StatusCreated)
	var p model.Project
	r.JSON(t, &p)
	if p.Owner != "ci-bot" {
		t.Fatalf("owner %q, want the token's name (X-User is not honoured)", p.Owner)
	}
	r = f.env.Do("POST", "/api/v1/projects", projectBody("adminproject"), "X-User", "alice")
	wantStatus(t, r, http.StatusCreated)
	r.JSON(t, &p)
	if p.Owner != "alice" {
		t.Fatalf("owner %q, want X-User for a token that may impersonate", p.Owner)
	}
	wantError(t, f.env.Do("POST", "/api/v1/tokens", map[string]any{"name": "escalate", "impersonate": true}, bot...),
		http.StatusForbidden, api.ReasonForbidden, "")

	// A live log stream ends when its token is revoked.
	f.pipeline(t, "watched", "x", map[string]any{"unitTest": map[string]any{"command": []string{"while true; do echo tick; sleep 0.2; done"}}})
	rec := f.start(t, map[string]any{"ref": "master"})
	f.waitStageRunning(t, rec.ID, "unitTest")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := "ws" + strings.TrimPrefix(f.env.URL, "http") + f.basePath + "/records/" + rec.ID + "/logstream?stage=unitTest&access_token=" + tok.Token
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if _, _, err := conn.Read(ctx); err != nil {
		t.Fatalf("first line: %v", err)
	}
	wantStatus(t, f.env.Do("DELETE", "/api/v1/tokens/"+tok.ID, nil), http.StatusNoContent)
	for {
		_, _, err := conn.Read(ctx)
		if err == nil {
			continue
		}
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation || !strings.Contains(err.Error(), "token revoked") {
			t.Fatalf("stream ended with %v, want a policy-violation close saying the token was revoked", err)
		}
		break
	}
	wantError(t, f.env.Do("GET", "/api/v1/projects", nil, bot...), http.StatusUnauthorized, api.ReasonUnauthorized, "")
	f.abort(t, rec.ID)
}
