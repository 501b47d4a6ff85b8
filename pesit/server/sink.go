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
// copies data into a buffer; a full buffer goes to the sink's writer
// goroutine, which writes it to the temporary file and feeds the running
// SHA-256, so that neither the write(2) nor the hash is on the session's
// critical path (issue 17: the hash alone was a third of a push's CPU, in
// series with the reads). syncAsync asks for a sync point: the writer
// fsyncs the data, then the sink's second goroutine runs onDurable (the
// journal write of the point and its ACK(SYN)), so that the fsync of the
// next point overlaps the journal commit of this one while the session goes
// on receiving what the window lets the sender send. commit() makes the
// file appear atomically under its final name.
//
// Both goroutines are started by createSink/resumeSink and stopped by
// commit, close or discard, one of which every transfer ends with
// (endTransfer). Ownership goes with the channels: a buffer sent on jobs is
// the writer's until it comes back on free; h and the file offset are the
// writer's while it runs and the session's after a barrier (wait) or once
// it has stopped.
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

	// onDurable runs on the sink's second goroutine with sync points whose
	// data is durable, oldest first (several when they queued up); it
	// must record the last and acknowledge all. onFail gets the first
	// error of either goroutine, once. Set before the first syncAsync.
	onDurable func(pts []syncPoint) error
	onFail    func(error)

	jobs    chan sinkJob
	free    chan []byte
	durQ    chan durableJob
	done    chan struct{} // closed when both goroutines have returned
	stopped bool
	failed  atomic.Bool // err is set

	mu           sync.Mutex
	err          error
	failNotified bool
	lastDurable  syncPoint // the last point onDurable recorded
	anyDurable   bool
}

// sinkJob is one step of the writer, in order: write data; with sync,
// fsync and pass pt on; then pass barrier on.
type sinkJob struct {
	data    []byte
	sync    bool
	pt      syncPoint
	notify  bool // pt goes to onDurable
	barrier chan struct{}
}

// durableJob is a point made durable, or a barrier, for the second goroutine.
type durableJob struct {
	pt      syncPoint
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
	// Two buffers of half the configured size: a receiving session holds
	// the memory it held with one (WriteBuffer), 1,000 of them 64 MiB.
	bufSize = max(bufSize/2, 4<<10)
	s := &sink{root: root, tempRel: tempRel, finalRel: finalRel, f: f, h: h, bytes: bytes, articles: articles,
		buf: getBuffer(bufSize), jobs: make(chan sinkJob, 16), free: make(chan []byte, 1),
		durQ: make(chan durableJob, 64), done: make(chan struct{})}
	s.free <- getBuffer(bufSize)
	go s.write0()
	go s.post()
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

// write0 is the writer goroutine. After an error it writes nothing more.
func (s *sink) write0() {
	defer close(s.durQ)
	for j := range s.jobs {
		if j.data != nil {
			if !s.failed.Load() {
				if _, err := s.f.Write(j.data); err != nil {
					s.setErr(ioDiag(err))
				} else {
					s.h.Write(j.data)
				}
			}
			s.free <- j.data[:0]
		}
		if j.sync && !s.failed.Load() {
			if err := s.f.Sync(); err != nil {
				s.setErr(ioDiag(err))
			} else if j.notify {
				s.durQ <- durableJob{pt: j.pt}
			}
		}
		if j.notify && s.failed.Load() {
			s.fail() // the point will not be acknowledged: say so
		}
		if j.barrier != nil {
			s.durQ <- durableJob{barrier: j.barrier}
		}
	}
}

// post is the second goroutine: it hands the points made durable to
// onDurable, all those queued at once so that one journal write records
// several when the store is slower than the disk.
func (s *sink) post() {
	defer close(s.done)
	var pts []syncPoint
	flush := func() {
		if len(pts) > 0 && !s.failed.Load() {
			if err := s.onDurable(pts); err != nil {
				s.setErr(err)
				s.fail()
			}
		}
		pts = pts[:0]
	}
	for j := range s.durQ {
		if j.barrier == nil {
			pts = append(pts, j.pt)
		}
	more:
		for {
			select {
			case k, ok := <-s.durQ:
				if !ok {
					break more
				}
				if k.barrier != nil {
					flush()
					close(k.barrier)
					continue
				}
				pts = append(pts, k.pt)
			default:
				break more
			}
		}
		flush()
		if j.barrier != nil {
			close(j.barrier)
		}
	}
	flush()
}

// setErr records the first error.
func (s *sink) setErr(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
		s.failed.Store(true)
	}
	s.mu.Unlock()
}

// fail tells onFail, once, that a sync point asked for with syncAsync will
// not be acknowledged. The session's own calls (sync, commit) get their
// errors back instead.
func (s *sink) fail() {
	s.mu.Lock()
	err, first := s.err, !s.failNotified
	s.failNotified = true
	s.mu.Unlock()
	if first && s.onFail != nil {
		s.onFail(err)
	}
}

func (s *sink) firstErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// markDurable records, on the second goroutine, that pt is durable and
// journaled.
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

// write appends data; it does not allocate. An error of the worker's
// (a full disk) comes back from the next write after it.
func (s *sink) write(p []byte) error {
	if s.failed.Load() {
		return s.firstErr()
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
	return s.firstErr()
}

// flush writes out the buffer and waits, without fsync.
func (s *sink) flush() error {
	if s.stopped {
		return s.firstErr()
	}
	s.handOff()
	return s.wait()
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
	return s.firstErr()
}

// syncAsync writes out the buffer and returns at once; the writer fsyncs
// the file, then onDurable records and acknowledges pt on the second
// goroutine, unless an error came first (onFail).
func (s *sink) syncAsync(pt syncPoint) {
	s.handOff()
	s.jobs <- sinkJob{sync: true, pt: pt, notify: true}
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
	s.mu.Lock()
	s.err, s.failNotified = nil, false
	s.failed.Store(false)
	s.mu.Unlock()
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
