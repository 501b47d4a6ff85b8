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
	"syscall"
)

// sink is the file a transfer is received into. Data goes to a temporary
// file through a buffer and a running SHA-256; sync() makes it durable before
// an ACK(SYN); commit() makes it appear atomically under its final name.
type sink struct {
	root     *os.Root
	tempRel  string
	finalRel string
	f        *os.File
	w        *bufio.Writer
	h        hash.Hash
	bytes    int64
	articles int64
	closed   bool

	// Verify mode (verifySink): r reads the published file, cmp is the
	// comparison buffer, size the file's size and diff the offset of the
	// first byte resent that differs from it (-1: none).
	r    *bufio.Reader
	cmp  []byte
	size int64
	diff int64
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
	return &sink{root: root, tempRel: tempRel, finalRel: finalRel, f: f, w: bufio.NewWriterSize(f, bufSize), h: sha256.New()}, nil
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
	return &sink{root: root, tempRel: tempRel, finalRel: finalRel, f: f, w: bufio.NewWriterSize(f, bufSize), h: h, bytes: offset, articles: articles}, nil
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
	st, err := f.Stat()
	if err == nil && st.Size() < offset {
		err = fmt.Errorf("%s holds %d bytes, restart point needs %d", finalRel, st.Size(), offset)
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
		return nil, fmt.Errorf("verify published %s: %w", finalRel, err)
	}
	bufSize = max(bufSize, 4096) // compare needs a non-empty buffer
	return &sink{root: root, finalRel: finalRel, f: f, r: bufio.NewReaderSize(f, bufSize), cmp: make([]byte, bufSize),
		h: h, bytes: offset, articles: articles, size: st.Size(), diff: -1}, nil
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

// write appends data; it does not allocate.
func (s *sink) write(p []byte) error {
	if s.verifying() {
		s.compare(p)
		s.h.Write(p)
		s.bytes += int64(len(p))
		return nil
	}
	if _, err := s.w.Write(p); err != nil {
		return err
	}
	s.h.Write(p)
	s.bytes += int64(len(p))
	return nil
}

// sync flushes the buffer and fsyncs the temporary file.
func (s *sink) sync() error {
	if s.verifying() {
		return nil // the published file is durable already
	}
	if err := s.w.Flush(); err != nil {
		return err
	}
	return s.f.Sync()
}

// truncate drops everything after offset, a durable sync point (RESYN,
// interruption): the buffer only holds data past that point, so it is
// dropped rather than flushed, which also works on a full disk. The prefix
// hash is rebuilt.
func (s *sink) truncate(offset, articles int64) error {
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
		s.w.Reset(s.f)
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
	s.bytes, s.articles = offset, articles
	return nil
}

func (s *sink) sum() string { return hex.EncodeToString(s.h.Sum(nil)) }

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
	s.closed = true
	if s.verifying() {
		return s.f.Close()
	}
	ferr := s.w.Flush()
	serr := s.f.Sync()
	cerr := s.f.Close()
	return errors.Join(ferr, serr, cerr)
}

// abandon releases the file as it is on disk: the buffer is dropped, not
// written, and nothing is truncated or removed. The transfer was taken over
// and its new owner resumes into this file.
func (s *sink) abandon() {
	if s.closed {
		return
	}
	s.closed = true
	if s.w != nil { // a verifying sink has no writer
		s.w.Reset(io.Discard)
	}
	s.f.Close()
}

// discard closes and removes the temporary file.
func (s *sink) discard() error {
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
