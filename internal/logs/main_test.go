package logs_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/devstack"
	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/secrets"
	"github.com/cycloneci/cyclone/internal/store"
)

// st is a real store on an embedded FerretDB, shared by the package's tests; each
// test writes its own record's streams.
var (
	st       *store.Store
	mongoURI string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "cyclone-logs-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	mongo, err := devstack.StartMongo(ctx, devstack.MongoOptions{DataDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start FerretDB:", err)
		return 1
	}
	defer mongo.Stop()
	key := make([]byte, secrets.KeySize)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mongoURI = mongo.URI()
	st, err = store.Open(ctx, mongo.URI(), "logs_test", box)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open store:", err)
		return 1
	}
	defer st.Close(context.Background())
	return m.Run()
}

var streamCount atomic.Int64

// newStream names a stream no other test uses.
func newStream(stage string) logs.Stream {
	n := streamCount.Add(1)
	return logs.Stream{ProjectID: "p1", PipelineID: "pl1", RecordID: fmt.Sprintf("rec-%d-%d", time.Now().UnixNano(), n), Stage: stage}
}

// readAll returns every stored line of s.
func readAll(t *testing.T, s logs.Stream) []string {
	t.Helper()
	r := &logs.Reader{Store: st}
	var lines []string
	next, err := r.Copy(context.Background(), s, 0, func(l []string) error {
		lines = append(lines, l...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != int64(len(lines)) {
		t.Fatalf("copy ended at line %d after %d lines", next, len(lines))
	}
	return lines
}

func equalLines(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d:\n got %q\nwant %q", len(got), len(want), short(got), short(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("line %d: %q, want %q", i, shorten(got[i]), shorten(want[i]))
		}
	}
}

// short keeps failure messages readable: the first lines, each shortened.
func short(l []string) []string {
	var out []string
	for i, s := range l {
		if i == 10 {
			out = append(out, fmt.Sprintf("... %d more", len(l)-i))
			break
		}
		out = append(out, shorten(s))
	}
	return out
}

func shorten(s string) string {
	if len(s) <= 120 {
		return s
	}
	return fmt.Sprintf("%s...(%d bytes)...%s", s[:50], len(s), s[len(s)-60:])
}

func mustWrite(t *testing.T, w interface{ Write([]byte) (int, error) }, s string) {
	t.Helper()
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}
