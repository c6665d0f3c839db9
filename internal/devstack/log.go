package devstack

import (
	"context"
	"log/slog"
	"slices"
	"sync/atomic"

	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/log/tag"
)

// levelHandler drops records below a minimum level before they reach the
// wrapped handler. The embedded servers log a lot at Info level (every shard
// movement, every connection); filtering here rather than relying on the
// caller's handler keeps `cyclone dev` output readable even when the
// application itself logs at Info or Debug.
//
// Attributes and groups added with With are applied to the wrapped handler only
// when a record is handled: FerretDB adds every SQL statement and its arguments
// (whole documents, log chunks included) to a logger before it runs it, and a
// text or JSON handler formats them at once, for a debug line that is then dropped.
type levelHandler struct {
	min   slog.Leveler
	inner slog.Handler
	with  []handlerOp // applied to inner, in order, when a record is handled
}

// handlerOp is one deferred WithAttrs (attrs) or WithGroup (group).
type handlerOp struct {
	attrs []slog.Attr
	group string
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min.Level() && h.inner.Enabled(ctx, l)
}

func (h levelHandler) Handle(ctx context.Context, r slog.Record) error {
	inner := h.inner
	for _, op := range h.with {
		if op.attrs != nil {
			inner = inner.WithAttrs(op.attrs)
		} else {
			inner = inner.WithGroup(op.group)
		}
	}
	return inner.Handle(ctx, r)
}

func (h levelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return h.then(handlerOp{attrs: attrs})
}

func (h levelHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return h.then(handlerOp{group: name})
}

func (h levelHandler) then(op handlerOp) levelHandler {
	return levelHandler{min: h.min, inner: h.inner, with: append(slices.Clip(h.with), op)}
}

// quietLogger returns base (or slog.Default) filtered to min.
func quietLogger(base *slog.Logger, min slog.Leveler, component string) *slog.Logger {
	if base == nil {
		base = slog.Default()
	}
	return slog.New(levelHandler{min: min, inner: base.Handler()}).With("component", component)
}

// shutdownLevel is a minimum level that rises to Error while the server is
// being stopped and silences it once stopped. Stopping Temporal makes its
// internal workers and RPC clients log a burst of "connection refused" and
// "graceful_stop" warnings, and some of its goroutines keep retrying (and
// logging) for a while after Stop returns; none of that is actionable, and
// it would bury the last useful lines of `cyclone dev` output or of a
// failing test.
type shutdownLevel struct {
	base  slog.Leveler
	state atomic.Int32 // running, stopping or stopped
}

const (
	running int32 = iota
	stopping
	stopped
)

func (l *shutdownLevel) Level() slog.Level {
	switch l.state.Load() {
	case stopping:
		return max(l.base.Level(), slog.LevelError)
	case stopped:
		return slog.LevelError + 100
	default:
		return l.base.Level()
	}
}

// temporalLogger adapts slog to Temporal's log.Logger, which the server
// requires; without it the server builds its own zap logger writing Info
// lines to stdout.
type temporalLogger struct {
	l *slog.Logger
}

var (
	_ log.Logger      = temporalLogger{}
	_ log.WithLogger  = temporalLogger{}
	_ log.SLogWrapper = temporalLogger{}
)

func (t temporalLogger) Debug(msg string, tags ...tag.Tag) { t.log(slog.LevelDebug, msg, tags) }
func (t temporalLogger) Info(msg string, tags ...tag.Tag)  { t.log(slog.LevelInfo, msg, tags) }
func (t temporalLogger) Warn(msg string, tags ...tag.Tag)  { t.log(slog.LevelWarn, msg, tags) }
func (t temporalLogger) Error(msg string, tags ...tag.Tag) { t.log(slog.LevelError, msg, tags) }

// DPanic only panics in Temporal's development builds; an embedded server
// should not take the host process down for it.
func (t temporalLogger) DPanic(msg string, tags ...tag.Tag) { t.log(slog.LevelError, msg, tags) }

// Panic and Fatal must not return: Temporal code calling them assumes the
// goroutine ends there. A panic (rather than os.Exit for Fatal) keeps the
// stack trace and lets tests report the failure.
func (t temporalLogger) Panic(msg string, tags ...tag.Tag) {
	t.log(slog.LevelError, msg, tags)
	panic(msg)
}

func (t temporalLogger) Fatal(msg string, tags ...tag.Tag) {
	t.log(slog.LevelError, msg, tags)
	panic(msg)
}

// With lets Temporal attach per-service tags once instead of re-sending them
// on every call.
func (t temporalLogger) With(tags ...tag.Tag) log.Logger {
	return temporalLogger{l: slog.New(t.l.Handler().WithAttrs(tagsToAttrs(tags)))}
}

// SLog hands Temporal components that want a *slog.Logger the same filtered
// logger, so they do not bypass the level filter.
func (t temporalLogger) SLog() *slog.Logger { return t.l }

func (t temporalLogger) log(level slog.Level, msg string, tags []tag.Tag) {
	ctx := context.Background()
	if !t.l.Enabled(ctx, level) {
		return
	}
	t.l.LogAttrs(ctx, level, msg, tagsToAttrs(tags)...)
}

func tagsToAttrs(tags []tag.Tag) []slog.Attr {
	attrs := make([]slog.Attr, len(tags))
	for i, tg := range tags {
		attrs[i] = slog.Any(tg.Key(), tg.Value())
	}
	return attrs
}
