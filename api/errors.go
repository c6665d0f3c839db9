package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// Error is the one error shape every endpoint answers with.
type Error struct {
	Status  int            `json:"-"`
	Reason  string         `json:"reason"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

func (e *Error) Error() string { return e.Reason + ": " + e.Message }

// Reasons, stable strings a client can switch on.
const (
	ReasonInvalidField       = "InvalidField"
	ReasonMalformedJSON      = "MalformedJSON"
	ReasonNotFound           = "NotFound"
	ReasonAlreadyExists      = "AlreadyExists"
	ReasonConflict           = "Conflict"
	ReasonTooLarge           = "RequestEntityTooLarge"
	ReasonUnsupportedMedia   = "UnsupportedMediaType"
	ReasonUnavailable        = "ServiceUnavailable"
	ReasonInternal           = "InternalError"
	ReasonMethodNotAllowed   = "MethodNotAllowed"
	ReasonUnauthorized       = "Unauthorized"
	ReasonForbidden          = "Forbidden"
	ReasonInvalidStateChange = "InvalidStatusChange"
)

func invalidField(field, format string, args ...any) *Error {
	return &Error{
		Status:  http.StatusBadRequest,
		Reason:  ReasonInvalidField,
		Message: fmt.Sprintf("%s: %s", field, fmt.Sprintf(format, args...)),
		Details: map[string]any{"field": field},
	}
}

func notFound(kind, name string) *Error {
	return &Error{
		Status:  http.StatusNotFound,
		Reason:  ReasonNotFound,
		Message: fmt.Sprintf("%s %q not found", kind, name),
		Details: map[string]any{"kind": kind, "name": name},
	}
}

func alreadyExists(kind, name string) *Error {
	return &Error{
		Status:  http.StatusConflict,
		Reason:  ReasonAlreadyExists,
		Message: fmt.Sprintf("%s %q already exists", kind, name),
		Details: map[string]any{"kind": kind, "name": name},
	}
}

// Unavailable marks an error of a dependency (MongoDB, Temporal) being down: the
// client may retry.
type Unavailable struct {
	Service string
	Err     error
}

func (e *Unavailable) Error() string { return e.Service + " unavailable: " + e.Err.Error() }
func (e *Unavailable) Unwrap() error { return e.Err }

// errorHandler maps every error a handler returns to the one JSON shape. Internals
// are logged, never sent.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		apiErr := toAPIError(err)
		if apiErr.Status >= 500 {
			log.Error("request failed", append([]any{"method", c.Request().Method, "path", c.Path(), "status", apiErr.Status, "error", err}, pathParams(c)...)...)
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(apiErr.Status)
			return
		}
		_ = c.JSON(apiErr.Status, apiErr)
	}
}

// pathParams are the request's path parameters (project, pipeline, record) as log
// attributes.
func pathParams(c echo.Context) []any {
	names, values := c.ParamNames(), c.ParamValues()
	attrs := make([]any, 0, 2*len(names))
	for i, name := range names {
		if i < len(values) {
			attrs = append(attrs, name, values[i])
		}
	}
	return attrs
}

func toAPIError(err error) *Error {
	var (
		apiErr      *Error
		fieldErr    *model.FieldError
		filterErr   *store.FilterError
		httpErr     *echo.HTTPError
		unavailable *Unavailable
	)
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.As(err, &fieldErr):
		return invalidField(fieldErr.Field, "%s", fieldErr.Message)
	case errors.As(err, &filterErr):
		return invalidField("filter", "%s", filterErr.Error())
	case errors.Is(err, store.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Reason: ReasonNotFound, Message: "not found"}
	case errors.Is(err, store.ErrConflict):
		return &Error{Status: http.StatusConflict, Reason: ReasonAlreadyExists, Message: "already exists"}
	case errors.As(err, &unavailable):
		return &Error{Status: http.StatusServiceUnavailable, Reason: ReasonUnavailable,
			Message: unavailable.Service + " is unavailable, retry later", Details: map[string]any{"service": unavailable.Service}}
	case errors.As(err, &httpErr):
		return fromHTTPError(httpErr)
	case store.IsUnavailable(err):
		return &Error{Status: http.StatusServiceUnavailable, Reason: ReasonUnavailable,
			Message: "MongoDB is unavailable, retry later", Details: map[string]any{"service": "mongodb"}}
	}
	return &Error{Status: http.StatusInternalServerError, Reason: ReasonInternal, Message: "internal error"}
}

func fromHTTPError(e *echo.HTTPError) *Error {
	msg := http.StatusText(e.Code)
	if s, ok := e.Message.(string); ok && s != "" {
		msg = s
	}
	reason := ReasonInternal
	switch e.Code {
	case http.StatusNotFound:
		reason = ReasonNotFound
	case http.StatusMethodNotAllowed:
		reason = ReasonMethodNotAllowed
	case http.StatusRequestEntityTooLarge:
		reason, msg = ReasonTooLarge, "request body is larger than the limit"
	case http.StatusUnsupportedMediaType:
		reason = ReasonUnsupportedMedia
	case http.StatusUnauthorized:
		reason = ReasonUnauthorized
	case http.StatusBadRequest:
		reason = ReasonInvalidField
	}
	if e.Code >= 500 {
		msg = "internal error"
	}
	return &Error{Status: e.Code, Reason: reason, Message: msg}
}
