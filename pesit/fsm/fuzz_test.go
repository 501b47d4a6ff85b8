package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/vectis-ft/vectis/internal/testenv/pesitcapture"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// FuzzResponder feeds a byte stream, split into FPDUs by the codec's Reader
// as a server would read it, to a responder that answers every request
// positively (as far as the negotiated access type allows). Whatever the
// bytes, the machine must not panic, every FPDU must be either a valid
// transition or a *Violation that leaves the state alone, and every answer
// the machine says is owed must be accepted by Sent.
func FuzzResponder(f *testing.F) {
	// The capture sessions are the committed corpus,
	// testdata/fuzz/FuzzResponder (kept in step by TestFuzzCorpus).
	f.Add(synthStream(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzResponder(t, b)
	})
}

// captureStreams are the fuzz seeds the captures give: each session as
// recorded (PGIs and data lost) and restored, with the data phase cut after
// two sync points to keep the seed small (the session still runs to
// RELEASE).
func captureStreams(t testing.TB) [][]byte {
	var out [][]byte
	for _, name := range pesitcapture.Names {
		recs := pesitcapture.Load(t, name)
		out = append(out, stream(t, recs, false, 0, len(recs)))
		cut, end := syncCut(recs, 2)
		out = append(out, append(stream(t, recs, true, 0, cut), stream(t, recs, true, end, len(recs))...))
	}
	return out
}

// TestFuzzCorpus: the committed seed corpus of FuzzResponder is exactly
// what the captures give (regenerate with VECTIS_UPDATE_CORPUS=1 go test
// -run TestFuzzCorpus).
func TestFuzzCorpus(t *testing.T) {
	var entries [][]byte
	for _, s := range captureStreams(t) {
		entries = append(entries, pesitcapture.CorpusEntry(s))
	}
	pesitcapture.CheckCorpus(t, "FuzzResponder", entries)
}

// synthStream is a synthetic session touching what the captures do not:
// resync, a segmented article, IDT with suspension, messages, a read.
func synthStream(t testing.TB) []byte {
	kb := bytes.Repeat([]byte{'k'}, 100)
	var synth []byte
	for _, g := range []*fpdu.FPDU{
		connect(2, &SyncOption{IntervalKB: 4, Window: 2}, true), create(false), sample(fpdu.ORF), mk(fpdu.Write),
		data(fpdu.DTF, kb), syn(1), data(fpdu.DTFDA, kb), data(fpdu.DTFMA, kb), data(fpdu.DTFFA, kb),
		mk(fpdu.Resyn, diagPI(fpdu.DiagTransmissionError), pi(fpdu.PIRestartPoint, 1)),
		multiDTF(3, 10), idt(8, fpdu.DiagVoluntaryStop), sample(fpdu.CRF), sample(fpdu.Deselect),
		sample(fpdu.MsgDM), sample(fpdu.MsgMM), sample(fpdu.MsgFM), sample(fpdu.Msg),
		selectF(true), sample(fpdu.ORF), sample(fpdu.Read), mk(fpdu.TransEnd), sample(fpdu.CRF), sample(fpdu.Deselect),
		sample(fpdu.Release),
	} {
		b, err := fpdu.AppendEncode(nil, g)
		if err != nil {
			t.Fatal(err)
		}
		synth = append(synth, byte(len(b)>>8), byte(len(b)))
		synth = append(synth, b...)
	}
	return synth
}

// syncCut returns the index after the n-th SYN of recs and the index of
// DTF.END (len(recs) for both when there are none).
func syncCut(recs []pesitcapture.Record, n int) (cut, end int) {
	cut, end = len(recs), len(recs)
	for i, r := range recs {
		k, _ := fpdu.KindOf(r.FPDU[2], r.FPDU[3])
		if k == fpdu.Syn && !r.Sent {
			if n--; n == 0 {
				cut = i + 1
			}
		}
		if k == fpdu.DTFEnd && end == len(recs) {
			end = i
		}
	}
	if cut == len(recs) {
		end = len(recs)
	}
	return cut, end
}

// stream frames the received FPDUs of recs[from:to] as a TCP stream
// (2-byte length + FPDU), restoring the recorder's losses if asked.
func stream(t testing.TB, recs []pesitcapture.Record, restored bool, from, to int) []byte {
	var out []byte
	for _, r := range recs[from:to] {
		if r.Sent {
			continue
		}
		b := r.FPDU
		if restored {
			f, err := fpdu.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			restore(&f)
			if f.Kind.IsData() {
				f.Data = f.Data[:min(len(f.Data), 16)]
				if f.Kind == fpdu.DTF && f.SrcID > 1 {
					f.Data = nil
					for range int(f.SrcID) {
						f.Data = append(f.Data, 0, 4, 'a', 'b', 'c', 'd')
					}
				}
			}
			if b, err = fpdu.AppendEncode(nil, &f); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, byte(len(b)>>8), byte(len(b)))
		out = append(out, b...)
	}
	return out
}

