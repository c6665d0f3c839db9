package devstack

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// countingValue counts how often a handler formats it.
type countingValue struct{ n *int }

func (v countingValue) LogValue() slog.Value { *v.n++; return slog.StringValue("formatted") }

// TestLevelHandlerDefersWith: attributes added with With reach the output of the
// records that are kept, under their groups and in order, and are never formatted
// for records below the level (FerretDB adds whole documents to its loggers).
func TestLevelHandlerDefersWith(t *testing.T) {
	var out bytes.Buffer
	formatted := 0
	base := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := slog.New(levelHandler{min: slog.LevelWarn, inner: base.Handler()})

	sqlLogger := l.With("sql", "INSERT ...", "args", countingValue{&formatted})
	sqlLogger.Debug("exec")
	sqlLogger.Info("exec")
	if formatted != 0 || out.Len() != 0 {
		t.Fatalf("a dropped record's attributes were formatted %d times, output %q", formatted, out.String())
	}

	l.With("component", "ferretdb").WithGroup("conn").With("peer", "127.0.0.1").Warn("closed", "err", "EOF")
	got := strings.TrimSpace(out.String())
	for _, want := range []string{"level=WARN", "msg=closed", "component=ferretdb", "conn.peer=127.0.0.1", "conn.err=EOF"} {
		if !strings.Contains(got, want) {
			t.Errorf("output %q lacks %q", got, want)
		}
	}
	if !l.Handler().Enabled(context.Background(), slog.LevelError) || l.Handler().Enabled(context.Background(), slog.LevelInfo) {
		t.Error("Enabled does not follow the minimum level")
	}
}
