package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// Interop fault matrix (issue 14) against the raw scripted responder,
// which reproduces third-party servers' behaviours. Every case ends
// byte-identical, or with a clear error that a rerun recovers from.

const interopSize = 4 << 20

func interopConfig(addr string) Config {
	cfg := rawConfig(addr)
	cfg.SyncIntervalKB, cfg.SyncWindow = 64, 2
	return cfg
}

// TestInteropPullSyncRenumbered: after READ PI 18 = p the server numbers
// its SYNs from 1 again (while its restart points keep the first
// numbering). The client must not store points under the new numbers: the
// second cut then starts over instead of resuming at a wrong offset and
// growing the partial file past the source size.
func TestInteropPullSyncRenumbered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := newRawServer(t, 64, 2)
	srv.renumber = true
	want := writeRandom(t, srv.dir, "f.bin", interopSize, 21)
	proxy := newCutProxy(t, srv.addr(), 3<<19, 3<<19)
	local := t.TempDir()
	got := filepath.Join(local, "f.bin")
	res, err := Pull(ctx, interopConfig(proxy.addr()), ReceiveRequest{VirtualFile: "f.bin", Dest: got},
		Retry{Retries: 3, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	sameFile(t, want, got)
	if res.Attempts != 3 || res.Restarted {
		t.Fatalf("result %+v: want the third attempt to start over (state dropped on renumbering)", res)
	}
	if m, _ := filepath.Glob(filepath.Join(local, ".*")); len(m) != 0 {
		t.Fatalf("left behind: %v", m)
	}
}

// TestInteropSessionCounts: after a restart the server's ACK(TRANS.END)
// PI 27/28 count only this session. Both directions complete on the
// restart attempt.
func TestInteropSessionCounts(t *testing.T) {
	for _, dir := range []string{"push", "pull"} {
		t.Run(dir, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			srv := newRawServer(t, 64, 2)
			srv.sessionCounts = true
			proxy := newCutProxy(t, srv.addr(), 3<<19)
			cfg := interopConfig(proxy.addr())
			local := t.TempDir()
			retry := Retry{Retries: 2, Backoff: 10 * time.Millisecond}
			var res Result
			var err error
			var want, got string
			if dir == "push" {
				want = writeRandom(t, local, "f.bin", interopSize, 22)
				got = filepath.Join(srv.dir, "f.bin")
				res, err = Push(ctx, cfg, SendRequest{Source: want, ArticleLength: 4096}, retry)
			} else {
				want = writeRandom(t, srv.dir, "f.bin", interopSize, 22)
				got = filepath.Join(local, "f.bin")
				res, err = Pull(ctx, cfg, ReceiveRequest{VirtualFile: "f.bin", Dest: got}, retry)
			}
			if err != nil {
				t.Fatalf("%s: %v", dir, err)
			}
			sameFile(t, want, got)
			if res.Attempts != 2 || !res.Restarted || res.RestartPoint == 0 {
				t.Fatalf("result %+v: want completion on the restart", res)
			}
		})
	}
}

// TestInteropArticleCountSkew: the server's PI 28 is off while PI 27 and
// the data agree. Accepted and reported as an anomaly; refused with 3/319
// in strict mode.
func TestInteropArticleCountSkew(t *testing.T) {
	for _, dir := range []string{"push", "pull"} {
		for _, strict := range []bool{false, true} {
			t.Run(dir, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				srv := newRawServer(t, 64, 2)
				srv.articleSkew = 7
				cfg := interopConfig(srv.addr())
				cfg.Strict = strict
				local := t.TempDir()
				var res Result
				var err error
				var want, got string
				if dir == "push" {
					want = writeRandom(t, local, "f.bin", 1<<20, 23)
					got = filepath.Join(srv.dir, "f.bin")
					res, err = Push(ctx, cfg, SendRequest{Source: want, ArticleLength: 4096}, Retry{})
				} else {
					want = writeRandom(t, srv.dir, "f.bin", 1<<20, 23)
					got = filepath.Join(local, "f.bin")
					res, err = Pull(ctx, cfg, ReceiveRequest{VirtualFile: "f.bin", Dest: got}, Retry{})
				}
				if strict {
					var pe *ProtocolError
					if !errors.As(err, &pe) || pe.Diagnostic != fpdu.DiagCountMismatch {
						t.Fatalf("strict: err %v, want a 3/319 protocol error", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", dir, err)
				}
				sameFile(t, want, got)
				if !slices.Equal(res.Anomalies, []Anomaly{AnomalyArticleCount}) {
					t.Fatalf("anomalies %v, want [%s]", res.Anomalies, AnomalyArticleCount)
				}
			})
		}
	}
}

// TestInteropZeroSelectID: ACK(SELECT) PI 13 = 0. The pull completes and
// reports it.
func TestInteropZeroSelectID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := newRawServer(t, 64, 2)
	srv.zeroSelectID = true
	want := writeRandom(t, srv.dir, "f.bin", 1<<20, 24)
	got := filepath.Join(t.TempDir(), "f.bin")
	res, err := Pull(ctx, interopConfig(srv.addr()), ReceiveRequest{VirtualFile: "f.bin", Dest: got}, Retry{})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	sameFile(t, want, got)
	if !slices.Equal(res.Anomalies, []Anomaly{AnomalyZeroTransferID}) {
		t.Fatalf("anomalies %v", res.Anomalies)
	}
}

