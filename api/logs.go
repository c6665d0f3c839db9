package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// Logs is what the log endpoints read: the stored lines of a stream, followed as
// they grow, and the record whose stage statuses say when a log is complete.
// *logs.Reader has the first three; app pairs it with the store.
type Logs interface {
	Len(ctx context.Context, s logs.Stream) (int64, error)
	Copy(ctx context.Context, s logs.Stream, from int64, emit func([]string) error) (int64, error)
	Follow(ctx context.Context, s logs.Stream, from int64, done func(context.Context) (bool, error), emit func([]string) error) (int64, error)
	GetRecordByID(ctx context.Context, id string) (*model.Record, error)
}

// LogStreamOptions tunes the websocket log stream; a zero field takes its default
// (the Default* constants). Tests shorten them; production keeps the defaults.
type LogStreamOptions struct {
	// PingInterval paces keepalive pings: they keep idle connections open through
	// proxies and find clients that are gone.
	PingInterval time.Duration
	// PongTimeout is how long a client may take to answer a ping before it is
	// closed with StatusPolicyViolation "no pong".
	PongTimeout time.Duration
	// SlowClient is how long a client may accept nothing while lines wait for it
	// before it is closed as too slow (it can reconnect at its offset).
	SlowClient time.Duration
	// Drain, when set, closes the open streams when the server stops (see
	// StreamDrain); nil: they end with their connections.
	Drain *StreamDrain
}

// Defaults of LogStreamOptions.
const (
	DefaultLogStreamPing = 20 * time.Second
	DefaultLogStreamPong = 15 * time.Second
	DefaultLogStreamSlow = 5 * time.Second
)

func (o LogStreamOptions) withDefaults() LogStreamOptions {
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultLogStreamPing
	}
	if o.PongTimeout <= 0 {
		o.PongTimeout = DefaultLogStreamPong
	}
	if o.SlowClient <= 0 {
		o.SlowClient = DefaultLogStreamSlow
	}
	return o
}

// logStreamQueue and logStreamQueueBytes bound the lines waiting for a websocket
// client.
const (
	logStreamQueue      = 1024
	logStreamQueueBytes = 1 << 20
)

// logRecordPoll paces the looks at a record while a stream waits for a multi-task
// stage's task list or for another attempt of its tasks.
const logRecordPoll = logs.DefaultDoneInterval

var (
	errClientTooSlow = errors.New("client too slow")
	// errNoPong closes a client that did not answer a keepalive ping in time.
	errNoPong = errors.New("no pong")
	// errPartEnd stops the reading of one part of the log sequence.
	errPartEnd = errors.New("end of log part")
)

// logQuery is what a log request asks for, checked against the record.
type logQuery struct {
	project  *model.Project
	pipeline *model.Pipeline
	record   *model.Record
	stage    string // "" = every stage the record performs, in Cyclone order
	task     string // "" = the stage and all its tasks
}

// logQuery reads and checks the stage and task parameters: 400 for a name that is
// no stage, 404 for a stage the record does not perform or a task it does not have.
func (h *handlers) logQuery(c echo.Context) (*logQuery, error) {
	if h.logs == nil {
		return nil, &Unavailable{Service: "logs", Err: errors.New("no log store configured")}
	}
	proj, p, rec, err := h.record(c)
	if err != nil {
		return nil, err
	}
	q := &logQuery{project: proj, pipeline: p, record: rec, stage: c.QueryParam("stage"), task: c.QueryParam("task")}
	if q.stage == "" {
		if q.task != "" {
			return nil, invalidField("task", "needs a stage")
		}
		return q, nil
	}
	if !model.IsStage(q.stage) {
		return nil, invalidField("stage", "%q is not a stage; stages are %s", q.stage, strings.Join(model.StageOrder, ", "))
	}
	if !containsString(performedStages(rec, p), q.stage) {
		return nil, &Error{Status: http.StatusNotFound, Reason: ReasonNotFound,
			Message: fmt.Sprintf("stage %q is not performed by record %q", q.stage, rec.ID),
			Details: map[string]any{"kind": "stage", "name": q.stage}}
	}
	if q.task != "" {
		known := isMultiTask(q.stage) && (containsString(recordTasks(rec, q.stage), q.task) || containsString(configuredTasks(p, q.stage), q.task))
		if !known && isMultiTask(q.stage) {
			n, err := h.logs.Len(c.Request().Context(), q.stream(q.stage, q.task))
			if err != nil {
				return nil, err
			}
			known = n > 0
		}
		if !known {
			return nil, notFound("task", q.task)
		}
	}
	return q, nil
}

