package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	uiserveroptions "github.com/temporalio/ui-server/v2/server/server_options"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/membership/static"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"

	"github.com/cycloneci/cyclone/internal/searchattr"
)

// DefaultNamespace is the namespace the SDK uses when none is given; it is
// always created so that SDK defaults, the CLI and the Web UI work unchanged.
const DefaultNamespace = "default"

// Addresses `cyclone dev` listens on unless told otherwise. The Temporal
// ports are the ones the Temporal CLI's dev server uses, so existing tools
// and habits (temporal workflow list, http://localhost:8233) just work.
const (
	DevTemporalAddress = "127.0.0.1:7233"
	DevUIAddress       = "127.0.0.1:8233"
	// Not 27017, so a real MongoDB on the developer's machine is left alone.
	DevMongoAddress = "127.0.0.1:27018"
)

// DBFileName is the SQLite file Temporal keeps in TemporalOptions.DataDir.
const DBFileName = "temporal.db"

// defaultStartTimeout bounds startup when the caller's context has no
// deadline, so a wedged server fails `cyclone dev` instead of hanging it.
const defaultStartTimeout = time.Minute

// TemporalOptions configure StartTemporal. The zero value starts an
// in-memory server on a free loopback port without a Web UI.
type TemporalOptions struct {
	// DataDir holds temporal.db; workflows survive restarts on the same
	// directory. "" keeps everything in memory (tests).
	DataDir string
	// Address is the frontend's host:port. "" or port 0 picks a free port
	// on 127.0.0.1 (or on the given host).
	Address string
	// UIAddress is the Web UI's host:port; port 0 picks a free port.
	// "" starts no UI.
	UIAddress string
	// Namespace is created in addition to "default"; "" means "default".
	Namespace string
	// Logger receives the server's log records; nil means slog.Default().
	Logger *slog.Logger
	// LogLevel is the minimum level forwarded to Logger; nil means Warn,
	// because Temporal is very chatty at Info.
	LogLevel slog.Leveler
	// DynamicConfig overrides Temporal dynamic config by key name, on top
	// of the low-latency defaults. Values are plain values or
	// []dynamicconfig.ConstrainedValue.
	DynamicConfig map[string]any
}

// Temporal is a running embedded Temporal server.
type Temporal struct {
	server    temporal.Server
	address   string
	namespace string
	ui        *uiserver.Server
	uiDone    chan struct{}
	uiURL     string
	logger    *slog.Logger
	logLevel  *shutdownLevel
	stopOnce  sync.Once
}

// StartTemporal starts a single-node Temporal server backed by SQLite and,
// if asked, its Web UI. It returns once the frontend serves the namespaces
// and the Cyclone search attributes exist. ctx bounds startup only.
func StartTemporal(ctx context.Context, opts TemporalOptions) (*Temporal, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	level := &shutdownLevel{base: opts.LogLevel}
	if level.base == nil {
		level.base = slog.LevelWarn
	}
	logger := quietLogger(opts.Logger, level, "temporal")

	host, port, err := splitAddress(opts.Address)
	if err != nil {
		return nil, fmt.Errorf("temporal frontend: %w", err)
	}
	// Temporal binds on an IP, not a name.
	if host == "localhost" {
		host = loopback
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("temporal frontend: host %q is not an IP address", host)
	}
	if port == 0 {
		if port, err = freePort(host); err != nil {
			return nil, err
		}
	} else if err := checkPortFree(host, port); err != nil {
		return nil, fmt.Errorf("temporal frontend: %w", err)
	}
	address := net.JoinHostPort(dialHost(host), strconv.Itoa(port))

	// Resolved before the server starts so that a taken UI port fails fast
	// instead of after a full server start and stop.
	var uiHost string
	var uiPort int
	if opts.UIAddress != "" {
		if uiHost, uiPort, err = uiListenAddress(opts.UIAddress); err != nil {
			return nil, err
		}
	}

	sqlConf, err := sqliteConfig(opts.DataDir)
	if err != nil {
		return nil, err
	}
	namespaces := []string{DefaultNamespace}
	if opts.Namespace != DefaultNamespace {
		namespaces = append(namespaces, opts.Namespace)
	}
	if err := createNamespaces(sqlConf, namespaces); err != nil {
		return nil, err
	}

	serverOpts, err := serverOptions(host, port, address, sqlConf, temporalLogger{l: logger}, opts.DynamicConfig)
	if err != nil {
		return nil, err
	}
	srv, err := temporal.NewServer(serverOpts...)
	if err != nil {
		return nil, fmt.Errorf("create temporal server: %w", err)
	}
	if err := srv.Start(); err != nil {
		_ = srv.Stop()
		return nil, fmt.Errorf("start temporal server: %w", err)
	}
	t := &Temporal{server: srv, address: address, namespace: opts.Namespace, logger: logger, logLevel: level}

	if err := t.waitReady(ctx, logger, namespaces); err != nil {
		t.Stop()
		return nil, err
	}
	if opts.UIAddress != "" {
		if err := t.startUI(ctx, uiHost, uiPort); err != nil {
			t.Stop()
			return nil, err
		}
	}
	return t, nil
}

