package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/server"
)

// memDirectory serves one partner ("CLIENT", password "secret") and any
// virtual file name: pushes land in in/<name>, pulls read out/<name>.
type memDirectory struct {
	in, out   string
	multi     bool
	recFormat server.RecordFormat
	dataCode  uint8
}

func (d *memDirectory) Partner(_ context.Context, id string) (server.Partner, error) {
	if id != "CLIENT" {
		return server.Partner{}, fmt.Errorf("partner %q: %w", id, server.ErrNotFound)
	}
	return server.Partner{
		ID: id, Enabled: true, Access: server.AccessBoth,
		VerifyPassword: func(p string) bool { return p == "secret" },
		MultiArticle:   d.multi, Segmented: d.multi,
	}, nil
}

func (d *memDirectory) VirtualFile(_ context.Context, id string) (server.VirtualFile, error) {
	if id == "" || id == "MISSING" {
		return server.VirtualFile{}, fmt.Errorf("virtual file %q: %w", id, server.ErrNotFound)
	}
	return server.VirtualFile{ID: id, Direction: server.DirectionBoth, ReceiveDir: d.in, SendDir: d.out,
		Overwrite: true, RecordFormat: d.recFormat, DataCode: d.dataCode}, nil
}

// memJournal is a server.Journal in memory.
type memJournal struct {
	mu   sync.Mutex
	recs []*journalRec
}

type journalRec struct {
	t          server.Transfer
	sync       uint32
	offset     int64
	articles   int64
	outcome    *server.Outcome
	superseded bool
}

// Its ids are the records' positions, "1" first.
func (j *memJournal) Begin(_ context.Context, t server.Transfer) (server.TransferRef, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if r, err := j.rec(t.RestartOf); err == nil {
		r.superseded = true
	}
	j.recs = append(j.recs, &journalRec{t: t})
	return server.TransferRef{ID: strconv.Itoa(len(j.recs))}, nil
}

func (j *memJournal) rec(ref server.TransferRef) (*journalRec, error) {
	n, err := strconv.Atoi(ref.ID)
	if err != nil || n < 1 || n > len(j.recs) {
		return nil, fmt.Errorf("transfer %q: %w", ref.ID, server.ErrNotFound)
	}
	return j.recs[n-1], nil
}

func (j *memJournal) SyncPoint(_ context.Context, ref server.TransferRef, sync uint32, offset, articles int64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	r, err := j.rec(ref)
	if err != nil {
		return err
	}
	r.sync, r.offset, r.articles = sync, offset, articles
	return nil
}

func (j *memJournal) Finish(_ context.Context, ref server.TransferRef, o server.Outcome) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	r, err := j.rec(ref)
	if err != nil {
		return err
	}
	r.outcome = &o
	return nil
}

// lastOutcome is the outcome of the latest record; an error while it has
// none.
func (j *memJournal) lastOutcome() (*server.Outcome, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.recs) == 0 {
		return nil, errors.New("no journal record")
	}
	if o := j.recs[len(j.recs)-1].outcome; o != nil {
		return o, nil
	}
	return nil, fmt.Errorf("journal record %d has no outcome", len(j.recs))
}

func (j *memJournal) FindRestart(_ context.Context, k server.RestartKey) (server.RestartState, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i := len(j.recs) - 1; i >= 0; i-- {
		r := j.recs[i]
		if r.superseded || r.outcome == nil || r.outcome.Status != server.StatusInterrupted {
			continue
		}
		if r.t.Partner == k.Partner && r.t.Direction == k.Direction && r.t.PeSITID == k.PeSITID && r.t.VirtualFile == k.File {
			return server.RestartState{Transfer: server.TransferRef{ID: strconv.Itoa(i + 1)}, Path: r.t.Path, TempPath: r.t.TempPath,
				Sync: r.sync, Offset: r.offset, Articles: r.articles}, true, nil
		}
	}
	return server.RestartState{}, false, nil
}

// testServer is a real pesit/server on loopback, plain and TLS.
type testServer struct {
	t       testing.TB
	srv     *server.Server
	addr    string
	tlsAddr string
	in, out string
	pki     *testPKI
	jnl     *memJournal
}

type serverOpts struct {
	syncKB uint16
	window uint8
	entity int
	multi  bool // partner agreed to multi-article and segmented DTFs
	text   bool // virtual files are variable-format ASCII
	ebcdic bool // virtual files are variable-format EBCDIC
	tls    bool
	maxSes int
}

func startServer(t testing.TB, o serverOpts) *testServer {
	t.Helper()
	root := t.TempDir()
	ts := &testServer{t: t, in: filepath.Join(root, "in"), out: filepath.Join(root, "out"), jnl: &memJournal{}}
	for _, d := range []string{ts.in, ts.out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := &memDirectory{in: ts.in, out: ts.out, multi: o.multi, recFormat: server.RecordVariable, dataCode: 2}
	if o.text {
		dir.dataCode = 0
	}
	if o.ebcdic {
		dir.dataCode = 1
	}
	cfg := server.Config{ID: "VECTIS", Addr: "127.0.0.1:0", SyncIntervalKB: o.syncKB, SyncWindow: o.window,
		MaxEntitySize: o.entity, MaxSessions: o.maxSes, InactivityTimeout: 20 * time.Second}
	if o.tls {
		ts.pki = newTestPKI(t, "CLIENT")
		cfg.TLSAddr = "127.0.0.1:0"
		cfg.TLS = ts.pki.server
	}
	srv, err := server.New(cfg, server.Deps{Directory: dir, Journal: ts.jnl, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ts.srv = srv
	ts.addr = srv.Addr().String()
	if o.tls {
		ts.tlsAddr = srv.TLSAddr().String()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("server shutdown: %v", err)
		}
	})
	return ts
}

// config returns a client configuration for the server, over TLS when
// useTLS (with the test PKI's client certificate).
func (ts *testServer) config(useTLS bool, syncKB uint16, window uint8) Config {
	cfg := Config{Addr: ts.addr, RequesterID: "CLIENT", ServerID: "VECTIS", Password: "secret",
		SyncIntervalKB: syncKB, SyncWindow: window, Timeout: 20 * time.Second, Logger: testLogger(ts.t)}
	if useTLS {
		cfg.Addr = ts.tlsAddr
		cfg.TLS = ts.pki.client.Clone()
	}
	return cfg
}
