package store

import (
	"context"
	"hash/fnv"
	"sync"
)

// stripedLocks serialise this process's writes of single documents of one
// collection on the embedded FerretDB, by stripe of document _id. FerretDB (v1.24)
// applies an update by reading the document and writing it back whole, with nothing
// in between to stop another update of the same document: concurrent updates of one
// document lose writes (concurrent $inc lose counts, concurrent $set of different
// fields lose fields). The embedded FerretDB's one writer is the process that runs
// it, so serialising here makes its single-document updates atomic. MongoDB applies
// each update atomically and needs no lock. A caller never holds two stripes of
// different collections' locks at once except through lockAllDocs, which takes one
// collection's stripes in order.
type stripedLocks [64]sync.Mutex

// The store's striped locks, one set per collection with read-modify-write updates
// (and sheetLocks, sheets.go).
var recordLocks, cardLocks, directoryLocks, counterLocks stripedLocks

func (l *stripedLocks) stripe(id string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return &l[h.Sum32()%uint32(len(l))]
}

// lockDoc locks the writes to document id under l on FerretDB and returns the
// unlock (a no-op on MongoDB).
func (s *Store) lockDoc(ctx context.Context, l *stripedLocks, id string) (unlock func()) {
	if !s.scansQueries(ctx) {
		return func() {}
	}
	m := l.stripe(id)
	m.Lock()
	return m.Unlock
}

// lockAllDocs locks the writes to every document under l on FerretDB, for a bulk
// write, and returns the unlock. It takes the stripes in order, so it cannot
// deadlock with another caller.
func (s *Store) lockAllDocs(ctx context.Context, l *stripedLocks) (unlock func()) {
	if !s.scansQueries(ctx) {
		return func() {}
	}
	for i := range l {
		l[i].Lock()
	}
	return func() {
		for i := range l {
			l[i].Unlock()
		}
	}
}