func (q *logQuery) stream(stage, task string) logs.Stream {
	return logs.Stream{ProjectID: q.record.ProjectID, PipelineID: q.record.PipelineID, RecordID: q.record.ID, Stage: stage, Task: task}
}

func (q *logQuery) stages() []string {
	if q.stage != "" {
		return []string{q.stage}
	}
	return performedStages(q.record, q.pipeline)
}

// getLogs answers the record's log as text/plain, copied chunk by chunk from the
// store, in the order of the log sequence (see logWalk): with no stage, every stage
// the record performs in Cyclone order; a multi-task stage without task has its
// tasks' lines between its start banner and the rest of its own lines.
func (h *handlers) getLogs(c echo.Context) error {
	q, err := h.logQuery(c)
	if err != nil {
		return err
	}
	download := false
	switch v := c.QueryParam("download"); v {
	case "", "false":
	case "true":
		download = true
	default:
		return invalidField("download", "%q must be true or false", v)
	}
	ctx := c.Request().Context()
	resp := c.Response()
	resp.Header().Set(echo.HeaderContentType, "text/plain; charset=utf-8")
	resp.Header().Set("X-Content-Type-Options", "nosniff")
	if download {
		name := fmt.Sprintf("%s-%s-%s-log.txt", q.project.Name, q.pipeline.Name, q.record.ID)
		resp.Header().Set(echo.HeaderContentDisposition, `attachment; filename="`+safeFilename(name)+`"`)
	}
	out := bufio.NewWriterSize(resp, 64<<10)
	emit := func(lines []string) error {
		for _, l := range lines {
			if _, err := out.WriteString(l); err != nil {
				return err
			}
			if err := out.WriteByte('\n'); err != nil {
				return err
			}
		}
		return nil
	}
	walk := &logWalk{h: h, q: q, out: seqOut{emit: emit}}
	if err := walk.run(ctx); err != nil {
		if !resp.Committed {
			return err
		}
		// Part of the log is sent already: break the connection rather than end
		// the body as if the log were complete.
		h.log.Error("log download broken off", "record", q.record.ID, "stage", q.stage, "error", err)
		panic(http.ErrAbortHandler)
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if !resp.Committed {
		resp.WriteHeader(http.StatusOK)
	}
	return nil
}

// getLogStream upgrades to a websocket and sends the log one text message per line
// (without its newline; a line is at most 64 KiB plus a truncation marker, so a
// client library with a smaller message limit, like coder/websocket's 32 KiB
// default, must raise it): the same sequence of lines GET .../logs gives once the
// stage (or record) is over, everything stored so far, then new lines as they are
// stored, until the stage (or, without a stage, the record) is over; then it closes
// with a normal closure. A client that reconnects with ?offset=N, N being the lines
// it received, gets the rest with no duplicate and no gap.
//
// The server pings every PingInterval; a client that does not answer within
// PongTimeout is closed with StatusPolicyViolation "no pong". A client that accepts
// nothing for SlowClient while lines wait is closed with StatusPolicyViolation
// "client too slow" (it may reconnect at its offset). The stage never waits for a
// client: its lines come from the store.
func (h *handlers) getLogStream(c echo.Context) error {
	q, err := h.logQuery(c)
	if err != nil {
		return err
	}
	offset, err := intParam(c, "offset", 0, 0, 1<<62)
	if err != nil {
		return err
	}
	opts := h.logStream
	var stopping <-chan struct{} // never closed without a drain
	if opts.Drain != nil {
		var exit func()
		var ok bool
		if stopping, exit, ok = opts.Drain.enter(); !ok {
			return &Error{Status: http.StatusServiceUnavailable, Reason: ReasonUnavailable, Message: "the server is stopping"}
		}
		defer exit()
	}
	conn, err := websocket.Accept(c.Response().Writer, c.Request(), nil)
	if err != nil {
		return nil // Accept has answered the client
	}
	defer conn.CloseNow()
	// The client sends nothing; reading answers its pings and closes.
	ctx := conn.CloseRead(c.Request().Context())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var serverStopping atomic.Bool
	go func() {
		select {
		case <-stopping:
			serverStopping.Store(true)
			cancel()
		case <-ctx.Done():
		}
	}()

	revoked := h.watchToken(ctx, c, cancel)
	send := newLineSender(ctx, conn, opts.SlowClient)
	var noPong atomic.Bool
	go keepAlive(ctx, conn, opts, func() {
		noPong.Store(true)
		cancel()
	})
	walk := &logWalk{h: h, q: q, follow: true, out: seqOut{skip: offset, emit: send.send}}
	err = walk.run(ctx)
	if err == nil {
		err = send.finish()
	}
	switch {
	case err == nil:
		_ = conn.Close(websocket.StatusNormalClosure, "end of log")
	case revoked():
		_ = conn.Close(websocket.StatusPolicyViolation, "token revoked")
	case noPong.Load():
		send.abort()
		_ = conn.Close(websocket.StatusPolicyViolation, errNoPong.Error())
	case errors.Is(err, errClientTooSlow):
		send.abort()
		_ = conn.Close(websocket.StatusPolicyViolation, errClientTooSlow.Error())
	case serverStopping.Load():
		send.abort()
		_ = conn.Close(websocket.StatusGoingAway, "server stopping")
	case ctx.Err() != nil:
		// The client left.
	case store.IsUnavailable(err):
		_ = conn.Close(websocket.StatusTryAgainLater, "log store unavailable")
	default:
		h.log.Error("log stream failed", "record", q.record.ID, "stage", q.stage, "error", err)
		_ = conn.Close(websocket.StatusInternalError, "internal error")
	}
	return nil
}

// logWalk sends the log sequence of a query, the one order both GET .../logs and
// the stream use, over which a stream's offset counts lines:
//
//   - without a stage, the sequences of the stages the record performs, in Cyclone
//     order;
//   - a task asked for: that task's stream;
//   - a single-task stage: its stream;
//   - a multi-task stage (imageBuild, imageRelease): the first line of the stage's
//     stream (its start banner), then its tasks' lines, then the rest of the
//     stage's stream (the tasks' outcomes and the finish banner). The tasks' lines
//     come attempt by attempt: round 1 has each task's lines, in the record's task
//     order, up to its first "Task: <name> attempt N" banner; round 2 each task's
//     lines from that banner to the next; and so on. A retried attempt (a worker
//     died) thus appends after everything sent before, so a live reader never has
//     to go back.
//
// A download (follow false) sends what is stored. A stream (follow true) sends each
// part as it grows and moves on once the part is complete: the stage's first line
// is stored (or the stage is over), a task's attempt is over (its status is final,
// or its next attempt began), the stage or record is over. While one task is
// followed, the next ones' lines wait in the store and come right after it.
type logWalk struct {
	h      *handlers
	q      *logQuery
	follow bool
	out    seqOut
}

// seqOut passes lines of the sequence on, dropping the first skip ones: those a
// reconnecting client has already.
type seqOut struct {
	skip int64
	emit func([]string) error
}

func (o *seqOut) write(lines []string) error {
	if o.skip >= int64(len(lines)) {
		o.skip -= int64(len(lines))
		return nil
	}
	lines = lines[o.skip:]
	o.skip = 0
	return o.emit(lines)
}

type doneFunc = func(context.Context) (bool, error)

func (w *logWalk) run(ctx context.Context) error {
	for _, stage := range w.q.stages() {
		if err := w.stage(ctx, stage); err != nil {
			return err
		}
	}
	return nil
}

func (w *logWalk) stage(ctx context.Context, stage string) error {
	over := w.recordDone(func(r *model.Record) bool { return stageOver(r, stage) })
	if w.q.task != "" {
		task := w.q.task
		return w.whole(ctx, w.q.stream(stage, task), 0, w.recordDone(func(r *model.Record) bool {
			return stageOver(r, stage) || taskOver(r, stage, task)
		}))
	}
	s := w.q.stream(stage, "")
	if !isMultiTask(stage) {
		return w.whole(ctx, s, 0, over)
	}
	// The start banner, as soon as it is there.
	headDone := func(ctx context.Context) (bool, error) {
		n, err := w.h.logs.Len(ctx, s)
		if err != nil || n >= 1 {
			return n >= 1, err
		}
		return over(ctx)
	}
	head, _, err := w.part(ctx, s, 0, func(i int64, _ string) bool { return i >= 1 }, headDone)
	if err != nil {
		return err
	}
	tasks, err := w.tasks(ctx, stage)
	if err != nil {
		return err
	}
	if err := w.taskRounds(ctx, stage, tasks); err != nil {
		return err
	}
	return w.whole(ctx, s, head, over)
}

// recordDone makes a done callback of a condition on the record as stored now; a
// record deleted meanwhile is done.
func (w *logWalk) recordDone(cond func(*model.Record) bool) doneFunc {
	return func(ctx context.Context) (bool, error) {
		rec, gone, err := w.h.freshRecord(ctx, w.q.record.ID)
		if err != nil {
			return false, err
		}
		return gone || cond(rec), nil
	}
}

// read copies (download) or follows (stream) s from line from on.
func (w *logWalk) read(ctx context.Context, s logs.Stream, from int64, done doneFunc, emit func([]string) error) error {
	if !w.follow {
		_, err := w.h.logs.Copy(ctx, s, from, emit)
		return err
	}
	_, err := w.h.logs.Follow(ctx, s, from, done, emit)
	return err
}

// whole sends s from line from to its end. Lines the client has already are not
// read again: a complete part within them is skipped by its length.
func (w *logWalk) whole(ctx context.Context, s logs.Stream, from int64, done doneFunc) error {
	if w.out.skip == 0 {
		return w.read(ctx, s, from, done, w.out.write)
	}
	complete := !w.follow
	if w.follow {
		var err error
		if complete, err = done(ctx); err != nil {
			return err
		}
	}
	if complete {
		n, err := w.h.logs.Len(ctx, s)
		if err != nil {
			return err
		}
		if rest := max(n-from, 0); w.out.skip >= rest {
			w.out.skip -= rest
			return nil
		}
	}
	first := from + w.out.skip
	if err := w.read(ctx, s, first, done, w.out.emit); err != nil {
		return err
	}
	// The part is complete now: what it did not have of skip is for the next ones.
	n, err := w.h.logs.Len(ctx, s)
	if err != nil {
		return err
	}
	w.out.skip -= min(max(n-from, 0), w.out.skip)
	return nil
}

// part sends s from line from on, up to its end or up to the first line that
// stop accepts (not sent), and returns the number of the line after the last one
// sent and whether stop cut the part there.
func (w *logWalk) part(ctx context.Context, s logs.Stream, from int64, stop func(n int64, line string) bool, done doneFunc) (int64, bool, error) {
	next := from
	emit := func(lines []string) error {
		for j, l := range lines {
			if stop(next+int64(j), l) {
				next += int64(j)
				if err := w.out.write(lines[:j]); err != nil {
					return err
				}
				return errPartEnd
			}
		}
		next += int64(len(lines))
		return w.out.write(lines)
	}
	err := w.read(ctx, s, from, done, emit)
	if errors.Is(err, errPartEnd) {
		return next, true, nil
	}
	return next, false, err
}

// tasks names the tasks of a multi-task stage in the record's order; a stream
// waits until the stage has written them (all at once) or is over.
func (w *logWalk) tasks(ctx context.Context, stage string) ([]string, error) {
	if !w.follow {
		return recordTasks(w.q.record, stage), nil
	}
	for {
		rec, gone, err := w.h.freshRecord(ctx, w.q.record.ID)
		if err != nil || gone {
			return nil, err
		}
		if t := recordTasks(rec, stage); len(t) > 0 || stageOver(rec, stage) {
			return t, nil
		}
		if err := sleepCtx(ctx, logRecordPoll); err != nil {
			return nil, err
		}
	}
}

// taskRounds sends the tasks' lines attempt by attempt (see logWalk).
func (w *logWalk) taskRounds(ctx context.Context, stage string, tasks []string) error {
	pos := make([]int64, len(tasks))
	for {
		more := false
		for i, task := range tasks {
			banner := logs.TaskAttemptPrefix(task)
			from := pos[i]
			next, cut, err := w.part(ctx, w.q.stream(stage, task), from,
				func(n int64, l string) bool { return n > from && strings.HasPrefix(l, banner) },
				w.recordDone(func(r *model.Record) bool { return stageOver(r, stage) || taskOver(r, stage, task) }))
			if err != nil {
				return err
			}
			pos[i], more = next, more || cut
		}
		if more {
			continue
		}
		if !w.follow {
			return nil
		}
		// Every task's attempt is sent: the stage ends, or another attempt begins.
		again, err := w.tasksGrow(ctx, stage, tasks, pos)
		if err != nil || !again {
			return err
		}
	}
}

// tasksGrow waits until a task's log has lines past pos (true) or the stage is
// over with none (false).
func (w *logWalk) tasksGrow(ctx context.Context, stage string, tasks []string, pos []int64) (bool, error) {
	for {
		// The status first: lines are stored before the status says the stage is over.
		over, err := w.recordDone(func(r *model.Record) bool { return stageOver(r, stage) })(ctx)
		if err != nil {
			return false, err
		}
		for i, task := range tasks {
			n, err := w.h.logs.Len(ctx, w.q.stream(stage, task))
			if err != nil {
				return false, err
			}
			if n > pos[i] {
				return true, nil
			}
		}
		if over {
			return false, nil
		}
		if err := sleepCtx(ctx, logRecordPoll); err != nil {
			return false, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// freshRecord reads the record again; gone reports that it was deleted meanwhile.
func (h *handlers) freshRecord(ctx context.Context, id string) (*model.Record, bool, error) {
	rec, err := h.logs.GetRecordByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, true, nil
	}
	return rec, false, err
}

// lineSender queues lines for one websocket client and writes them in order from
// its own goroutine: following the store never waits on the network, and the queue
// bounds what a slow client holds.
type lineSender struct {
	queue   chan string
	queued  atomic.Int64  // bytes in queue
	drained chan struct{} // a line left the queue
	stop    chan struct{}
	done    chan struct{}
	err     error // the writer's, once done is closed
	timer   *time.Timer
	slow    time.Duration
}

func newLineSender(ctx context.Context, conn *websocket.Conn, slow time.Duration) *lineSender {
	s := &lineSender{
		queue:   make(chan string, logStreamQueue),
		drained: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		timer:   time.NewTimer(time.Hour),
		slow:    slow,
	}
	s.timer.Stop()
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			select {
			case <-s.stop:
				return
			case line, ok := <-s.queue:
				if !ok {
					return
				}
				if err := conn.Write(ctx, websocket.MessageText, []byte(line)); err != nil {
					s.err = err
					return
				}
				s.queued.Add(-int64(len(line)))
				select {
				case s.drained <- struct{}{}:
				default:
				}
			}
		}
	}()
	return s
}

// send queues lines, failing with errClientTooSlow when the client accepted
// nothing for s.slow while the queue was full.
func (s *lineSender) send(lines []string) error {
	for _, l := range lines {
		for n := s.queued.Load(); n > 0 && n+int64(len(l)) > logStreamQueueBytes; n = s.queued.Load() {
			s.timer.Reset(s.slow)
			select {
			case <-s.drained:
				s.timer.Stop()
			case <-s.done:
				s.timer.Stop()
				return s.writerErr()
			case <-s.timer.C:
				return errClientTooSlow
			}
		}
		s.queued.Add(int64(len(l)))
		select {
		case s.queue <- l:
			continue
		case <-s.done:
			return s.writerErr()
		default:
		}
		s.timer.Reset(s.slow)
		select {
		case s.queue <- l:
			s.timer.Stop()
		case <-s.done:
			s.timer.Stop()
			return s.writerErr()
		case <-s.timer.C:
			return errClientTooSlow
		}
	}
	return nil
}

// finish waits until every queued line is written.
func (s *lineSender) finish() error {
	close(s.queue)
	s.timer.Reset(s.slow)
	defer s.timer.Stop()
	select {
	case <-s.done:
		return s.err
	case <-s.timer.C:
		return errClientTooSlow
	}
}

// abort stops writing queued lines, so that a close frame goes next.
func (s *lineSender) abort() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
}

