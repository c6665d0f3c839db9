package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/app"
	"github.com/cycloneci/cyclone/internal/devstack"
	"github.com/cycloneci/cyclone/internal/metrics"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// openRoutes are the only routes answered without a bearer token, with why. Every
// other registered route must refuse a request without a valid token, so a route
// added outside the guard fails TestAuthOnEveryRoute until it is listed here.
var openRoutes = map[string]string{
	"GET /healthz": "liveness probe",
	"GET /readyz":  "readiness probe",
	"GET /metrics": "Prometheus scrape endpoint, outside /api/v1",
	"POST /api/v1/pipelines/:pipelineid/githubwebhook":  "deliveries are signed with the pipeline's webhook secret",
	"POST /api/v1/pipelines/:pipelineid/gitlabwebhook":  "deliveries carry the pipeline's webhook secret",
	"POST /api/v1/subversion/:svnrepoid/postcommithook": "the hook URL carries a token derived from the repository",
}

// routeParams fills path parameters with plausible values (of nothing that exists:
// a request that gets through the guard finds nothing to change). A parameter
// missing here fails the test, so a new one is given a value.
var routeParams = map[string]string{
	"project":     "demo",
	"pipeline":    "build",
	"record":      "0b5c2a8e-6a1f-4a53-9d0e-3f7a1c2b4d5e",
	"token":       "5d1e7c3a-2b4f-4c6d-8e9a-0f1b2c3d4e5f",
	"integration": "sonar",
	"cloud":       "local",
	"pipelineid":  "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
	"svnrepoid":   "13f79535-47bb-0310-9956-ffa450edef68",
}

// notFoundPath is what a request to a group's catch-all route (".../*") asks for.
const notFoundPath = "no-such-route"

