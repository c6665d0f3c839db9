// Command cyclone is the Cyclone CI/CD server: `cyclone dev` runs everything in one
// process on embedded Temporal and MongoDB-compatible stores; `cyclone server` and
// `cyclone worker` run the production shape against an external Temporal and MongoDB.
//
// Every flag can also be set with a CYCLONE_* environment variable (see --help).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

type cli struct {
	LogLevel  slog.Level `help:"Log level: debug, info, warn or error." default:"info"`
	LogFormat string     `help:"Log format: text or json." enum:"text,json" default:"text"`

	Dev    devCmd    `cmd:"" help:"Run everything in one process: embedded Temporal (with Web UI), embedded MongoDB-compatible store, API and worker."`
	Server serverCmd `cmd:"" help:"Run the API server against an external Temporal and MongoDB."`
	Worker workerCmd `cmd:"" help:"Run a worker (executes pipeline records) against an external Temporal and MongoDB."`
}

func main() {
	var c cli
	kctx := kong.Parse(&c,
		kong.Name("cyclone"),
		kong.Description("Cyclone: a CI/CD server where every pipeline record is a Temporal workflow."),
		kong.DefaultEnvars("CYCLONE"),
		kong.UsageOnError(),
	)
	logger := newLogger(c.LogLevel, c.LogFormat)
	slog.SetDefault(logger)

	// The first SIGTERM or Ctrl-C stops gracefully (see --shutdown-timeout and
	// --stop-timeout); a second one ends the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
		logger.Info("stopping gracefully; signal again to stop at once")
	}()
	kctx.BindTo(ctx, (*context.Context)(nil))
	if err := kctx.Run(logger); err != nil {
		logger.Error("cyclone stopped", "error", err)
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newLogger(level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
