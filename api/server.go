// Package api is the Echo server of the Cyclone API v1: routes, request and response
// JSON, validation, the one error handler. It knows nothing of executors: it reads and
// writes the store and asks the starter to start or cancel runs.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/cycloneci/cyclone/internal/metrics"
)

// MaxBodyBytes bounds request bodies.
const MaxBodyBytes = 1 << 20

// Config wires the server to its dependencies.
type Config struct {
	Store Store
	Runs  Runs
	// Schedules runs pipelines' crons; nil means crons are stored but never run.
	Schedules Schedules
	Checks    map[string]func(context.Context) error // readiness checks by service name
	Logger    *slog.Logger
	BodyMax   int64
	Logs      Logs // stored stage logs; the log endpoints answer 503 without it
	// LogStream tunes the websocket log stream (keepalive, slow clients); zero
	// fields take the defaults.
	LogStream LogStreamOptions
	// Metrics is served at /metrics and times every request; nil: neither.
	Metrics *metrics.Metrics
	// AdminToken turns authentication on: every /api/v1 route but the webhooks
	// (their deliveries are signed) needs a bearer token, this one or one made at
	// /api/v1/tokens; only /healthz, /readyz and /metrics are open.
	// Empty: no authentication (tests of routes only, or --no-auth).
	AdminToken string
	Tokens     Tokens
	// Clouds keeps the clouds records run on; nil: the cloud routes answer 503.
	Clouds CloudStore
	// CloudProbe pings clouds and lists their workers; CloudHostCheck guards the
	// hosts a cloud may name (nil: any well-formed host).
	CloudProbe     CloudProbe
	CloudHostCheck CloudHostCheck
	// SCM opens a project's SCM for credential checks and the repos, branches,
	// tags and templatetype endpoints; nil: credentials are not checked and those
	// endpoints answer 501.
	SCM SCMOpener
	// Webhooks serves the webhook endpoints and keeps pipelines' webhooks; nil:
	// they answer 503 and no webhook is registered.
	Webhooks WebhookStore
	// PublicURL is the server's URL as SCMs reach it (e.g. https://ci.example.com),
	// the base of the webhook URLs registered on GitHub and GitLab.
	PublicURL string
	// Integrations keeps the SonarQube integrations; nil: their routes answer 503.
	Integrations IntegrationStore
	// SonarQube checks integration tokens and deletes deleted pipelines' SonarQube
	// projects; nil: integrations cannot be created or changed.
	SonarQube SonarQube
}

// New builds the Echo server with every route registered.
func New(cfg Config) *echo.Echo {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BodyMax == 0 {
		cfg.BodyMax = MaxBodyBytes
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(cfg.Logger)
	e.Use(cfg.Metrics.Middleware())
	e.Use(middleware.Recover())
	e.Use(globalBodyLimit(cfg.BodyMax))

	h := &handlers{store: cfg.Store, runs: cfg.Runs, schedules: cfg.Schedules, log: cfg.Logger, logs: cfg.Logs, tokens: cfg.Tokens, scm: cfg.SCM,
		metrics: cfg.Metrics}
	h.clouds, h.cloudProbe, h.cloudHostCheck = cfg.Clouds, cfg.CloudProbe, cfg.CloudHostCheck
	h.hooks, h.publicURL = cfg.Webhooks, strings.TrimRight(cfg.PublicURL, "/")
	h.integrations, h.sonar = cfg.Integrations, cfg.SonarQube
	h.logStream = cfg.LogStream.withDefaults()
	var guard []echo.MiddlewareFunc
	if cfg.AdminToken != "" {
		h.auth = &authenticator{admin: cfg.AdminToken, tokens: cfg.Tokens}
		guard = append(guard, h.auth.middleware)
	}
	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/readyz", readiness(cfg.Checks, cfg.Logger))
	if cfg.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(cfg.Metrics.Handler()))
	}

	h.registerWebhookRoutes(e) // outside the guard: deliveries carry signatures
	v1 := e.Group("/api/v1", guard...)
	// What no route takes: 404, or 405 for a path a route has under other methods
	// (behind the guard: an anonymous client learns nothing of the routes).
	v1.RouteNotFound("", wrongMethodOrNotFound(e, "/api/v1/*"))
	v1.RouteNotFound("/*", wrongMethodOrNotFound(e, "/api/v1/*"))
	v1.GET("/openapi.json", getOpenAPI)
	v1.POST("/tokens", h.createToken)
	v1.GET("/tokens", h.listTokens)
	v1.DELETE("/tokens/:token", h.deleteToken)
	v1.GET("/projects", h.listProjects)
	v1.POST("/projects", h.createProject)
	v1.GET("/projects/:project", h.getProject)
	v1.PUT("/projects/:project", h.updateProject)
	v1.PATCH("/projects/:project", h.updateProject)
	v1.DELETE("/projects/:project", h.deleteProject)
	v1.GET("/projects/:project/stats", h.projectStats)
	v1.GET("/projects/:project/repos", h.listRepos)
	v1.GET("/projects/:project/branches", h.listBranches)
	v1.GET("/projects/:project/tags", h.listTags)
	v1.GET("/projects/:project/templatetype", h.getTemplateType)

	v1.GET("/projects/:project/pipelines", h.listPipelines)
	v1.POST("/projects/:project/pipelines", h.createPipeline)
	v1.GET("/projects/:project/pipelines/:pipeline", h.getPipeline)
	v1.PUT("/projects/:project/pipelines/:pipeline", h.updatePipeline)
	v1.DELETE("/projects/:project/pipelines/:pipeline", h.deletePipeline)
	v1.GET("/projects/:project/pipelines/:pipeline/stats", h.pipelineStats)

	v1.GET("/configtemplates", h.listConfigTemplates)

	v1.GET("/integrations", h.listIntegrations)
	v1.POST("/integrations", h.createIntegration)
	v1.GET("/integrations/:integration", h.getIntegration)
	v1.PUT("/integrations/:integration", h.updateIntegration)
	v1.DELETE("/integrations/:integration", h.deleteIntegration)

	v1.GET("/clouds", h.listClouds)
	v1.POST("/clouds", h.createCloud)
	v1.GET("/clouds/:cloud", h.getCloud)
	v1.PUT("/clouds/:cloud", h.updateCloud)
	v1.DELETE("/clouds/:cloud", h.deleteCloud)
	v1.GET("/clouds/:cloud/ping", h.pingCloud)
	v1.GET("/clouds/:cloud/workers", h.listWorkers)

	v1.GET("/projects/:project/pipelines/:pipeline/records", h.listRecords)
	v1.POST("/projects/:project/pipelines/:pipeline/records", h.createRecord)
	v1.GET("/projects/:project/pipelines/:pipeline/records/:record", h.getRecord)
	v1.DELETE("/projects/:project/pipelines/:pipeline/records/:record", h.deleteRecord)
	v1.PATCH("/projects/:project/pipelines/:pipeline/records/:record/status", h.updateRecordStatus)
	v1.POST("/projects/:project/pipelines/:pipeline/records/:record/rerun", h.rerunRecord)
	v1.GET("/projects/:project/pipelines/:pipeline/records/:record/logs", h.getLogs)
	v1.GET("/projects/:project/pipelines/:pipeline/records/:record/logstream", h.getLogStream)
	return e
}