func (s *lineSender) writerErr() error {
	if s.err != nil {
		return s.err
	}
	return errors.New("log stream writer stopped")
}

// keepAlive pings the client every PingInterval until ctx ends; a client that does
// not answer within PongTimeout gets lost called (which ends ctx).
func keepAlive(ctx context.Context, conn *websocket.Conn, o LogStreamOptions, lost func()) {
	every(ctx, o.PingInterval, func() bool {
		pingCtx, cancel := context.WithTimeout(ctx, o.PongTimeout)
		defer cancel()
		if err := conn.Ping(pingCtx); err != nil {
			if ctx.Err() == nil {
				lost()
			}
			return false
		}
		return true
	})
}

// performedStages lists, in Cyclone order, the stages the record runs: those it
// selected (every configured stage when it selected none) and any with a status.
func performedStages(rec *model.Record, p *model.Pipeline) []string {
	want := map[string]bool{}
	if rec.PerformParams != nil {
		for _, s := range rec.PerformParams.Stages {
			want[s] = true
		}
	}
	if len(want) == 0 && p.Build != nil {
		for _, s := range p.Build.Stages.Configured() {
			want[s] = true
		}
	}
	var out []string
	for _, s := range model.StageOrder {
		if want[s] || rec.StageStatus.Of(s) != nil {
			out = append(out, s)
		}
	}
	return out
}

