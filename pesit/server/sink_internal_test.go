package server

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"
)

// TestSinkWritesWhileFsyncing: the session goes on writing while the
// syncer is in the fsync of a point, the points queued meanwhile are made
// durable by one more fsync and all acknowledged in order, and the hash
// is that of the file, through small and large writes and a cut back to a
// point. The writer goroutine this replaced stalled the session at the
// next buffer while it fsynced.
func TestSinkWritesWhileFsyncing(t *testing.T) {
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	s, err := createSink(root, "f.part", "f", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	var (
		mu     sync.Mutex
		fsyncs int
		acked  []uint32
	)
	sync0 := s.fsync
	s.fsync = func() error {
		mu.Lock()
		fsyncs++
		first := fsyncs == 1
		mu.Unlock()
		if first {
			close(held)
			<-release
		}
		return sync0()
	}
	s.onDurable = func(pts []syncPoint, _ bool) error {
		mu.Lock()
		defer mu.Unlock()
		for _, pt := range pts {
			acked = append(acked, pt.num)
		}
		return nil
	}
	s.onFail = func(err error) { t.Errorf("onFail: %v", err) }

	const mib = 1 << 20
	data := make([]byte, 10*mib)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	// One MiB as a DTF of 32 KiB would bring it, one in small articles.
	put := func(p []byte, piece int) error {
		for len(p) > 0 {
			n := min(piece, len(p))
			if err := s.write(p[:n]); err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	}
	if err := put(data[:mib], 32<<10); err != nil {
		t.Fatal(err)
	}
	s.syncAsync(syncPoint{num: 1, offset: mib})
	<-held
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := 1; i < 9; i++ {
			if err := put(data[i*mib:(i+1)*mib], []int{32 << 10, 1000}[i%2]); err != nil {
				t.Error(err)
				return
			}
			s.syncAsync(syncPoint{num: uint32(i + 1), offset: int64(i+1) * mib})
		}
	}()
	select {
	case <-wrote:
	case <-time.After(30 * time.Second):
		t.Fatal("the session's writes waited for the fsync of an earlier point")
	}
	close(release)
	if err := s.wait(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if fsyncs != 2 || len(acked) != 9 || acked[0] != 1 || acked[8] != 9 {
		t.Errorf("%d fsyncs, points acknowledged %v; want 2 fsyncs (the held one, then one for the 8 queued behind it) and points 1..9", fsyncs, acked)
	}
	mu.Unlock()

	// Past point 9, then back to it (RESYN), then to the end.
	if err := put(data[9*mib:9*mib+12345], 777); err != nil {
		t.Fatal(err)
	}
	if err := s.truncate(9*mib, 0); err != nil {
		t.Fatal(err)
	}
	if err := put(data[9*mib:], 32<<10); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	if got := s.sum(); got != hex.EncodeToString(want[:]) {
		t.Errorf("sum %s, want the SHA-256 of the data %x", got, want)
	}
	if err := s.commit(false); err != nil {
		t.Fatal(err)
	}
	got, err := root.ReadFile("f")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("delivered file: %d bytes, %v; want the %d bytes written", len(got), err, len(data))
	}
}
