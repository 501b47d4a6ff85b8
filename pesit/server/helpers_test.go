package server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
	"github.com/vectis-ft/vectis/pesit/server/memjournal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one running server with an in-memory directory and journal.
type env struct {
	t       *testing.T
	srv     *server.Server
	dir     *memjournal.Directory
	jnl     *memjournal.Journal
	recvDir string
	sendDir string
	cfg     server.Config
	reg     *prometheus.Registry
	spans   *tracetest.SpanRecorder
	logs    *lockedBuffer
}

// lockedBuffer collects every log line for assertions (e.g. no password).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const (
	partnerID = "CXCLIENT"
	password  = "test123"
	serverID  = "PESITSRV"
)

func testConfig() server.Config {
	return server.Config{
		ID:                serverID,
		Addr:              "127.0.0.1:0",
		SyncIntervalKB:    32,
		SyncWindow:        2,
		ConnectTimeout:    5 * time.Second,
		InactivityTimeout: 5 * time.Second,
		IdleTimeout:       5 * time.Second,
	}
}

func newEnv(t testing.TB, mod func(*server.Config)) *env {
	return newEnvDeps(t, mod, nil)
}

// newEnvDeps is newEnv with the server's dependencies adjusted by deps.
func newEnvDeps(t testing.TB, mod func(*server.Config), deps func(*server.Deps)) *env {
	tt, _ := t.(*testing.T)
	cfg := testConfig()
	spans := tracetest.NewSpanRecorder()
	cfg.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	if mod != nil {
		mod(&cfg)
	}
	base := t.TempDir()
	e := &env{t: tt, dir: &memjournal.Directory{}, jnl: &memjournal.Journal{},
		recvDir: filepath.Join(base, "in"), sendDir: filepath.Join(base, "out"), cfg: cfg,
		reg: prometheus.NewRegistry(), spans: spans, logs: &lockedBuffer{}}
	for _, d := range []string{e.recvDir, e.sendDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	e.dir.AddPartner(server.Partner{ID: partnerID, Enabled: true, Access: server.AccessBoth, VerifyPassword: memjournal.Password(password)})
	e.dir.AddFile(server.VirtualFile{ID: "TESTFILE", Direction: server.DirectionBoth, ReceiveDir: e.recvDir, SendDir: e.sendDir,
		RecordFormat: server.RecordVariable, RecordLength: 1024, DataCode: 2})
	var out io.Writer = e.logs
	if _, fuzz := t.(*testing.F); !fuzz { // a fuzz target may not log through F
		out = io.MultiWriter(testWriter{t}, e.logs)
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d := server.Deps{Directory: e.dir, Journal: e.jnl, Logger: log, Metrics: server.NewMetrics(e.reg)}
	if deps != nil {
		deps(&d)
	}
	srv, err := server.New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return e
}

// testWriter sends server logs to t.Log, so they show only on failure.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// peer is a raw PeSIT requester: it speaks FPDUs through the codec, or raw
// bytes where a test must be exact.
type peer struct {
	t     testing.TB
	c     net.Conn
	r     *fpdu.Reader
	w     *fpdu.Writer
	srvID byte // server's connection id from ACONNECT
}

func dial(t testing.TB, addr net.Addr) *peer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return newPeer(t, c)
}

func newPeer(t testing.TB, c net.Conn) *peer {
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &peer{t: t, c: c, r: fpdu.NewReader(c), w: fpdu.NewWriter(c)}
}

func (p *peer) raw(b []byte) {
	p.t.Helper()
	if _, err := p.c.Write(b); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

func (p *peer) send(f *fpdu.FPDU) {
	p.t.Helper()
	if err := p.w.Write(f); err != nil {
		p.t.Fatalf("send %v: %v", f.Kind, err)
	}
}

func (p *peer) sendKind(k fpdu.Kind, params ...fpdu.Param) {
	p.t.Helper()
	p.send(fpdu.New(k, p.srvID, 0, params...))
}

// expect reads the next FPDU and checks its kind (and diagnostic when the
// kind carries one and want is given).
func (p *peer) expect(k fpdu.Kind) *fpdu.FPDU {
	p.t.Helper()
	f, err := p.r.Next()
	if err != nil {
		p.t.Fatalf("waiting for %v: %v", k, err)
	}
	if f.Kind != k {
		d, _ := f.Params.Diagnostic()
		p.t.Fatalf("got %v (diag %v), want %v", f.Kind, d, k)
	}
	return f
}

func (p *peer) expectDiag(k fpdu.Kind, want fpdu.Diagnostic) *fpdu.FPDU {
	p.t.Helper()
	f := p.expect(k)
	d, ok := f.Params.Diagnostic()
	if !ok || d != want {
		p.t.Fatalf("%v diagnostic %v (present %v), want %v", k, d, ok, want)
	}
	return f
}

// expectClosed checks that the server closed the connection.
func (p *peer) expectClosed() {
	p.t.Helper()
	f, err := p.r.Next()
	if err == nil {
		p.t.Fatalf("got %v, want the connection closed", f.Kind)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		p.t.Fatalf("want EOF, got %v", err)
	}
}

// TLV helpers for exact bytes.
func pi(id fpdu.PI, v ...byte) []byte { return append([]byte{byte(id), byte(len(v))}, v...) }
func pis(id fpdu.PI, s string) []byte { return pi(id, []byte(s)...) }
func pgi(id fpdu.PI, units ...[]byte) []byte {
	body := bytes.Join(units, nil)
	return append([]byte{byte(id), byte(len(body))}, body...)
}

// frame wraps an FPDU body (after its 6-byte header) into a framed FPDU.
func frame(k fpdu.Kind, dst, src byte, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	n := 6 + len(b)
	out := []byte{byte(n >> 8), byte(n), byte(n >> 8), byte(n), k.Phase(), k.Type(), dst, src}
	return append(out, b...)
}

// cxConnect is the exact CONNECT of digest 9.1, with its frame prefix.
var cxConnect = []byte("\x00\x2f\x00\x2f\x40\x20\x00\x62" +
	"\x03\x08CXCLIENT\x04\x08PESITSRV\x05\x08test123 \x06\x01\x02\x07\x03\x00\x20\x02\x16\x01\x02")

// connect sends a CONNECT with the given fields and returns the answer.
func (p *peer) connectWith(server, requester, pw string, version byte, access byte) *fpdu.FPDU {
	p.t.Helper()
	units := [][]byte{pis(fpdu.PIRequesterID, requester), pis(fpdu.PIServerID, server)}
	if pw != "" {
		units = append(units, pis(fpdu.PIAccessControl, pw))
	}
	units = append(units, pi(fpdu.PIVersion, version), pi(fpdu.PISyncOption, 0, 32, 2), pi(fpdu.PIAccessType, access))
	p.raw(frame(fpdu.Connect, 0, 0x62, units...))
	f, err := p.r.Next()
	if err != nil {
		p.t.Fatalf("waiting for ACONNECT: %v", err)
	}
	if f.Kind == fpdu.AConnect {
		p.srvID = f.SrcID
	}
	return f
}

func (p *peer) connect() {
	p.t.Helper()
	f := p.connectWith(serverID, partnerID, password, 2, 2)
	if f.Kind != fpdu.AConnect {
		d, _ := f.Params.Diagnostic()
		p.t.Fatalf("CONNECT answered %v %v", f.Kind, d)
	}
}

func (p *peer) release() {
	p.t.Helper()
	p.send(fpdu.New(fpdu.Release, p.srvID, 0x62, diagParam(fpdu.DiagOK)))
	p.expect(fpdu.RelConf)
	p.expectClosed()
}

func diagParam(d fpdu.Diagnostic) fpdu.Param {
	b := d.Bytes()
	return fpdu.Param{ID: fpdu.PIDiagnostic, Value: b[:]}
}

// createBody is a CX-like CREATE; pi13 is sent on 3 bytes as CX does.
type createOpts struct {
	file    string
	pi13    uint32
	restart bool
	entity  uint16
	recLen  uint16
	spaceKB uint32
	text    bool   // PI 16 = 0 (ASCII), else binary
	created string // PI 51, default 260119012505
}

func createFrame(dst byte, o createOpts) []byte {
	if o.entity == 0 {
		o.entity = 0xFFFF
	}
	if o.recLen == 0 {
		o.recLen = 1024
	}
	if o.spaceKB == 0 {
		o.spaceKB = 1024
	}
	if o.created == "" {
		o.created = "260119012505"
	}
	code := byte(2)
	if o.text {
		code = 0
	}
	units := [][]byte{
		pgi(fpdu.PGIFileID, pi(fpdu.PIFileType, 0), pis(fpdu.PIFileName, o.file)),
		pi(fpdu.PITransferID, byte(o.pi13>>16), byte(o.pi13>>8), byte(o.pi13)),
	}
	if o.restart {
		units = append(units, pi(fpdu.PIRestart, 1))
	}
	units = append(units,
		pi(fpdu.PIDataCode, code), pi(fpdu.PIPriority, 0), pi(fpdu.PIEntitySize, byte(o.entity>>8), byte(o.entity)),
		pgi(fpdu.PGILogical, pi(fpdu.PIArticleFormat, 0x80), pi(fpdu.PIArticleLength, byte(o.recLen>>8), byte(o.recLen))),
		pgi(fpdu.PGIPhysical, pi(fpdu.PISpaceUnit, 0), pi(fpdu.PISpaceMax, byte(o.spaceKB>>24), byte(o.spaceKB>>16), byte(o.spaceKB>>8), byte(o.spaceKB))),
		pgi(fpdu.PGIHistorical, pis(fpdu.PICreated, o.created)))
	return frame(fpdu.Create, dst, 0, units...)
}

func selectFrame(dst byte, file string, pi13 uint32, restart bool) []byte {
	units := [][]byte{
		pgi(fpdu.PGIFileID, pis(fpdu.PIRequesterID, partnerID), pis(fpdu.PIServerID, serverID), pi(fpdu.PIFileType, 0), pis(fpdu.PIFileName, file)),
		pi(fpdu.PITransferID, byte(pi13>>16), byte(pi13>>8), byte(pi13)),
		pi(fpdu.PIAttributes, 0xE0),
	}
	if restart {
		units = append(units, pi(fpdu.PIRestart, 1))
	}
	units = append(units, pi(fpdu.PIPriority, 0), pi(fpdu.PIEntitySize, 0xFF, 0xFF))
	return frame(fpdu.Select, dst, 0, units...)
}

// openForWrite: CREATE (accepted), ORF, WRITE; returns the restart point.
func (p *peer) openForWrite(o createOpts) uint64 {
	p.t.Helper()
	p.raw(createFrame(p.srvID, o))
	p.expectDiag(fpdu.AckCreate, fpdu.DiagOK)
	p.sendKind(fpdu.ORF, fpdu.Param{ID: fpdu.PICompression, Value: []byte{0, 0}})
	p.expectDiag(fpdu.AckORF, fpdu.DiagOK)
	p.sendKind(fpdu.Write)
	f := p.expectDiag(fpdu.AckWrite, fpdu.DiagOK)
	n, ok := f.Params.Uint(fpdu.PIRestartPoint)
	if !ok {
		p.t.Fatal("ACK(WRITE) without PI 18")
	}
	return n
}

// closeFile: CRF, DESELECT.
func (p *peer) closeFile() {
	p.t.Helper()
	p.sendKind(fpdu.CRF, diagParam(fpdu.DiagOK))
	p.expectDiag(fpdu.AckCRF, fpdu.DiagOK)
	p.sendKind(fpdu.Deselect, diagParam(fpdu.DiagOK))
	p.expectDiag(fpdu.AckDeselect, fpdu.DiagOK)
}

func uintParam(id fpdu.PI, v uint64) fpdu.Param {
	var ps fpdu.Params
	ps.AddUint(id, v)
	return ps[0]
}

func randomData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// files lists every file under dir (hidden ones included), relative.
func files(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func dialErr(addr net.Addr) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr.String(), time.Second)
	if err == nil {
		c.Close()
	}
	return c, err
}

func ioReadFull(p *peer, b []byte) (int, error) { return io.ReadFull(p.c, b) }
