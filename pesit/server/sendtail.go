package server

import (
	"context"
	"errors"
	"hash"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
)

// sendTail takes two things off a pull's session goroutine (issue 17: the
// pull was limited by a synchronous store write per SYN sent, and the hash
// ran in series with the reads): the SHA-256 of the file, which it reads
// back with pread from the page cache behind the sender, and the journal
// write of each sync point sent. Jobs run in order on one goroutine, owned
// by the sender: start, then wait before reading the hash or letting the
// transfer finish, and stop when the data phase is over.
type sendTail struct {
	jobs chan tailJob
	done chan struct{}
	// lost: the journal refused a point with lostErr, the transfer has
	// another owner. lostErr is written before lost is set.
	lost    atomic.Bool
	lostErr error
}

// tailJob: hash the file up to hashTo, journal pt, or close barrier.
type tailJob struct {
	hashTo  int64
	pt      *syncPoint
	barrier chan struct{}
}

// startSendTail starts the goroutine. h holds the hash of the file up to
// from; the goroutine owns it until wait returns.
func startSendTail(ctx context.Context, jnl Journal, ref TransferRef, src *os.File, h hash.Hash, from int64, log *slog.Logger) *sendTail {
	t := &sendTail{jobs: make(chan tailJob, 64), done: make(chan struct{})}
	go t.run(ctx, jnl, ref, src, h, from, log)
	return t
}

func (t *sendTail) run(ctx context.Context, jnl Journal, ref TransferRef, src *os.File, h hash.Hash, hashed int64, log *slog.Logger) {
	defer close(t.done)
	var last *syncPoint // sent, not journaled yet
	journal := func() {
		if last == nil {
			return
		}
		// Only our restart state lags: a restart may then ask for a
		// later point than the journal's, which the client answers by
		// falling back to an earlier one it holds.
		// The record need not be flushed either: the data of a pull is
		// made durable by the receiver, and a point lost with the machine
		// is only an earlier restart.
		record := jnl.SyncPoint
		if dj, ok := jnl.(DeferredJournal); ok {
			record = dj.SyncPointDeferred
		}
		if err := record(ctx, ref, last.num, last.offset, last.articles); errors.Is(err, ErrTransferLost) {
			t.lostErr = err
			t.lost.Store(true)
		} else if err != nil {
			log.Warn("journal sync point failed", "id", ref.ID, "sync", last.num, "err", err)
		}
		last = nil
	}
	var hashErr error
	var buf []byte // io.Copy would allocate one per job
	for j := range t.jobs {
		if j.hashTo > hashed && hashErr == nil {
			// The sender read these bytes already: a read error here is
			// the file changing under us, which the count check or the
			// receiver's own hash will see; the sum is then wrong, and
			// said so in the log.
			if buf == nil {
				buf = make([]byte, 64<<10)
			}
			n, err := io.CopyBuffer(h, io.NewSectionReader(src, hashed, j.hashTo-hashed), buf)
			hashed += n
			if err != nil {
				hashErr = err
				log.Warn("hashing the sent file failed", "id", ref.ID, "err", err)
			}
		}
		if j.pt != nil {
			last = j.pt
			// Several points queued: one journal write for the latest.
			if len(t.jobs) == 0 {
				journal()
			}
		}
		if j.barrier != nil {
			journal()
			close(j.barrier)
		}
	}
	journal()
}

// hashTo asks for the hash of the file up to off.
func (t *sendTail) hashTo(off int64) { t.jobs <- tailJob{hashTo: off} }

// sent journals pt, sent, after hashing up to it.
func (t *sendTail) sent(pt syncPoint) { t.jobs <- tailJob{hashTo: pt.offset, pt: &pt} }

// wait returns once everything asked so far is done.
func (t *sendTail) wait() {
	b := make(chan struct{})
	t.jobs <- tailJob{barrier: b}
	<-b
}

// stop waits for the goroutine to finish and return.
func (t *sendTail) stop() {
	close(t.jobs)
	<-t.done
}
