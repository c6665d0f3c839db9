// Package sonar is a client of the SonarQube Web API: what Cyclone needs to check an
// integration's token, keep one SonarQube project per pipeline, and read a scan's
// outcome (compute-engine task, measures, quality gate).
//
// The server address passes the SCM URL guard (scm.CheckURL) before any request and
// every connection goes through scm.HTTPClient, so an address cannot point Cyclone
// at link-local or cloud-metadata hosts. The token authenticates as SonarQube
// documents for user tokens: it is the basic-auth user name with an empty password,
// which every SonarQube version accepts. Errors never contain the token.
package sonar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
)

// Errors the client's methods wrap (test with errors.Is).
var (
	// ErrBadURL: the address is not an allowed http(s) URL.
	ErrBadURL = errors.New("the SonarQube address is not allowed")
	// ErrUnauthorized: SonarQube refused the token.
	ErrUnauthorized = errors.New("SonarQube refused the token")
	// ErrForbidden: the token is valid but lacks a permission the call needs.
	ErrForbidden = errors.New("the SonarQube token lacks the permission")
	// ErrNotFound: the project (or task, gate) does not exist.
	ErrNotFound = errors.New("not found on SonarQube")
	// ErrUnreachable: the server could not be reached, failed (5xx) or does not
	// speak the SonarQube Web API.
	ErrUnreachable = errors.New("SonarQube could not be reached")
	// ErrTaskFailed: the compute-engine task ended FAILED or CANCELED.
	ErrTaskFailed = errors.New("the SonarQube analysis did not succeed")
)

// Metrics are the measures Cyclone reads after a scan.
var Metrics = []string{"reliability_rating", "sqale_rating", "security_rating", "coverage", "duplicated_lines_density"}

// Quality gate statuses (api/qualitygates/project_status).
const (
	GateOK    = "OK"
	GateWarn  = "WARN"
	GateError = "ERROR"
	GateNone  = "NONE"
)

// Compute-engine task statuses (api/ce/task).
const (
	TaskPending    = "PENDING"
	TaskInProgress = "IN_PROGRESS"
	TaskSuccess    = "SUCCESS"
	TaskFailed     = "FAILED"
	TaskCanceled   = "CANCELED"
)

// Client talks to one SonarQube server with one token. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client

	// PollInterval is the first wait between two reads of a compute-engine task; it
	// doubles up to PollMaxInterval. PollTimeout bounds the whole wait.
	PollInterval    time.Duration
	PollMaxInterval time.Duration
	PollTimeout     time.Duration
}

