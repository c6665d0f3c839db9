package activities

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/cycloneci/cyclone/internal/logs"
)

// memLogStore is a logs.Store in memory, enough for a logs.Sink and a logs.Reader.
type memLogStore struct {
	mu     sync.Mutex
	heads  map[logs.Stream]logs.Head
	chunks map[logs.Stream][]logs.Chunk
}

func newMemLogStore() *memLogStore {
	return &memLogStore{heads: map[logs.Stream]logs.Head{}, chunks: map[logs.Stream][]logs.Chunk{}}
}

func (m *memLogStore) GetLogHead(_ context.Context, s logs.Stream) (*logs.Head, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.heads[s]
	if !ok {
		return nil, nil
	}
	h.Tail = slices.Clone(h.Tail)
	return &h, nil
}

func (m *memLogStore) PutLogHead(_ context.Context, h *logs.Head, version int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.heads[h.Stream].Lines != version {
		return logs.ErrVersion
	}
	c := *h
	c.Tail = slices.Clone(h.Tail)
	m.heads[h.Stream] = c
	return nil
}

func (m *memLogStore) InsertLogChunks(_ context.Context, chunks []*logs.Chunk, replace bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range chunks {
		stored := m.chunks[c.Stream]
		cc := *c
		cc.Lines = slices.Clone(c.Lines)
		switch {
		case c.Seq < int64(len(stored)) && !replace:
			return logs.ErrChunkExists
		case c.Seq < int64(len(stored)):
			stored[c.Seq] = cc
		case c.Seq == int64(len(stored)):
			m.chunks[c.Stream] = append(stored, cc)
		default:
			return fmt.Errorf("chunk %d after %d chunks", c.Seq, len(stored))
		}
	}
	return nil
}

func (m *memLogStore) LogChunkAt(_ context.Context, s logs.Stream, line int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.chunks[s] {
		if c.First <= line && line < c.End() {
			return c.Seq, nil
		}
	}
	return -1, nil
}

func (m *memLogStore) LogChunks(_ context.Context, s logs.Stream, seq int64, limit int, fn func(*logs.Chunk) error) error {
	m.mu.Lock()
	stored := slices.Clone(m.chunks[s])
	m.mu.Unlock()
	for i := seq; i < int64(len(stored)) && i < seq+int64(limit); i++ {
		if err := fn(&stored[i]); err != nil {
			return err
		}
	}
	return nil
}

// storedLines returns every stored line of the stream.
func storedLines(t *testing.T, st *memLogStore, s logs.Stream) []string {
	t.Helper()
	var lines []string
	r := &logs.Reader{Store: st}
	if _, err := r.Copy(context.Background(), s, 0, func(l []string) error {
		lines = append(lines, l...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return lines
}

// A stage attempt retried after a worker died appends to each task's log after a
// clear "attempt 2" banner; the lines of the dead attempt are kept. The stage's own
// log gets the same banner.
func TestRetriedTaskLogHasAttemptBanner(t *testing.T) {
	ctx := context.Background()
	st := newMemLogStore()
	a := &Activities{Logs: &logs.Sink{Store: st}}
	in := StageInput{Stage: "imageBuild"}
	in.Record.ProjectID, in.Record.PipelineID, in.Record.RecordID = "p1", "pl1", "rec1"
	task := logs.Stream{ProjectID: "p1", PipelineID: "pl1", RecordID: "rec1", Stage: "imageBuild", Task: "web"}
	stage := task
	stage.Task = ""

	// Attempt 1 dies mid-task: its lines are stored, its "finish" never comes.
	dead, err := a.openLog(ctx, in, "web", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(dead, "Task: web status: start")
	fmt.Fprintln(dead, "step 1/3 of the first try")
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}

	run := taskRun{name: "web", run: func(_ context.Context, log io.Writer) error {
		fmt.Fprintln(log, "step 1/3 of the second try")
		return nil
	}}
	if err := a.runTask(ctx, in, runSecrets{}, run, 2); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"Task: web status: start",
		"step 1/3 of the first try",
		"Task: web attempt 2",
		"Task: web status: start",
		"step 1/3 of the second try",
		"Task: web status: finish",
	}
	if got := storedLines(t, st, task); !slices.Equal(got, want) {
		t.Errorf("task log of attempt 2:\n got %q\nwant %q", got, want)
	}

	// A first attempt has no banner.
	first := taskRun{name: "api", run: func(context.Context, io.Writer) error { return nil }}
	if err := a.runTask(ctx, in, runSecrets{}, first, 1); err != nil {
		t.Fatal(err)
	}
	api := task
	api.Task = "api"
	if got, want := storedLines(t, st, api), []string{"Task: api status: start", "Task: api status: finish"}; !slices.Equal(got, want) {
		t.Errorf("task log of attempt 1:\n got %q\nwant %q", got, want)
	}

	// The stage's own log: the same banner, naming the stage.
	log, err := a.openAttemptLog(ctx, in, "", 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := storedLines(t, st, stage), []string{"Stage: ImageBuild attempt 3"}; !slices.Equal(got, want) {
		t.Errorf("stage log of attempt 3: got %q, want %q", got, want)
	}
}
