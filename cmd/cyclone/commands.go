package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	dockerclient "github.com/docker/docker/client"
	"go.temporal.io/sdk/client"

	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/app"
	"github.com/cycloneci/cyclone/internal/devstack"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/docker"
	"github.com/cycloneci/cyclone/internal/executor/local"
	"github.com/cycloneci/cyclone/internal/metrics"
	"github.com/cycloneci/cyclone/internal/secrets"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/worker"
)

type temporalFlags struct {
	TemporalAddress   string `help:"Temporal frontend host:port." default:"127.0.0.1:7233"`
	TemporalNamespace string `help:"Temporal namespace." default:"default"`
	TaskQueue         string `help:"Temporal task queue of record workflows." default:"cyclone"`
}

type mongoFlags struct {
	MongoURI      string `help:"MongoDB connection URI." default:"mongodb://127.0.0.1:27017"`
	MongoDatabase string `help:"MongoDB database name." default:"cyclone"`
}

type workerFlags struct {
	Executor            string   `help:"Where steps run: docker (containers), kubernetes (pods; cyclone worker only, see --kube-*), local (host processes, no isolation: trusted pipelines only) or auto (docker when the engine answers, else local). Default: docker for cyclone worker, auto for cyclone dev." enum:"auto,docker,kubernetes,local," default:""`
	WorkspaceRoot       string   `help:"Host directory holding record workspaces (default: <data-dir>/workspaces in dev, /var/lib/cyclone/workspaces otherwise)."`
	WorkerID            string   `help:"Stable worker identity; stages of a record return to the worker holding its workspace (default: host name)."`
	MaxConcurrentStages int      `help:"Stages this worker runs at once." default:"16"`
	MaxRunningRecords   int      `help:"Records running at once on a cloud that sets no maxRunningRecords of its own; more wait Pending, in order (0: no limit)." default:"0"`
	SonarScannerImage   string   `help:"Image the codeScan stage runs sonar-scanner in (its sonar-scanner reads SONAR_TOKEN)." default:"sonarsource/sonar-scanner-cli"`
	CheckoutImage       string   `help:"Image the codeCheckout stage runs in on the kubernetes executor, whose workspace is not on the worker's host: it needs sh, mktemp and git, and svn 1.10+ for SVN sources." default:"alpine/git:v2.47.2"`
	Cloud               []string `help:"Clouds (by name, as projects' worker.location.cloudName) whose records this worker runs, beside the default cloud's; repeat or separate with commas." name:"cloud"`

	// StopTimeout bounds a graceful stop; see worker.Options.WorkerStopTimeout.
	StopTimeout time.Duration `help:"How long a stopping worker (SIGTERM, Ctrl-C) lets its running stages finish; those still running then are stopped and retried by the worker that replaces it (same --worker-id)." default:"30s"`
}

type serverCmd struct {
	temporalFlags `embed:""`
	mongoFlags    `embed:""`
	Listen        string `help:"API listen address." default:":8080"`
	SecretKey     string `help:"Key encrypting secrets at rest: 32 bytes as 64 hex digits or base64. Required."`
	KeepRecords   int64  `help:"Records kept per pipeline, newest first; older finished ones are deleted with their logs but stay counted in stats. Pending and Running records are never deleted and count among the kept (0: keep all)." default:"50"`
	AdminToken    string `help:"Admin API token: every /api/v1 route needs it or a token made with it at /api/v1/tokens. Required unless --no-auth."`
	NoAuth        bool   `help:"Serve the API without authentication (only behind something that authenticates)."`
	PublicURL     string `help:"The API's URL as GitHub and GitLab reach it, for the webhooks registered there (default: http://<listen address>)."`

	ShutdownTimeout time.Duration `help:"How long a stopping API (SIGTERM, Ctrl-C) lets the requests in flight finish before it closes their connections." default:"10s"`
}

type workerCmd struct {
	temporalFlags `embed:""`
	mongoFlags    `embed:""`
	workerFlags   `embed:""`
	kubeFlags     `embed:""`
	SecretKey     string `help:"Key encrypting secrets at rest (the same as the server's). Required."`
	MetricsListen string `help:"Address serving this worker's Prometheus /metrics (records and stages it ran); empty: none." default:""`
	PublicURL     string `help:"The API's URL as SCM users reach it, for the links of the commit statuses this worker reports."`
}

