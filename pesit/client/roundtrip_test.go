package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// TestRoundTrip pushes and pulls binary files of 0 B, 1 B, 1 MiB and 64 MiB
// through the real server, over TCP and over TLS (with a client
// certificate), and checks each copy byte for byte.
func TestRoundTrip(t *testing.T) {
	sizes := []int64{0, 1, 1 << 20, 64 << 20}
	if testing.Short() {
		sizes = sizes[:3]
	}
	ts := startServer(t, serverOpts{syncKB: 1024, window: 4, entity: 65535, tls: true})
	for _, useTLS := range []bool{false, true} {
		for _, size := range sizes {
			name := fmt.Sprintf("tls=%v/%d", useTLS, size)
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				local := t.TempDir()
				vfile := fmt.Sprintf("RT%d%v", size, useTLS)
				src := writeRandom(t, local, "src.bin", size, uint64(size)+1)
				s, err := Dial(ctx, ts.config(useTLS, 1024, 4))
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				res, err := s.Send(ctx, SendRequest{Source: src, VirtualFile: vfile})
				if err != nil {
					t.Fatalf("push: %v", err)
				}
				if res.FileBytes != size {
					t.Fatalf("pushed %d bytes, want %d", res.FileBytes, size)
				}
				sameFile(t, src, filepath.Join(ts.in, vfile))
				// Offer the same bytes for a pull and fetch them back.
				if err := os.Rename(filepath.Join(ts.in, vfile), filepath.Join(ts.out, vfile)); err != nil {
					t.Fatal(err)
				}
				dst := filepath.Join(local, "dst.bin")
				res, err = s.Receive(ctx, ReceiveRequest{VirtualFile: vfile, Dest: dst})
				if err != nil {
					t.Fatalf("pull: %v", err)
				}
				sameFile(t, src, dst)
				if res.FileBytes != size {
					t.Fatalf("pulled %d bytes, want %d", res.FileBytes, size)
				}
				if err := s.Release(ctx); err != nil {
					t.Fatalf("release: %v", err)
				}
			})
		}
	}
}

// TestSyncWindows runs transfers under several sync intervals and windows,
// with multi-article and segmented DTFs, through the real server.
func TestSyncWindows(t *testing.T) {
	const size = 3<<20 + 12345
	cases := []struct {
		syncKB uint16
		window uint8
		req    SendRequest
		entity int
	}{
		{0, 0, SendRequest{}, 4096},
		{4, 1, SendRequest{}, 4096},
		{32, 2, SendRequest{ArticleLength: 1000, MultiArticle: 8}, 4096},
		{32, 2, SendRequest{ArticleLength: 20000, Segment: true}, 4096},
		{1024, 4, SendRequest{ArticleLength: 60000, Segment: true, MultiArticle: 3}, 16384},
		{1024, 4, SendRequest{ArticleLength: 512, MultiArticle: 100}, 65535},
		{64, 0, SendRequest{}, 65535}, // sync points without acknowledgements
	}
	for _, c := range cases {
		name := fmt.Sprintf("sync=%dK/window=%d/art=%d/multi=%d/seg=%v/entity=%d", c.syncKB, c.window,
			c.req.ArticleLength, c.req.MultiArticle, c.req.Segment, c.entity)
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			ts := startServer(t, serverOpts{syncKB: c.syncKB, window: c.window, entity: c.entity, multi: true})
			local := t.TempDir()
			src := writeRandom(t, local, "src.bin", size, uint64(c.syncKB)*7+uint64(c.window))
			s, err := Dial(ctx, ts.config(false, c.syncKB, c.window))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if kb, win, _ := s.Negotiated(); kb != c.syncKB || win != c.window {
				t.Fatalf("negotiated sync %dK window %d, want %dK %d", kb, win, c.syncKB, c.window)
			}
			req := c.req
			req.Source, req.VirtualFile = src, "SW"
			res, err := s.Send(ctx, req)
			if err != nil {
				t.Fatalf("push: %v", err)
			}
			sameFile(t, src, filepath.Join(ts.in, "SW"))
			if c.syncKB > 0 && res.SyncPoints == 0 {
				t.Errorf("no sync point in %d bytes with a %d KiB interval", size, c.syncKB)
			}
			if c.syncKB == 0 && res.SyncPoints != 0 {
				t.Errorf("%d sync points without sync negotiated", res.SyncPoints)
			}
			if err := os.Rename(filepath.Join(ts.in, "SW"), filepath.Join(ts.out, "SW")); err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(local, "dst.bin")
			if _, err := s.Receive(ctx, ReceiveRequest{VirtualFile: "SW", Dest: dst, EntitySize: c.entity}); err != nil {
				t.Fatalf("pull: %v", err)
			}
			sameFile(t, src, dst)
			if err := s.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRefusals checks the typed errors of a refused connection and of a
// refused SELECT, and that the session stays usable after the latter.
func TestRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ts := startServer(t, serverOpts{syncKB: 32, window: 2})
	cfg := ts.config(false, 32, 2)
	cfg.Password = "wrong"
	_, err := Dial(ctx, cfg)
	var re *RejectedError
	if !errors.As(err, &re) || re.Diagnostic != fpdu.DiagNotAuthorised || Retryable(err) {
		t.Fatalf("bad password: %v, want a final RCONNECT 3/304", err)
	}
	cfg = ts.config(false, 32, 2)
	cfg.ServerID = "OTHER"
	if _, err := Dial(ctx, cfg); !errors.As(err, &re) || re.Diagnostic != fpdu.DiagUnknownServer {
		t.Fatalf("wrong server id: %v, want RCONNECT 3/301", err)
	}
	s, err := Dial(ctx, ts.config(false, 32, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dst := filepath.Join(t.TempDir(), "x")
	_, err = s.Receive(ctx, ReceiveRequest{VirtualFile: "MISSING", Dest: dst})
	var te *TransferError
	if !errors.As(err, &te) || te.Diagnostic != fpdu.DiagFileNotFound || Retryable(err) {
		t.Fatalf("pull of a missing file: %v, want a final 2/205", err)
	}
	if _, serr := os.Stat(dst); serr == nil {
		t.Fatal("a refused pull left a file under the final name")
	}
	if err := s.Message(ctx, "still connected"); err != nil {
		t.Fatalf("message after a refused SELECT: %v", err)
	}
	if err := s.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
