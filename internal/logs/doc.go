// Package logs keeps what the steps of a pipeline record print, and serves it back
// whole or followed live.
//
// # Streams, chunks and line numbers
//
// A log is a Stream of lines: one per record and stage, plus one per task of a
// multi-task stage (imageBuild, imageRelease). Lines are numbered 0, 1, 2, ... within
// their stream, and stored in chunks: a Chunk holds consecutive lines, chunks of a
// stream are numbered 0, 1, 2, ... without gaps, and a chunk only ever grows (up to
// MaxChunkLines lines or MaxChunkBytes bytes) and is Closed once full or when its
// writer closes. A line, once stored, never changes or moves, so "the first N lines
// of a stream" means the same thing to every reader at any time: that is what lets a
// client resume a live stream at an offset with no duplicate and no gap.
//
// Every read and write addresses one chunk by its key (record, stage, task, chunk
// number), which the store maps to the document _id. That is the one query the
// embedded FerretDB answers without scanning a collection, and a primary-key lookup
// on MongoDB; finding the last chunk or the chunk holding line N is a galloping
// search over chunk numbers (O(log chunks) lookups). Nothing here needs change
// streams, $lookup or transactions.
//
// # Writing
//
// A Writer (from Sink.Open) is what a stage's executor writes to. It masks secrets
// in the byte stream (a secret split across writes or spanning lines is still
// caught: the masker holds back a tail that could be the start of a secret), splits
// lines on '\n' (dropping a trailing '\r'), cuts a line over MaxLineBytes with a
// "... [line truncated: N bytes]" marker (N: the original line's length), replaces
// invalid UTF-8 and NUL bytes with U+FFFD, and batches lines into chunks. A
// background flusher stores the open chunk FlushDelay after its first unstored line,
// and a full chunk at once; writes block only when MaxPendingChunks full chunks wait
// for the store, so memory stays bounded whatever a step prints. Writes are
// idempotent: a chunk is appended to with its stored line count known (read back
// after any failed write), so a retried write never duplicates a line. A new Writer
// on a stream that already has lines (a retried stage attempt) continues after the
// last stored line, in a new chunk.
//
// # Reading
//
// A Reader copies a stream from a line number, or follows it: it polls the chunk it
// is reading (and, while that chunk is open, the next one, which exists when its
// writer died and a retry went on) every PollInterval, and is woken at once by a Hub
// when the writer runs in the same process. A follower stops when its done callback
// (the stage or record status in MongoDB) says the log is complete, after a last
// read: a stage's log is closed before its status turns final.
package logs
