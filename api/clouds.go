package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// CloudStore keeps the clouds records run on.
type CloudStore interface {
	CreateCloud(ctx context.Context, c *model.Cloud) error
	GetCloud(ctx context.Context, name string) (*model.Cloud, error)
	ListClouds(ctx context.Context, o store.ListOptions) ([]*model.Cloud, int64, error)
	UpdateCloud(ctx context.Context, name string, c *model.Cloud) error
	DeleteCloud(ctx context.Context, name string) error
}

// CloudProbe talks to a cloud.
type CloudProbe interface {
	// Ping returns nil when the cloud answers.
	Ping(ctx context.Context, c *model.Cloud) error
	// Workers lists the record environments running on the cloud (in namespace, for
	// Kubernetes).
	Workers(ctx context.Context, c *model.Cloud, namespace string) ([]model.WorkerInstance, error)
}

// CloudHostCheck refuses a cloud host the server must not connect to (link-local,
// cloud metadata); nil allows every well-formed host.
type CloudHostCheck func(url string) error

func (h *handlers) cloudsReady() error {
	if h.clouds == nil {
		return &Error{Status: http.StatusServiceUnavailable, Reason: ReasonUnavailable, Message: "clouds are not configured on this server"}
	}
	return nil
}

// validCloud checks a cloud from a request, and its hosts against the URL guard.
func (h *handlers) validCloud(c *model.Cloud) error {
	if err := c.NormalizeAndValidate(); err != nil {
		return err
	}
	if h.cloudHostCheck == nil {
		return nil
	}
	switch {
	case c.Docker != nil && c.Docker.Host != "":
		if u := guardedDockerURL(c.Docker.Host); u != "" {
			if err := h.cloudHostCheck(u); err != nil {
				return invalidField("docker.host", "is not allowed: %v", err)
			}
		}
	case c.Kubernetes != nil && c.Kubernetes.Host != "":
		if err := h.cloudHostCheck(c.Kubernetes.Host); err != nil {
			return invalidField("kubernetes.host", "is not allowed: %v", err)
		}
	}
	return nil
}

// guardedDockerURL is the http(s) URL a network Docker host is checked as; "" for a
// unix socket.
func guardedDockerURL(host string) string {
	switch {
	case strings.HasPrefix(host, "tcp://"):
		return "http://" + strings.TrimPrefix(host, "tcp://")
	case strings.HasPrefix(host, "http://"), strings.HasPrefix(host, "https://"):
		return host
	}
	return ""
}

func (h *handlers) listClouds(c echo.Context) error {
	if err := h.cloudsReady(); err != nil {
		return err
	}
	o, err := listOptions(c)
	if err != nil {
		return err
	}
	items, total, err := h.clouds.ListClouds(c.Request().Context(), o)
	if err != nil {
		return err
	}
	for _, cl := range items {
		cl.Redact()
	}
	return renderList(c, items, total)
}

func (h *handlers) createCloud(c echo.Context) error {
	if err := h.cloudsReady(); err != nil {
		return err
	}
	var cl model.Cloud
	if err := decodeJSON(c, &cl); err != nil {
		return err
	}
	if err := h.validCloud(&cl); err != nil {
		return err
	}
	if err := h.clouds.CreateCloud(c.Request().Context(), &cl); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return alreadyExists("cloud", cl.Name)
		}
		return err
	}
	cl.Redact()
	return c.JSON(http.StatusCreated, &cl)
}

func (h *handlers) cloud(c echo.Context) (*model.Cloud, error) {
	if err := h.cloudsReady(); err != nil {
		return nil, err
	}
	name := c.Param("cloud")
	cl, err := h.clouds.GetCloud(c.Request().Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("cloud", name)
	}
	return cl, err
}

func (h *handlers) getCloud(c echo.Context) error {
	cl, err := h.cloud(c)
	if err != nil {
		return err
	}
	cl.Redact()
	return c.JSON(http.StatusOK, cl)
}

func (h *handlers) updateCloud(c echo.Context) error {
	old, err := h.cloud(c)
	if err != nil {
		return err
	}
	var cl model.Cloud
	if err := decodeJSON(c, &cl); err != nil {
		return err
	}
	if cl.Name == "" {
		cl.Name = old.Name
	}
	if err := h.validCloud(&cl); err != nil {
		return err
	}
	if err := h.clouds.UpdateCloud(c.Request().Context(), old.Name, &cl); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return alreadyExists("cloud", cl.Name)
		}
		if errors.Is(err, store.ErrNotFound) {
			return notFound("cloud", old.Name)
		}
		return err
	}
	cl.Redact()
	return c.JSON(http.StatusOK, &cl)
}

func (h *handlers) deleteCloud(c echo.Context) error {
	if err := h.cloudsReady(); err != nil {
		return err
	}
	name := c.Param("cloud")
	if err := h.clouds.DeleteCloud(c.Request().Context(), name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("cloud", name)
		}
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// cloudPing is the answer of GET /clouds/{cloud}/ping. Why a cloud is unreachable
// goes to the server's log, not to the client: the error names internal addresses.
type cloudPing struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	Reachable bool   `json:"reachable"`
	// LatencyMS is how long the cloud took to answer, when it did.
	LatencyMS *int64 `json:"latencyMs,omitempty"`
}

func (h *handlers) pingCloud(c echo.Context) error {
	cl, err := h.cloud(c)
	if err != nil {
		return err
	}
	if h.cloudProbe == nil {
		return &Error{Status: http.StatusServiceUnavailable, Reason: ReasonUnavailable, Message: "cloud probing is not configured on this server"}
	}
	start := time.Now()
	err = h.cloudProbe.Ping(c.Request().Context(), cl)
	out := cloudPing{Name: cl.Name, Type: cl.Type, Reachable: err == nil}
	if err != nil {
		h.log.Info("cloud unreachable", "cloud", cl.Name, "error", err)
	} else {
		ms := time.Since(start).Milliseconds()
		out.LatencyMS = &ms
	}
	return c.JSON(http.StatusOK, out)
}

func (h *handlers) listWorkers(c echo.Context) error {
	cl, err := h.cloud(c)
	if err != nil {
		return err
	}
	if h.cloudProbe == nil {
		return &Error{Status: http.StatusServiceUnavailable, Reason: ReasonUnavailable, Message: "cloud probing is not configured on this server"}
	}
	ns := c.QueryParam("namespace")
	if ns != "" && cl.Type != model.CloudKubernetes {
		return invalidField("namespace", "only a Kubernetes cloud has namespaces")
	}
	items, err := h.cloudProbe.Workers(c.Request().Context(), cl, ns)
	if err != nil {
		h.log.Warn("list the workers of a cloud", "cloud", cl.Name, "error", err)
		return &Error{Status: http.StatusBadGateway, Reason: ReasonUnavailable,
			Message: "cloud " + cl.Name + " could not be reached", Details: map[string]any{"cloud": cl.Name}}
	}
	return renderList(c, items, int64(len(items)))
}