type devCmd struct {
	DataDir         string `help:"Directory keeping all dev data (Temporal, MongoDB-compatible store, secret key, workspaces)." default:".cyclone"`
	Listen          string `help:"API listen address." default:"127.0.0.1:8080"`
	TemporalAddress string `help:"Embedded Temporal frontend address." default:"127.0.0.1:7233"`
	UIAddress       string `help:"Temporal Web UI address (empty: no UI)." default:"127.0.0.1:8233"`
	MongoAddress    string `help:"Embedded MongoDB-compatible server address." default:"127.0.0.1:27018"`
	TaskQueue       string `help:"Temporal task queue of record workflows." default:"cyclone"`
	KeepRecords     int64  `help:"Records kept per pipeline, newest first; older finished ones are deleted with their logs but stay counted in stats. Pending and Running records are never deleted and count among the kept (0: keep all)." default:"50"`
	AdminToken      string `help:"Admin API token (default: generated once and kept in the data dir)."`
	PublicURL       string `help:"The API's URL as GitHub and GitLab reach it, for the webhooks registered there (default: http://<listen address>)."`
	workerFlags     `embed:""`

	ShutdownTimeout time.Duration `help:"How long a stopping API (SIGTERM, Ctrl-C) lets the requests in flight finish before it closes their connections; the worker stops after it (see --stop-timeout)." default:"10s"`

	GCPercent int `help:"Go garbage collector target (GOGC) of the dev process, which the embedded Temporal and store make allocate a lot: a higher value spends memory to save CPU. An explicit GOGC environment variable wins." default:"400" name:"gc-percent"`
}

func (c *serverCmd) Run(ctx context.Context, logger *slog.Logger) error {
	box, err := boxFromFlag(c.SecretKey)
	if err != nil {
		return err
	}
	switch {
	case c.AdminToken == "" && !c.NoAuth:
		return errors.New("--admin-token (CYCLONE_ADMIN_TOKEN) is required, or --no-auth to serve the API without authentication")
	case c.NoAuth:
		c.AdminToken = ""
		logger.Warn("the API is served without authentication (--no-auth)")
	}
	st, tc, err := connect(ctx, c.temporalFlags, c.mongoFlags, box, logger)
	if err != nil {
		return err
	}
	defer st.Close(context.Background())
	defer tc.Close()
	m := metrics.New()
	app.StartReconciler(ctx, st, tc, logger, m)
	app.StartRotation(ctx, st, c.KeepRecords, logger)
	runs := app.NewStarter(st, tc, c.TemporalNamespace, c.TaskQueue, logger)
	app.StartScheduleResync(ctx, st, runs, logger)
	streams := new(api.StreamDrain)
	e := app.NewAPI(st, tc, app.APIOptions{
		Namespace: c.TemporalNamespace, TaskQueue: c.TaskQueue, AdminToken: c.AdminToken, Logger: logger, Metrics: m,
		PublicURL: publicURL(c.PublicURL, c.Listen), Streams: streams, Runs: runs,
	})
	return app.ServeWithDrain(ctx, e, c.Listen, c.ShutdownTimeout, func(addr string) { logger.Info("API listening", "address", addr) }, streams.Stop)
}

func (c *workerCmd) Run(ctx context.Context, logger *slog.Logger) error {
	box, err := boxFromFlag(c.SecretKey)
	if err != nil {
		return err
	}
	st, tc, err := connect(ctx, c.temporalFlags, c.mongoFlags, box, logger)
	if err != nil {
		return err
	}
	defer st.Close(context.Background())
	defer tc.Close()
	root := c.WorkspaceRoot
	if root == "" {
		root = "/var/lib/cyclone/workspaces"
	}
	kindFlag := c.Executor
	if kindFlag == "" {
		kindFlag = "docker" // never fall back to unisolated host processes by surprise
	}
	var (
		ex   executor.Executor
		kind string
	)
	if kindFlag == "kubernetes" {
		ex, kind, err = newKubernetesExecutor(ctx, c.kubeFlags, st, c.Cloud)
	} else {
		ex, kind, err = newExecutor(ctx, kindFlag, root)
	}
	if err != nil {
		return err
	}
	if kind == "local" {
		logger.Warn("steps run as host processes of the worker, without isolation: use only for trusted pipelines")
	}
	var m *metrics.Metrics
	if c.MetricsListen != "" {
		m = metrics.New()
	}
	w, err := app.NewWorker(st, tc, ex, app.WorkerConfig{TaskQueue: c.TaskQueue, WorkerID: c.WorkerID, MaxConcurrentStages: c.MaxConcurrentStages,
		Logger: logger, Metrics: m, MaxRunningRecords: c.MaxRunningRecords, SonarScannerImage: c.SonarScannerImage,
		CheckoutImage: c.CheckoutImage, Clouds: c.Cloud, PublicURL: c.PublicURL, StopTimeout: c.StopTimeout})
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
	}
	defer stopWorker(w, c.StopTimeout, logger)
	app.StartReaper(ctx, st, ex, logger)
	logger.Info("worker started", "executor", kind, "taskQueue", c.TaskQueue)
	if m == nil {
		<-ctx.Done()
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	return app.Serve(ctx, mux, c.MetricsListen, func(addr string) { logger.Info("metrics listening", "address", addr) })
}

