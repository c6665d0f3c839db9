// Package app assembles Cyclone's parts (store, Temporal client, API, worker) from
// configuration. cmd/cyclone uses it for `dev`, `server` and `worker`; the end-to-end
// tests and benchmarks use it to run the same assembly against embedded services.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/cloud"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/metrics"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/reconcile"
	"github.com/cycloneci/cyclone/internal/scm/providers"
	"github.com/cycloneci/cyclone/internal/searchattr"
	"github.com/cycloneci/cyclone/internal/sonar"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/starter"
	"github.com/cycloneci/cyclone/worker"
)

// DialTemporal connects to Temporal, retrying until ctx ends so a server started
// alongside Temporal does not fail on the first try.
func DialTemporal(ctx context.Context, address, namespace string, logger *slog.Logger) (client.Client, error) {
	var lastErr error
	for {
		c, err := client.DialContext(ctx, client.Options{
			HostPort:  address,
			Namespace: namespace,
			Logger:    sdklog.NewStructuredLogger(quiet(logger)),
		})
		if err == nil {
			return c, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to Temporal at %s: %w", address, lastErr)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// quiet keeps the SDK's chatty info logs out of the way.
func quiet(l *slog.Logger) *slog.Logger {
	return slog.New(levelFilter{Handler: l.Handler(), min: slog.LevelWarn})
}

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

func (f levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFilter{Handler: f.Handler.WithAttrs(a), min: f.min}
}

func (f levelFilter) WithGroup(n string) slog.Handler {
	return levelFilter{Handler: f.Handler.WithGroup(n), min: f.min}
}

// APIOptions configure the HTTP API beyond its store and Temporal client.
type APIOptions struct {
	Namespace string // Temporal namespace
	TaskQueue string // where record workflows start
	// AdminToken turns authentication on (see api.Config.AdminToken); "" leaves the API open.
	AdminToken string
	Logger     *slog.Logger
	// Metrics, when set, is served at /metrics, times requests and counts the
	// pending records on each scrape.
	Metrics *metrics.Metrics
	// LocalCloud lists what this process's executor runs, for the workers of a
	// Local cloud; nil: none.
	LocalCloud executor.Lister
	// PublicURL is the API's URL as SCMs reach it: the base of the webhook URLs
	// registered on GitHub and GitLab (--public-url).
	PublicURL string
	// Streams, when set, closes the open log streams when the server stops: pass
	// its Stop to ServeWithDrain.
	Streams *api.StreamDrain
	// Runs starts records and writes cron schedules (NewStarter, shared with
	// StartScheduleResync); nil: NewAPI makes one.
	Runs *starter.Starter
}

// NewAPI builds the HTTP API on a store and a Temporal client.
func NewAPI(st *store.Store, tc client.Client, o APIOptions) *echo.Echo {
	namespace, taskQueue, adminToken, logger, m := o.Namespace, o.TaskQueue, o.AdminToken, o.Logger, o.Metrics
	if logger == nil {
		logger = slog.Default()
	}
	m.SetPendingCounter(func(ctx context.Context) (int64, error) {
		return st.CountRecordsByStatus(ctx, model.StatusPending)
	})
	runs := o.Runs
	if runs == nil {
		runs = NewStarter(st, tc, namespace, taskQueue, logger)
	}
	return api.New(api.Config{
		AdminToken: adminToken,
		Tokens:     st,
		Store:      st,
		Runs:       runs,
		Schedules:  runs,
		Logger:     logger,
		Logs:       recordLogs{Reader: &logs.Reader{Store: st, Hub: logs.ProcessHub()}, st: st},
		Metrics:    m,
		SCM:        providers.New,
		LogStream:  api.LogStreamOptions{Drain: o.Streams},
		Checks: map[string]func(context.Context) error{
			"mongodb": st.Ping,
			"temporal": func(ctx context.Context) error {
				_, err := tc.CheckHealth(ctx, &client.CheckHealthRequest{})
				return err
			},
		},

		Clouds:         st,
		CloudProbe:     &cloud.Prober{Secrets: st, Local: o.LocalCloud},
		CloudHostCheck: cloud.CheckHostURL,

		Webhooks:  st,
		PublicURL: o.PublicURL,

		Integrations: st,
		SonarQube:    sonar.Servers{},
	})
}

// recordLogs serves the API's log endpoints: the lines from the store (woken by the
// writers of this process when the worker runs here too) and the records whose
// statuses say when a log is complete.
type recordLogs struct {
	*logs.Reader
	st *store.Store
}

func (l recordLogs) GetRecordByID(ctx context.Context, id string) (*model.Record, error) {
	return l.st.GetRecordByID(ctx, id)
}

// searchAttributesWait bounds how long start-up retries adding the search attributes.
const searchAttributesWait = time.Minute

// NewStarter starts records and writes cron schedules on the task queue, with
// Cyclone's search attributes when the namespace has them (it makes sure of them
// first, waiting for a Temporal that is starting).
func NewStarter(st *store.Store, tc client.Client, namespace, taskQueue string, logger *slog.Logger) *starter.Starter {
	runs := starter.New(tc)
	runs.TaskQueue = taskQueue
	runs.SearchAttributes = searchAttributesReady(tc, namespace, logger)
	runs.Clouds = st // a record's namespace may be its Kubernetes cloud's
	return runs
}

// StartScheduleResync rewrites, once and in the background, the cron schedules of
// every pipeline, as an update of the pipeline does. A schedule keeps the record
// input it was written with (the project's cloud, namespace and worker quota, and
// the workflow IDs of the version that wrote it): those written by an earlier
// version, or before their project's cloud changed, catch up at the server's start.
// A pause an operator set stays; a schedule deleted from the CLI while its pipeline
// still has the cron is made again.
func StartScheduleResync(ctx context.Context, st *store.Store, schedules ScheduleSyncer, logger *slog.Logger) {
	go func() {
		n, err := ResyncSchedules(ctx, st, schedules)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Warn("resync cron schedules (each is caught up at its pipeline's next update)", "synced", n, "error", err)
		case n > 0:
			logger.Info("resynced cron schedules", "pipelines", n)
		}
	}()
}

// ScheduleSyncer writes a pipeline's cron schedules (starter.Starter).
type ScheduleSyncer interface {
	SyncSchedules(ctx context.Context, project *model.Project, p *model.Pipeline, previous int) error
}

// ResyncSchedules rewrites the cron schedules of every pipeline that has crons and
// returns how many pipelines it synced; the errors of the others are joined.
func ResyncSchedules(ctx context.Context, st *store.Store, schedules ScheduleSyncer) (int, error) {
	projects, _, err := st.ListProjects(ctx, store.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("list projects: %w", err)
	}
	synced := 0
	var errs []error
	for _, proj := range projects {
		pipelines, _, err := st.ListPipelines(ctx, proj.ID, store.ListOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("project %s: %w", proj.Name, err))
			continue
		}
		for _, p := range pipelines {
			if p.AutoTrigger == nil || p.AutoTrigger.CronTrigger == nil || len(p.AutoTrigger.CronTrigger.Crons) == 0 {
				continue
			}
			if err := schedules.SyncSchedules(ctx, proj, p, len(p.AutoTrigger.CronTrigger.Crons)); err != nil {
				errs = append(errs, fmt.Errorf("pipeline %s/%s: %w", proj.Name, p.Name, err))
				continue
			}
			synced++
		}
	}
	return synced, errors.Join(errs...)
}

// searchAttributesReady makes sure the namespace has Cyclone's search attributes.
// Without them (a cluster where this client may not add them) records still run,
// only without the attributes, and the operator is told how to add them.
//
// Temporal may still be starting (a compose stack brings the server and its
// namespace up beside Cyclone), so an error is retried for searchAttributesWait
// before records go without them.
func searchAttributesReady(tc client.Client, namespace string, logger *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(context.Background(), searchAttributesWait)
	defer cancel()
	err := searchattr.Ensure(ctx, tc, namespace)
	for delay := 250 * time.Millisecond; err != nil && temporalStarting(err) && ctx.Err() == nil; delay = min(2*delay, 5*time.Second) {
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		err = searchattr.Ensure(ctx, tc, namespace)
	}
	if err != nil {
		logger.Warn("records will start without the Cyclone search attributes; add them with "+
			"`temporal operator search-attribute create --name CycloneProject --type Keyword` (and CyclonePipeline, CycloneRecord, CycloneTrigger)",
			"error", err)
		return false
	}
	return true
}

// temporalStarting tells an error of a server that is not up yet, or whose namespace
// is not created yet, from a refusal (no permission, an attribute of another type).
func temporalStarting(err error) bool {
	var unavailable *serviceerror.Unavailable
	var notFound *serviceerror.NamespaceNotFound
	var deadline *serviceerror.DeadlineExceeded
	return errors.As(err, &unavailable) || errors.As(err, &notFound) || errors.As(err, &deadline) ||
		errors.Is(err, context.DeadlineExceeded)
}

// StartReconciler closes, in the background until ctx ends, records whose workflow
// closed without writing its ending (terminated from the CLI, timed out, lost), and
// counts them in m (which may be nil); once at start it also catches up the derived
// data of records a stop left behind (store.RepairDerived).
func StartReconciler(ctx context.Context, st *store.Store, tc client.Client, logger *slog.Logger, m *metrics.Metrics) {
	r := &reconcile.Reconciler{Store: st, Temporal: tc, Logger: logger, Metrics: m}
	go r.Run(ctx)
	go func() {
		// Derived data a crash left behind (a record written, its counters and
		// card not yet) is caught up once at start.
		n, err := st.RepairDerived(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Warn("repair the derived data of records", "error", err)
		case n > 0:
			logger.Info("repaired the derived data of records a stop had left behind", "records", n)
		}
	}()
}

// RotationInterval is how often old records are rotated out.
const RotationInterval = time.Minute

// StartRotation keeps, in the background until ctx ends, the newest keep records of
// every pipeline (with their logs); keep <= 0 keeps everything.
func StartRotation(ctx context.Context, st *store.Store, keep int64, logger *slog.Logger) {
	if keep <= 0 {
		return
	}
	go func() {
		t := time.NewTicker(RotationInterval)
		defer t.Stop()
		for {
			n, err := st.RotateRecords(ctx, keep)
			switch {
			case err != nil && ctx.Err() == nil:
				logger.Warn("rotate records", "error", err)
			case n > 0:
				logger.Info("rotated old records", "deleted", n, "keepPerPipeline", keep)
			}
			if n, err := st.DeleteOrphanLogs(ctx, RotationInterval); err != nil && ctx.Err() == nil {
				logger.Warn("delete orphan logs", "error", err)
			} else if n > 0 {
				logger.Info("deleted the logs of deleted records", "records", n)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// WorkerConfig configures a worker.
type WorkerConfig struct {
	TaskQueue           string
	WorkerID            string
	MaxConcurrentStages int
	SingleWorker        bool
	// Logger logs records and stages with their project, pipeline and record (default
	// slog.Default()).
	Logger *slog.Logger
	// Metrics counts records and times stages; nil records nothing.
	Metrics *metrics.Metrics
	// PublicURL is the API's address as SCM users reach it, for the links of
	// commit statuses.
	PublicURL string
	// MaxRunningRecords bounds the records running at once on a cloud that sets no
	// limit of its own (0: no limit); the others wait, Pending, in order.
	MaxRunningRecords int
	// SlotPoll paces how often a waiting record looks at its queue (default 1s).
	SlotPoll time.Duration
	// SonarScannerImage is the image codeScan runs sonar-scanner in (default
	// activities.DefaultSonarScannerImage).
	SonarScannerImage string
	// CheckoutImage runs codeCheckout on executors whose workspace is not on the
	// worker's host (default activities.DefaultCheckoutImage).
	CheckoutImage string
	// Clouds are the clouds whose records this worker runs, beside the default one.
	Clouds []string
	// StopTimeout is how long a stopping worker lets its running activities finish
	// before it hands them back (worker.Options.WorkerStopTimeout).
	StopTimeout time.Duration
}

// NewWorker builds a worker running records on ex.
func NewWorker(st *store.Store, tc client.Client, ex executor.Executor, cfg WorkerConfig) (*worker.Worker, error) {
	acts := &activities.Activities{Store: st, Executor: ex, Logs: &logs.Sink{Store: st, Hub: logs.ProcessHub()},
		Logger: cfg.Logger, Metrics: cfg.Metrics, SCM: providers.New, PublicURL: cfg.PublicURL}
	acts.Slots, acts.MaxRunningRecords, acts.SlotPoll = st, cfg.MaxRunningRecords, cfg.SlotPoll
	acts.Sonar = activities.SonarScan{Image: cfg.SonarScannerImage, Integrations: st}
	acts.CheckoutImage = cfg.CheckoutImage
	return worker.New(worker.Options{
		Client:              tc,
		TaskQueue:           cfg.TaskQueue,
		WorkerID:            cfg.WorkerID,
		Activities:          acts,
		MaxConcurrentStages: cfg.MaxConcurrentStages,
		SingleWorker:        cfg.SingleWorker,
		Clouds:              cfg.Clouds,
		WorkerStopTimeout:   cfg.StopTimeout,
	})
}

// DefaultShutdownTimeout is how long Serve lets the requests in flight finish once
// its context ends.
const DefaultShutdownTimeout = 10 * time.Second

// Serve is ServeWithDrain with DefaultShutdownTimeout.
func Serve(ctx context.Context, h http.Handler, listen string, ready func(addr string)) error {
	return ServeWithDrain(ctx, h, listen, DefaultShutdownTimeout, ready)
}

// ServeWithDrain serves h on listen until ctx ends, then shuts down gracefully: it
// stops accepting connections and lets the requests in flight finish for up to
// drain, then closes the connections still open (a stream that outlives the drain)
// and returns nil: the stop was asked for. ready, when not nil, receives the bound
// address once the listener is open. Each of stops runs when the shutdown begins,
// alongside it and within the same drain, for what Shutdown does not wait for
// (websockets: api.StreamDrain.Stop).
func ServeWithDrain(ctx context.Context, h http.Handler, listen string, drain time.Duration, ready func(addr string), stops ...func(context.Context)) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if ready != nil {
		ready(ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	var stopping sync.WaitGroup
	for _, stop := range stops {
		stopping.Go(func() { stop(shutdownCtx) })
	}
	err = srv.Shutdown(shutdownCtx)
	stopping.Wait()
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		slog.Warn("requests still in flight when the shutdown timeout ran out were cut short", "address", ln.Addr().String(), "shutdownTimeout", drain)
		_ = srv.Close()
	case err != nil && !errors.Is(err, http.ErrServerClosed):
		return err
	}
	return nil
}