type handlers struct {
	store     Store
	runs      Runs
	schedules Schedules
	log       *slog.Logger
	logs      Logs
	logStream LogStreamOptions
	tokens    Tokens
	auth      *authenticator // nil: no authentication
	scm       SCMOpener      // nil: no SCM access

	// clouds, cloudProbe and cloudHostCheck serve the cloud routes.
	clouds         CloudStore
	cloudProbe     CloudProbe
	cloudHostCheck CloudHostCheck

	hooks     WebhookStore // nil: webhooks answer 503
	publicURL string       // base of registered webhook URLs

	integrations IntegrationStore // nil: the integration routes answer 503
	sonar        SonarQube

	// metrics counts the records the handlers close (an abort of a record whose
	// workflow had closed); nil counts nothing.
	metrics *metrics.Metrics
}

// bodyLimit answers 413 for a body over max, before a handler reads it, and caps
// what a handler can read when the length is not announced.
func bodyLimit(max int64) echo.MiddlewareFunc {
	return middleware.BodyLimitWithConfig(middleware.BodyLimitConfig{Limit: strconv.FormatInt(max, 10) + "B"})
}

func readiness(checks map[string]func(context.Context) error, log *slog.Logger) echo.HandlerFunc {
	return func(c echo.Context) error {
		status := map[string]string{}
		ok := true
		// A dependency that hangs must not hang the probe.
		ctx, cancel := context.WithTimeout(c.Request().Context(), 5*time.Second)
		defer cancel()
		for name, check := range checks {
			if err := check(ctx); err != nil {
				// The cause goes to the log, not to whoever asks: it names hosts.
				log.Warn("readiness check failed", "service", name, "error", err)
				status[name] = "unavailable"
				ok = false
				continue
			}
			status[name] = "ok"
		}
		if !ok {
			return c.JSON(http.StatusServiceUnavailable, &Error{
				Reason: ReasonUnavailable, Message: "not ready", Details: map[string]any{"checks": status},
			})
		}
		return c.JSON(http.StatusOK, map[string]any{"status": "ready", "checks": status})
	}
}

// decodeJSON reads a JSON request body into v: 415 unless the body is JSON, 400 for
// malformed JSON naming where it broke. Unknown fields are ignored.
func decodeJSON(c echo.Context, v any) error {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != echo.MIMEApplicationJSON && !strings.HasSuffix(mt, "+json")) {
		return &Error{Status: http.StatusUnsupportedMediaType, Reason: ReasonUnsupportedMedia,
			Message: "request body must be application/json", Details: map[string]any{"contentType": ct}}
	}
	dec := json.NewDecoder(c.Request().Body)
	err = dec.Decode(v)
	if err == nil {
		// One JSON value and nothing after it; reading on also makes a body that is
		// over the limit but complete as JSON fail the size check.
		if _, extra := dec.Token(); extra != io.EOF {
			err = extra
			if err == nil {
				err = errors.New("unexpected data after the JSON value")
			}
		}
	}
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		tooLarge  *http.MaxBytesError
		httpErr   *echo.HTTPError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooLarge), errors.As(err, &httpErr) && httpErr.Code == http.StatusRequestEntityTooLarge:
		return &Error{Status: http.StatusRequestEntityTooLarge, Reason: ReasonTooLarge, Message: "request body is larger than the limit"}
	case errors.As(err, &typeErr):
		return invalidField(typeErr.Field, "must be a JSON %s, got %s", typeErr.Type.Kind(), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return &Error{Status: http.StatusBadRequest, Reason: ReasonMalformedJSON,
			Message: "malformed JSON: " + syntaxErr.Error(), Details: map[string]any{"offset": syntaxErr.Offset}}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Status: http.StatusBadRequest, Reason: ReasonMalformedJSON, Message: "malformed JSON: body is empty or truncated"}
	}
	return &Error{Status: http.StatusBadRequest, Reason: ReasonMalformedJSON, Message: "malformed JSON: " + err.Error()}
}