// New checks address with the SCM URL guard and returns a client for it.
func New(ctx context.Context, address, token string) (*Client, error) {
	address = strings.TrimRight(strings.TrimSpace(address), "/")
	if err := scm.CheckURLContext(ctx, "SonarQube", address); err != nil {
		if errors.Is(err, scm.ErrBadURL) {
			return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	u, err := url.Parse(address)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	return &Client{
		base: u, token: token, http: scm.HTTPClient(30 * time.Second),
		PollInterval: time.Second, PollMaxInterval: 10 * time.Second, PollTimeout: 30 * time.Minute,
	}, nil
}

// Address is the server's base URL.
func (c *Client) Address() string { return c.base.String() }

// OverviewLink is the project's dashboard in SonarQube's web UI.
func (c *Client) OverviewLink(projectKey string) string {
	return c.base.String() + "/dashboard?id=" + url.QueryEscape(projectKey)
}

// apiError is SonarQube's error body: {"errors":[{"msg":"..."}]}.
type apiError struct {
	Errors []struct {
		Msg string `json:"msg"`
	} `json:"errors"`
}

func (e apiError) message() string {
	var msgs []string
	for _, m := range e.Errors {
		msgs = append(msgs, m.Msg)
	}
	return strings.Join(msgs, "; ")
}

// call sends one request to path (relative to the base, e.g. "api/ce/task") with the
// parameters as the query (GET) or a form body (POST), and decodes a JSON answer into
// out when out is not nil.
func (c *Client) call(ctx context.Context, method, path string, params url.Values, out any) error {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + "/" + path
	var body io.Reader
	if method == http.MethodGet {
		u.RawQuery = params.Encode()
	} else {
		body = strings.NewReader(params.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	req.SetBasicAuth(c.token, "")
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, scm.ErrBadURL) {
			return fmt.Errorf("%w: %s %s: %w", ErrBadURL, method, path, err)
		}
		return fmt.Errorf("%w: %s %s: %w", ErrUnreachable, method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%w: %s %s: read the answer: %w", ErrUnreachable, method, path, err)
	}
	if resp.StatusCode >= 300 {
		var ae apiError
		_ = json.Unmarshal(data, &ae)
		msg := ae.message()
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		var kind error
		switch {
		case resp.StatusCode == http.StatusUnauthorized:
			kind = ErrUnauthorized
		case resp.StatusCode == http.StatusForbidden:
			kind = ErrForbidden
		case resp.StatusCode == http.StatusNotFound:
			kind = ErrNotFound
		case resp.StatusCode >= 500:
			kind = ErrUnreachable
		default:
			return &RequestError{Status: resp.StatusCode, Message: msg, Path: path}
		}
		return fmt.Errorf("%w: %s %s: %d %s", kind, method, path, resp.StatusCode, msg)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: %s %s: the answer is not SonarQube's JSON: %w", ErrUnreachable, method, path, err)
	}
	return nil
}

// RequestError is a 4xx answer other than 401, 403 and 404: SonarQube refused the
// request itself (a bad parameter, a project key already taken).
type RequestError struct {
	Status  int
	Message string
	Path    string
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("SonarQube refused %s (%d): %s", e.Path, e.Status, e.Message)
}

// Validate checks the token (api/authentication/validate): ErrUnauthorized when
// SonarQube says it is not valid.
func (c *Client) Validate(ctx context.Context) error {
	var v struct {
		Valid *bool `json:"valid"`
	}
	if err := c.call(ctx, http.MethodGet, "api/authentication/validate", nil, &v); err != nil {
		return err
	}
	if v.Valid == nil {
		return fmt.Errorf("%w: api/authentication/validate answered without \"valid\"", ErrUnreachable)
	}
	if !*v.Valid {
		return ErrUnauthorized
	}
	return nil
}

// EnsureProject creates the project with the given key and name unless it exists.
func (c *Client) EnsureProject(ctx context.Context, key, name string) error {
	err := c.call(ctx, http.MethodGet, "api/components/show", url.Values{"component": {key}}, nil)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("look up SonarQube project %s: %w", key, err)
	}
	err = c.call(ctx, http.MethodPost, "api/projects/create", url.Values{"project": {key}, "name": {name}}, nil)
	var re *RequestError
	if errors.As(err, &re) && strings.Contains(strings.ToLower(re.Message), "already exists") {
		return nil // created meanwhile by a concurrent scan
	}
	if err != nil {
		return fmt.Errorf("create SonarQube project %s: %w", key, err)
	}
	return nil
}

// DeleteProject deletes the project; a project that does not exist is not an error.
func (c *Client) DeleteProject(ctx context.Context, key string) error {
	err := c.call(ctx, http.MethodPost, "api/projects/delete", url.Values{"project": {key}}, nil)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete SonarQube project %s: %w", key, err)
	}
	return nil
}

// SelectQualityGate makes the named quality gate the project's.
func (c *Client) SelectQualityGate(ctx context.Context, projectKey, gateName string) error {
	err := c.call(ctx, http.MethodPost, "api/qualitygates/select", url.Values{"projectKey": {projectKey}, "gateName": {gateName}}, nil)
	if err != nil {
		return fmt.Errorf("select quality gate %q for %s: %w", gateName, projectKey, err)
	}
	return nil
}

// Task is a compute-engine task (api/ce/task).
type Task struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	ComponentKey string `json:"componentKey"`
	AnalysisID   string `json:"analysisId"`
	ErrorMessage string `json:"errorMessage"`
}

// Task reads a compute-engine task once.
func (c *Client) Task(ctx context.Context, id string) (*Task, error) {
	var v struct {
		Task *Task `json:"task"`
	}
	if err := c.call(ctx, http.MethodGet, "api/ce/task", url.Values{"id": {id}}, &v); err != nil {
		return nil, fmt.Errorf("read SonarQube task %s: %w", id, err)
	}
	if v.Task == nil {
		return nil, fmt.Errorf("%w: api/ce/task answered without a task", ErrUnreachable)
	}
	return v.Task, nil
}