func isMultiTask(stage string) bool {
	return stage == model.StageImageBuild || stage == model.StageImageRelease
}

func taskStatuses(rec *model.Record, stage string) []model.TaskStatus {
	if ss := rec.StageStatus; ss != nil {
		switch {
		case stage == model.StageImageBuild && ss.ImageBuild != nil:
			return ss.ImageBuild.Tasks
		case stage == model.StageImageRelease && ss.ImageRelease != nil:
			return ss.ImageRelease.Tasks
		}
	}
	return nil
}

// recordTasks names the tasks of a multi-task stage the record knows, in order.
func recordTasks(rec *model.Record, stage string) []string {
	var out []string
	for _, t := range taskStatuses(rec, stage) {
		if t.Name != "" && !containsString(out, t.Name) {
			out = append(out, t.Name)
		}
	}
	return out
}

// configuredTasks names the tasks the pipeline configures for a multi-task stage,
// for a client that asks for a task before it started.
func configuredTasks(p *model.Pipeline, stage string) []string {
	if p.Build == nil || p.Build.Stages == nil {
		return nil
	}
	var out []string
	switch s := p.Build.Stages; {
	case stage == model.StageImageBuild && s.ImageBuild != nil:
		for _, bi := range s.ImageBuild.BuildInfos {
			out = append(out, bi.TaskName, bi.ImageName)
		}
	case stage == model.StageImageRelease && s.ImageRelease != nil:
		for _, pol := range s.ImageRelease.Policies() {
			out = append(out, pol.ImageName)
		}
	}
	return out
}

// stageOver reports that no line will be added to the stage's log: the stage has a
// final status, or the record is over (a stage that never started never will).
func stageOver(rec *model.Record, stage string) bool {
	if st := rec.StageStatus.Of(stage); st != nil && model.IsTerminal(st.Status) {
		return true
	}
	return model.IsTerminal(rec.Status)
}

func taskOver(rec *model.Record, stage, task string) bool {
	for _, t := range taskStatuses(rec, stage) {
		if t.Name == task && model.IsTerminal(t.Status) {
			return true
		}
	}
	return false
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s && s != "" {
			return true
		}
	}
	return false
}

// safeFilename keeps a Content-Disposition filename to characters that need no
// quoting rules.
func safeFilename(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' || r == '\\' || r == '/' || r > 0x7e {
			return '_'
		}
		return r
	}, s)
}
