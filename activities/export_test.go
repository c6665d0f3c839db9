package activities

import (
	"context"
	"io"
	"time"

	"github.com/cycloneci/cyclone/internal/model"
)

// Test hooks for the package's external tests (which may use testenv, which imports
// this package).

const (
	CheckoutMarkPrefix = checkoutMarkPrefix
	EnvCheckoutURL     = envCheckoutURL
	EnvCheckoutRef     = envCheckoutRef
	EnvCheckoutMark    = envCheckoutMark
)

// CodeCheckout runs the codeCheckout stage's code (not under Temporal: heartbeats
// are made rare enough never to fire) with password as the main source's password,
// and returns the commit and the record's default name.
func (a *Activities) CodeCheckout(ctx context.Context, in StageInput, password string, log io.Writer) (*model.Commit, string, error) {
	a.HeartbeatInterval = time.Hour
	secrets := runSecrets{sourcePasswords: map[int]string{}}
	if password != "" {
		secrets.sourcePasswords[0] = password
		secrets.mask = []string{password}
	}
	out, err := a.codeCheckout(ctx, in, secrets, log)
	return out.commit, out.name, err
}

// IsRetryable reports whether the workflow retries an activity's error.
func IsRetryable(err error) bool { return isRetryable(err) }
