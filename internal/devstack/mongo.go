package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// MongoOptions configure StartMongo.
type MongoOptions struct {
	// DataDir holds FerretDB's SQLite files (one per database). Required:
	// FerretDB's SQLite backend has no in-memory mode, so tests pass
	// t.TempDir().
	DataDir string
	// Address is the TCP host:port to listen on; "" or port 0 picks a free
	// port on 127.0.0.1.
	Address string
	// Logger receives FerretDB's log records; nil means slog.Default().
	Logger *slog.Logger
	// LogLevel is the minimum level forwarded to Logger; nil means Error.
	// FerretDB logs every connection at Info and dumps every failed
	// command's full response at Warn, although the client receives and
	// handles that same error (the Go driver's endSessions on Disconnect,
	// which FerretDB does not implement, produces one on every shutdown).
	LogLevel slog.Leveler
}

// Mongo is a running embedded FerretDB speaking the MongoDB wire protocol.
type Mongo struct {
	uri      string
	dir      string
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

// StartMongo starts FerretDB with its SQLite backend in opts.DataDir. It
// returns once the listener is bound, so URI is immediately usable. ctx only
// bounds startup; use Stop to shut down.
func StartMongo(ctx context.Context, opts MongoOptions) (*Mongo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.DataDir == "" {
		return nil, errors.New("mongo: DataDir is required")
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("mongo data dir: %w", err)
	}
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("mongo data dir: %w", err)
	}
	host, port, err := splitAddress(opts.Address)
	if err != nil {
		return nil, fmt.Errorf("mongo: %w", err)
	}

	level := opts.LogLevel
	if level == nil {
		level = slog.LevelError
	}

	// ferretdb.New leaks its open backend when the listener cannot bind,
	// so a taken fixed port is caught here first.
	if port != 0 {
		if err := checkPortFree(host, port); err != nil {
			return nil, fmt.Errorf("mongo: %w", err)
		}
	}

	// FerretDB insists on a file: URI naming an existing directory with a
	// trailing slash; url.URL takes care of escaping odd path characters.
	// synchronous=normal: with WAL a commit no longer waits for fsync; a power loss
	// may lose the last commits but never corrupts the database. Dev mode trades that
	// for a store write in a fraction of the time.
	sqliteURL := (&url.URL{Scheme: "file", Path: dir + "/", OmitHost: true,
		RawQuery: url.Values{"_pragma": {"synchronous(normal)"}}.Encode()}).String()

	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{
			// FerretDB binds in New, so port 0 needs no free-port dance.
			TCP: net.JoinHostPort(host, strconv.Itoa(port)),
		},
		Logger:    quietLogger(opts.Logger, level, "ferretdb"),
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return nil, fmt.Errorf("start ferretdb: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	m := &Mongo{uri: f.MongoDBURI(), dir: dir, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		_ = f.Run(runCtx)
	}()
	return m, nil
}

// URI is the mongodb:// connection string for the MongoDB driver.
func (m *Mongo) URI() string { return m.uri }

// Stop shuts FerretDB down and waits until its SQLite files are closed, so
// the same DataDir can be reopened right away. Clients still connected get a
// few seconds' grace before being cut off, so disconnect them first for a
// quick stop. Safe to call more than once.
func (m *Mongo) Stop() {
	m.stopOnce.Do(func() {
		m.cancel()
		<-m.done
	})
}
