package node

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/store"
)

// TestCancelLiveTransfer: the API cancels a transfer a session of this node
// is receiving, by the store's id alone: the node asks its servers
// (server.CancelTransfer), whose session holds that very id, and the
// partner gets IDT with PI 19 = 12. No map from store ids to anything else
// is involved.
func TestCancelLiveTransfer(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, baseConfig(t, dir, "cancel-live"))

	r, w := dialFPDU(t, n.pesit)
	var srv byte
	send := func(f *fpdu.FPDU) {
		t.Helper()
		f.DstID = srv
		if err := w.Write(f); err != nil {
			t.Fatalf("send %v: %v", f.Kind, err)
		}
	}
	expect := func(want fpdu.Kind) *fpdu.FPDU {
		t.Helper()
		g, err := r.Next()
		if err != nil {
			t.Fatalf("waiting for %v: %v", want, err)
		}
		if d, _ := g.Params.Diagnostic(); g.Kind != want || (want != fpdu.IDT && !d.OK()) {
			t.Fatalf("got %v %v, want %v", g.Kind, d, want)
		}
		return g
	}
	var p fpdu.Params
	p.AddString(fpdu.PIRequesterID, "CXCLIENT")
	p.AddString(fpdu.PIServerID, "PESITSRV")
	p.AddString(fpdu.PIAccessControl, "test123")
	p.AddUint(fpdu.PIVersion, 2)
	p.AddSyncOption(64, 2)
	p.AddUint(fpdu.PIAccessType, 0)
	send(&fpdu.FPDU{Kind: fpdu.Connect, SrcID: 1, Params: p})
	srv = expect(fpdu.AConnect).SrcID

	const pi13 = 0x3131
	var id, logical, physical, historical, q fpdu.Params
	id.AddUint(fpdu.PIFileType, 0)
	id.AddString(fpdu.PIFileName, "INBOX")
	logical.Add(fpdu.PIArticleFormat, []byte{0x80})
	logical.AddUint(fpdu.PIArticleLength, 1024)
	physical.AddUint(fpdu.PISpaceUnit, 0)
	physical.AddUint(fpdu.PISpaceMax, 64)
	historical.AddString(fpdu.PICreated, "260119012505")
	q.AddGroup(fpdu.PGIFileID, id)
	q.AddUint(fpdu.PITransferID, pi13)
	q.AddUint(fpdu.PIDataCode, 2)
	q.AddUint(fpdu.PIPriority, 0)
	q.AddUint(fpdu.PIEntitySize, 4096)
	q.AddGroup(fpdu.PGILogical, logical)
	q.AddGroup(fpdu.PGIPhysical, physical)
	q.AddGroup(fpdu.PGIHistorical, historical)
	send(&fpdu.FPDU{Kind: fpdu.Create, Params: q})
	expect(fpdu.AckCreate)
	var o fpdu.Params
	o.Add(fpdu.PICompression, []byte{0, 0})
	send(&fpdu.FPDU{Kind: fpdu.ORF, Params: o})
	expect(fpdu.AckORF)
	send(&fpdu.FPDU{Kind: fpdu.Write})
	expect(fpdu.AckWrite)
	send(&fpdu.FPDU{Kind: fpdu.DTF, Data: make([]byte, 512)})

	var live string
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("the transfer in progress", func() bool {
		for _, tr := range listTransfers(t, n, "?status=in_progress") {
			if tr.PesitID == pi13 {
				live = tr.ID
			}
		}
		return live != ""
	}))
	// 202: a session runs it (a resting transfer would be 200).
	if code, body := n.do(t, "POST", "/api/v1/transfers/"+live+"/cancel", nil); code != http.StatusAccepted || !strings.Contains(string(body), `"cancelling":true`) {
		t.Fatalf("cancel of a live transfer: %d %s", code, body)
	}
	idt := expect(fpdu.IDT)
	if code, _ := idt.Params.Uint(fpdu.PIEndCode); code != 12 {
		t.Fatalf("IDT PI 19 = %d, want 12 (cancelled by the server)", code)
	}
	send(&fpdu.FPDU{Kind: fpdu.AckIDT})
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("the record cancelled", func() bool {
		return transferOf(t, n, live).Status == store.StatusCancelled
	}))
}

// dialFPDU connects to a PeSIT server for raw FPDUs, with 20 s for the
// whole exchange; the connection closes with the test.
func dialFPDU(t *testing.T, addr string) (*fpdu.Reader, *fpdu.Writer) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return fpdu.NewReader(c), fpdu.NewWriter(c)
}
