package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	dto "github.com/prometheus/client_model/go"

	"github.com/cycloneci/cyclone/internal/metrics"
)

// sample finds the metric of family name whose labels include want.
func sample(t *testing.T, m *metrics.Metrics, name string, want map[string]string) *dto.Metric {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, mt := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range mt.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue next
				}
			}
			return mt
		}
	}
	return nil
}

func scrape(t *testing.T, h http.Handler) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestMetricsNilIsANoOp(t *testing.T) {
	var m *metrics.Metrics
	m.RecordStarted("user")
	m.RecordFinished("Success")
	m.StageFinished("unitTest", "Success", time.Second)
	m.RequestServed("GET", "/x", 200, time.Millisecond)
	m.SetPendingCounter(func(context.Context) (int64, error) { return 1, nil })

	e := echo.New()
	e.Use(m.Middleware())
	e.GET("/ok", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ok", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "ok" {
		t.Fatalf("nil middleware: %d %q", rec.Code, rec.Body)
	}
	if code, _ := scrape(t, m.Handler()); code != http.StatusNotFound {
		t.Fatalf("nil handler answered %d", code)
	}
}

func TestMetricsRecordsAndStages(t *testing.T) {
	m := metrics.New()
	m.RecordStarted("user")
	m.RecordStarted("user")
	m.RecordStarted("cronTrigger")
	m.RecordStarted("")
	m.RecordFinished("Success")
	m.RecordFinished("Failed")
	m.RecordFinished("Success")
	m.StageFinished("unitTest", "Success", 1500*time.Millisecond)
	m.StageFinished("unitTest", "Success", 500*time.Millisecond)
	m.StageFinished("package", metrics.OutcomeError, 3*time.Second)

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{metrics.RecordsStartedName, map[string]string{"trigger": "user"}, 2},
		{metrics.RecordsStartedName, map[string]string{"trigger": "cronTrigger"}, 1},
		{metrics.RecordsStartedName, map[string]string{"trigger": "unknown"}, 1},
		{metrics.RecordsFinishedName, map[string]string{"status": "Success"}, 2},
		{metrics.RecordsFinishedName, map[string]string{"status": "Failed"}, 1},
	} {
		s := sample(t, m, c.name, c.labels)
		if s == nil || s.GetCounter().GetValue() != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, s, c.want)
		}
	}
	h := sample(t, m, metrics.StageDurationName, map[string]string{"stage": "unitTest", "outcome": "Success"}).GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 2 {
		t.Fatalf("unitTest histogram: count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == 1 && b.GetCumulativeCount() != 1 {
			t.Fatalf("bucket le=1 holds %d samples, want 1", b.GetCumulativeCount())
		}
	}
	if s := sample(t, m, metrics.StageDurationName, map[string]string{"stage": "package", "outcome": "Error"}); s == nil || s.GetHistogram().GetSampleCount() != 1 {
		t.Fatalf("package Error histogram: %v", s)
	}

	// Each Metrics has its own registry.
	other := metrics.New()
	if s := sample(t, other, metrics.RecordsStartedName, map[string]string{"trigger": "user"}); s != nil {
		t.Fatalf("a new Metrics shares counts: %v", s)
	}

	code, body := scrape(t, m.Handler())
	if code != http.StatusOK {
		t.Fatalf("scrape answered %d", code)
	}
	for _, want := range []string{
		`cyclone_records_started_total{trigger="user"} 2`,
		`cyclone_records_finished_total{status="Success"} 2`,
		`cyclone_stage_duration_seconds_count{outcome="Success",stage="unitTest"} 2`,
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q:\n%s", want, body)
		}
	}
}

func TestMetricsPendingGauge(t *testing.T) {
	m := metrics.New()
	if sample(t, m, metrics.RecordsPendingName, nil) != nil {
		t.Fatal("pending gauge reported without a counter")
	}
	calls := 0
	m.SetPendingCounter(func(ctx context.Context) (int64, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the count has no deadline")
		}
		calls++
		return 7, nil
	})
	if s := sample(t, m, metrics.RecordsPendingName, nil); s == nil || s.GetGauge().GetValue() != 7 {
		t.Fatalf("pending gauge %v, want 7", s)
	}
	if _, body := scrape(t, m.Handler()); !strings.Contains(body, "cyclone_records_pending 7") || calls != 2 {
		t.Fatalf("pending counted %d times, exposition:\n%s", calls, body)
	}

	// A store that does not answer leaves the gauge out, not the whole scrape.
	m.RecordFinished("Success")
	m.SetPendingCounter(func(context.Context) (int64, error) { return 0, errors.New("store down") })
	code, body := scrape(t, m.Handler())
	if code != http.StatusOK || strings.Contains(body, "cyclone_records_pending ") ||
		!strings.Contains(body, `cyclone_records_finished_total{status="Success"} 1`) {
		t.Fatalf("scrape with the store down: %d\n%s", code, body)
	}
}

func TestMetricsMiddlewareLabelsByRoute(t *testing.T) {
	m := metrics.New()
	e := echo.New()
	e.Use(m.Middleware())
	e.GET("/projects/:project", func(c echo.Context) error {
		if c.Param("project") == "missing" {
			return echo.NewHTTPError(http.StatusNotFound, "no such project")
		}
		return c.String(http.StatusOK, c.Param("project"))
	})
	e.POST("/projects/:project/runs", func(c echo.Context) error { return c.NoContent(http.StatusCreated) })
	e.GET("/boom", func(c echo.Context) error { return errors.New("boom") })

	for _, r := range []struct{ method, path string }{
		{"GET", "/projects/alpha"}, {"GET", "/projects/beta"}, {"GET", "/projects/missing"},
		{"POST", "/projects/alpha/runs"}, {"GET", "/boom"}, {"GET", "/no/such/path-xyz"}, {"BREW", "/projects/alpha"},
	} {
		e.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(r.method, r.path, nil))
	}
	for _, c := range []struct {
		labels map[string]string
		count  uint64
	}{
		{map[string]string{"method": "GET", "route": "/projects/:project", "code": "200"}, 2},
		// The status measured is the one the error handler sent.
		{map[string]string{"method": "GET", "route": "/projects/:project", "code": "404"}, 1},
		{map[string]string{"method": "POST", "route": "/projects/:project/runs", "code": "201"}, 1},
		{map[string]string{"method": "GET", "route": "/boom", "code": "500"}, 1},
		{map[string]string{"method": "OTHER", "route": "/projects/:project", "code": "405"}, 1},
	} {
		s := sample(t, m, metrics.HTTPDurationName, c.labels)
		if s == nil || s.GetHistogram().GetSampleCount() != c.count {
			t.Errorf("latency %v: %v, want count %d", c.labels, s, c.count)
		}
	}
	_, body := scrape(t, m.Handler())
	for _, raw := range []string{"alpha", "beta", "missing", "path-xyz", "BREW"} {
		if strings.Contains(body, raw) {
			t.Errorf("a raw URL part %q is a label value:\n%s", raw, body)
		}
	}
}