// stopWorker stops w gracefully: it takes no more work, its running stages have
// timeout to finish, and those still running then are handed back to be retried.
func stopWorker(w *worker.Worker, timeout time.Duration, logger *slog.Logger) {
	started := time.Now()
	logger.Info("worker stopping: running stages may finish", "stopTimeout", timeout)
	w.Stop()
	logger.Info("worker stopped", "took", time.Since(started).Round(time.Millisecond))
}

func boxFromFlag(key string) (*secrets.Box, error) {
	if key == "" {
		return nil, errors.New("--secret-key (CYCLONE_SECRET_KEY) is required: 32 bytes as 64 hex digits or base64, e.g. from `openssl rand -hex 32`")
	}
	k, err := secrets.ParseKey(key)
	if err != nil {
		return nil, err
	}
	return secrets.New(k)
}

func connect(ctx context.Context, tf temporalFlags, mf mongoFlags, box *secrets.Box, logger *slog.Logger) (*store.Store, client.Client, error) {
	dialCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := store.Open(dialCtx, mf.MongoURI, mf.MongoDatabase, box)
	if err != nil {
		return nil, nil, err
	}
	tc, err := app.DialTemporal(dialCtx, tf.TemporalAddress, tf.TemporalNamespace, logger)
	if err != nil {
		_ = st.Close(context.Background())
		return nil, nil, err
	}
	return st, tc, nil
}

// newExecutor picks the executor; auto prefers Docker when the engine answers.
func newExecutor(ctx context.Context, kind, root string) (executor.Executor, string, error) {
	if kind == "kubernetes" {
		return nil, "", errors.New("--executor kubernetes is for cyclone worker (with its --kube-* flags)")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, "", err
	}
	if kind == "local" {
		return local.New(root), "local", nil
	}
	cli, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation())
	if err == nil {
		pingCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = cli.Ping(pingCtx)
		cancel()
	}
	if err != nil {
		if kind == "docker" {
			return nil, "", fmt.Errorf("docker executor: engine unreachable: %w", err)
		}
		return local.New(root), "local", nil
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, "", err
	}
	return docker.New(cli, abs), "docker", nil
}

