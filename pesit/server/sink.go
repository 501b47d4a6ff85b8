package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
)

// sink is the file a transfer is received into. The session goroutine
// copies data into a buffer; a full buffer goes to the sink's worker
// goroutine, which writes it to the temporary file and feeds the running
// SHA-256, so that neither the write(2) nor the hash is on the session's
// critical path (issue 17: the hash alone was a third of a push's CPU, in
// series with the reads). syncAsync makes the data durable in the worker
// and then runs the sync point's journal write and ACK(SYN) there, while
// the session goes on receiving; commit() makes the file appear atomically
// under its final name.
//
// The worker is started by createSink/resumeSink and stopped by commit,
// close or discard, one of which every transfer ends with (endTransfer).
// Between the two goroutines, ownership goes with the channels: a buffer
// sent on jobs is the worker's until it comes back on free, and h, err and
// the file offset are the worker's while it runs and the session's after a
// barrier (wait) or once the worker has stopped.
type sink struct {
	root     *os.Root
	tempRel  string
	finalRel string
	f        *os.File
	h        hash.Hash
	buf      []byte // being filled by the session
	bytes    int64
	articles int64
	closed   bool

	jobs    chan sinkJob
	free    chan []byte
	done    chan struct{} // closed when the worker has returned
	stopped bool
	failed  atomic.Bool // the worker met an error: err says which
	err     error

	mu          sync.Mutex
	lastDurable syncPoint // the last sync point journaled by the worker
	anyDurable  bool
}

// markDurable records, on the worker, that pt is durable and journaled.
func (s *sink) markDurable(pt syncPoint) {
	s.mu.Lock()
	s.lastDurable, s.anyDurable = pt, true
	s.mu.Unlock()
}

// durable returns the last point markDurable recorded.
func (s *sink) durable() (syncPoint, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastDurable, s.anyDurable
}

// sinkJob is one step of the worker, in order: write data, then fsync and
// run then when sync is set, then close barrier.
type sinkJob struct {
	data    []byte
	sync    bool
	then    func() error // after the fsync, when it and all before succeeded
	fail    func(error)  // instead of then, with the first error
	barrier chan struct{}
}

// sinkBuffers are the two buffers of each receiving session, pooled so that
// sessions between transfers hold none.
var sinkBuffers sync.Pool

func getBuffer(size int) []byte {
	if b, ok := sinkBuffers.Get().(*[]byte); ok && cap(*b) == size {
		return (*b)[:0]
	}
	return make([]byte, 0, size)
}

func putBuffer(b []byte) { sinkBuffers.Put(&b) }

func newSink(root *os.Root, tempRel, finalRel string, f *os.File, bufSize int, h hash.Hash, bytes, articles int64) *sink {
	s := &sink{root: root, tempRel: tempRel, finalRel: finalRel, f: f, h: h, bytes: bytes, articles: articles,
		buf: getBuffer(bufSize), jobs: make(chan sinkJob, 16), free: make(chan []byte, 1), done: make(chan struct{})}
	s.free <- getBuffer(bufSize)
	go s.work()
	return s
}

// createSink opens a new, empty temporary file in root. A leftover of an
// earlier transfer to the same name is replaced: a new transfer supersedes it.
func createSink(root *os.Root, tempRel, finalRel string, bufSize int) (*sink, error) {
	if d := filepath.Dir(tempRel); d != "." {
		if err := root.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("create directory %s: %w", d, err)
		}
	}
	f, err := root.OpenFile(tempRel, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", tempRel, err)
	}
	return newSink(root, tempRel, finalRel, f, bufSize, sha256.New(), 0, 0), nil
}

