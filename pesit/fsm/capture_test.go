package fsm

import (
	"bytes"
	"testing"

	"github.com/vectis-ft/vectis/internal/testenv/pesitcapture"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// restore undoes the recorder's artefacts on a received FPDU: it emptied
// PGIs and dropped DTF payloads (README). The PGIs get the contents CX sends
// (digest §3.3) and the data FPDUs CX's layout (digest §1.3): DTF(N=3) of
// 1024-byte articles, DTFDA of 1006 bytes and DTFFA of 18.
func restore(f *fpdu.FPDU) {
	fill := map[fpdu.PI]fpdu.Param{
		fpdu.PGIFileID:     fileID("TESTFILE"),
		fpdu.PGILogical:    logical(1024),
		fpdu.PGIPhysical:   physical(),
		fpdu.PGIHistorical: historical(),
	}
	// The decoder drops an empty PGI (a zero LI reads as absent).
	want := map[fpdu.Kind][]fpdu.PI{
		fpdu.Create: {fpdu.PGIFileID, fpdu.PGILogical, fpdu.PGIPhysical, fpdu.PGIHistorical},
		fpdu.Select: {fpdu.PGIFileID},
	}
	for _, id := range want[f.Kind] {
		if _, ok := f.Params.Group(id); !ok {
			f.Params = append(f.Params, fill[id])
		}
	}
	art := bytes.Repeat([]byte{'z'}, 1024)
	switch {
	case f.Kind == fpdu.DTF && f.SrcID > 1 && len(f.Data) == 0:
		f.Data = nil // it aliases the capture: appending would overwrite the next record
		for range int(f.SrcID) {
			f.Data = append(f.Data, 4, 0)
			f.Data = append(f.Data, art...)
		}
	case f.Kind == fpdu.DTF && len(f.Data) == 0:
		f.Data = art
	case f.Kind == fpdu.DTFDA && len(f.Data) == 0:
		f.Data = art[:1006]
	case f.Kind == fpdu.DTFMA && len(f.Data) == 0:
		f.Data = art[:1]
	case f.Kind == fpdu.DTFFA && len(f.Data) == 0:
		f.Data = art[:18]
	}
}

// TestCapturePush replays CX's real 1 MiB push (captures/cx-push-1mb.raw)
// through a responder: what CX sent goes to Received, what the recording
// server answered (byte-exact) to Sent. Every one of the 847 FPDUs must be
// valid where it occurs, and the session must end in CN01.
func TestCapturePush(t *testing.T) {
	recs := pesitcapture.Load(t, "cx-push-1mb.raw")
	m := NewResponder()
	counts := map[fpdu.Kind]int{}
	for i, r := range recs {
		f, err := fpdu.Decode(r.FPDU)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		counts[f.Kind]++
		before := m.State()
		if r.Sent {
			err = m.Sent(&f)
		} else {
			restore(&f)
			var act Action
			act, err = m.Received(&f)
			if err == nil && act == Ignore {
				t.Fatalf("record %d: %v ignored in %v", i, f.Kind, before)
			}
		}
		if err != nil {
			t.Fatalf("record %d: %v in %v: %v", i, f.Kind, before, err)
		}
	}
	if m.State() != CN01 {
		t.Fatalf("ended in %v", m.State())
	}
	if counts[fpdu.Syn] != 31 || counts[fpdu.AckSyn] != 31 || counts[fpdu.DTF] != 256 {
		t.Fatalf("capture shape changed: %v SYN, %v ACK(SYN), %v DTF", counts[fpdu.Syn], counts[fpdu.AckSyn], counts[fpdu.DTF])
	}
}

// TestCapturePull replays the recorded part of CX's pull: the data phase
// was not recorded, so the replay stops at READ and checks what precedes.
func TestCapturePull(t *testing.T) {
	recs := pesitcapture.Load(t, "cx-pull-1mb.raw")
	m := NewResponder()
	for i, r := range recs {
		f, err := fpdu.Decode(r.FPDU)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if r.Sent {
			err = m.Sent(&f)
		} else {
			restore(&f)
			_, err = m.Received(&f)
		}
		if err != nil {
			t.Fatalf("record %d: %v: %v", i, f.Kind, err)
		}
		if f.Kind == fpdu.Read {
			break
		}
	}
	if m.State() != TDL01B || !m.RequesterReceives() {
		t.Fatalf("after READ: %v, dr %v", m.State(), m.RequesterReceives())
	}
	if m.SyncOption() != (SyncOption{IntervalKB: 32, Window: 2}) {
		t.Fatalf("negotiated %v", m.SyncOption())
	}
}
