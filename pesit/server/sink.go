package server

import (
	"bufio"
	"bytes"
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
// writes the data to the temporary file itself: straight from the FPDU
// reader's buffer when a piece is large (a DTF of a binary file), through
// a small buffer otherwise (text lines, short articles). Two goroutines of
// the sink take the rest off it. The syncer makes sync points durable: it
// sets the point as the file's restart index and fsyncs, while the session
// goes on writing what the window lets the sender send (a write after the
// fsync started is not needed for this point, which is all fsync must
// cover), then hands the point to post, which journals it and sends its
// ACK(SYN), so that the fsync of the next point overlaps the journal
// commit of this one. The hasher feeds the running SHA-256 by reading the
// file back from the page cache behind the session, every hashEvery bytes
// and at each point, as the pull's sendTail does. commit() makes the file
// appear atomically under its final name.
//
// Issue 17: a writer goroutine took the data 32 KiB at a time from the
// session, copied into one of two buffers; the hand-offs (a goroutine
// woken and parked per buffer, each way) cost more server CPU than the
// write(2) they took off the session, and the hash and the fsync ran in
// series on that goroutine, so that the fsync of a point stalled both.
// The session now hands work over once per point or hashEvery bytes.
//
// The goroutines are started by createSink/resumeSink and stopped by
// commit, close, abandon or discard, one of which every transfer ends
// with (endTransfer). Ownership: the file offset, buf and the counts are
// the session's; the restart index (indexOn, indexed) the syncer's and h
// and hashed the hasher's while they run, the session's after a barrier
// (wait) or once they have stopped.
type sink struct {
	root     *os.Root
	tempRel  string
	finalRel string
	f        *os.File
	h        hash.Hash
	buf      []byte // small writes gathered by the session
	bytes    int64  // accepted, buf included
	written  int64  // written to the file: the file's offset
	asked    int64  // hashed, or asked of the hasher
	articles int64
	closed   bool

	// onDurable runs on the sink's post goroutine with sync points whose
	// data is durable, oldest first (several when they queued up); it
	// must record the last and acknowledge all. indexed says that the
	// file's restart index holds the last, durable with the data
	// (restartindex.go). onFail gets the first error of the sink, once,
	// when a point asked for with syncAsync will not be acknowledged. Set
	// before the first syncAsync.
	onDurable func(pts []syncPoint, indexed bool) error
	onFail    func(error)

	// The restart index (useIndex): indexed lists the points written to
	// it, from the one the file started at. The syncer's while it runs.
	indexOn  bool
	indexKey uint64
	indexed  []syncPoint

	// fsync makes the file durable (f.Sync); a test holds it.
	fsync func() error

	// hashed is the offset up to which h holds the file; rbuf the
	// hasher's read buffer.
	hashed int64
	rbuf   []byte

	syncQ    chan syncJob
	hashQ    chan hashJob
	durQ     chan durableJob
	done     chan struct{} // closed when the syncer and post have returned
	hashDone chan struct{} // closed when the hasher has returned
	stopped  bool
	failed   atomic.Bool // err is set

	// Verify mode (verifySink): r reads the published file, cmp is the
	// comparison buffer, size the file's size and diff the offset of the
	// first byte resent that differs from it (-1: none). It runs no
	// goroutine: everything happens on the session's.
	r    *bufio.Reader
	cmp  []byte
	size int64
	diff int64

	mu           sync.Mutex
	err          error
	failNotified bool
	lastDurable  syncPoint // the last point onDurable recorded
	anyDurable   bool
	lost         bool // the journal said the transfer has another owner
}

// syncJob is one step of the syncer, in order: with sync, index pt (when
// notify) and fsync, and pass pt on to post (notify); then pass barrier on.
type syncJob struct {
	sync    bool
	pt      syncPoint
	notify  bool // pt goes to onDurable
	barrier chan struct{}
}

// hashJob asks the hasher to hash the file up to to, then to close barrier.
type hashJob struct {
	to      int64
	barrier chan struct{}
}

// durableJob is a point made durable, or a barrier, for post.
type durableJob struct {
	pt      syncPoint
	indexed bool // the file's restart index holds pt, or a later point
	barrier chan struct{}
}

// hashEvery is how far the hasher may be asked to lag behind the writes
// without a sync point: far enough that the session hands work over
// rarely, near enough that the data is still in the page cache.
const hashEvery = 1 << 20

// sinkBuffers are the session's write buffer and the hasher's read buffer
// of each receiving session, pooled so that sessions between transfers
// hold none.
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
	s := &sink{root: root, tempRel: tempRel, finalRel: finalRel, f: f, h: h, bytes: bytes, written: bytes, asked: bytes,
		hashed: bytes, articles: articles, buf: getBuffer(bufSize), rbuf: getBuffer(bufSize),
		syncQ: make(chan syncJob, 64), hashQ: make(chan hashJob, 64), durQ: make(chan durableJob, 64),
		done: make(chan struct{}), hashDone: make(chan struct{})}
	s.fsync = f.Sync
	go s.syncer()
	go s.post()
	go s.hasher()
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
	dropIndex(f) // a leftover's, which names data no longer there
	return newSink(root, tempRel, finalRel, f, bufSize, sha256.New(), 0, 0), nil
}