// TestSendStateNotResumedAfterTransEnd (item 9): a send that failed at
// TRANS.END (here 3/319 in strict mode) leaves no restart state, so the
// next send starts a new transfer; and a cut send is resumed only with the
// same options.
func TestSendStateNotResumedAfterTransEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := newRawServer(t, 64, 2)
	srv.articleSkew = 3
	local := t.TempDir()
	state := filepath.Join(local, "state")
	src := writeRandom(t, local, "f.bin", 1<<20, 25)
	cfg := interopConfig(srv.addr())
	cfg.Strict = true
	if _, err := Push(ctx, cfg, SendRequest{Source: src, ArticleLength: 4096, StateDir: state}, Retry{}); err == nil {
		t.Fatal("strict push with a wrong PI 28 succeeded")
	}
	if m, _ := filepath.Glob(filepath.Join(state, "*")); len(m) != 0 {
		t.Fatalf("restart state kept after a completed exchange: %v", m)
	}
	cfg.Strict = false
	res, err := Push(ctx, cfg, SendRequest{Source: src, ArticleLength: 1024, StateDir: state}, Retry{})
	if err != nil || res.Restarted {
		t.Fatalf("second push: %+v, %v: want a new transfer", res, err)
	}
}

// TestSendRestartNeedsSameOptions (item 9): a cut push is resumed by a send
// with the same options, and not by one with another article length.
func TestSendRestartNeedsSameOptions(t *testing.T) {
	for _, same := range []bool{true, false} {
		t.Run(map[bool]string{true: "same", false: "other"}[same], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			srv := newRawServer(t, 64, 2)
			local := t.TempDir()
			state := filepath.Join(local, "state")
			src := writeRandom(t, local, "f.bin", interopSize, 26)
			proxy := newCutProxy(t, srv.addr(), 3<<19)
			if _, err := Push(ctx, interopConfig(proxy.addr()), SendRequest{Source: src, ArticleLength: 4096, StateDir: state}, Retry{}); err == nil {
				t.Fatal("the cut push succeeded")
			}
			l := 4096
			if !same {
				l = 2048
			}
			res, err := Push(ctx, interopConfig(srv.addr()), SendRequest{Source: src, ArticleLength: l, StateDir: state}, Retry{})
			if err != nil {
				t.Fatalf("second push: %v", err)
			}
			sameFile(t, src, filepath.Join(srv.dir, "f.bin"))
			if res.Restarted != same {
				t.Fatalf("restarted = %v, want %v", res.Restarted, same)
			}
		})
	}
}

