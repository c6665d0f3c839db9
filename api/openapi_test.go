package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/api"
)

// openAPIMethods are the operation keys of an OpenAPI path item.
var openAPIMethods = map[string]string{
	"get": http.MethodGet, "put": http.MethodPut, "post": http.MethodPost, "delete": http.MethodDelete,
	"options": http.MethodOptions, "head": http.MethodHead, "patch": http.MethodPatch, "trace": http.MethodTrace,
}

// notInDocument are routes left out of the document on purpose, with why.
var notInDocument = map[string]string{
	// Prometheus scrape endpoint (text exposition format, for the monitoring system,
	// not for API clients); registered only when Config.Metrics is set.
	"GET /metrics": "Prometheus metrics",
}

// echoParam matches an Echo path parameter (":project").
var echoParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// TestOpenAPI checks the served document against the routes New registers: every
// (method, path) of e.Routes() is documented and every documented operation is a
// route. Every route is checked, /healthz and /readyz too (they are documented), but
// those in notInDocument, so a new route fails this test until it is documented.
func TestOpenAPI(t *testing.T) {
	// Routes only: no handler but the document's runs, so no dependency is needed
	// (the admin token is checked before any token store would be).
	const admin = "cyc_openapi-test-admin"
	e := api.New(api.Config{AdminToken: admin})
	srv := httptest.NewServer(e)
	defer srv.Close()

	// The document is an /api/v1 route like the others: it needs a token.
	anon, err := http.Get(srv.URL + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	anon.Body.Close()
	if anon.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/openapi.json without a token: %d, want 401", anon.StatusCode)
	}
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/openapi.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(echo.HeaderAuthorization, "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/openapi.json: %d %s", resp.StatusCode, raw)
	}
	if ct := resp.Header.Get(echo.HeaderContentType); !strings.HasPrefix(ct, echo.MIMEApplicationJSON) {
		t.Errorf("Content-Type %q, want application/json", ct)
	}

	var doc struct {
		OpenAPI string `json:"openapi"`
		Info    struct {
			Title   string `json:"title"`
			Version string `json:"version"`
		} `json:"info"`
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("the document is not valid JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	if doc.Info.Title == "" || doc.Info.Version == "" {
		t.Errorf("info.title %q and info.version %q must both be set", doc.Info.Title, doc.Info.Version)
	}

	// The routes, in OpenAPI's spelling: ":param" becomes "{param}".
	registered := map[string]bool{}
	for _, r := range e.Routes() {
		if r.Method == echo.RouteNotFound {
			continue // Echo's catch-all 404 routes for group middleware, not endpoints
		}
		route := r.Method + " " + echoParam.ReplaceAllString(r.Path, "{$1}")
		if notInDocument[route] == "" {
			registered[route] = true
		}
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for key := range item {
			if m, ok := openAPIMethods[key]; ok {
				if route := m + " " + path; notInDocument[route] == "" {
					documented[route] = true
				} else {
					t.Errorf("%s is documented but listed in notInDocument", route)
				}
			}
		}
	}
	if missing := minus(registered, documented); len(missing) > 0 {
		t.Errorf("registered in api.New but not in api/openapi.json:\n  %s", strings.Join(missing, "\n  "))
	}
	if extra := minus(documented, registered); len(extra) > 0 {
		t.Errorf("in api/openapi.json but not registered in api.New:\n  %s", strings.Join(extra, "\n  "))
	}
	if len(registered) == 0 {
		t.Fatal("no route registered")
	}

	var tree map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	checkRefs(t, tree)
	checkPathParams(t, tree)
	checkOpenOperations(t, tree)
}

// checkOpenOperations fails unless the operations the document marks as needing no
// token ("security": []) are exactly the documented routes of openRoutes, the ones
// the server leaves open.
func checkOpenOperations(t *testing.T, root map[string]any) {
	t.Helper()
	want := map[string]bool{}
	for route := range openRoutes {
		method, path, _ := strings.Cut(route, " ")
		if route = method + " " + echoParam.ReplaceAllString(path, "{$1}"); notInDocument[route] == "" {
			want[route] = true
		}
	}
	open := map[string]bool{}
	paths, _ := root["paths"].(map[string]any)
	for path, v := range paths {
		item, _ := v.(map[string]any)
		for key, opv := range item {
			m, ok := openAPIMethods[key]
			op, _ := opv.(map[string]any)
			if !ok || op == nil {
				continue
			}
			if sec, ok := op["security"].([]any); ok && len(sec) == 0 {
				open[m+" "+path] = true
			}
		}
	}
	if extra := minus(open, want); len(extra) > 0 {
		t.Errorf("documented as needing no token, but the server requires one:\n  %s", strings.Join(extra, "\n  "))
	}
	if missing := minus(want, open); len(missing) > 0 {
		t.Errorf("open on the server, but documented as needing a token:\n  %s", strings.Join(missing, "\n  "))
	}
}

// minus lists the keys of a that are not in b, sorted.
func minus(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// checkRefs fails for every $ref that does not point at a defined component.
func checkRefs(t *testing.T, root map[string]any) {
	t.Helper()
	n := 0
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"].(string); ok {
				n++
				if !strings.HasPrefix(r, "#/components/") {
					t.Errorf("%s: $ref %q does not point into #/components", where, r)
				} else if resolve(root, r) == nil {
					t.Errorf("%s: $ref %q is not defined", where, r)
				}
			}
			for k, child := range v {
				walk(where+"/"+k, child)
			}
		case []any:
			for _, child := range v {
				walk(where+"/[]", child)
			}
		}
	}
	walk("#", root)
	if n == 0 {
		t.Error("no $ref at all: the document does not use components/schemas")
	}
}

// resolve follows a local JSON pointer; nil if it leads nowhere.
func resolve(root map[string]any, ref string) any {
	var cur any = root
	for _, tok := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[tok]; !ok {
			return nil
		}
	}
	return cur
}

var templateParam = regexp.MustCompile(`\{([^}]+)\}`)

// checkPathParams fails for a "{param}" of a path that an operation does not declare
// as a required path parameter (at path or operation level).
func checkPathParams(t *testing.T, root map[string]any) {
	t.Helper()
	declared := func(list any, into map[string]bool) {
		items, _ := list.([]any)
		for _, p := range items {
			pm, _ := p.(map[string]any)
			if r, ok := pm["$ref"].(string); ok {
				pm, _ = resolve(root, r).(map[string]any)
			}
			if pm["in"] == "path" && pm["required"] == true {
				into[pm["name"].(string)] = true
			}
		}
	}
	paths, _ := root["paths"].(map[string]any)
	for path, v := range paths {
		item, _ := v.(map[string]any)
		for key, opv := range item {
			if _, ok := openAPIMethods[key]; !ok {
				continue
			}
			have := map[string]bool{}
			declared(item["parameters"], have)
			if op, ok := opv.(map[string]any); ok {
				declared(op["parameters"], have)
			}
			for _, m := range templateParam.FindAllStringSubmatch(path, -1) {
				if !have[m[1]] {
					t.Errorf("%s %s: path parameter %q is not declared", strings.ToUpper(key), path, m[1])
				}
			}
		}
	}
}
