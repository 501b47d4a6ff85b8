package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/client"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

// Passwords of the traced run: distinctive, so that a leak into any span is
// found by a plain substring search.
const (
	tracePartner  = "TRACER"
	tracePassword = "Zq9#pw7x"
	traceWrongPw  = "Wr0ng!pw"
)

const serverScope = "github.com/vectis-ft/vectis/pesit/server"

// TestTracesOfTransfers runs a real OTLP/gRPC receiver in the test process,
// points the node at it through the OTEL_* variables, drives real transfers
// through the node (a push, a pull, a refused CONNECT, a refused SELECT and
// a push cut in mid-flight then restarted), stops the node so that every
// span is flushed, and checks the spans: one pesit.session per connection
// with a pesit.transfer child per transfer, their attributes, the errors
// recorded on them, no span per FPDU, and no password anywhere.
func TestTracesOfTransfers(t *testing.T) {
	receiver := otlptest.Start(t)
	receiver.SetEnv(t, "grpc")

	dir := t.TempDir()
	cfg := baseConfig(t, dir, "traced")
	cfg.PeSIT.Partners = append(cfg.PeSIT.Partners, config.Partner{ID: tracePartner, Password: tracePassword, Access: "both"})
	n := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	ccfg := clientConfig(n.pesit, tracePartner, tracePassword)
	serverPort := portOf(t, n.pesit)

	// 1. A push of 1 MiB with sync points every 64 KiB and a chosen PI 13.
	const size = 1 << 20
	src, _ := randomFile(t, dir, size)
	push, err := client.Push(ctx, ccfg, client.SendRequest{Source: src, VirtualFile: "INBOX", TransferID: 0x4242, NoRestart: true}, client.Retry{})
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	if push.SyncPoints == 0 {
		t.Fatalf("push used no sync points: %+v", push)
	}

	// 2. A pull of the same file back.
	if err := os.Rename(filepath.Join(dir, "in", tracePartner, fmt.Sprintf("INBOX-%d", push.TransferID)), filepath.Join(dir, "out", "OUTBOX")); err != nil {
		t.Fatal(err)
	}
	pull, err := client.Pull(ctx, ccfg, client.ReceiveRequest{VirtualFile: "OUTBOX", Dest: filepath.Join(dir, "pulled.bin"), NoRestart: true}, client.Retry{})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}

	// 3. A CONNECT refused for a bad password: RCONNECT 3/304.
	_, err = client.Dial(ctx, clientConfig(n.pesit, tracePartner, traceWrongPw))
	var rej *client.RejectedError
	if !errors.As(err, &rej) || rej.Diagnostic != fpdu.DiagNotAuthorised {
		t.Fatalf("bad password: %v, want RCONNECT %v", err, fpdu.DiagNotAuthorised)
	}

	// 4. A SELECT of a file that is not there: ACK(SELECT) 2/205.
	if err := os.Remove(filepath.Join(dir, "out", "OUTBOX")); err != nil {
		t.Fatal(err)
	}
	_, err = client.Pull(ctx, ccfg, client.ReceiveRequest{VirtualFile: "OUTBOX", Dest: filepath.Join(dir, "missing.bin"), NoRestart: true}, client.Retry{})
	var terr *client.TransferError
	if !errors.As(err, &terr) || terr.Diagnostic != fpdu.DiagFileNotFound {
		t.Fatalf("pull of a missing file: %v, want %v", err, fpdu.DiagFileNotFound)
	}

	// 5. A push cut after 600 KiB, resumed from its last sync point.
	proxy := newCuttingProxy(t, n.pesit, 600<<10)
	src2 := filepath.Join(dir, "restart.bin")
	if err := os.Rename(src, src2); err != nil {
		t.Fatal(err)
	}
	restarted, err := client.Push(ctx, clientConfig(proxy.ln.Addr().String(), tracePartner, tracePassword),
		client.SendRequest{Source: src2, VirtualFile: "INBOX", TransferID: 0x5151, StateDir: t.TempDir()},
		client.Retry{Retries: 3, Backoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("interrupted push: %v", err)
	}
	if !restarted.Restarted || restarted.RestartPoint == 0 || proxy.cuts.Load() == 0 {
		t.Fatalf("push was not cut and restarted from a sync point: %+v, cuts %d", restarted, proxy.cuts.Load())
	}

	// Stopping the node shuts the tracer provider down, which flushes every
	// span still batched: after it the receiver holds the whole run.
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("the sessions to end", func() bool {
		return value(scrape(t, n.api), "vectis_pesit_sessions_active", nil) == 0
	}))
	n.stop(t)
	all := receiver.Spans()

	var sessions, transfers []otlptest.Span
	for _, s := range all {
		if s.Scope != serverScope {
			continue
		}
		switch s.Name {
		case "pesit.session":
			sessions = append(sessions, s)
		case "pesit.transfer":
			transfers = append(transfers, s)
		default:
			t.Errorf("span %q from %s: the server makes only pesit.session and pesit.transfer spans", s.Name, serverScope)
		}
	}
	t.Logf("%d spans received, %d sessions and %d transfers from pesit/server", len(all), len(sessions), len(transfers))
	for _, s := range all {
		if s.Protocol != "grpc" {
			t.Errorf("span %s arrived over %s, want grpc", s.Name, s.Protocol)
		}
		if s.Name != "pesit.session" && s.Name != "pesit.transfer" && strings.Contains(strings.ToUpper(s.Name), "DTF") {
			t.Errorf("per-FPDU span %q", s.Name)
		}
	}
	// Six connections: push, pull, refused CONNECT, refused SELECT, and the
	// cut push (at least two connections). Five transfers at most: one per
	// push or pull connection, plus the refused SELECT if the server traces
	// it. A span per FPDU would make hundreds (1 MiB is 256 DTFs of 4 KiB).
	if len(sessions) < 6 || len(sessions) > 5+restarted.Attempts {
		t.Errorf("%d pesit.session spans, want %d (one per connection)", len(sessions), 4+restarted.Attempts)
	}
	if len(transfers) > 3+restarted.Attempts {
		t.Errorf("%d pesit.transfer spans for %d transfers: more than one per transfer", len(transfers), 3+restarted.Attempts)
	}

	byID := map[string]otlptest.Span{}
	for _, s := range sessions {
		byID[s.SpanID] = s
		if s.ParentSpanID != "" {
			t.Errorf("pesit.session %s has parent %s, want a root span", s.SpanID, s.ParentSpanID)
		}
		if s.Kind != "SPAN_KIND_SERVER" {
			t.Errorf("pesit.session kind %s, want SPAN_KIND_SERVER", s.Kind)
		}
		if got := s.Attributes["pesit.server_id"]; got != "PESITSRV" {
			t.Errorf("pesit.session pesit.server_id = %q, want PESITSRV", got)
		}
		host, port, err := net.SplitHostPort(s.Attributes["net.peer.address"])
		if err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() || port == "" || port == serverPort {
			t.Errorf("pesit.session net.peer.address = %q, want the client's loopback host:port", s.Attributes["net.peer.address"])
		}
		if _, ok := s.Attributes["pesit.partner"]; !ok {
			t.Errorf("pesit.session %s has no pesit.partner attribute: %v", s.SpanID, s.Attributes)
		}
		if _, ok := s.Attributes["pesit.diagnostic"]; !ok {
			t.Errorf("pesit.session %s has no pesit.diagnostic attribute: %v", s.SpanID, s.Attributes)
		}
		if s.Resource["service.name"] != "vectis" || s.Resource["service.instance.id"] != "traced" {
			t.Errorf("pesit.session resource %v, want service.name=vectis and service.instance.id=traced", s.Resource)
		}
	}
	// Every transfer is the child of a session of the same trace, inside it.
	children := map[string][]otlptest.Span{}
	for _, x := range transfers {
		parent, ok := byID[x.ParentSpanID]
		if !ok {
			t.Errorf("pesit.transfer %s (file %s) has parent %q, which is no pesit.session", x.SpanID, x.Attributes["pesit.virtual_file"], x.ParentSpanID)
			continue
		}
		if x.TraceID != parent.TraceID {
			t.Errorf("pesit.transfer trace %s, its session's %s", x.TraceID, parent.TraceID)
		}
		if x.Start.Before(parent.Start) || x.End.After(parent.End) {
			t.Errorf("pesit.transfer [%v, %v] outside its session [%v, %v]", x.Start, x.End, parent.Start, parent.End)
		}
		children[parent.SpanID] = append(children[parent.SpanID], x)
	}
	for id, xs := range children {
		if len(xs) > 1 {
			t.Errorf("session %s has %d pesit.transfer children, want one per transfer", id, len(xs))
		}
	}

	pi13 := func(id uint32) func(otlptest.Span) bool {
		return func(s otlptest.Span) bool {
			return s.Attributes["pesit.transfer_id"] == strconv.FormatUint(uint64(id), 10)
		}
	}
	okSession := func(t *testing.T, x otlptest.Span) {
		t.Helper()
		s := byID[x.ParentSpanID]
		if s.Attributes["pesit.partner"] != tracePartner || s.Attributes["pesit.diagnostic"] != fpdu.DiagOK.String() || s.StatusCode == "STATUS_CODE_ERROR" {
			t.Errorf("session of a good transfer: partner %q, diagnostic %q, status %s; want %s, %s, not an error",
				s.Attributes["pesit.partner"], s.Attributes["pesit.diagnostic"], s.StatusCode, tracePartner, fpdu.DiagOK)
		}
	}

	t.Run("push", func(t *testing.T) {
		x := only(t, transfers, pi13(push.TransferID))
		wantAttrs(t, x, map[string]string{
			"pesit.virtual_file":  "INBOX",
			"pesit.direction":     "receive",
			"pesit.transfer_id":   "16962",
			"pesit.bytes":         strconv.Itoa(size),
			"pesit.articles":      strconv.FormatInt(push.Articles, 10),
			"pesit.sync_points":   strconv.FormatUint(uint64(push.SyncPoints), 10),
			"pesit.restart_point": "0",
			"pesit.diagnostic":    fpdu.DiagOK.String(),
			"pesit.status":        "done",
		})
		if x.StatusCode == "STATUS_CODE_ERROR" || len(x.Events) != 0 {
			t.Errorf("successful push: status %s, events %v", x.StatusCode, x.Events)
		}
		okSession(t, x)
	})

	t.Run("pull", func(t *testing.T) {
		x := only(t, transfers, pi13(pull.TransferID))
		wantAttrs(t, x, map[string]string{
			"pesit.virtual_file":  "OUTBOX",
			"pesit.direction":     "send",
			"pesit.bytes":         strconv.Itoa(size),
			"pesit.articles":      strconv.FormatInt(pull.Articles, 10),
			"pesit.sync_points":   strconv.FormatUint(uint64(pull.SyncPoints), 10),
			"pesit.restart_point": "0",
			"pesit.diagnostic":    fpdu.DiagOK.String(),
			"pesit.status":        "done",
		})
		if x.StatusCode == "STATUS_CODE_ERROR" {
			t.Errorf("successful pull: status %s %q", x.StatusCode, x.StatusMessage)
		}
		okSession(t, x)
	})

	t.Run("refused CONNECT", func(t *testing.T) {
		s := only(t, sessions, func(s otlptest.Span) bool { return s.Attributes["pesit.diagnostic"] == fpdu.DiagNotAuthorised.String() })
		if s.Attributes["pesit.requester"] != tracePartner {
			t.Errorf("refused session: pesit.requester = %q, want %s", s.Attributes["pesit.requester"], tracePartner)
		}
		if s.Attributes["pesit.partner"] != "" {
			t.Errorf("refused session: pesit.partner = %q, want empty (never authenticated)", s.Attributes["pesit.partner"])
		}
		if len(children[s.SpanID]) != 0 {
			t.Errorf("refused session has transfers: %v", children[s.SpanID])
		}
		// The refusal is an error of the session, visible as such in a
		// trace backend (red span, error filter), with its diagnostic.
		if s.StatusCode != "STATUS_CODE_ERROR" || !strings.Contains(s.StatusMessage, "3/304") {
			t.Errorf("refused CONNECT: span status %s %q, want STATUS_CODE_ERROR mentioning 3/304", s.StatusCode, s.StatusMessage)
		}
	})

	t.Run("refused SELECT", func(t *testing.T) {
		// The refusal is recorded on a span: a pesit.transfer in error with
		// the diagnostic, or its session in error naming it.
		var found bool
		for _, x := range transfers {
			if x.Attributes["pesit.diagnostic"] == fpdu.DiagFileNotFound.String() {
				found = true
				if x.StatusCode != "STATUS_CODE_ERROR" || x.Attributes["pesit.virtual_file"] != "OUTBOX" || x.Attributes["pesit.direction"] != "send" {
					t.Errorf("refused SELECT transfer span: status %s, attributes %v", x.StatusCode, x.Attributes)
				}
			}
		}
		for _, s := range sessions {
			if s.Attributes["pesit.diagnostic"] == fpdu.DiagFileNotFound.String() ||
				(s.StatusCode == "STATUS_CODE_ERROR" && strings.Contains(s.StatusMessage, "2/205")) {
				found = true
			}
		}
		if !found {
			t.Errorf("no span records the refused SELECT (ACK(SELECT) %v): neither a pesit.transfer nor a pesit.session carries it", fpdu.DiagFileNotFound)
		}
	})

	t.Run("interrupted and restarted push", func(t *testing.T) {
		var xs []otlptest.Span
		for _, x := range transfers {
			if pi13(restarted.TransferID)(x) {
				xs = append(xs, x)
			}
		}
		if len(xs) != restarted.Attempts {
			t.Fatalf("%d pesit.transfer spans for PI 13 %d, want one per attempt (%d)", len(xs), restarted.TransferID, restarted.Attempts)
		}
		var cut, resumed []otlptest.Span
		for _, x := range xs {
			if x.Attributes["pesit.status"] == "done" {
				resumed = append(resumed, x)
			} else {
				cut = append(cut, x)
			}
		}
		if len(resumed) != 1 || len(cut) == 0 {
			t.Fatalf("want interrupted attempts then one done, got %d done and %d others", len(resumed), len(cut))
		}
		for _, x := range cut {
			if x.Attributes["pesit.status"] != "interrupted" || x.StatusCode != "STATUS_CODE_ERROR" || len(x.Events) == 0 {
				t.Errorf("cut transfer: status attribute %q, span status %s, events %v; want interrupted, an error and the recorded error event",
					x.Attributes["pesit.status"], x.StatusCode, x.Events)
			}
			if d := x.Attributes["pesit.diagnostic"]; d == "" || d == fpdu.DiagOK.String() {
				t.Errorf("cut transfer: pesit.diagnostic %q, want the cause", d)
			}
		}
		r := resumed[0]
		wantAttrs(t, r, map[string]string{
			"pesit.virtual_file":  "INBOX",
			"pesit.direction":     "receive",
			"pesit.restart_point": strconv.FormatUint(uint64(restarted.RestartPoint), 10),
			"pesit.diagnostic":    fpdu.DiagOK.String(),
		})
		// The record of a resumed transfer covers the whole file.
		if r.Attributes["pesit.bytes"] != strconv.Itoa(size) {
			t.Errorf("resumed transfer pesit.bytes = %q, want %d", r.Attributes["pesit.bytes"], size)
		}
		if p := r.Attributes["pesit.sync_points"]; p == "" || p == "0" {
			t.Errorf("resumed transfer pesit.sync_points = %q, want some", p)
		}
		okSession(t, r)
	})

	t.Run("no password in any span", func(t *testing.T) {
		for _, s := range all {
			fields := []string{s.Name, s.StatusMessage}
			fields = append(fields, s.Events...)
			for k, v := range s.Attributes {
				fields = append(fields, k, v)
			}
			for k, v := range s.Resource {
				fields = append(fields, k, v)
			}
			for _, f := range fields {
				for _, pw := range []string{tracePassword, traceWrongPw, "test123"} {
					if strings.Contains(f, pw) {
						t.Errorf("span %s (%s) carries a password: %q", s.Name, s.SpanID, f)
					}
				}
			}
		}
	})
}

// only returns the one span matching match, failing the test otherwise.
func only(t *testing.T, spans []otlptest.Span, match func(otlptest.Span) bool) otlptest.Span {
	t.Helper()
	var got []otlptest.Span
	for _, s := range spans {
		if match(s) {
			got = append(got, s)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d matching spans, want 1", len(got))
	}
	return got[0]
}

func wantAttrs(t *testing.T, s otlptest.Span, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, ok := s.Attributes[k]
		switch {
		case !ok:
			t.Errorf("%s has no attribute %s (want %q); it has %v", s.Name, k, v, s.Attributes)
		case got != v:
			t.Errorf("%s %s = %q, want %q", s.Name, k, got, v)
		}
	}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return p
}
