package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

func rawConfig(addr string) Config {
	return Config{Addr: addr, RequesterID: "CLIENT", ServerID: "RAWSRV", Password: "secret",
		SyncIntervalKB: 32, SyncWindow: 2, Timeout: 10 * time.Second}
}

// TestRawRoundTrip pushes and pulls files through the minimal codec-only
// responder: it checks the client's wire behaviour independently of
// pesit/server.
func TestRawRoundTrip(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "tcp", true: "tls"}[useTLS], func(t *testing.T) { testRawRoundTrip(t, useTLS) })
	}
}

func testRawRoundTrip(t *testing.T, useTLS bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var pki *testPKI
	var srv *rawServer
	if useTLS {
		pki = newTestPKI(t, "CLIENT")
		srv = newRawServerTLS(t, 32, 2, pki.server)
	} else {
		srv = newRawServer(t, 32, 2)
	}
	cfg := rawConfig(srv.addr())
	if useTLS {
		cfg.TLS = pki.client
	}
	local := t.TempDir()
	cases := []struct {
		name string
		size int64
		req  SendRequest
	}{
		{"empty.bin", 0, SendRequest{}},
		{"one.bin", 1, SendRequest{}},
		{"mib.bin", 1 << 20, SendRequest{}},
		{"multi.bin", 1<<20 + 333, SendRequest{ArticleLength: 1000, MultiArticle: 10, EntitySize: 4096}},
		{"seg.bin", 300000, SendRequest{ArticleLength: 20000, Segment: true, EntitySize: 4096}},
		{"lines.txt", -1, SendRequest{Format: FormatVariable, DataCode: DataASCII, ArticleLength: 4096}},
		{"multilines.txt", -1, SendRequest{Format: FormatVariable, DataCode: DataASCII, ArticleLength: 4096, MultiArticle: 20}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var src string
			if c.size < 0 {
				src = writeText(t, local, c.name, 5000, 3)
			} else {
				src = writeRandom(t, local, c.name, c.size, uint64(c.size))
			}
			s, err := Dial(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if st, ok := s.conn.(interface{ ConnectionState() tls.ConnectionState }); useTLS && (!ok || st.ConnectionState().Version < tls.VersionTLS12) {
				t.Fatal("not a TLS 1.2+ connection")
			}
			req := c.req
			req.Source = src
			res, err := s.Send(ctx, req)
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			sameFile(t, src, filepath.Join(srv.dir, c.name))
			back := filepath.Join(local, "back-"+c.name)
			res2, err := s.Receive(ctx, ReceiveRequest{VirtualFile: c.name, Dest: back})
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			sameFile(t, src, back)
			if res.FileBytes != res2.FileBytes {
				t.Errorf("sent %d bytes, received %d", res.FileBytes, res2.FileBytes)
			}
			if err := s.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRawRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := newRawServer(t, 32, 2)
	cfg := rawConfig(srv.addr())
	cfg.Password = "wrong"
	_, err := Dial(ctx, cfg)
	var re *RejectedError
	if !errors.As(err, &re) || re.Diagnostic != fpdu.DiagNotAuthorised {
		t.Fatalf("Dial with a bad password: %v, want RCONNECT 3/304", err)
	}
	if Retryable(err) {
		t.Error("an authentication refusal must not be retried")
	}
}

// TestRawEBCDICText pushes a text file as EBCDIC (PI 16 = 1): the server
// receives code page 037 lines; a pull translates them back.
func TestRawEBCDICText(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := newRawServer(t, 32, 2)
	local := t.TempDir()
	text := "HELLO BANK 123\npayment: 42.00 EUR\n\nline_with-punct/@#$\n"
	src := filepath.Join(local, "f.ebc")
	if err := os.WriteFile(src, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Dial(ctx, rawConfig(srv.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Send(ctx, SendRequest{Source: src, Format: FormatVariable, DataCode: DataEBCDIC}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(srv.dir, "f.ebc"))
	if err != nil {
		t.Fatal(err)
	}
	// "HELLO" in code page 037, then the server's own "\n".
	if want := []byte{0xC8, 0xC5, 0xD3, 0xD3, 0xD6, 0x40}; !bytes.HasPrefix(got, want) || bytes.Count(got, []byte("\n")) != 4 {
		t.Fatalf("server stored % X, want EBCDIC lines", got)
	}
	back := filepath.Join(local, "back.txt")
	if _, err := s.Receive(ctx, ReceiveRequest{VirtualFile: "f.ebc", Dest: back}); err != nil {
		t.Fatal(err)
	}
	sameFile(t, src, back)
	if err := s.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRawResyn: with resynchronisation negotiated (PI 23 = 1), the server
// answers sync point 3 with RESYN{PI 18 = 2} instead of ACK(SYN); the client
// answers ACK(RESYN){2}, resends from point 2 and the file arrives whole,
// binary and text (window 2, and window 0 where RESYN is the only answer),
// and a RESYN answering TRANS.END (it wins: the client sends again).
func TestRawResyn(t *testing.T) {
	for _, c := range []struct {
		name   string
		window uint8
		text   bool
		atEnd  bool // the RESYN answers TRANS.END, which it wins over
	}{{"binary window 2", 2, false, false}, {"binary window 0", 0, false, false}, {"text window 2", 2, true, false},
		{"binary, RESYN crossing TRANS.END", 2, false, true}} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			srv := newRawServer(t, 4, c.window)
			srv.resynAt, srv.resynAtEnd = 3, c.atEnd
			if c.atEnd {
				srv.resynAt = 0
			}
			cfg := rawConfig(srv.addr())
			cfg.SyncIntervalKB, cfg.SyncWindow, cfg.Resync = 4, c.window, true
			local := t.TempDir()
			name, req := "resyn.bin", SendRequest{}
			var src string
			if c.text {
				name = "resyn.txt"
				req = SendRequest{Format: FormatVariable, DataCode: DataASCII, ArticleLength: 1000}
				src = writeText(t, local, name, 2000, 8)
			} else {
				src = writeRandom(t, local, name, 200<<10, 8)
			}
			s, err := Dial(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, _, rs := s.Negotiated(); !rs {
				t.Fatal("resynchronisation not negotiated")
			}
			req.Source = src
			if _, err := s.Send(ctx, req); err != nil {
				t.Fatalf("push with a RESYN: %v", err)
			}
			if n := srv.resyns.Load(); n != 1 {
				t.Fatalf("the server sent %d RESYNs, want 1", n)
			}
			sameFile(t, src, filepath.Join(srv.dir, name))
			if err := s.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRawRefusedByMachine: an FPDU the requester's protocol machine
// (pesit/fsm) refuses ends the session with ABORT and the machine's
// diagnostic, as the server does. The client's former hand-kept checks let
// both of these through.
func TestRawRefusedByMachine(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(*rawServer)
		push  bool
		diag  fpdu.Diagnostic
	}{
		{"ACONNECT grants a resync not proposed", func(s *rawServer) { s.grantResync = true }, false, fpdu.DiagNegotiationFailure},
		{"ACK(SYN) of a point already acknowledged", func(s *rawServer) { s.ackSynTwice = true }, true, fpdu.DiagBadParameter},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			srv := newRawServer(t, 4, 2)
			c.setup(srv)
			cfg := rawConfig(srv.addr())
			cfg.SyncIntervalKB, cfg.SyncWindow = 4, 2
			s, err := Dial(ctx, cfg)
			if c.push {
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				src := filepath.Join(t.TempDir(), "f.bin")
				if err := os.WriteFile(src, bytes.Repeat([]byte("vectis"), 200_000), 0o644); err != nil {
					t.Fatal(err)
				}
				_, err = s.Send(ctx, SendRequest{Source: src, NoRestart: true})
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Diagnostic != c.diag {
				t.Fatalf("got %v, want a protocol error %v", err, c.diag)
			}
			testenv.Eventually(t, 10*time.Second, func() error {
				if got := fpdu.Diagnostic(srv.aborted.Load()); got != c.diag {
					return fmt.Errorf("the server got ABORT %v, want %v", got, c.diag)
				}
				return nil
			})
		})
	}
}

// TestRawPullServerWaitsForEachAck: a server that waits for the ACK(SYN)
// of each point before sending on, with a window of 4. The client
// acknowledges a point once its fsync is done, which it overlaps with the
// data that follows; it must not wait for that data when there is none.
func TestRawPullServerWaitsForEachAck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := newRawServer(t, 32, 4)
	srv.ackEachSyn = true
	src := writeRandom(t, srv.dir, "file.bin", 1<<20+4321, 7)
	cfg := rawConfig(srv.addr())
	cfg.SyncWindow = 4
	cfg.Timeout = 30 * time.Second // an acknowledgement held back would show as a timeout
	s, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dst := filepath.Join(t.TempDir(), "back.bin")
	start := time.Now()
	res, err := s.Receive(ctx, ReceiveRequest{VirtualFile: "file.bin", Dest: dst, NoRestart: true})
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("the pull took %v: acknowledgements waited for data the server held back", el)
	}
	if res.SyncPoints < 30 {
		t.Errorf("%d sync points, want one per 32 KiB", res.SyncPoints)
	}
	sameFile(t, src, dst)
	if err := s.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
