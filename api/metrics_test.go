package api_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	cmodel "github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// scrapeMetrics GETs /metrics and parses the exposition.
func scrapeMetrics(t *testing.T, env *testenv.Env) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	r := env.Do("GET", "/metrics", nil)
	wantStatus(t, r, http.StatusOK)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, r.Body)
	}
	return families, string(r.Body)
}

// series is the metric of the family with exactly these labels, or nil.
func series(families map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	f := families[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		return m
	}
	return nil
}

func TestMetricsAfterRun(t *testing.T) {
	start := time.Now()
	f := newFixture(t, testenv.Options{})
	f.pipeline(t, "metered", "ignored-by-local", map[string]any{
		"unitTest": map[string]any{"command": []string{"echo hi"}},
	})
	rec := f.start(t, map[string]any{"ref": "master"})
	if done := f.waitTerminal(t, rec.ID); done.Status != cmodel.StatusSuccess {
		t.Fatalf("record %+v", done)
	}
	// A request for a project that does not exist: its name must not become a label.
	wantStatus(t, f.env.Do("GET", "/api/v1/projects/no-such-project-xyz", nil), http.StatusNotFound)

	// The record reads Success a moment before the finish is counted: poll.
	var families map[string]*dto.MetricFamily
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		families, body = scrapeMetrics(t, f.env)
		if series(families, "cyclone_records_finished_total", map[string]string{"status": "Success"}) != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"cyclone_records_started_total", map[string]string{"trigger": "user"}},
		{"cyclone_records_finished_total", map[string]string{"status": "Success"}},
	} {
		s := series(families, c.name, c.labels)
		if s == nil || s.GetCounter().GetValue() != 1 {
			t.Errorf("%s%v = %v, want 1\n%s", c.name, c.labels, s, body)
		}
	}
	for _, stage := range []string{"unitTest", "codeCheckout"} {
		s := series(families, "cyclone_stage_duration_seconds", map[string]string{"stage": stage, "outcome": "Success"})
		if h := s.GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() <= 0 || h.GetSampleSum() > time.Since(start).Seconds() {
			t.Errorf("stage %s duration histogram: %v", stage, s)
		}
	}
	if s := series(families, "cyclone_records_pending", map[string]string{}); s == nil || s.GetGauge().GetValue() != 0 {
		t.Errorf("pending records gauge %v, want 0", s)
	}

	const recordsRoute = "/api/v1/projects/:project/pipelines/:pipeline/records"
	for _, c := range []struct {
		labels  map[string]string
		atLeast uint64
	}{
		{map[string]string{"method": "POST", "route": recordsRoute, "code": "201"}, 1},
		{map[string]string{"method": "GET", "route": recordsRoute + "/:record", "code": "200"}, 1},
		{map[string]string{"method": "POST", "route": "/api/v1/projects", "code": "201"}, 1},
		{map[string]string{"method": "GET", "route": "/api/v1/projects/:project", "code": "404"}, 1},
	} {
		s := series(families, "cyclone_http_request_duration_seconds", c.labels)
		if s.GetHistogram().GetSampleCount() < c.atLeast {
			t.Errorf("API latency %v: %v", c.labels, s)
		}
	}
	for _, m := range families["cyclone_http_request_duration_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "route" && (strings.Contains(l.GetValue(), rec.ID) || strings.Contains(l.GetValue(), "metered")) {
				t.Errorf("route label holds a raw URL: %q", l.GetValue())
			}
		}
	}
	if strings.Contains(body, "no-such-project-xyz") {
		t.Errorf("a raw path part reached /metrics:\n%s", body)
	}
}