// fuzzResponder runs the responder on b and returns its final state and the
// number of violations it reported.
func fuzzResponder(t *testing.T, b []byte) (final State, violations int) {
	r := fpdu.NewReader(bytes.NewReader(b))
	m := NewResponder()
	for range 10000 {
		f, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				if _, ok := fpdu.DiagnosticOf(err); !ok {
					t.Fatalf("codec error without a diagnostic: %v", err)
				}
				violations++
			}
			return m.State(), violations
		}
		before := m.State()
		act, err := m.Received(f)
		if err != nil {
			var v *Violation
			if !errors.As(err, &v) {
				t.Fatalf("%v in %v: error %v is not a *Violation", f.Kind, before, err)
			}
			if v.Sent || v.State != before || m.State() != before || v.Diag.Type() < 2 {
				t.Fatalf("%v in %v: bad violation %+v, state now %v", f.Kind, before, v, m.State())
			}
			if err := m.Sent(fpdu.NewAbort(0x62, 0xE2, v.Diag)); err != nil || m.State() != CN01 {
				t.Fatalf("ABORT after a violation in %v: %v", before, err)
			}
			violations++
			continue
		}
		if !m.State().belongsTo(Responder) {
			t.Fatalf("%v in %v: landed in %v", f.Kind, before, m.State())
		}
		switch act {
		case Ignore:
			if m.State() != before {
				t.Fatalf("ignored %v moved %v -> %v", f.Kind, before, m.State())
			}
		case Close:
			if m.State() != CN01 {
				t.Fatalf("close in %v", m.State())
			}
		case Answer:
			k, ok := m.Owed()
			if !ok {
				t.Fatalf("%v in %v: answer owed but Owed says none", f.Kind, m.State())
			}
			for _, a := range answersFor(m, k, f) {
				if err := m.Sent(a); err != nil {
					t.Fatalf("answer %v in %v to %v: %v", a.Kind, m.State(), f.Kind, err)
				}
			}
		case Deliver:
			if _, ok := m.Owed(); ok && m.State() != before {
				t.Fatalf("%v delivered into %v where an answer is owed", f.Kind, m.State())
			}
			if f.Kind == fpdu.Syn && m.Window().Pending() {
				if err := m.Sent(ackSyn(m.Window().LastSent())); err != nil {
					t.Fatalf("ACK(SYN): %v", err)
				}
			}
		default:
			t.Fatalf("%v in %v: action %v", f.Kind, before, act)
		}
	}
	return m.State(), violations
}

// TestFuzzSeedsRunDeep: the restored captures and the synthetic session
// run from CONNECT to RELEASE without a violation, so the fuzzer starts
// from inputs that reach every phase.
func TestFuzzSeedsRunDeep(t *testing.T) {
	seeds := map[string][]byte{"synthetic": synthStream(t)}
	for _, name := range pesitcapture.Names {
		recs := pesitcapture.Load(t, name)
		cut, end := syncCut(recs, 2)
		seeds[name] = append(stream(t, recs, true, 0, cut), stream(t, recs, true, end, len(recs))...)
	}
	for name, b := range seeds {
		if final, v := fuzzResponder(t, b); final != CN01 || v != 0 {
			t.Errorf("%s: ended in %v after %d violations", name, final, v)
		}
	}
}

// answersFor is what a cooperative server sends when it owes k after
// receiving req: a positive answer when the rules allow it (2/226 for an
// access-type violation), and after a positive ACK(READ) a one-article file.
func answersFor(m *Machine, k fpdu.Kind, req *fpdu.FPDU) []*fpdu.FPDU {
	switch k {
	case fpdu.AConnect:
		v, ok := req.Params.Bytes(fpdu.PISyncOption)
		o, err := NegotiateSync(v, ok, SyncOption{IntervalKB: 32, Window: 2})
		if err != nil {
			return []*fpdu.FPDU{mk(fpdu.RConnect, diagPI(fpdu.DiagBadParameter))}
		}
		v, ok = req.Params.Bytes(fpdu.PIResync)
		rs, _ := NegotiateResync(v, ok, true)
		return []*fpdu.FPDU{aconnect(o, rs == 1)}
	case fpdu.AckCreate, fpdu.AckSelect:
		if a, _ := m.AccessType(); !a.Allows(req.Kind) {
			return []*fpdu.FPDU{answer(k, fpdu.DiagTransferRefused)}
		}
		return []*fpdu.FPDU{answer(k, fpdu.DiagOK)}
	case fpdu.AckWrite:
		return []*fpdu.FPDU{answer(k, fpdu.DiagOK)}
	case fpdu.AckRead:
		return []*fpdu.FPDU{sample(fpdu.AckRead), data(fpdu.DTF, []byte("x")), sample(fpdu.DTFEnd)}
	case fpdu.AckResyn:
		p, _ := req.Params.Uint(fpdu.PIRestartPoint)
		return []*fpdu.FPDU{mk(k, pi(fpdu.PIRestartPoint, u24(uint32(p))...))}
	}
	return []*fpdu.FPDU{sample(k)}
}
