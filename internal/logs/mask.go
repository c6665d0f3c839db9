package logs

import (
	"bytes"
	"slices"
	"strings"
)

// Mask replaces every secret in logs and error messages.
const Mask = "********"

// minSecretLinePart is the shortest line of a multi-line secret that is also masked
// on its own; shorter lines ("}", "-----") would blank ordinary output.
const minSecretLinePart = 8

// Masker replaces secrets in a byte stream that arrives in pieces. A secret split
// across two writes, or spanning several lines, is still replaced: Write holds back
// the tail of what it was given while that tail could be the beginning of a secret,
// so at most the longest secret's length (minus one) is held. Where secrets overlap,
// the earliest and then the longest one wins.
//
// The secrets are each given string, its trimmed form, and each line of at least
// minSecretLinePart bytes of a multi-line secret. A Masker is not safe for
// concurrent use.
type Masker struct {
	byFirst [256][][]byte // secrets by first byte, longest first
	isFirst [256]bool
	firsts  []byte
	held    []byte
	out     []byte
}

// NewMasker returns a Masker for the non-empty secrets.
func NewMasker(secrets []string) *Masker {
	set := map[string]bool{}
	add := func(s string) {
		if s != "" {
			set[s] = true
		}
	}
	for _, s := range secrets {
		add(s)
		t := strings.TrimSpace(s)
		add(t)
		if strings.ContainsAny(t, "\r\n") {
			for _, l := range strings.FieldsFunc(t, func(r rune) bool { return r == '\n' || r == '\r' }) {
				if l = strings.TrimSpace(l); len(l) >= minSecretLinePart {
					add(l)
				}
			}
		}
	}
	m := &Masker{}
	for s := range set {
		b := s[0]
		m.byFirst[b] = append(m.byFirst[b], []byte(s))
		if !m.isFirst[b] {
			m.isFirst[b] = true
			m.firsts = append(m.firsts, b)
		}
	}
	for _, b := range m.firsts {
		slices.SortFunc(m.byFirst[b], func(x, y []byte) int {
			if len(x) != len(y) {
				return len(y) - len(x)
			}
			return bytes.Compare(x, y)
		})
	}
	return m
}

// Empty reports whether there is nothing to mask.
func (m *Masker) Empty() bool { return m == nil || len(m.firsts) == 0 }

// Write takes the next piece of the stream and returns what can be released, with
// secrets replaced. The result is valid until the next call.
func (m *Masker) Write(p []byte) []byte {
	if m.Empty() {
		return p
	}
	data := p
	if len(m.held) > 0 {
		m.held = append(m.held, p...)
		data = m.held
	}
	var n int
	m.out, n = m.mask(m.out[:0], data, false)
	// data may be m.held itself: append copies with memmove semantics.
	m.held = append(m.held[:0], data[n:]...)
	return m.out
}

// Flush releases what Write held back, at the end of the stream.
func (m *Masker) Flush() []byte {
	if m.Empty() || len(m.held) == 0 {
		return nil
	}
	m.out, _ = m.mask(m.out[:0], m.held, true)
	m.held = m.held[:0]
	return m.out
}

// String masks a whole string (an error message, say); it does not touch the
// stream state.
func (m *Masker) String(s string) string {
	if m.Empty() || s == "" {
		return s
	}
	out, _ := m.mask(nil, []byte(s), true)
	return string(out)
}

// MaskString replaces the secrets in s.
func MaskString(s string, secrets []string) string { return NewMasker(secrets).String(s) }

// mask appends data with its secrets replaced to dst and reports how much of data it
// consumed: unless final, it stops where the rest could still grow into a secret.
func (m *Masker) mask(dst, data []byte, final bool) ([]byte, int) {
	i := 0
	for i < len(data) {
		j := m.nextCandidate(data, i)
		if j < 0 {
			return append(dst, data[i:]...), len(data)
		}
		dst = append(dst, data[i:j]...)
		i = j
		rest := data[i:]
		match := 0
		for _, s := range m.byFirst[data[i]] { // longest first
			if len(rest) < len(s) {
				if !final && bytes.HasPrefix(s, rest) {
					// A longer secret may still complete here: decide when more
					// arrives (or at the end).
					return dst, i
				}
				continue
			}
			if bytes.HasPrefix(rest, s) {
				match = len(s)
				break
			}
		}
		if match > 0 {
			dst = append(dst, Mask...)
			i += match
			continue
		}
		dst = append(dst, data[i])
		i++
	}
	return dst, i
}

// nextCandidate returns the index (from i on) of the next byte that starts a secret.
func (m *Masker) nextCandidate(data []byte, i int) int {
	if len(m.firsts) == 1 {
		j := bytes.IndexByte(data[i:], m.firsts[0])
		if j < 0 {
			return -1
		}
		return i + j
	}
	for ; i < len(data); i++ {
		if m.isFirst[data[i]] {
			return i
		}
	}
	return -1
}
