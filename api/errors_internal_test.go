package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// TestErrorHandlerShapes: every kind of error a handler returns becomes the one JSON
// shape with its status, and a server-side failure says nothing of its internals
// (hosts, queries, driver messages), which go to the log only.
func TestErrorHandlerShapes(t *testing.T) {
	const internals = "connection to mongodb://admin:hunter2@10.1.2.3:27017 reset during find"
	cases := []struct {
		name       string
		err        error
		status     int
		reason     string
		wantInBody string
	}{
		{"plain error", errors.New(internals), http.StatusInternalServerError, ReasonInternal, "internal error"},
		{"wrapped plain error", fmt.Errorf("list projects: %w", errors.New(internals)), http.StatusInternalServerError, ReasonInternal, "internal error"},
		{"echo 500 with a message", echo.NewHTTPError(http.StatusInternalServerError, internals), http.StatusInternalServerError, ReasonInternal, "internal error"},
		{"echo 502 with a message", echo.NewHTTPError(http.StatusBadGateway, internals), http.StatusBadGateway, ReasonInternal, "internal error"},
		{"field error", &model.FieldError{Field: "scm.type", Message: "is required"}, http.StatusBadRequest, ReasonInvalidField, "scm.type"},
		{"not found", fmt.Errorf("get: %w", store.ErrNotFound), http.StatusNotFound, ReasonNotFound, "not found"},
		{"conflict", store.ErrConflict, http.StatusConflict, ReasonAlreadyExists, "already exists"},
		{"dependency down", &Unavailable{Service: "temporal", Err: errors.New(internals)}, http.StatusServiceUnavailable, ReasonUnavailable, "temporal is unavailable"},
		{"body too large", echo.ErrStatusRequestEntityTooLarge, http.StatusRequestEntityTooLarge, ReasonTooLarge, "larger than the limit"},
		{"unsupported media type", echo.ErrUnsupportedMediaType, http.StatusUnsupportedMediaType, ReasonUnsupportedMedia, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logged bytes.Buffer
			handle := errorHandler(slog.New(slog.NewTextHandler(&logged, nil)))
			e := echo.New()
			rec := httptest.NewRecorder()
			c := e.NewContext(httptest.NewRequest(http.MethodGet, "/api/v1/projects", nil), rec)
			handle(tc.err, c)

			if rec.Code != tc.status {
				t.Errorf("status %d, want %d", rec.Code, tc.status)
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body is not JSON: %q", rec.Body)
			}
			if body["reason"] != tc.reason {
				t.Errorf("reason %v, want %s", body["reason"], tc.reason)
			}
			msg, _ := body["message"].(string)
			if msg == "" || !strings.Contains(msg, tc.wantInBody) {
				t.Errorf("message %q, want it to say %q", msg, tc.wantInBody)
			}
			for _, leak := range []string{"hunter2", "10.1.2.3", "mongodb://", "reset during find"} {
				if strings.Contains(rec.Body.String(), leak) {
					t.Errorf("the answer gives away %q: %s", leak, rec.Body)
				}
			}
			if tc.status >= 500 && tc.status != http.StatusServiceUnavailable && !strings.Contains(logged.String(), "reset during find") {
				t.Errorf("a server-side failure is not logged for the operator: %q", logged.String())
			}
		})
	}
}