// resumeSink reopens an interrupted temporary file, truncates it to offset
// (the last durable sync point) and rebuilds the running hash of its prefix.
func resumeSink(root *os.Root, tempRel, finalRel string, bufSize int, offset, articles int64) (*sink, error) {
	f, err := root.OpenFile(tempRel, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen %s: %w", tempRel, err)
	}
	h, _, err := seekRestartPoint(f, tempRel, offset, true)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("resume %s: %w", tempRel, err)
	}
	return newSink(root, tempRel, finalRel, f, bufSize, h, offset, articles), nil
}

// seekRestartPoint positions f at the restart point offset, which the file
// must reach, and returns the hash of the data before it and the file's
// size; truncate drops what lies beyond the point.
func seekRestartPoint(f *os.File, name string, offset int64, truncate bool) (hash.Hash, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if st.Size() < offset {
		return nil, 0, fmt.Errorf("%s holds %d bytes, restart point needs %d", name, st.Size(), offset)
	}
	if truncate {
		if err := f.Truncate(offset); err != nil {
			return nil, 0, err
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, offset)); err != nil {
		return nil, 0, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, 0, err
	}
	return h, st.Size(), nil
}

// verifySink is the sink of a restart whose file was already published: a
// crash came between the publication and the journal's record of it. The
// data resent from the restart point is compared with the published file
// instead of written, so that the restart ends as the transfer it repeats
// did, without a second delivery; commit succeeds only if the data matched
// the file to its last byte. Nothing of the file is ever changed.
func verifySink(root *os.Root, finalRel string, bufSize int, offset, articles int64) (*sink, error) {
	f, err := root.Open(finalRel)
	if err != nil {
		return nil, fmt.Errorf("open published %s: %w", finalRel, err)
	}
	h, size, err := seekRestartPoint(f, finalRel, offset, false)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("verify published %s: %w", finalRel, err)
	}
	bufSize = max(bufSize, 4096) // compare needs a non-empty buffer
	return &sink{root: root, finalRel: finalRel, f: f, r: bufio.NewReaderSize(f, bufSize), cmp: make([]byte, bufSize),
		h: h, bytes: offset, articles: articles, size: size, diff: -1, stopped: true}, nil
}

// verifying says whether s compares rather than writes (verifySink).
func (s *sink) verifying() bool { return s.r != nil }

// compare checks p against the published file. A difference is noted, not
// returned: the data phase goes on to TRANS.END, whose answer reports it.
func (s *sink) compare(p []byte) {
	at := s.bytes
	for len(p) > 0 && s.diff < 0 {
		n := min(len(p), len(s.cmp))
		if _, err := io.ReadFull(s.r, s.cmp[:n]); err != nil || !bytes.Equal(s.cmp[:n], p[:n]) {
			s.diff = at
			return
		}
		p, at = p[n:], at+int64(n)
	}
}

