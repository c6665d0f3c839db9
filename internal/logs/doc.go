// Package logs keeps what the steps of a pipeline record print, and serves it back
// whole or followed live.
//
// # Streams, heads and chunks
//
// A log is a Stream of lines: one per record and stage, plus one per task of a
// multi-task stage (imageBuild, imageRelease). Lines are numbered 0, 1, 2, ...
// within their stream. A line, once stored, never changes or moves, so "the first N
// lines of a stream" means the same to every reader at any time: that is what lets
// a client resume a live stream at an offset with no duplicate and no gap.
//
// Each stream has one small Head: its length (Lines), how many lines are sealed in
// chunks (Sealed, in Chunks chunks) and the rest, the Tail, at most MaxTailLines
// lines or MaxTailBytes bytes. Lines beyond that are sealed into immutable Chunks of
// up to MaxChunkLines lines or MaxChunkBytes bytes, numbered 0, 1, 2, ... without
// gaps; closing a writer seals the tail too, unless the stream never needed a chunk:
// then its few lines stay the closed head's tail. So a short stage log is one head,
// a quiet stage costs one chunk per 64 KiB or so, never one document per line, and
// no document grows without bound.
//
// Readers poll the head, a small document, and read sealed chunks in windows only
// when they are behind. Writers only insert chunks, never update them, then replace
// the head with a compare-and-set on its line count. Both suit the embedded
// FerretDB, which answers every query by reading the whole collection: the big
// collection (chunks) is written without a query and read only to catch up. Only
// CRUD, indexes and sort/limit are used: no change streams, $lookup or transactions.
//
// # Writing
//
// A Writer (from Sink.Open) is what a stage's executor writes to. It masks secrets
// in the byte stream (a secret split across writes or spanning lines is still
// caught: the Masker holds back a tail that could be the start of a secret), splits
// lines on '\n' (dropping a trailing '\r'), cuts a line over MaxLineBytes with a
// "... [line truncated: N bytes]" marker (N: the original line's length), replaces
// invalid UTF-8 and NUL bytes with U+FFFD, and batches lines: a background flusher
// stores them FlushDelay after the first one waiting, or at once when a chunk's
// worth waits. Write blocks only while MaxPendingBytes wait for the store, so the
// worker never holds a whole log, whatever a step prints.
//
// Writes are idempotent: after a failure whose outcome is unknown the writer reads
// the head back before trying again (a head stored by this writer carries its ID),
// and a chunk stored by an earlier try is overwritten only while no head counts it.
// A Writer of a retried stage attempt (after a dead worker's) reads the stored head
// and writes after its last line; a first attempt expects an empty stream and learns
// otherwise from its first compare-and-set. A writer that finds the head moved by another one
// (a worker thought dead that still writes) writes after that writer's lines.
//
// # Reading
//
// A Reader copies a stream from a line number, or follows it: it looks at the head
// every PollInterval, and is woken at once by a Hub when the writer runs in the same
// process (the API and the worker in one `cyclone dev`). A follower stops when its
// done callback (the stage or record status in MongoDB) says the log is complete,
// after a last look: a stage's log is closed before its status turns final.
package logs
