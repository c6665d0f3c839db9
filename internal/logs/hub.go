package logs

import "sync"

// Hub wakes the readers of a stream when a writer in the same process has stored a
// chunk of it: the fast path when the API and the worker share a process. Readers
// poll the store anyway, so a Hub is an optimisation, never a requirement. A nil
// *Hub does nothing.
type Hub struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

// NewHub returns an empty Hub.
func NewHub() *Hub { return &Hub{subs: map[string]map[chan struct{}]struct{}{}} }

var processHub = NewHub()

// ProcessHub is the Hub every writer and reader of this process shares.
func ProcessHub() *Hub { return processHub }

// Subscribe returns a channel that receives a value (coalesced: capacity one) after
// a chunk of s is stored, and the function that ends the subscription.
func (h *Hub) Subscribe(s Stream) (<-chan struct{}, func()) {
	if h == nil {
		return nil, func() {}
	}
	ch := make(chan struct{}, 1)
	k := s.key()
	h.mu.Lock()
	if h.subs[k] == nil {
		h.subs[k] = map[chan struct{}]struct{}{}
	}
	h.subs[k][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs[k], ch)
		if len(h.subs[k]) == 0 {
			delete(h.subs, k)
		}
		h.mu.Unlock()
	}
}

// Notify wakes the subscribers of s. It never blocks.
func (h *Hub) Notify(s Stream) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[s.key()] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