// TestAuthOnEveryRoute walks every route the real server (app.NewAPI, as `cyclone
// server` builds it) registers: each one but openRoutes answers 401 in the one error
// shape without a token, with a wrong token and with a revoked token, and lets a
// valid token through; each of openRoutes answers the same with and without a token.
// The websocket log stream is refused with 401 before the upgrade.
func TestAuthOnEveryRoute(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	e := app.NewAPI(env.Store, env.Temporal, app.APIOptions{
		Namespace: devstack.DefaultNamespace, TaskQueue: testenv.TaskQueue, AdminToken: testenv.AdminToken,
		Logger: testenv.Logger(), Metrics: metrics.New(), PublicURL: "http://ci.example.com",
	})
	srv := httptest.NewServer(e)
	defer srv.Close()

	// A valid token that may not impersonate, and a revoked one.
	live := createToken(t, srv.URL, "route-walker")
	revoked := createToken(t, srv.URL, "revoked")
	if status, body := send(t, srv.URL, http.MethodDelete, "/api/v1/tokens/"+revoked.ID, testenv.AdminToken); status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", status, body)
	}

	seenOpen := map[string]bool{}
	guarded := 0
	for _, r := range e.Routes() {
		method, path := r.Method, fillParams(t, r.Path)
		if method == echo.RouteNotFound {
			// The guarded group's catch-all: an unknown /api/v1 path is refused too,
			// without telling an anonymous client which paths exist.
			method = http.MethodGet
		}
		if got := matchedRoute(e, method, path); got != r.Path {
			t.Errorf("%s %s: resolves to route %q, want %q (fill its parameters differently)", method, path, got, r.Path)
			continue
		}
		key := r.Method + " " + r.Path
		if why, open := openRoutes[key]; open {
			seenOpen[key] = true
			// Open means the token plays no part: the answer (whatever the handler
			// makes of this request) is the same without one.
			noStatus, noBody := send(t, srv.URL, method, path, "")
			withStatus, withBody := send(t, srv.URL, method, path, testenv.AdminToken)
			if noStatus != withStatus || (noStatus >= 400 && errorOf(noBody) != errorOf(withBody)) {
				t.Errorf("%s (open: %s): without a token %d %s, with one %d %s", key, why, noStatus, short(noBody), withStatus, short(withBody))
			}
			continue
		}
		guarded++
		for _, c := range []struct{ name, token string }{
			{"no token", ""},
			{"wrong token", "cyc_not-a-token-of-this-server"},
			{"revoked token", revoked.Token},
		} {
			status, body := send(t, srv.URL, method, path, c.token)
			wantUnauthorized(t, key+" with "+c.name, status, body, c.token)
		}
		if strings.HasSuffix(r.Path, "/logstream") {
			continue // a valid token upgrades: TestAuthentication streams with one
		}
		if status, body := send(t, srv.URL, method, path, live.Token); status == http.StatusUnauthorized {
			t.Errorf("%s with a valid token: 401 %s", key, short(body))
		}
	}
	if guarded == 0 {
		t.Fatal("no guarded route found")
	}
	var stale []string
	for key := range openRoutes {
		if !seenOpen[key] {
			stale = append(stale, key)
		}
	}
	sort.Strings(stale)
	if len(stale) > 0 {
		t.Errorf("openRoutes lists routes the server does not register: %v", stale)
	}

	// A wrong method on an /api/v1 route is refused like an unknown path: 401
	// without a valid token, and no Allow header to list the route's methods; with
	// one it is a 405 that lists them.
	for _, path := range []string{"/api/v1/openapi.json", "/api/v1/projects/demo/stats",
		"/api/v1/pipelines/" + routeParams["pipelineid"] + "/githubwebhook"} {
		for _, c := range []struct{ name, token string }{{"no token", ""}, {"wrong token", "cyc_not-a-token-of-this-server"}} {
			status, body := send(t, srv.URL, http.MethodPatch, path, c.token)
			wantUnauthorized(t, "PATCH "+path+" with "+c.name, status, body, c.token)
		}
		req, err := http.NewRequest(http.MethodPatch, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if allow := resp.Header.Get("Allow"); allow != "" {
			t.Errorf("PATCH %s without a token: Allow %q tells the route's methods", path, allow)
		}
		req.Header.Set("Authorization", "Bearer "+live.Token)
		if resp, err = http.DefaultClient.Do(req); err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" || !strings.HasPrefix(errorOf(body), api.ReasonMethodNotAllowed+":") {
			t.Errorf("PATCH %s with a valid token: %d (Allow %q) %s, want 405 listing the methods", path, resp.StatusCode, resp.Header.Get("Allow"), short(body))
		}
	}
	// An unknown path stays a 404.
	if status, body := send(t, srv.URL, http.MethodGet, "/api/v1/"+notFoundPath, live.Token); status != http.StatusNotFound {
		t.Errorf("GET an unknown path with a valid token: %d %s, want 404", status, short(body))
	}

	// The websocket log stream: refused with 401 before the upgrade.
	stream := "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/projects/demo/pipelines/build/records/" + routeParams["record"] + "/logstream?stage=unitTest"
	for _, c := range []struct{ name, token string }{
		{"no token", ""},
		{"wrong token", "cyc_not-a-token-of-this-server"},
		{"revoked token", revoked.Token},
	} {
		u := stream
		if c.token != "" {
			u += "&access_token=" + url.QueryEscape(c.token)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn, resp, err := websocket.Dial(ctx, u, nil)
		cancel()
		if err == nil {
			conn.CloseNow()
			t.Fatalf("logstream with %s: upgraded", c.name)
		}
		if resp == nil {
			t.Fatalf("logstream with %s: no HTTP answer: %v", c.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantUnauthorized(t, "logstream with "+c.name, resp.StatusCode, body, c.token)
	}
}

// fillParams puts routeParams in a route's ":param"s and names the catch-all.
func fillParams(t *testing.T, route string) string {
	t.Helper()
	parts := strings.Split(route, "/")
	for i, p := range parts {
		switch {
		case strings.HasPrefix(p, ":"):
			v, ok := routeParams[p[1:]]
			if !ok {
				t.Fatalf("route %s: no value for parameter %s in routeParams", route, p)
			}
			parts[i] = v
		case p == "*":
			parts[i] = notFoundPath
		}
	}
	return strings.Join(parts, "/")
}

// matchedRoute is the route Echo's router picks for a request.
func matchedRoute(e *echo.Echo, method, path string) string {
	c := e.NewContext(httptest.NewRequest(method, path, nil), httptest.NewRecorder())
	e.Router().Find(method, path, c)
	return c.Path()
}

// send makes a request with a JSON body for the methods that carry one (the token
// must be checked before the body is read) and the token if one is given.
func send(t *testing.T, base, method, path, token string) (int, []byte) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	}
	if token != "" {
		req.Header.Set(echo.HeaderAuthorization, "Bearer "+token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

// wantUnauthorized checks a 401 in the one error shape that does not echo the token.
func wantUnauthorized(t *testing.T, what string, status int, body []byte, token string) {
	t.Helper()
	if status != http.StatusUnauthorized {
		t.Errorf("%s: %d %s, want 401", what, status, short(body))
		return
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		t.Errorf("%s: body is not a JSON object: %s", what, short(body))
		return
	}
	for k := range fields {
		if k != "reason" && k != "message" && k != "details" {
			t.Errorf("%s: field %q is not of the error shape: %s", what, k, body)
		}
	}
	var e api.Error
	if err := json.Unmarshal(body, &e); err != nil || e.Reason != api.ReasonUnauthorized || e.Message == "" {
		t.Errorf("%s: %s, want reason %s and a message", what, body, api.ReasonUnauthorized)
	}
	if token != "" && strings.Contains(string(body), token) {
		t.Errorf("%s: the answer repeats the token: %s", what, body)
	}
}

// short is the start of a body, for failure messages.
func short(body []byte) string {
	if len(body) > 300 {
		return string(body[:300]) + "..."
	}
	return string(body)
}

// errorOf is an error answer's reason and message ("" for anything else).
func errorOf(body []byte) string {
	var e api.Error
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	return e.Reason + ": " + e.Message
}

// createToken makes a token (that may not impersonate) with the admin token.
func createToken(t *testing.T, base, name string) model.APIToken {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/api/v1/tokens", strings.NewReader(`{"name":"`+name+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	req.Header.Set(echo.HeaderAuthorization, "Bearer "+testenv.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok model.APIToken
	if resp.StatusCode != http.StatusCreated {
		data, _ := io.ReadAll(resp.Body)
		t.Fatalf("create token %s: %d %s", name, resp.StatusCode, data)
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.Token == "" || tok.ID == "" {
		t.Fatalf("create token %s: %+v, %v", name, tok, err)
	}
	return tok
}