// syncer makes the points durable, in order. The points queued while it
// was in an fsync are made durable by the next one together: the index
// names the last of them, which supersedes the others as the restart
// point, and each is passed on. After an error it makes nothing durable
// any more.
func (s *sink) syncer() {
	defer close(s.durQ)
	var batch []syncJob
	for j := range s.syncQ {
		batch = append(batch[:0], j)
		// Take what queued up meanwhile, up to a barrier, which must
		// follow the points before it.
	more:
		for j.barrier == nil {
			select {
			case k, ok := <-s.syncQ:
				if !ok {
					break more
				}
				batch, j = append(batch, k), k
			default:
				break more
			}
		}
		s.syncBatch(batch)
	}
}

// syncBatch makes the points of batch durable with one fsync, then passes
// them and a barrier (the last job only) on to post.
func (s *sink) syncBatch(batch []syncJob) {
	var last *syncJob
	sync := false
	for i := range batch {
		sync = sync || batch[i].sync
		if batch[i].notify {
			last = &batch[i]
		}
	}
	if sync && !s.failed.Load() {
		// The index first: the fsync makes it durable with the data,
		// which the session wrote up to the last point before asking.
		indexed := last != nil && s.writeIndex(last.pt)
		if err := s.fsync(); err != nil {
			s.setErr(ioDiag(err))
		} else {
			for _, k := range batch {
				if k.notify {
					s.durQ <- durableJob{pt: k.pt, indexed: indexed}
				}
			}
		}
	}
	if last != nil && s.failed.Load() {
		s.fail() // the points will not be acknowledged: say so
	}
	if b := batch[len(batch)-1].barrier; b != nil {
		s.durQ <- durableJob{barrier: b}
	}
}

// hasher feeds h with the file as written, read back from the page cache
// behind the session. A read error (the file changed under us) fails the
// transfer as a write error would: the sum would be wrong.
func (s *sink) hasher() {
	defer close(s.hashDone)
	for j := range s.hashQ {
		s.hashTo(j.to)
		if j.barrier != nil {
			close(j.barrier)
		}
	}
}

// hashTo hashes the file from hashed up to to.
func (s *sink) hashTo(to int64) {
	for s.hashed < to {
		n, err := s.f.ReadAt(s.rbuf[:min(int64(cap(s.rbuf)), to-s.hashed)], s.hashed)
		s.h.Write(s.rbuf[:n])
		s.hashed += int64(n)
		if err != nil {
			s.setErr(ioDiag(fmt.Errorf("hash %s: %w", s.tempRel, err)))
			s.hashed = to // the sum is wrong now: do not read on
		}
	}
}

