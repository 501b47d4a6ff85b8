package client

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestPreConnection sends the EBCDIC pre-connection message before CONNECT;
// the server checks it (ACK0) or refuses it (NAK0).
func TestPreConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ts := startServer(t, serverOpts{syncKB: 32, window: 2})
	cfg := ts.config(false, 32, 2)
	cfg.PreConnection = true
	s, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial with pre-connection: %v", err)
	}
	if err := s.Release(ctx); err != nil {
		t.Fatal(err)
	}
	cfg.Password = "nope"
	_, err = Dial(ctx, cfg)
	var re *RejectedError
	if !errors.As(err, &re) || re.Diagnostic != fpdu.DiagNotAuthorised {
		t.Fatalf("pre-connection with a bad password: %v, want a refusal", err)
	}
}

// TestCancel cancels the context in the middle of a push: Send returns at
// once with context.Canceled, which is not retried, after ending the
// transfer with IDT (PI 19 = 16), so the session stays usable.
func TestCancel(t *testing.T) {
	ts := startServer(t, serverOpts{syncKB: 4, window: 1, entity: 4096})
	src := writeRandom(t, t.TempDir(), "src.bin", 64<<20, 10)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Dial(ctx, ts.config(false, 4, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Cancelled once data flows, so that the cancellation meets the data
	// phase whatever the machine's speed. "At once" is shown by the outcome
	// below: the 64 MiB were not all sent first.
	var cancelled time.Time
	_, err = s.Send(ctx, SendRequest{Source: src, VirtualFile: "CANCEL", Progress: func(p Progress) {
		if p.Bytes > 0 && cancelled.IsZero() {
			cancelled = time.Now()
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled push: %v, want context.Canceled", err)
	}
	t.Logf("Send returned %v after the cancellation", time.Since(cancelled).Round(time.Millisecond))
	if Retryable(err) {
		t.Fatal("a cancellation must not be retried")
	}
	// The push ended with IDT PI 19 = 16, not a cut: the server recorded a
	// cancellation by the requester and the session is still usable.
	ts.jnl.mu.Lock()
	o := ts.jnl.recs[0].outcome
	ts.jnl.mu.Unlock()
	if o == nil || o.Status != server.StatusCancelled || !strings.Contains(o.Detail, "PI 19 = 16") {
		t.Fatalf("server outcome %+v, want cancelled by the requester (PI 19 = 16)", o)
	}
	if o.Bytes >= 64<<20 {
		t.Fatalf("server outcome %+v: the whole file went before the cancellation took effect", o)
	}
	if err := s.Message(context.Background(), "after cancel"); err != nil {
		t.Fatalf("session unusable after a cancelled push: %v", err)
	}
	// Push with retries stops too.
	res, err := Push(ctx, ts.config(false, 4, 1), SendRequest{Source: src, VirtualFile: "CANCEL2"}, Retry{Retries: 5})
	if err == nil || res.Attempts != 1 {
		t.Fatalf("Push with a cancelled context: %+v %v", res, err)
	}
}

// TestAbortForms answers CONNECT with an ABORT in the bare form (CX) and in
// the PI form (pesitwizard); both reach the caller as an *AbortError with the
// diagnostic.
func TestAbortForms(t *testing.T) {
	for _, piForm := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			r, w := fpdu.NewReader(c), fpdu.NewWriter(c)
			f, err := r.Next()
			if err != nil {
				return
			}
			var opts []fpdu.AbortOption
			if piForm {
				opts = append(opts, fpdu.WithAbortPIForm())
			}
			_ = w.Write(fpdu.NewAbort(f.SrcID, 0x61, fpdu.DiagCallBackLater, opts...))
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = Dial(ctx, Config{Addr: ln.Addr().String(), RequesterID: "C", ServerID: "S"})
		cancel()
		var ae *AbortError
		if !errors.As(err, &ae) || ae.Diagnostic != fpdu.DiagCallBackLater || !Retryable(err) {
			t.Errorf("PI form %v: %v, want a retryable ABORT 3/322", piForm, err)
		}
		ln.Close()
		<-done
	}
}

// TestBadACONNECT: a server that raises our sync proposal or answers another
// version is aborted with the negotiation diagnostic.
func TestBadACONNECT(t *testing.T) {
	cases := []struct {
		name string
		p    func(*fpdu.Params)
		want fpdu.Diagnostic
	}{
		{"sync raised", func(p *fpdu.Params) { p.AddUint(fpdu.PIVersion, 2); p.AddSyncOption(1024, 2) }, fpdu.DiagNegotiationFailure},
		{"version D", func(p *fpdu.Params) { p.AddUint(fpdu.PIVersion, 1) }, fpdu.DiagVersionUnsupported},
	}
	for _, c := range cases {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan fpdu.Diagnostic, 1)
		go func() {
			defer close(got)
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			r, w := fpdu.NewReader(conn), fpdu.NewWriter(conn)
			f, err := r.Next()
			if err != nil {
				return
			}
			a := &fpdu.FPDU{Kind: fpdu.AConnect, DstID: f.SrcID, SrcID: 0x61}
			c.p(&a.Params)
			if w.Write(a) != nil {
				return
			}
			if f, err = r.Next(); err == nil && f.Kind == fpdu.Abort {
				d, _ := f.Params.Diagnostic()
				got <- d
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = Dial(ctx, Config{Addr: ln.Addr().String(), RequesterID: "C", ServerID: "S", SyncIntervalKB: 32, SyncWindow: 2})
		cancel()
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Diagnostic != c.want {
			t.Errorf("%s: %v, want a protocol error %v", c.name, err, c.want)
		}
		if d := <-got; d != c.want {
			t.Errorf("%s: server got ABORT %v, want %v", c.name, d, c.want)
		}
		ln.Close()
	}
}

// TestLongTransferShortTimeout: the inactivity timer Tp bounds silence, not
// the length of a transfer. Through a 2 MB/s proxy, transfers that last
// several times Tp complete.
func TestLongTransferShortTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ts := startServer(t, serverOpts{syncKB: 256, window: 2, entity: 4096})
	proxy := newSlowProxy(t, ts.addr, 2e6)
	local := t.TempDir()
	src := writeRandom(t, local, "src.bin", 6<<20, 11)
	cfg := ts.config(false, 256, 2)
	cfg.Addr = proxy.addr()
	cfg.Timeout = time.Second
	s, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := s.Send(ctx, SendRequest{Source: src, VirtualFile: "LONG"})
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	if err := os.Rename(filepath.Join(ts.in, "LONG"), filepath.Join(ts.out, "LONG")); err != nil {
		t.Fatal(err)
	}
	res2, err := s.Receive(ctx, ReceiveRequest{VirtualFile: "LONG", Dest: filepath.Join(local, "dst.bin")})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if res.Duration < 2*cfg.Timeout || res2.Duration < 2*cfg.Timeout {
		t.Fatalf("transfers took %v and %v, want more than 2 x Tp for the test to mean anything", res.Duration, res2.Duration)
	}
	sameFile(t, src, filepath.Join(local, "dst.bin"))
	if err := s.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestTransferID: a configured PI 13 is the one the server records.
func TestTransferID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ts := startServer(t, serverOpts{syncKB: 32, window: 2})
	src := writeRandom(t, t.TempDir(), "src.bin", 100000, 12)
	res, err := Push(ctx, ts.config(false, 32, 2), SendRequest{Source: src, VirtualFile: "TID", TransferID: 0x4242}, Retry{})
	if err != nil {
		t.Fatal(err)
	}
	ts.jnl.mu.Lock()
	defer ts.jnl.mu.Unlock()
	if res.TransferID != 0x4242 || len(ts.jnl.recs) != 1 || ts.jnl.recs[0].t.PeSITID != 0x4242 {
		t.Fatalf("result id %#x, server recorded %+v", res.TransferID, ts.jnl.recs)
	}
}
