package fsm

import (
	"bytes"
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// dataPhase returns a requester/responder pair in TDE02A/TDE02B with the
// given sync option.
func dataPhase(t testing.TB, o SyncOption) (c, s *Machine) {
	c, s = NewRequester(), NewResponder()
	steps := []struct {
		from, to *Machine
		f        *fpdu.FPDU
	}{
		{c, s, connect(2, &o, false)},
		{s, c, aconnect(o, false)},
		{c, s, create(false)},
		{s, c, answer(fpdu.AckCreate, fpdu.DiagOK)},
		{c, s, sample(fpdu.ORF)},
		{s, c, sample(fpdu.AckORF)},
		{c, s, mk(fpdu.Write)},
		{s, c, answer(fpdu.AckWrite, fpdu.DiagOK)},
	}
	for _, st := range steps {
		if err := st.from.Sent(st.f); err != nil {
			t.Fatal(err)
		}
		if _, err := st.to.Received(st.f); err != nil {
			t.Fatal(err)
		}
	}
	if c.State() != TDE02A || s.State() != TDE02B {
		t.Fatalf("states %v %v", c.State(), s.State())
	}
	return c, s
}

func multiDTF(n, size int) *fpdu.FPDU {
	art := bytes.Repeat([]byte{'d'}, size)
	var p []byte
	for range n {
		p = append(p, byte(size>>8), byte(size))
		p = append(p, art...)
	}
	f := data(fpdu.DTF, p)
	f.SrcID = byte(n)
	return f
}

// TestNoAllocsPerDataFPDU: Received and Sent of DTF (single and
// multi-article) and of a segmented article do not allocate, with sync
// points negotiated (undefined interval so the loop never needs a SYN) and
// without.
func TestNoAllocsPerDataFPDU(t *testing.T) {
	for _, o := range []SyncOption{{}, {IntervalKB: IntervalUndefined, Window: 2}} {
		c, s := dataPhase(t, o)
		single, multi := data(fpdu.DTF, bytes.Repeat([]byte{'s'}, 1024)), multiDTF(3, 1024)
		da, ma, fa := data(fpdu.DTFDA, []byte("first")), data(fpdu.DTFMA, []byte("middle")), data(fpdu.DTFFA, []byte("last"))
		seq := []*fpdu.FPDU{single, multi, da, ma, fa}
		n := testing.AllocsPerRun(200, func() {
			for _, f := range seq {
				if err := c.Sent(f); err != nil {
					t.Fatal(err)
				}
				if act, err := s.Received(f); err != nil || act != Deliver {
					t.Fatal(act, err)
				}
			}
		})
		if n != 0 {
			t.Fatalf("sync %v: %.1f allocations per 5 data FPDUs sent and received, want 0", o, n)
		}
		if c.State() != TDE02A || s.State() != TDE02B {
			t.Fatalf("states %v %v", c.State(), s.State())
		}
	}
}

// BenchmarkReceivedDTF measures the machine's cost per received data FPDU
// (a 3-article DTF), the hot path of a push.
func BenchmarkReceivedDTF(b *testing.B) {
	_, s := dataPhase(b, SyncOption{IntervalKB: IntervalUndefined, Window: 2})
	f := multiDTF(3, 1024)
	b.ReportAllocs()
	b.SetBytes(3 * 1024)
	for b.Loop() {
		if _, err := s.Received(f); err != nil {
			b.Fatal(err)
		}
	}
}
