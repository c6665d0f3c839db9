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

// Websocket log stream settings.
const (
	// logStreamQueue and logStreamQueueBytes bound the lines waiting for a
	// websocket client.
	logStreamQueue      = 1024
	logStreamQueueBytes = 1 << 20
	// logStreamSlow is how long a client may accept nothing while lines wait for
	// it before it is closed as too slow (it can reconnect at its offset).
	logStreamSlow = 5 * time.Second
	// logStreamPing paces keepalive pings; a pong must come within logStreamPong.
	logStreamPing = 20 * time.Second
	logStreamPong = 15 * time.Second
)

var errClientTooSlow = errors.New("client too slow")

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
// store: with no stage, every stage the record performs in Cyclone order; for a
// multi-task stage without task, the stage's own lines then each task's.
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
	for _, stage := range q.stages() {
		for _, s := range q.streamsOf(stage, q.record) {
			if _, err := h.logs.Copy(ctx, s, 0, emit); err != nil {
				if !resp.Committed {
					return err
				}
				// Part of the log is sent already: break the connection rather than
				// end the body as if the log were complete.
				h.log.Error("log download broken off", "record", q.record.ID, "stage", stage, "error", err)
				panic(http.ErrAbortHandler)
			}
		}
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if !resp.Committed {
		resp.WriteHeader(http.StatusOK)
	}
	return nil
}

// streamsOf lists the streams of a stage as the record says now: the task asked
// for, or the stage's own stream then each task's, in the record's task order.
func (q *logQuery) streamsOf(stage string, rec *model.Record) []logs.Stream {
	if q.task != "" {
		return []logs.Stream{q.stream(stage, q.task)}
	}
	out := []logs.Stream{q.stream(stage, "")}
	for _, t := range recordTasks(rec, stage) {
		out = append(out, q.stream(stage, t))
	}
	return out
}

// getLogStream upgrades to a websocket and sends the log one text message per line
// (without its newline; a line is at most 64 KiB plus a truncation marker, so a
// client library with a smaller message limit, like coder/websocket's 32 KiB
// default, must raise it): everything stored so far, then new lines as they are
// stored, until the stage (or, without a stage, the record: its stages in Cyclone
// order, as GET .../logs gives them) is over; then it closes with a normal closure.
// A client that reconnects with ?offset=N, N being the lines it received, gets the
// rest with no duplicate and no gap. The server pings every logStreamPing. A client
// that accepts nothing for logStreamSlow while lines wait is closed with
// StatusPolicyViolation "client too slow" (it may reconnect at its offset); the
// stage never waits for a client, whose lines come from the store.
func (h *handlers) getLogStream(c echo.Context) error {
	q, err := h.logQuery(c)
	if err != nil {
		return err
	}
	offset, err := intParam(c, "offset", 0, 0, 1<<62)
	if err != nil {
		return err
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

	revoked := h.watchToken(ctx, c, cancel)
	send := newLineSender(ctx, conn)
	go keepAlive(ctx, conn)
	err = h.followLogs(ctx, q, offset, send.send)
	if err == nil {
		err = send.finish()
	}
	switch {
	case err == nil:
		_ = conn.Close(websocket.StatusNormalClosure, "end of log")
	case revoked():
		_ = conn.Close(websocket.StatusPolicyViolation, "token revoked")
	case errors.Is(err, errClientTooSlow):
		send.abort()
		_ = conn.Close(websocket.StatusPolicyViolation, errClientTooSlow.Error())
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

// followLogs sends the log from line offset on, following each stage until it is
// over. The lines of a record are the concatenation of its stages' streams, so an
// offset past a finished stage's length skips that stage.
func (h *handlers) followLogs(ctx context.Context, q *logQuery, offset int64, emit func([]string) error) error {
	skip := offset
	for _, stage := range q.stages() {
		// The stage's own stream (or the task asked for) is followed; the other
		// tasks of a multi-task stage are complete once it is over.
		first := q.stream(stage, q.task)
		done := func(rec *model.Record) bool {
			return stageOver(rec, stage) || (q.task != "" && taskOver(rec, stage, q.task))
		}
		var err error
		if skip, err = h.followStream(ctx, first, skip, done, emit); err != nil {
			return err
		}
		if q.task != "" {
			continue
		}
		rec, gone, err := h.freshRecord(ctx, q.record.ID)
		if err != nil || gone {
			return err
		}
		for _, s := range q.streamsOf(stage, rec)[1:] {
			if skip, err = h.followStream(ctx, s, skip, func(*model.Record) bool { return true }, emit); err != nil {
				return err
			}
		}
	}
	return nil
}

// followStream sends stream s from line skip on until done(record) holds, and
// returns how much of skip is left for the streams after it.
func (h *handlers) followStream(ctx context.Context, s logs.Stream, skip int64, done func(*model.Record) bool, emit func([]string) error) (int64, error) {
	isDone := func(ctx context.Context) (bool, error) {
		rec, gone, err := h.freshRecord(ctx, s.RecordID)
		if err != nil {
			return false, err
		}
		return gone || done(rec), nil
	}
	if skip > 0 {
		over, err := isDone(ctx)
		if err != nil {
			return 0, err
		}
		if over {
			n, err := h.logs.Len(ctx, s)
			if err != nil {
				return 0, err
			}
			if skip >= n {
				return skip - n, nil
			}
		}
	}
	_, err := h.logs.Follow(ctx, s, skip, isDone, emit)
	return 0, err
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
}

func newLineSender(ctx context.Context, conn *websocket.Conn) *lineSender {
	s := &lineSender{
		queue:   make(chan string, logStreamQueue),
		drained: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		timer:   time.NewTimer(time.Hour),
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
// nothing for logStreamSlow while the queue was full.
func (s *lineSender) send(lines []string) error {
	for _, l := range lines {
		for n := s.queued.Load(); n > 0 && n+int64(len(l)) > logStreamQueueBytes; n = s.queued.Load() {
			s.timer.Reset(logStreamSlow)
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
		s.timer.Reset(logStreamSlow)
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
	s.timer.Reset(logStreamSlow)
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

// keepAlive pings the client until ctx ends; a client that does not answer is
// disconnected, which ends ctx.
func keepAlive(ctx context.Context, conn *websocket.Conn) {
	every(ctx, logStreamPing, func() bool {
		pingCtx, cancel := context.WithTimeout(ctx, logStreamPong)
		defer cancel()
		if err := conn.Ping(pingCtx); err != nil {
			_ = conn.CloseNow()
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
