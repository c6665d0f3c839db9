// Package metrics holds Cyclone's Prometheus collectors and serves them.
//
// A Metrics has its own registry (never the global default one), so every process
// part and every test builds its own. Every method is safe on a nil *Metrics and
// then does nothing: code paths without metrics (tests, a worker without
// --metrics-listen) need no checks.
//
// Where each series is recorded:
//   - records started, records finished, stage durations: the worker's activities
//     (RecordStarted, FinishRecord, RunStage); the reconciler, in the API process, also
//     counts the records it closes after their workflow closed without writing its end;
//   - pending records (the queue): counted in the store on each scrape of the API's
//     /metrics (one count on the indexed status field), never kept in memory;
//   - request latency: the API's Echo middleware.
//
// `cyclone dev` is one process with one Metrics: its API's /metrics shows them all.
// In the split shape, `cyclone server` shows the API's, the reconciler's and the
// queue; each `cyclone worker --metrics-listen` shows its own records and stages.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names.
const (
	RecordsStartedName  = "cyclone_records_started_total"
	RecordsFinishedName = "cyclone_records_finished_total"
	StageDurationName   = "cyclone_stage_duration_seconds"
	RecordsPendingName  = "cyclone_records_pending"
	HTTPDurationName    = "cyclone_http_request_duration_seconds"
)

// OutcomeError is the outcome of a stage attempt that ended in an infrastructure
// error (or a worker stopping) and is retried; the other outcomes are the stage's
// final statuses: Success, Failed, Aborted.
const OutcomeError = "Error"

// UnmatchedRoute labels requests that matched no route.
const UnmatchedRoute = "unmatched"

// StageBuckets are the stage duration buckets, in seconds: from a quick command to an
// hour-long build.
var StageBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600}

// PendingCounter counts the records waiting to start (status Pending).
type PendingCounter func(ctx context.Context) (int64, error)

// pendingTimeout bounds the store count made during a scrape.
const pendingTimeout = 5 * time.Second

// Metrics holds Cyclone's collectors on their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	recordsStarted  *prometheus.CounterVec
	recordsFinished *prometheus.CounterVec
	stageDuration   *prometheus.HistogramVec
	httpDuration    *prometheus.HistogramVec
	pending         *pendingCollector
}

// New builds the collectors and registers them, with the Go runtime and process
// collectors, on a new registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		recordsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: RecordsStartedName,
			Help: "Records that began running, by trigger (user, scmTrigger, cronTrigger).",
		}, []string{"trigger"}),
		recordsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: RecordsFinishedName,
			Help: "Records that ended, by final status (Success, Failed, Aborted).",
		}, []string{"status"}),
		stageDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    StageDurationName,
			Help:    "Duration of stage attempts, by stage and outcome (Success, Failed, Aborted, or Error for an attempt that is retried).",
			Buckets: StageBuckets,
		}, []string{"stage", "outcome"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    HTTPDurationName,
			Help:    "API request latency, by method, route pattern and status code.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route", "code"}),
		pending: &pendingCollector{desc: prometheus.NewDesc(RecordsPendingName,
			"Records waiting to start (status Pending), counted in the store on each scrape.", nil, nil)},
	}
	m.Registry.MustRegister(
		m.recordsStarted, m.recordsFinished, m.stageDuration, m.httpDuration, m.pending,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// RecordStarted counts a record that began running.
func (m *Metrics) RecordStarted(trigger string) {
	if m == nil {
		return
	}
	if trigger == "" {
		trigger = "unknown"
	}
	m.recordsStarted.WithLabelValues(trigger).Inc()
}

// RecordFinished counts a record that ended with status.
func (m *Metrics) RecordFinished(status string) {
	if m == nil {
		return
	}
	m.recordsFinished.WithLabelValues(status).Inc()
}

// StageFinished observes one stage attempt.
func (m *Metrics) StageFinished(stage, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.stageDuration.WithLabelValues(stage, outcome).Observe(d.Seconds())
}

// RequestServed observes one API request. route must be a route pattern, never a
// raw URL, so the series stay bounded.
func (m *Metrics) RequestServed(method, route string, code int, d time.Duration) {
	if m == nil {
		return
	}
	if route == "" {
		route = UnmatchedRoute
	}
	m.httpDuration.WithLabelValues(normalizeMethod(method), route, strconv.Itoa(code)).Observe(d.Seconds())
}

// SetPendingCounter makes the pending gauge count with count on each scrape; nil
// removes the gauge.
func (m *Metrics) SetPendingCounter(count PendingCounter) {
	if m == nil {
		return
	}
	m.pending.count.Store(&count)
}

// Handler serves the registry in the Prometheus exposition format. A collector that
// fails (the store is down for the pending count) is left out of that scrape, and
// the rest is still served.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Middleware measures the latency of every request, labelled by the matched route
// pattern (c.Path()), not the URL. It hands a handler's error to the server's error
// handler itself, so the status code measured is the one sent.
func (m *Metrics) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if m == nil {
			return next
		}
		return func(c echo.Context) error {
			start := time.Now()
			if err := next(c); err != nil {
				c.Error(err)
			}
			m.RequestServed(c.Request().Method, c.Path(), c.Response().Status, time.Since(start))
			return nil
		}
	}
}

func normalizeMethod(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "OTHER"
}

// pendingCollector reports the pending gauge by asking the store on each scrape.
type pendingCollector struct {
	desc  *prometheus.Desc
	count atomic.Pointer[PendingCounter]
}

func (p *pendingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }

func (p *pendingCollector) Collect(ch chan<- prometheus.Metric) {
	count := p.count.Load()
	if count == nil || *count == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), pendingTimeout)
	defer cancel()
	n, err := (*count)(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(p.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(p.desc, prometheus.GaugeValue, float64(n))
}