func (c *devCmd) Run(ctx context.Context, logger *slog.Logger) error {
	started := time.Now()
	if os.Getenv("GOGC") == "" && c.GCPercent > 0 {
		debug.SetGCPercent(c.GCPercent)
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return err
	}
	key, err := secrets.LoadOrCreateKeyFile(filepath.Join(c.DataDir, "secret.key"))
	if err != nil {
		return err
	}
	adminToken := c.AdminToken
	if adminToken == "" {
		if adminToken, err = loadOrCreateToken(filepath.Join(c.DataDir, "admin.token")); err != nil {
			return err
		}
	}
	box, err := secrets.New(key)
	if err != nil {
		return err
	}

	temporalDir := filepath.Join(c.DataDir, "temporal")
	mongoDir := filepath.Join(c.DataDir, "mongo")
	for _, d := range []string{temporalDir, mongoDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	tsrv, err := devstack.StartTemporal(ctx, devstack.TemporalOptions{
		DataDir: temporalDir, Address: c.TemporalAddress, UIAddress: c.UIAddress, Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("start embedded Temporal: %w", err)
	}
	defer tsrv.Stop()
	msrv, err := devstack.StartMongo(ctx, devstack.MongoOptions{DataDir: mongoDir, Address: c.MongoAddress, Logger: logger})
	if err != nil {
		return fmt.Errorf("start embedded MongoDB-compatible store: %w", err)
	}
	defer msrv.Stop()

	st, tc, err := connect(ctx,
		temporalFlags{TemporalAddress: tsrv.Address(), TemporalNamespace: tsrv.Namespace(), TaskQueue: c.TaskQueue},
		mongoFlags{MongoURI: msrv.URI(), MongoDatabase: "cyclone"}, box, logger)
	if err != nil {
		return err
	}
	defer st.Close(context.Background())
	defer tc.Close()
	if err := msrv.IndexIDLookups(ctx, "cyclone"); err != nil {
		return fmt.Errorf("index the embedded store: %w", err)
	}

	root := c.WorkspaceRoot
	if root == "" {
		root = filepath.Join(c.DataDir, "workspaces")
	}
	kindFlag := c.Executor
	if kindFlag == "" {
		kindFlag = "auto"
	}
	ex, kind, err := newExecutor(ctx, kindFlag, root)
	if err != nil {
		return err
	}
	workerID := c.WorkerID
	if workerID == "" {
		workerID = "dev"
	}
	// The dev process is the only worker: its stages can use the shared queue.
	// One process, one Metrics: the API's /metrics shows the worker's series too.
	m := metrics.New()
	w, err := app.NewWorker(st, tc, ex, app.WorkerConfig{TaskQueue: c.TaskQueue, WorkerID: workerID,
		MaxConcurrentStages: c.MaxConcurrentStages, SingleWorker: true, Logger: logger, Metrics: m, MaxRunningRecords: c.MaxRunningRecords,
		SonarScannerImage: c.SonarScannerImage, CheckoutImage: c.CheckoutImage, Clouds: c.Cloud, PublicURL: publicURL(c.PublicURL, c.Listen),
		StopTimeout: c.StopTimeout})
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
	}
	defer stopWorker(w, c.StopTimeout, logger)

	app.StartReconciler(ctx, st, tc, logger, m)
	app.StartRotation(ctx, st, c.KeepRecords, logger)
	app.StartReaper(ctx, st, ex, logger)
	if err := app.EnsureDefaultCloud(ctx, st, kind); err != nil {
		return err
	}
	runs := app.NewStarter(st, tc, tsrv.Namespace(), c.TaskQueue, logger)
	app.StartScheduleResync(ctx, st, runs, logger)
	localCloud, _ := ex.(executor.Lister)
	streams := new(api.StreamDrain)
	e := app.NewAPI(st, tc, app.APIOptions{
		Namespace: tsrv.Namespace(), TaskQueue: c.TaskQueue, AdminToken: adminToken, Logger: logger, Metrics: m,
		PublicURL:  publicURL(c.PublicURL, c.Listen),
		LocalCloud: localCloud,
		Streams:    streams,
		Runs:       runs,
	})
	return app.ServeWithDrain(ctx, e, c.Listen, c.ShutdownTimeout, func(addr string) {
		fmt.Printf(`Cyclone is running (started in %s).
  API:          http://%s/api/v1
  API token:    %s
  Temporal:     %s (namespace %s)
  Temporal UI:  %s
  MongoDB URI:  %s
  Executor:     %s
  Data dir:     %s
Press Ctrl-C to stop.
`, time.Since(started).Round(time.Millisecond), addr, adminToken, tsrv.Address(), tsrv.Namespace(), orNone(tsrv.UIURL()), msrv.URI(), kind, c.DataDir)
	}, streams.Stop)
}

// publicURL is the --public-url flag, or the API's URL on its listen address
// (localhost when it listens on every interface).
func publicURL(flag, listen string) string {
	if flag != "" {
		return strings.TrimRight(flag, "/")
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func orNone(s string) string {
	if s == "" {
		return "(disabled)"
	}
	return s
}

// loadOrCreateToken reads the dev admin token kept in path, creating it (mode 0600)
// the first time.
func loadOrCreateToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(data)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	token, err := api.NewTokenSecret()
	if err != nil {
		return "", err
	}
	return token, os.WriteFile(path, []byte(token+"\n"), 0o600)
}
