package app_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/app"
)

// ServeWithDrain runs its stops when the shutdown begins, within the drain (their
// context has its deadline), and returns only once they have ended.
func TestServeWithDrainRunsItsStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	stopped := make(chan struct{})
	var hadDeadline bool
	done := make(chan error, 1)
	go func() {
		done <- app.ServeWithDrain(ctx, http.NotFoundHandler(), "127.0.0.1:0", 5*time.Second, func(addr string) { ready <- addr },
			func(stopCtx context.Context) {
				_, hadDeadline = stopCtx.Deadline()
				time.Sleep(100 * time.Millisecond)
				close(stopped)
			})
	}()
	addr := <-ready
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case <-stopped:
		t.Fatal("the stop ran before the shutdown")
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("ServeWithDrain returned before its stop ended")
	}
	if !hadDeadline {
		t.Fatal("the stop's context has no deadline: it is not bounded by the drain")
	}
}