// resumeSink reopens an interrupted temporary file, truncates it to offset
// (the last durable sync point) and rebuilds the running hash of its prefix.
func resumeSink(root *os.Root, tempRel, finalRel string, bufSize int, offset, articles int64) (*sink, error) {
	f, err := root.OpenFile(tempRel, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen %s: %w", tempRel, err)
	}
	st, err := f.Stat()
	if err == nil && st.Size() < offset {
		err = fmt.Errorf("%s holds %d bytes, restart point needs %d", tempRel, st.Size(), offset)
	}
	if err == nil {
		err = f.Truncate(offset)
	}
	h := sha256.New()
	if err == nil {
		_, err = io.Copy(h, io.NewSectionReader(f, 0, offset))
	}
	if err == nil {
		_, err = f.Seek(offset, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("resume %s: %w", tempRel, err)
	}
	return newSink(root, tempRel, finalRel, f, bufSize, h, offset, articles), nil
}

// work is the sink's worker goroutine. After an error it writes nothing
// more and runs no then; each later sync job gets fail instead.
func (s *sink) work() {
	defer close(s.done)
	for j := range s.jobs {
		if j.data != nil {
			if s.err == nil {
				if _, err := s.f.Write(j.data); err != nil {
					s.setErr(err)
				} else {
					s.h.Write(j.data)
				}
			}
			s.free <- j.data[:0]
		}
		if j.sync {
			if s.err == nil {
				if err := s.f.Sync(); err != nil {
					s.setErr(err)
				}
			}
			switch {
			case s.err != nil:
				if j.fail != nil {
					j.fail(ioDiag(s.err))
				}
			case j.then != nil:
				if err := j.then(); err != nil {
					s.setErr(err)
					if j.fail != nil {
						j.fail(err)
					}
				}
			}
		}
		if j.barrier != nil {
			close(j.barrier)
		}
	}
}

func (s *sink) setErr(err error) {
	s.err = err
	s.failed.Store(true)
}

// write appends data; it does not allocate. An error of the worker's
// (a full disk) comes back from the next write after it.
func (s *sink) write(p []byte) error {
	if s.failed.Load() {
		return s.wait()
	}
	for len(p) > 0 {
		n := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf, p = s.buf[:len(s.buf)+n], p[n:]
		s.bytes += int64(n)
		if len(s.buf) == cap(s.buf) {
			s.handOff()
		}
	}
	return nil
}

// handOff gives the buffer, if not empty, to the worker and takes the
// other one, waiting for the worker to finish with it.
func (s *sink) handOff() {
	if len(s.buf) == 0 {
		return
	}
	s.jobs <- sinkJob{data: s.buf}
	s.buf = <-s.free
}

// wait returns once the worker has done everything asked so far, with its
// first error.
func (s *sink) wait() error {
	if !s.stopped {
		b := make(chan struct{})
		s.jobs <- sinkJob{barrier: b}
		<-b
	}
	return s.err
}

// sync writes out the buffer and fsyncs the temporary file, and waits.
func (s *sink) sync() error {
	if s.stopped {
		return errors.New("sink closed")
	}
	s.handOff()
	b := make(chan struct{})
	s.jobs <- sinkJob{sync: true, barrier: b}
	<-b
	return s.err
}

// syncAsync writes out the buffer and returns at once; the worker fsyncs
// the file, then runs then (the journal write of the sync point and its
// ACK), or fail with the first error of the fsync, an earlier write or then.
func (s *sink) syncAsync(then func() error, fail func(error)) {
	s.handOff()
	s.jobs <- sinkJob{sync: true, then: then, fail: fail}
}

// stop waits for the worker to finish and return, once.
func (s *sink) stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	close(s.jobs)
	<-s.done
	putBuffer(s.buf)
	putBuffer(<-s.free)
	s.buf = nil
}

// truncate drops everything after offset, a durable sync point (RESYN,
// interruption): the buffer only holds data past that point, so it is
// dropped rather than written, which also works on a full disk. The prefix
// hash is rebuilt and an earlier write error forgotten: the file is back at
// a point that was durable.
func (s *sink) truncate(offset, articles int64) error {
	_ = s.wait()
	s.buf = s.buf[:0]
	if err := s.f.Truncate(offset); err != nil {
		return err
	}
	s.h.Reset()
	if _, err := io.Copy(s.h, io.NewSectionReader(s.f, 0, offset)); err != nil {
		return err
	}
	if _, err := s.f.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	s.bytes, s.articles = offset, articles
	s.err = nil
	s.failed.Store(false)
	return nil
}

func (s *sink) sum() string {
	_ = s.wait()
	return hex.EncodeToString(s.h.Sum(nil))
}

// commit fsyncs, closes and publishes the file under its final name. Without
// overwrite a hard link refuses an existing target atomically; with overwrite
// a rename replaces it. The directory is fsynced so the name is durable.
func (s *sink) commit(overwrite bool) error {
	if err := s.sync(); err != nil {
		return err
	}
	s.stop()
	s.closed = true
	if err := s.f.Close(); err != nil {
		return err
	}
	if overwrite {
		if err := s.root.Rename(s.tempRel, s.finalRel); err != nil {
			return err
		}
	} else {
		err := s.root.Link(s.tempRel, s.finalRel)
		switch {
		case err == nil:
			if err := s.root.Remove(s.tempRel); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
			return errFinalExists
		default:
			// No hard links on this file system: check, then rename.
			if _, serr := s.root.Lstat(s.finalRel); serr == nil {
				return errFinalExists
			}
			if err := s.root.Rename(s.tempRel, s.finalRel); err != nil {
				return err
			}
		}
	}
	return syncDir(s.root, filepath.Dir(s.finalRel))
}

var errFinalExists = errors.New("target file exists")

// close releases the file and keeps it for a restart.
func (s *sink) close() error {
	if s.closed {
		return nil
	}
	var serr error
	if !s.stopped {
		serr = s.sync()
	}
	s.stop()
	s.closed = true
	cerr := s.f.Close()
	return errors.Join(serr, cerr)
}

// discard closes and removes the temporary file.
func (s *sink) discard() error {
	s.stop()
	if !s.closed {
		s.closed = true
		s.f.Close()
	}
	if err := s.root.Remove(s.tempRel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// isNoSpace reports a full disk or quota, which the peer sees as 2/219.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
