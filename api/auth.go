package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// Tokens stores API tokens (hashed).
type Tokens interface {
	CreateToken(ctx context.Context, t *model.APIToken, secret string) error
	LookupToken(ctx context.Context, secret string) (*model.APIToken, error)
	ListTokens(ctx context.Context) ([]*model.APIToken, error)
	DeleteToken(ctx context.Context, id string) error
}

// principal is who a request acts as.
type principal struct {
	name        string
	impersonate bool
	secret      string // to check, during a long stream, that the token still holds
	admin       bool
}

const principalKey = "cyclone.principal"

// authenticator checks bearer tokens: the admin token from the configuration, or a
// token created through the API.
type authenticator struct {
	admin  string
	tokens Tokens
}

// middleware requires a valid token on every request it wraps. A token is given as
// `Authorization: Bearer <token>`, or as ?access_token= where a header cannot be
// set (a browser's websocket). X-User is honoured only for tokens that may
// impersonate; otherwise the request acts as the token's name.
func (a *authenticator) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		secret := bearer(c.Request())
		if secret == "" {
			return unauthorized("a bearer token is required")
		}
		p, err := a.check(c.Request().Context(), secret)
		if err != nil {
			return err
		}
		h := c.Request().Header
		if !p.impersonate || h.Get(HeaderUser) == "" {
			h.Set(HeaderUser, p.name)
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

// check returns the principal of a token, or a 401.
func (a *authenticator) check(ctx context.Context, secret string) (*principal, error) {
	if a.admin != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(a.admin)) == 1 {
		return &principal{name: "admin", impersonate: true, admin: true, secret: secret}, nil
	}
	t, err := a.tokens.LookupToken(ctx, secret)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, unauthorized("the token is not valid")
	case err != nil:
		return nil, err
	}
	return &principal{name: t.Name, impersonate: t.Impersonate, secret: secret}, nil
}

func bearer(r *http.Request) string {
	if h := r.Header.Get(echo.HeaderAuthorization); h != "" {
		if scheme, token, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(token)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

func unauthorized(msg string) *Error {
	return &Error{Status: http.StatusUnauthorized, Reason: ReasonUnauthorized, Message: msg}
}

// stillValid reports whether the request's token still holds (not revoked).
func (h *handlers) stillValid(ctx context.Context, c echo.Context) bool {
	p, ok := c.Get(principalKey).(*principal)
	if !ok || h.auth == nil {
		return true
	}
	_, err := h.auth.check(ctx, p.secret)
	var apiErr *Error
	return !errors.As(err, &apiErr) // a store outage is not a revocation
}

type tokenRequest struct {
	Name        string `json:"name"`
	Impersonate bool   `json:"impersonate"`
}

// requireImpersonation lets only tokens that may act for others manage tokens.
func requireImpersonation(c echo.Context) error {
	if p, ok := c.Get(principalKey).(*principal); ok && !p.impersonate {
		return &Error{Status: http.StatusForbidden, Reason: ReasonForbidden, Message: "this token may not manage tokens"}
	}
	return nil
}

func (h *handlers) createToken(c echo.Context) error {
	if err := requireImpersonation(c); err != nil {
		return err
	}
	var req tokenRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if !model.ValidName(req.Name) {
		return invalidField("name", "%q must be a valid name", req.Name)
	}
	secret, err := NewTokenSecret()
	if err != nil {
		return err
	}
	t := &model.APIToken{Name: req.Name, Impersonate: req.Impersonate}
	if err := h.tokens.CreateToken(c.Request().Context(), t, secret); err != nil {
		return err
	}
	t.Token = secret // shown this once
	return c.JSON(http.StatusCreated, t)
}

func (h *handlers) listTokens(c echo.Context) error {
	if err := requireImpersonation(c); err != nil {
		return err
	}
	items, err := h.tokens.ListTokens(c.Request().Context())
	if err != nil {
		return err
	}
	return renderList(c, items, int64(len(items)))
}

func (h *handlers) deleteToken(c echo.Context) error {
	if err := requireImpersonation(c); err != nil {
		return err
	}
	if err := h.tokens.DeleteToken(c.Request().Context(), c.Param("token")); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("token", c.Param("token"))
		}
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// NewTokenSecret makes a token secret: 32 random bytes, URL-safe (also used for the
// admin token `cyclone dev` generates).
func NewTokenSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "cyc_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// tokenCheckInterval is how often a long-lived stream checks its token still holds.
const tokenCheckInterval = 2 * time.Second

// watchToken cancels a stream whose token is revoked, and reports it through the
// returned function.
func (h *handlers) watchToken(ctx context.Context, c echo.Context, cancel context.CancelFunc) (revoked func() bool) {
	var gone atomic.Bool
	if h.auth == nil {
		return gone.Load
	}
	go every(ctx, tokenCheckInterval, func() bool {
		if h.stillValid(ctx, c) {
			return true
		}
		gone.Store(true)
		cancel()
		return false
	})
	return gone.Load
}

// every calls f each interval until ctx ends or f returns false.
func every(ctx context.Context, interval time.Duration, f func() bool) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !f() {
				return
			}
		}
	}
}