// TestTextSendAdaptsToEntitySize (item 12): a text send with the default
// article length against a server that lowers PI 25 to 4096 adapts its
// line length, as a binary send does, instead of failing locally.
func TestTextSendAdaptsToEntitySize(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ts := startServer(t, serverOpts{syncKB: 64, window: 2, entity: 4096, text: true})
	src := writeText(t, t.TempDir(), "src.txt", 5000, 27)
	s, err := Dial(ctx, ts.config(false, 64, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Send(ctx, SendRequest{Source: src, VirtualFile: "TEXT", Format: FormatVariable, DataCode: DataASCII}); err != nil {
		t.Fatalf("text send: %v", err)
	}
	sameFile(t, src, filepath.Join(ts.in, "TEXT"))
}

// TestLocalRefusalIsNotTheServers (item 10): when the client gives up after
// a positive ACK(CREATE), the error says so and carries no server
// diagnostic.
func TestLocalRefusalIsNotTheServers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ts := startServer(t, serverOpts{syncKB: 64, window: 2, entity: 4096})
	src := writeRandom(t, t.TempDir(), "f.bin", 100_000, 28)
	s, err := Dial(ctx, ts.config(false, 64, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Send(ctx, SendRequest{Source: src, VirtualFile: "F", Format: FormatFixed, ArticleLength: 8192})
	var rl *RefusedLocallyError
	var te *TransferError
	if !errors.As(err, &rl) || errors.As(err, &te) {
		t.Fatalf("err %v (%T), want a local refusal and no server diagnostic", err, err)
	}
	if strings.HasPrefix(err.Error(), "ACK(CREATE)") || !strings.Contains(err.Error(), "refused by the client") {
		t.Fatalf("message %q reads as the server's refusal", err)
	}
	// The session is still usable: the refusal deselected cleanly.
	if _, err := s.Send(ctx, SendRequest{Source: src, VirtualFile: "F"}); err != nil {
		t.Fatalf("send after the refusal: %v", err)
	}
}

// TestReceiveTransferID (item 11): ReceiveRequest.TransferID goes out as
// SELECT PI 13 of a new pull.
func TestReceiveTransferID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := newRawServer(t, 64, 2)
	want := writeRandom(t, srv.dir, "f.bin", 100_000, 29)
	got := filepath.Join(t.TempDir(), "f.bin")
	s, err := Dial(ctx, interopConfig(srv.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Receive(ctx, ReceiveRequest{VirtualFile: "f.bin", Dest: got, TransferID: 0x1234}); err != nil {
		t.Fatal(err)
	}
	sameFile(t, want, got)
	if id := srv.lastSelectID.Load(); id != 0x1234 {
		t.Fatalf("SELECT PI 13 = %#x, want 0x1234", id)
	}
}

// TestInteropPullRefusedThenValidPoint: the server refuses the latest
// restart point (2/214); the client offers its older acknowledged point
// in the same selection, which is accepted, and the file ends identical.
func TestInteropPullRefusedThenValidPoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := newRawServer(t, 64, 2)
	srv.refuseRestarts.Store(1)
	want := writeRandom(t, srv.dir, "f.bin", interopSize, 30)
	proxy := newCutProxy(t, srv.addr(), 3<<19)
	got := filepath.Join(t.TempDir(), "f.bin")
	res, err := Pull(ctx, interopConfig(proxy.addr()), ReceiveRequest{VirtualFile: "f.bin", Dest: got},
		Retry{Retries: 2, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	sameFile(t, want, got)
	if res.Attempts != 2 || !res.Restarted || res.RestartPoint == 0 {
		t.Fatalf("result %+v: want a restart from an older point on attempt 2", res)
	}
	if srv.refuseRestarts.Load() >= 0 {
		t.Fatal("the server never refused a restart point")
	}
}

// TestSendRestartNeedsUnchangedSource (item 9): an edited source (other
// mtime) is sent anew, not resumed.
func TestSendRestartNeedsUnchangedSource(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := newRawServer(t, 64, 2)
	local := t.TempDir()
	state := filepath.Join(local, "state")
	src := writeRandom(t, local, "f.bin", interopSize, 31)
	proxy := newCutProxy(t, srv.addr(), 3<<19)
	if _, err := Push(ctx, interopConfig(proxy.addr()), SendRequest{Source: src, ArticleLength: 4096, StateDir: state}, Retry{}); err == nil {
		t.Fatal("the cut push succeeded")
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(src, later, later); err != nil {
		t.Fatal(err)
	}
	res, err := Push(ctx, interopConfig(srv.addr()), SendRequest{Source: src, ArticleLength: 4096, StateDir: state}, Retry{})
	if err != nil || res.Restarted {
		t.Fatalf("push of the edited source: %+v, %v: want a new transfer", res, err)
	}
	sameFile(t, src, filepath.Join(srv.dir, "f.bin"))
}

// TestCancelPullSendsIDT (item 13): cancelling a pull ends it with IDT
// (PI 19 = 16, 2/216) and CRF, DESELECT, so that the server records a
// cancellation, not a network incident; no partial file or state is left.
func TestCancelPullSendsIDT(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ts := startServer(t, serverOpts{syncKB: 64, window: 2})
	writeRandom(t, ts.out, "BIG", 16<<20, 32)
	proxy := newSlowProxy(t, ts.addr, 4<<20) // about 4 s for the file
	cfg := ts.config(false, 64, 2)
	cfg.Addr = proxy.addr()
	local := t.TempDir()
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	_, err := Pull(pctx, cfg, ReceiveRequest{VirtualFile: "BIG", Dest: filepath.Join(local, "big"), Progress: func(p Progress) {
		if p.Bytes > 1<<20 {
			pcancel()
		}
	}}, Retry{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	var o *server.Outcome
	testenv.Eventually(t, 10*time.Second, func() (err error) {
		o, err = ts.jnl.lastOutcome()
		return err
	})
	if o.Status != server.StatusCancelled || o.Diagnostic != fpdu.DiagVoluntaryStop {
		t.Fatalf("server outcome %s %v (%s), want cancelled 2/216 by IDT", o.Status, o.Diagnostic, o.Detail)
	}
	if m, _ := filepath.Glob(filepath.Join(local, ".*")); len(m) != 0 {
		t.Fatalf("left behind: %v", m)
	}
}

// TestPullResyncFromServer (item 13): during a pull the server (sender)
// sends RESYN{n-1}; the client answers a durable point >= n-1 and the data
// resumes from there, ending byte-identical.
func TestPullResyncFromServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := newRawServer(t, 64, 2)
	srv.pullResynAt = 5
	want := writeRandom(t, srv.dir, "f.bin", 1<<20, 33)
	cfg := interopConfig(srv.addr())
	cfg.Resync = true
	got := filepath.Join(t.TempDir(), "f.bin")
	if _, err := Pull(ctx, cfg, ReceiveRequest{VirtualFile: "f.bin", Dest: got}, Retry{}); err != nil {
		t.Fatalf("pull: %v", err)
	}
	sameFile(t, want, got)
	if srv.resyns.Load() != 1 {
		t.Fatal("the server sent no RESYN")
	}
}
