package client

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

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
			for fpdu.Diagnostic(srv.aborted.Load()) != c.diag {
				if ctx.Err() != nil {
					t.Fatalf("the server got ABORT %v, want %v", fpdu.Diagnostic(srv.aborted.Load()), c.diag)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