// Address is the frontend's host:port for client.Dial.
func (t *Temporal) Address() string { return t.address }

// Namespace is the namespace Cyclone should use.
func (t *Temporal) Namespace() string { return t.namespace }

// UIURL is the Web UI's base URL, or "" when no UI was started.
func (t *Temporal) UIURL() string { return t.uiURL }

// Stop shuts down the UI and the server. It is safe to call more than once.
// Workflows in flight are not affected beyond pausing: with a DataDir they
// carry on after the next StartTemporal.
func (t *Temporal) Stop() {
	t.stopOnce.Do(func() {
		t.logLevel.state.Store(stopping)
		if t.ui != nil {
			t.ui.Stop()
			<-t.uiDone
		}
		if err := t.server.Stop(); err != nil {
			t.logger.Error("stopping temporal server", "error", err)
		}
		t.logLevel.state.Store(stopped)
	})
}

func sqliteConfig(dataDir string) (*config.SQL, error) {
	conf := &config.SQL{PluginName: sqliteplugin.PluginName}
	if dataDir == "" {
		// Shared cache lets every Temporal service open the same in-memory
		// database; the random name keeps servers in one process (parallel
		// tests) apart.
		conf.DatabaseName = "temporal-" + strconv.FormatUint(rand.Uint64(), 36)
		conf.ConnectAttributes = map[string]string{"mode": "memory", "cache": "shared"}
		return conf, nil
	}

	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("temporal data dir: %w", err)
	}
	abs, err := filepath.Abs(filepath.Join(dataDir, DBFileName))
	if err != nil {
		return nil, fmt.Errorf("temporal data dir: %w", err)
	}
	conf.DatabaseName = abs
	// The plugin turns every attribute that is not an SQLite URI parameter
	// into `_pragma=key=value` for modernc.org/sqlite, which runs it on every
	// new connection. The keys must therefore be bare pragma names: the
	// "_journal_mode" spelling used by temporalite dates from the
	// mattn/go-sqlite3 driver and would be sent as an unknown pragma, which
	// SQLite silently ignores. WAL plus synchronous=normal means a commit no
	// longer waits for an fsync, which is most of Temporal's per-task write
	// latency on SQLite.
	conf.ConnectAttributes = map[string]string{
		"mode":         "rwc",
		"journal_mode": "wal",
		"synchronous":  "normal",
	}

	if _, err := os.Stat(abs); errors.Is(err, os.ErrNotExist) {
		if err := sqliteschema.SetupSchema(conf); err != nil {
			return nil, fmt.Errorf("set up temporal schema: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("temporal database: %w", err)
	}
	return conf, nil
}

func createNamespaces(conf *config.SQL, names []string) error {
	var nss []*sqliteschema.NamespaceConfig
	for _, name := range names {
		ns, err := sqliteschema.NewNamespaceConfig(clusterName, name, false, searchattr.All)
		if err != nil {
			return fmt.Errorf("namespace %q: %w", name, err)
		}
		nss = append(nss, ns)
	}
	// Existing namespaces are left alone (including their search
	// attributes); ensureSearchAttributes covers databases from older runs.
	if err := sqliteschema.CreateNamespaces(conf, nss...); err != nil {
		return fmt.Errorf("create namespaces: %w", err)
	}
	return nil
}

const clusterName = "active"

// lowLatencyConfig trades the rate limits that protect a multi-node
// cluster's database for latency on a single node, where the only client is
// Cyclone itself.
func lowLatencyConfig() dynamicconfig.StaticClient {
	return dynamicconfig.StaticClient{
		// The history queue processors poll their task tables at most this
		// many times per second. The default of 20 makes every transfer task
		// (e.g. dispatching a workflow or activity task to matching) wait up to
		// 50 ms, which dominates step latency in a CI pipeline.
		dynamicconfig.TransferProcessorMaxPollRPS.Key():   1000,
		dynamicconfig.TimerProcessorMaxPollRPS.Key():      1000,
		dynamicconfig.VisibilityProcessorMaxPollRPS.Key(): 1000,
		dynamicconfig.OutboundProcessorMaxPollRPS.Key():   1000,
		// Task queue partitions spread load over matching hosts; with one
		// host they only add forwarding hops between a task and a poller.
		dynamicconfig.MatchingNumTaskqueueReadPartitions.Key():  1,
		dynamicconfig.MatchingNumTaskqueueWritePartitions.Key(): 1,
		// The Web UI and Cyclone's own list views are visibility queries;
		// the default 10/s throttles a UI page that refreshes several lists.
		dynamicconfig.FrontendMaxNamespaceVisibilityRPSPerInstance.Key(): 100,
		// Search attributes added at startup (old database) must be usable
		// immediately rather than after the cache refresh.
		dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(): true,
	}
}

func serverOptions(host string, port int, address string, sqlConf *config.SQL, logger temporalLogger, extra map[string]any) ([]temporal.ServerOption, error) {
	ports := map[string]int{"frontend": port}
	// "frontend-http" serves Temporal's HTTP API and Nexus endpoints.
	// Nothing in Cyclone needs them yet, but without it the frontend warns
	// on every start that Nexus is unavailable.
	for _, svc := range []string{"history", "matching", "worker", "frontend-http"} {
		bind := loopback
		if svc == "frontend-http" {
			bind = host
		}
		p, err := freePort(bind)
		if err != nil {
			return nil, err
		}
		ports[svc] = p
	}
	httpAddress := net.JoinHostPort(dialHost(host), strconv.Itoa(ports["frontend-http"]))

	conf := &config.Config{}
	conf.Global.Membership.MaxJoinDuration = 30 * time.Second
	conf.Global.Membership.BroadcastAddress = loopback
	// Global.Metrics stays nil (no Prometheus listener) and PProf.Port 0
	// (no pprof listener): nothing scrapes a dev server, and every extra
	// port is one more thing that can clash.
	conf.Persistence = config.Persistence{
		DefaultStore:     sqliteplugin.PluginName,
		VisibilityStore:  sqliteplugin.PluginName,
		NumHistoryShards: 1,
		DataStores:       map[string]config.DataStore{sqliteplugin.PluginName: {SQL: sqlConf}},
	}
	conf.ClusterMetadata = &cluster.Config{
		EnableGlobalNamespace:    false,
		FailoverVersionIncrement: 10,
		MasterClusterName:        clusterName,
		CurrentClusterName:       clusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{
			clusterName: {
				Enabled:                true,
				InitialFailoverVersion: 1,
				RPCAddress:             address,
				HTTPAddress:            httpAddress,
			},
		},
	}
	conf.DCRedirectionPolicy.Policy = "noop"
	conf.Services = map[string]config.Service{
		"frontend": {RPC: config.RPC{GRPCPort: port, HTTPPort: ports["frontend-http"], BindOnIP: host}},
	}
	for _, svc := range []string{"history", "matching", "worker"} {
		conf.Services[svc] = config.Service{RPC: config.RPC{GRPCPort: ports[svc], BindOnIP: loopback}}
	}
	conf.Archival.History.State = "disabled"
	conf.Archival.Visibility.State = "disabled"
	conf.NamespaceDefaults.Archival.History.State = "disabled"
	conf.NamespaceDefaults.Archival.Visibility.State = "disabled"
	// The server's internal SDK clients (worker service) dial this.
	conf.PublicClient.HostPort = address

	authorizer, err := authorization.GetAuthorizerFromConfig(&conf.Global.Authorization)
	if err != nil {
		return nil, fmt.Errorf("temporal authorizer: %w", err)
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&conf.Global.Authorization, logger)
	if err != nil {
		return nil, fmt.Errorf("temporal claim mapper: %w", err)
	}

	dc := lowLatencyConfig()
	for k, v := range extra {
		dc[dynamicconfig.MakeKey(k)] = v
	}

	// Static hosts instead of ringpop gossip: there is exactly one instance
	// of each service, and skipping the membership join makes startup
	// faster and needs no membership ports.
	hostPort := func(svc string) static.Hosts {
		return static.SingleLocalHost(net.JoinHostPort(loopback, strconv.Itoa(ports[svc])))
	}
	frontendHost := static.SingleLocalHost(address)

	return []temporal.ServerOption{
		temporal.WithConfig(conf),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithStaticHosts(map[primitives.ServiceName]static.Hosts{
			primitives.FrontendService: frontendHost,
			primitives.HistoryService:  hostPort("history"),
			primitives.MatchingService: hostPort("matching"),
			primitives.WorkerService:   hostPort("worker"),
		}),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithDynamicConfigClient(dc),
	}, nil
}

// waitReady waits until the frontend serves every namespace, then makes sure
// the Cyclone search attributes exist. Server.Start returns before the
// frontend has loaded its namespace cache, so the first client calls could
// otherwise fail with "namespace not found".
func (t *Temporal) waitReady(ctx context.Context, logger *slog.Logger, namespaces []string) error {
	var c client.Client
	for {
		var err error
		c, err = client.DialContext(ctx, client.Options{
			HostPort: t.address,
			Logger:   sdklog.NewStructuredLogger(logger),
		})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("connect to temporal at %s: %w", t.address, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	defer c.Close()

	for _, ns := range namespaces {
		for {
			_, err := c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: ns})
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("temporal namespace %q not ready: %w", ns, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		if err := searchattr.Ensure(ctx, c, ns); err != nil {
			return err
		}
	}
	return nil
}

// uiListenAddress picks the UI's port. The UI server exits the whole
// process (echo's Logger.Fatal) when it cannot bind, so the port must be
// known to be free before it starts.
func uiListenAddress(addr string) (host string, port int, err error) {
	host, port, err = splitAddress(addr)
	if err != nil {
		return "", 0, fmt.Errorf("temporal ui: %w", err)
	}
	if port == 0 {
		port, err = freePort(host)
	} else {
		err = checkPortFree(host, port)
	}
	if err != nil {
		return "", 0, fmt.Errorf("temporal ui: %w", err)
	}
	return host, port, nil
}

func (t *Temporal) startUI(ctx context.Context, host string, port int) error {
	t.ui = uiserver.NewServer(uiserveroptions.WithConfigProvider(&uiconfig.Config{
		Host:                hostForURL(host),
		Port:                port,
		TemporalGRPCAddress: t.address,
		EnableUI:            true,
		DefaultNamespace:    t.namespace,
		// Served over plain HTTP on localhost; secure cookies would be
		// dropped by the browser and break the CSRF check.
		CORS: uiconfig.CORS{CookieInsecure: true},
		// Temporal's news feed is noise for Cyclone users and fails offline.
		DisableNewsFetch: true,
		HideLogs:         true,
	}))
	t.uiDone = make(chan struct{})
	go func() {
		defer close(t.uiDone)
		_ = t.ui.Start()
	}()

	// The UI server offers no readiness signal; poll its health route.
	base := "http://" + net.JoinHostPort(dialHost(host), strconv.Itoa(port))
	hc := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.uiURL = base
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("temporal ui at %s not ready: %w", base, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