// post hands the points made durable to onDurable, all those queued at once so that one journal write records
// several when the store is slower than the disk.
func (s *sink) post() {
	defer close(s.done)
	var pts []syncPoint
	indexed := false // of the last of pts, the one journaled
	flush := func() {
		if len(pts) > 0 && !s.failed.Load() {
			if err := s.onDurable(pts, indexed); err != nil {
				s.setErr(err)
				s.fail()
			}
		}
		pts = pts[:0]
	}
	for j := range s.durQ {
		if j.barrier == nil {
			pts, indexed = append(pts, j.pt), j.indexed
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
				pts, indexed = append(pts, k.pt), k.indexed
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

// markLost records that the journal refused a point: the transfer was
// taken over.
func (s *sink) markLost() {
	s.mu.Lock()
	s.lost = true
	s.mu.Unlock()
}

func (s *sink) isLost() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// durable returns the last point markDurable recorded.
func (s *sink) durable() (syncPoint, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastDurable, s.anyDurable
}

// write appends data; it does not allocate. A piece at least half the
// buffer's size goes to the file directly, without a copy; smaller ones
// are gathered. A write error comes back at once, and an error of the
// syncer or the hasher from the next write after it.
func (s *sink) write(p []byte) error {
	if s.verifying() {
		s.compare(p)
		s.h.Write(p)
		s.bytes += int64(len(p))
		return nil
	}
	if s.failed.Load() {
		return s.firstErr()
	}
	if len(p) >= cap(s.buf)/2 {
		if err := s.flushBuf(); err != nil {
			return err
		}
		if err := s.writeFile(p); err != nil {
			return err
		}
		s.bytes += int64(len(p))
		return nil
	}
	for len(p) > 0 {
		n := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf, p = s.buf[:len(s.buf)+n], p[n:]
		s.bytes += int64(n)
		if len(s.buf) == cap(s.buf) {
			if err := s.flushBuf(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flushBuf writes out what the buffer gathered.
func (s *sink) flushBuf() error {
	if len(s.buf) == 0 {
		return nil
	}
	err := s.writeFile(s.buf)
	s.buf = s.buf[:0]
	return err
}

// writeFile writes p at the file's offset and asks the hasher to catch up
// every hashEvery bytes.
func (s *sink) writeFile(p []byte) error {
	if _, err := s.f.Write(p); err != nil {
		err = ioDiag(err)
		s.setErr(err)
		return err
	}
	s.written += int64(len(p))
	if s.written-s.asked >= hashEvery {
		s.askHash()
	}
	return nil
}

// askHash asks the hasher to hash what was written.
func (s *sink) askHash() {
	if s.asked < s.written {
		s.asked = s.written
		s.hashQ <- hashJob{to: s.written}
	}
}

// wait returns once the syncer, post and the hasher have done everything
// asked so far, with the first error.
func (s *sink) wait() error {
	if !s.stopped {
		b, hb := make(chan struct{}), make(chan struct{})
		s.syncQ <- syncJob{barrier: b}
		s.hashQ <- hashJob{to: s.asked, barrier: hb}
		<-b
		<-hb
	}
	return s.firstErr()
}

// flush writes out the buffer and waits, without fsync.
func (s *sink) flush() error {
	if s.stopped {
		return s.firstErr()
	}
	_ = s.flushBuf() // kept as the sink's error
	return s.wait()
}

// sync writes out the buffer and fsyncs the temporary file, and waits.
func (s *sink) sync() error {
	if s.verifying() {
		return nil // the published file is durable already
	}
	if s.stopped {
		return errors.New("sink closed")
	}
	_ = s.flushBuf()
	b := make(chan struct{})
	s.syncQ <- syncJob{sync: true, barrier: b}
	<-b
	return s.firstErr()
}

// syncAsync writes out the buffer and returns at once; the syncer fsyncs
// the file, then onDurable records and acknowledges pt on post, unless an
// error came first (onFail).
func (s *sink) syncAsync(pt syncPoint) {
	if s.verifying() {
		// Nothing to make durable: record and acknowledge at once.
		if err := s.onDurable([]syncPoint{pt}, false); err != nil {
			s.setErr(err)
			s.fail()
		}
		return
	}
	_ = s.flushBuf() // a failure makes the syncer refuse pt (onFail)
	s.askHash()
	s.syncQ <- syncJob{sync: true, pt: pt, notify: true}
}

// stop waits for the goroutines to finish and return, once; with hash, the
// hasher first hashes everything written.
func (s *sink) stop(hash bool) {
	if s.stopped {
		return
	}
	s.stopped = true
	if hash {
		s.askHash()
	}
	close(s.syncQ)
	close(s.hashQ)
	<-s.done
	<-s.hashDone
	putBuffer(s.buf)
	putBuffer(s.rbuf)
	s.buf, s.rbuf = nil, nil
}

// truncate drops everything after offset, a durable sync point (RESYN,
// interruption): the buffer only holds data past that point, so it is
// dropped rather than written, which also works on a full disk. The prefix
// hash is rebuilt and an earlier write error forgotten: the file is back at
// a point that was durable.
func (s *sink) truncate(offset, articles int64) error {
	_ = s.wait()
	if s.verifying() {
		// Compare again from offset; the file is left alone.
		if _, err := s.f.Seek(offset, io.SeekStart); err != nil {
			return err
		}
		s.r.Reset(s.f)
		if s.diff >= offset {
			s.diff = -1
		}
	} else {
		s.buf = s.buf[:0]
		if err := s.cutIndex(offset); err != nil {
			return fmt.Errorf("restart index: %w", err)
		}
		if err := s.f.Truncate(offset); err != nil {
			return err
		}
	}
	s.h.Reset()
	if _, err := io.Copy(s.h, io.NewSectionReader(s.f, 0, offset)); err != nil {
		return err
	}
	if _, err := s.f.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	s.bytes, s.written, s.asked, s.hashed, s.articles = offset, offset, offset, offset, articles
	s.mu.Lock()
	s.err, s.failNotified = nil, false
	s.failed.Store(false)
	s.mu.Unlock()
	return nil
}

// sum is the SHA-256 of what was written so far.
func (s *sink) sum() string {
	if !s.stopped {
		s.askHash()
	}
	_ = s.wait()
	return hex.EncodeToString(s.h.Sum(nil))
}

// commit fsyncs, closes and publishes the file under its final name. Without
// overwrite a hard link refuses an existing target atomically; with overwrite
// a rename replaces it. The directory is fsynced so the name is durable.
func (s *sink) commit(overwrite bool) error {
	if s.verifying() {
		s.closed = true
		s.f.Close()
		switch {
		case s.diff >= 0:
			return fmt.Errorf("%w: the data resent differs from the published %s at byte %d", errFinalExists, s.finalRel, s.diff)
		case s.bytes != s.size:
			return fmt.Errorf("%w: %d bytes resent in all, the published %s holds %d", errFinalExists, s.bytes, s.finalRel, s.size)
		}
		return nil
	}
	if err := s.sync(); err != nil {
		return err
	}
	s.stop(true)
	if s.indexOn || len(s.indexed) > 0 {
		// A delivered file carries nothing of ours. Not made durable: an
		// index that comes back after a crash is never read again (the
		// transfer was recorded completed before this).
		dropIndex(s.f)
	}
	s.closed = true
	if err := s.f.Close(); err != nil {
		return err
	}
	return Publish(s.root, s.tempRel, s.finalRel, overwrite)
}

// Publish gives a received file, whose data is durable already, its final
// name under root: finalRel is replaced only if overwrite, else an existing
// file is refused (a hard link, which cannot replace, where the file system
// has them); then the directories are fsynced, so that the name is
// durable. The leader's sweep calls it too, for a receive recorded
// completed whose node stopped before publishing.
func Publish(root *os.Root, tempRel, finalRel string, overwrite bool) error {
	if overwrite {
		if err := root.Rename(tempRel, finalRel); err != nil {
			return err
		}
	} else {
		err := root.Link(tempRel, finalRel)
		switch {
		case err == nil:
			if err := root.Remove(tempRel); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
			return errFinalExists
		default:
			// No hard links on this file system: check, then rename.
			if _, serr := root.Lstat(finalRel); serr == nil {
				return errFinalExists
			}
			if err := root.Rename(tempRel, finalRel); err != nil {
				return err
			}
		}
	}
	if d := filepath.Dir(tempRel); d != filepath.Dir(finalRel) {
		if err := syncDir(root, d); err != nil {
			return err
		}
	}
	return syncDir(root, filepath.Dir(finalRel))
}

var errFinalExists = errors.New("target file exists")

// close releases the file and keeps it for a restart.
func (s *sink) close() error {
	if s.closed {
		return nil
	}
	if s.verifying() {
		s.closed = true
		return s.f.Close()
	}
	var serr error
	if !s.stopped {
		serr = s.sync()
	}
	s.stop(false) // a restart hashes the prefix again
	s.closed = true
	cerr := s.f.Close()
	return errors.Join(serr, cerr)
}

// abandon releases the file as it is on disk: the buffer is dropped, not
// written, and nothing is truncated or removed. The transfer was taken over
// and its new owner resumes into this file. No sync point is journaled or
// acknowledged any more, and no index written; abandon returns once the
// sink's goroutines have stopped, so nothing of ours reaches the file
// afterwards (the session, which writes the data, is the caller).
func (s *sink) abandon() {
	if s.closed {
		return
	}
	s.closed = true
	if !s.stopped {
		s.buf = s.buf[:0]
		s.mu.Lock()
		s.failNotified = true // no IDT from here: the session decides
		s.mu.Unlock()
		s.setErr(errAbandoned)
		s.stop(false)
	}
	s.f.Close()
}

var errAbandoned = errors.New("transfer taken over")

// discard closes and removes the temporary file.
func (s *sink) discard() error {
	s.stop(false)
	if !s.closed {
		s.closed = true
		s.f.Close()
	}
	if s.verifying() {
		return nil // the published file is not ours to remove
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
