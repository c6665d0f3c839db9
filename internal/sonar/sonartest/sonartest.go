// Package sonartest runs a loopback stand-in for a SonarQube server in tests. It
// answers the Web API endpoints Cyclone calls with the JSON SonarQube documents
// (api/authentication/validate, api/components/show, api/projects/create|delete,
// api/qualitygates/select|project_status, api/ce/task, api/measures/component) and
// checks the token as SonarQube does: the basic-auth user name.
package sonartest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
)

// Server is a fake SonarQube. Lock mu (through the methods) to read or change its
// state while it serves.
type Server struct {
	*httptest.Server
	// Token is the only token accepted.
	Token string

	mu sync.Mutex
	// StrictValidate makes api/authentication/validate answer 401 to a bad token
	// (a server that forces authentication) instead of {"valid":false}.
	strictValidate bool
	projects       map[string]string   // key -> name
	gates          map[string]string   // quality gate names -> status an analysis gets
	projectGate    map[string]string   // project key -> selected gate name
	tasks          map[string][]string // task ID -> statuses still to report (the last one stays)
	taskProject    map[string]string
	measures       map[string]string // metric -> value
	calls          []string
}

// Start starts a fake SonarQube accepting token; it stops when the test ends. It
// knows the quality gates "Sonar way" (analyses pass) and "strict" (they fail).
func Start(t testing.TB, token string) *Server {
	t.Helper()
	s := &Server{
		Token:       token,
		projects:    map[string]string{},
		gates:       map[string]string{"Sonar way": "OK", "strict": "ERROR"},
		projectGate: map[string]string{},
		tasks:       map[string][]string{},
		taskProject: map[string]string{},
		measures: map[string]string{
			"reliability_rating": "1.0", "sqale_rating": "1.0", "security_rating": "2.0",
			"coverage": "81.5", "duplicated_lines_density": "3.2",
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/authentication/validate", s.validate)
	mux.HandleFunc("GET /api/components/show", s.auth(s.showComponent))
	mux.HandleFunc("POST /api/projects/create", s.auth(s.createProject))
	mux.HandleFunc("POST /api/projects/delete", s.auth(s.deleteProject))
	mux.HandleFunc("POST /api/qualitygates/select", s.auth(s.selectGate))
	mux.HandleFunc("GET /api/qualitygates/project_status", s.auth(s.projectStatus))
	mux.HandleFunc("GET /api/ce/task", s.auth(s.task))
	mux.HandleFunc("GET /api/measures/component", s.auth(s.measuresOf))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls = append(s.calls, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// SetStrictValidate makes a bad token a 401 on api/authentication/validate.
func (s *Server) SetStrictValidate(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.strictValidate = on
}

// AddTask registers a compute-engine task of the project that reports the given
// statuses, one per read; the last one stays.
func (s *Server) AddTask(id, projectKey string, statuses ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tasks[id] = statuses
	s.taskProject[id] = projectKey
}

// AddProject creates a project as if someone had made it in SonarQube.
func (s *Server) AddProject(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.projects[key] = key
}

// HasProject reports whether the project exists.
func (s *Server) HasProject(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.projects[key]
	return ok
}

// ProjectGate is the quality gate selected for a project ("" for none).
func (s *Server) ProjectGate(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.projectGate[key]
}

// Calls lists the requests served, as "METHOD /path".
func (s *Server) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeErr answers in SonarQube's error shape.
func writeErr(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]any{"errors": []map[string]string{{"msg": fmt.Sprintf(format, args...)}}})
}

func (s *Server) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	return ok && user == s.Token && pass == ""
}

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.WriteHeader(http.StatusUnauthorized) // SonarQube answers 401 with an empty body
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		h(w, r)
	}
}

func (s *Server) validate(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	strict := s.strictValidate
	s.mu.Unlock()
	ok := s.authorized(r)
	if !ok && strict {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"valid": ok})
}

func (s *Server) showComponent(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("component")
	name, ok := s.projects[key]
	if !ok {
		writeErr(w, http.StatusNotFound, "Component key '%s' not found", key)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"component": map[string]string{"key": key, "name": name, "qualifier": "TRK"}})
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request) {
	key, name := r.PostFormValue("project"), r.PostFormValue("name")
	if key == "" || name == "" {
		writeErr(w, http.StatusBadRequest, "The 'project' and 'name' parameters are missing")
		return
	}
	if _, ok := s.projects[key]; ok {
		writeErr(w, http.StatusBadRequest, "Could not create Project with key: \"%s\". A similar key already exists: \"%s\"", key, key)
		return
	}
	s.projects[key] = name
	writeJSON(w, http.StatusOK, map[string]any{"project": map[string]string{"key": key, "name": name, "qualifier": "TRK", "visibility": "public"}})
}

func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request) {
	key := r.PostFormValue("project")
	if _, ok := s.projects[key]; !ok {
		writeErr(w, http.StatusNotFound, "Project '%s' not found", key)
		return
	}
	delete(s.projects, key)
	delete(s.projectGate, key)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) selectGate(w http.ResponseWriter, r *http.Request) {
	key, gate := r.PostFormValue("projectKey"), r.PostFormValue("gateName")
	if _, ok := s.gates[gate]; !ok {
		writeErr(w, http.StatusNotFound, "No quality gate has been found for name %s", gate)
		return
	}
	if _, ok := s.projects[key]; !ok {
		writeErr(w, http.StatusNotFound, "Project '%s' not found", key)
		return
	}
	s.projectGate[key] = gate
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) gateStatus(key string) string {
	gate := s.projectGate[key]
	if gate == "" {
		gate = "Sonar way"
	}
	return s.gates[gate]
}

func (s *Server) projectStatus(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := q.Get("projectKey")
	if id := q.Get("analysisId"); id != "" {
		key = ""
		for task, k := range s.taskProject {
			if "analysis-"+task == id {
				key = k
			}
		}
	}
	if _, ok := s.projects[key]; !ok {
		writeErr(w, http.StatusNotFound, "Project or analysis not found")
		return
	}
	status := s.gateStatus(key)
	conds := []map[string]string{{"status": status, "metricKey": "new_coverage", "comparator": "LT", "errorThreshold": "80", "actualValue": "81.5"}}
	writeJSON(w, http.StatusOK, map[string]any{"projectStatus": map[string]any{"status": status, "conditions": conds, "ignoredConditions": false}})
}

func (s *Server) task(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	statuses, ok := s.tasks[id]
	if !ok || len(statuses) == 0 {
		writeErr(w, http.StatusNotFound, "No activity found for task '%s'", id)
		return
	}
	status := statuses[0]
	if len(statuses) > 1 {
		s.tasks[id] = statuses[1:]
	}
	task := map[string]any{"id": id, "type": "REPORT", "componentKey": s.taskProject[id], "status": status,
		"submittedAt": "2026-11-23T10:00:00+0000"}
	switch status {
	case "SUCCESS":
		task["analysisId"] = "analysis-" + id
	case "FAILED":
		task["errorMessage"] = "Unsupported language in the report"
	}
	writeJSON(w, http.StatusOK, map[string]any{"task": task})
}

func (s *Server) measuresOf(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("component")
	if _, ok := s.projects[key]; !ok {
		writeErr(w, http.StatusNotFound, "Component key '%s' not found", key)
		return
	}
	var ms []map[string]any
	for metric, value := range s.measures {
		ms = append(ms, map[string]any{"metric": metric, "value": value, "bestValue": false})
	}
	writeJSON(w, http.StatusOK, map[string]any{"component": map[string]any{"key": key, "name": s.projects[key], "qualifier": "TRK", "measures": ms}})
}
