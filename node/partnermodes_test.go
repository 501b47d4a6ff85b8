package node

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// dtfShapes pulls vfile as partner over raw FPDUs and reports the data it
// got, how many DTFs carried several articles and how many segments came.
func dtfShapes(t *testing.T, addr, partner, vfile string) (data []byte, multi, segments int) {
	t.Helper()
	r, w := dialFPDU(t, addr)
	var srv byte
	exchange := func(f *fpdu.FPDU, want fpdu.Kind) *fpdu.FPDU {
		t.Helper()
		f.DstID = srv
		if err := w.Write(f); err != nil {
			t.Fatalf("send %v: %v", f.Kind, err)
		}
		g, err := r.Next()
		if err != nil {
			t.Fatalf("after %v: %v", f.Kind, err)
		}
		if d, _ := g.Params.Diagnostic(); g.Kind != want || !d.OK() {
			t.Fatalf("after %v: %v %v, want %v", f.Kind, g.Kind, d, want)
		}
		return g
	}
	var p fpdu.Params
	p.AddString(fpdu.PIRequesterID, partner)
	p.AddString(fpdu.PIServerID, "PESITSRV")
	p.AddString(fpdu.PIAccessControl, "test123")
	p.AddUint(fpdu.PIVersion, 2)
	p.AddSyncOption(64, 2)
	p.AddUint(fpdu.PIAccessType, 1)
	ac := exchange(&fpdu.FPDU{Kind: fpdu.Connect, SrcID: 1, Params: p}, fpdu.AConnect)
	srv = ac.SrcID
	var id, q fpdu.Params
	id.AddUint(fpdu.PIFileType, 0)
	id.AddString(fpdu.PIFileName, vfile)
	q.AddGroup(fpdu.PGIFileID, id)
	q.AddUint(fpdu.PITransferID, 0)
	q.AddUint(fpdu.PIPriority, 0)
	q.AddUint(fpdu.PIEntitySize, 4096)
	exchange(&fpdu.FPDU{Kind: fpdu.Select, Params: q}, fpdu.AckSelect)
	var o fpdu.Params
	o.Add(fpdu.PICompression, []byte{0, 0})
	exchange(&fpdu.FPDU{Kind: fpdu.ORF, Params: o}, fpdu.AckORF)
	var rd fpdu.Params
	rd.AddUint(fpdu.PIRestartPoint, 0)
	exchange(&fpdu.FPDU{Kind: fpdu.Read, Params: rd}, fpdu.AckRead)
	articles := 0
	for done := false; !done; {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("data phase: %v", err)
		}
		switch f.Kind {
		case fpdu.DTF:
			n := 0
			if err := f.ForEachArticle(func(a []byte) error { data = append(data, a...); n++; return nil }); err != nil {
				t.Fatal(err)
			}
			articles += n
			if n > 1 {
				multi++
			}
		case fpdu.DTFDA, fpdu.DTFMA, fpdu.DTFFA:
			data = append(data, f.Data...)
			segments++
			if f.Kind == fpdu.DTFFA {
				articles++
			}
		case fpdu.Syn:
			var a fpdu.Params
			n, _ := f.Params.Uint(fpdu.PISyncNumber)
			a.AddUint(fpdu.PISyncNumber, n)
			if err := w.Write(&fpdu.FPDU{Kind: fpdu.AckSyn, DstID: srv, Params: a}); err != nil {
				t.Fatal(err)
			}
		case fpdu.DTFEnd:
			done = true
		default:
			t.Fatalf("%v in the data phase", f.Kind)
		}
	}
	var te fpdu.Params
	te.AddUint(fpdu.PIByteCount, uint64(len(data)))
	te.AddUint(fpdu.PIArticleCount, uint64(articles))
	exchange(&fpdu.FPDU{Kind: fpdu.TransEnd, Params: te}, fpdu.AckTransEnd)
	return data, multi, segments
}

// TestPartnerSendModes (issue 14, item 3): multiArticle and segment,
// declared in the configuration file, reach the PeSIT server through the
// store and are shown by the API: a multiArticle partner pulls multi-article
// DTFs, a segment partner segmented articles, a plain partner neither.
func TestPartnerSendModes(t *testing.T) {
	dir := t.TempDir()
	cfg := baseConfig(t, dir, "modes")
	cfg.PeSIT.Partners = append(cfg.PeSIT.Partners,
		config.Partner{ID: "MULTI", Password: "test123", Access: "read", MultiArticle: true},
		config.Partner{ID: "SEG", Password: "test123", Access: "read", Segment: true})
	cfg.PeSIT.Files = append(cfg.PeSIT.Files,
		config.VirtualFile{ID: "SMALLREC", Direction: "send", SendDir: filepath.Join(dir, "out"), RecordLength: 512},
		config.VirtualFile{ID: "BIGREC", Direction: "send", SendDir: filepath.Join(dir, "out"), RecordLength: 16384})
	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o750); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes
	for _, f := range []string{"SMALLREC", "BIGREC"} {
		if err := os.WriteFile(filepath.Join(dir, "out", f), want, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	n := startNode(t, cfg)
	for _, tc := range []struct {
		partner, file string
		multi, seg    bool
	}{
		{"MULTI", "SMALLREC", true, false},
		{"CXCLIENT", "SMALLREC", false, false},
		{"SEG", "BIGREC", false, true},
	} {
		t.Run(tc.partner, func(t *testing.T) {
			got, multi, segs := dtfShapes(t, n.pesit, tc.partner, tc.file)
			if !bytes.Equal(got, want) {
				t.Fatalf("pulled %d bytes, differ from the source", len(got))
			}
			if (multi > 0) != tc.multi || (segs > 0) != tc.seg {
				t.Fatalf("%d multi-article DTFs, %d segments; want multi %v, segmented %v", multi, segs, tc.multi, tc.seg)
			}
		})
	}
	code, body := n.do(t, "GET", "/api/v1/partners/MULTI", nil)
	var p struct {
		MultiArticle bool `json:"multiArticle"`
		Segment      bool `json:"segment"`
	}
	if err := json.Unmarshal(body, &p); code != 200 || err != nil || !p.MultiArticle || p.Segment {
		t.Fatalf("GET partner MULTI: %d %s", code, body)
	}
}
