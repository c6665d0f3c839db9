package api

import (
	"context"
	"sync"
)

// StreamDrain ends the open log streams of a server that stops: each is closed with
// StatusGoingAway "server stopping", so that its client reconnects at its offset
// (to another instance, or to this one once it is back) instead of seeing the
// connection drop. http.Server.Shutdown does not wait for websockets (they are
// hijacked connections): Stop does. The zero value is ready to use.
type StreamDrain struct {
	once     sync.Once
	stopping chan struct{}
	mu       sync.Mutex
	open     sync.WaitGroup
	stopped  bool
}

func (d *StreamDrain) init() { d.once.Do(func() { d.stopping = make(chan struct{}) }) }

// enter counts a stream in and returns its channel of the stop and its exit; ok is
// false once the stop has begun (the stream is refused).
func (d *StreamDrain) enter() (stopping <-chan struct{}, exit func(), ok bool) {
	d.init()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return nil, nil, false
	}
	d.open.Add(1)
	return d.stopping, d.open.Done, true
}

// Stop closes the open streams and waits until they are closed or ctx ends.
func (d *StreamDrain) Stop(ctx context.Context) {
	d.init()
	d.mu.Lock()
	if !d.stopped {
		d.stopped = true
		close(d.stopping)
	}
	d.mu.Unlock()
	done := make(chan struct{})
	go func() {
		d.open.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