// WaitTask polls a compute-engine task until it ends, waiting longer between reads
// (PollInterval doubling up to PollMaxInterval), for at most PollTimeout. A task
// that ends FAILED or CANCELED is ErrTaskFailed with SonarQube's message. progress,
// when not nil, is called with each status read.
func (c *Client) WaitTask(ctx context.Context, id string, progress func(status string)) (*Task, error) {
	ctx, cancel := context.WithTimeout(ctx, c.PollTimeout)
	defer cancel()
	delay := c.PollInterval
	last := ""
	for {
		t, err := c.Task(ctx, id)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
				return nil, fmt.Errorf("SonarQube task %s did not finish within %s (last status %q)", id, c.PollTimeout, last)
			}
			return nil, err
		}
		if t.Status != last && progress != nil {
			progress(t.Status)
		}
		last = t.Status
		switch t.Status {
		case TaskSuccess:
			return t, nil
		case TaskFailed, TaskCanceled:
			msg := t.ErrorMessage
			if msg == "" {
				msg = "no reason given"
			}
			return t, fmt.Errorf("%w: task %s is %s: %s", ErrTaskFailed, id, t.Status, msg)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("SonarQube task %s did not finish within %s (last status %q): %w", id, c.PollTimeout, last, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, c.PollMaxInterval)
	}
}

// Measures reads the component's measures for the given metric keys, in the order
// asked (metrics without a value are left out).
func (c *Client) Measures(ctx context.Context, component string, metricKeys []string) ([]model.Measure, error) {
	var v struct {
		Component struct {
			Measures []struct {
				Metric string `json:"metric"`
				Value  string `json:"value"`
				Period *struct {
					Value string `json:"value"`
				} `json:"period"`
			} `json:"measures"`
		} `json:"component"`
	}
	params := url.Values{"component": {component}, "metricKeys": {strings.Join(metricKeys, ",")}}
	if err := c.call(ctx, http.MethodGet, "api/measures/component", params, &v); err != nil {
		return nil, fmt.Errorf("read measures of %s: %w", component, err)
	}
	byMetric := map[string]string{}
	for _, m := range v.Component.Measures {
		val := m.Value
		if val == "" && m.Period != nil {
			val = m.Period.Value
		}
		byMetric[m.Metric] = val
	}
	out := []model.Measure{}
	for _, k := range metricKeys {
		if val, ok := byMetric[k]; ok {
			out = append(out, model.Measure{Metric: k, Value: val})
		}
	}
	return out, nil
}

// GateStatus reads the quality gate status (OK, WARN, ERROR or NONE) of an analysis
// when analysisID is given, else of the project's last analysis.
func (c *Client) GateStatus(ctx context.Context, projectKey, analysisID string) (string, error) {
	params := url.Values{"projectKey": {projectKey}}
	if analysisID != "" {
		params = url.Values{"analysisId": {analysisID}}
	}
	var v struct {
		ProjectStatus struct {
			Status string `json:"status"`
		} `json:"projectStatus"`
	}
	if err := c.call(ctx, http.MethodGet, "api/qualitygates/project_status", params, &v); err != nil {
		return "", fmt.Errorf("read the quality gate of %s: %w", projectKey, err)
	}
	if v.ProjectStatus.Status == "" {
		return "", fmt.Errorf("%w: api/qualitygates/project_status answered without a status", ErrUnreachable)
	}
	return v.ProjectStatus.Status, nil
}

// ProjectKey derives a pipeline's SonarQube project key from the project and
// pipeline names. Both match Cyclone's name rule ([a-z0-9] separated by '.', '_'
// or '-'), so the key holds only characters SonarQube allows; ':' cannot occur in
// either name, so no two pipelines share a key.
func ProjectKey(project, pipeline string) string { return project + ":" + pipeline }

// Servers reaches any SonarQube server by address and token, one client per call:
// what the API needs to check an integration and to clean up after a pipeline.
type Servers struct{}

// Validate checks the token on the server at address.
func (Servers) Validate(ctx context.Context, address, token string) error {
	c, err := New(ctx, address, token)
	if err != nil {
		return err
	}
	return c.Validate(ctx)
}

// DeleteProject deletes the project from the server at address (a missing one is
// not an error).
func (Servers) DeleteProject(ctx context.Context, address, token, projectKey string) error {
	c, err := New(ctx, address, token)
	if err != nil {
		return err
	}
	return c.DeleteProject(ctx, projectKey)
}
