package node

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/pesit/client"
)

// withholdingProxy forwards PeSIT frames both ways and, on its first
// connection, cuts both sides instead of forwarding the server's
// ACK(TRANS.END): the requester never learns that the transfer ended.
type withholdingProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	wg     sync.WaitGroup
}

func newWithholdingProxy(t *testing.T, target string) *withholdingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &withholdingProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *withholdingProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.wg.Add(2)
		go func() { defer p.wg.Done(); _, _ = io.Copy(up, c); c.Close(); up.Close() }()
		go func() { defer p.wg.Done(); p.down(c, up); c.Close(); up.Close() }()
	}
}

// down copies server frames to the requester (2-byte length, then the
// FPDU: length, phase, type) until the first ACK(TRANS.END).
func (p *withholdingProxy) down(c, up net.Conn) {
	var hdr [2]byte
	for {
		if _, err := io.ReadFull(up, hdr[:]); err != nil {
			return
		}
		nsdu := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(up, nsdu); err != nil {
			return
		}
		if len(nsdu) >= 4 && nsdu[2] == 0xC0 && nsdu[3] == 0x37 {
			p.mu.Lock()
			first := !p.cut
			p.cut = true
			p.mu.Unlock()
			if first {
				return
			}
		}
		if _, err := c.Write(append(hdr[:], nsdu...)); err != nil {
			return
		}
	}
}

// TestRestartOfPublishedTransferIsDone is the regression test of issue 16
// defect 7. A push's file is published, then the node stops before the
// journal records the end (simulated on the real PostgreSQL record: it is
// left as the orphan sweep leaves a crashed transfer, interrupted at its
// last sync point) and the requester never got ACK(TRANS.END). The
// requester's restart must be recognised: same transfer id, the data resent
// from the sync point checked against the published file, the transfer
// reported done, and no second copy delivered.
func TestRestartOfPublishedTransferIsDone(t *testing.T) {
	url := pgtest.Start(t)
	dir := t.TempDir()
	cfg := baseConfig(t, dir, "solo")
	cfg.Store.Driver = "postgres"
	cfg.Store.URL = url
	n := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	src, sum := randomFile(t, dir, 1<<20+12345)
	state := filepath.Join(dir, "state")
	req := client.SendRequest{Source: src, VirtualFile: "INBOX", StateDir: state}
	proxy := newWithholdingProxy(t, n.pesit)
	first, err := client.Push(ctx, clientConfig(proxy.ln.Addr().String(), "CXCLIENT", "test123"), req, client.Retry{})
	if err == nil {
		t.Fatal("the push succeeded although its ACK(TRANS.END) was withheld")
	}
	inbox := filepath.Join(dir, "in", "CXCLIENT")
	if got := files(t, inbox); len(got) != 1 {
		t.Fatalf("after the first attempt the inbox holds %v, want the published file", got)
	}

	// The crash between publication and journal: the record is what the
	// orphan sweep makes of a transfer whose node died, interrupted at its
	// last sync point.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, `UPDATE transfers SET status = 'interrupted', sha256 = '', finished_at = NULL
		WHERE partner_id = 'CXCLIENT' AND pesit_id = $1 AND sync_number > 0`, int64(first.TransferID))
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("simulate the crash: %v, %d rows", err, tag.RowsAffected())
	}

	res, err := client.Push(ctx, clientConfig(n.pesit, "CXCLIENT", "test123"), req, client.Retry{})
	if err != nil {
		t.Fatalf("restart of the published transfer: %v", err)
	}
	if !res.Restarted || res.TransferID != first.TransferID {
		t.Errorf("restart: restarted %v, transfer id %d, want a restart of %d", res.Restarted, res.TransferID, first.TransferID)
	}
	got := files(t, inbox)
	if len(got) != 1 {
		t.Fatalf("the inbox holds %v: the file was delivered twice", got)
	}
	if fileSHA(t, filepath.Join(inbox, got[0])) != sum {
		t.Error("the published file changed")
	}
	var status, sha string
	if err := conn.QueryRow(ctx, `SELECT status, sha256 FROM transfers WHERE partner_id = 'CXCLIENT' AND pesit_id = $1`,
		int64(first.TransferID)).Scan(&status, &sha); err != nil {
		t.Fatal(err)
	}
	if status != "completed" || sha != sum {
		t.Errorf("record after the restart: %s, sha256 %s; want completed, %s", status, sha, sum)
	}
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
