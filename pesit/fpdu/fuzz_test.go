package fpdu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"

	"github.com/vectis-ft/vectis/internal/testenv/pesitcapture"
)

// captureSeeds returns the distinct recorded FPDUs, in capture order.
func captureSeeds(tb testing.TB) [][]byte {
	var out [][]byte
	seen := map[string]bool{}
	for _, r := range pesitcapture.LoadAll(tb) {
		if !seen[string(r.FPDU)] {
			seen[string(r.FPDU)] = true
			out = append(out, r.FPDU)
		}
	}
	return out
}

// streams frames FPDUs into TCP-style streams of about 512 bytes at most.
func streams(fpdus [][]byte) [][]byte {
	var out [][]byte
	var stream []byte
	for _, s := range fpdus {
		if len(stream)+len(s) > 512 && len(stream) > 0 {
			out = append(out, stream)
			stream = nil
		}
		stream = append(stream, frame(s)...)
	}
	return append(out, stream)
}

// TestFuzzCorpus: the committed seed corpora of FuzzDecode and
// FuzzSplitFrames are exactly what the captures give (regenerate with
// VECTIS_UPDATE_CORPUS=1 go test -run TestFuzzCorpus).
func TestFuzzCorpus(t *testing.T) {
	entries := func(seeds [][]byte) [][]byte {
		var out [][]byte
		for _, s := range seeds {
			out = append(out, pesitcapture.CorpusEntry(s))
		}
		return out
	}
	t.Run("FuzzDecode", func(t *testing.T) {
		pesitcapture.CheckCorpus(t, "FuzzDecode", entries(captureSeeds(t)))
	})
	t.Run("FuzzSplitFrames", func(t *testing.T) {
		pesitcapture.CheckCorpus(t, "FuzzSplitFrames", entries(streams(captureSeeds(t))))
	})
}

func syntheticSeeds(tb testing.TB) [][]byte {
	var out [][]byte
	for _, k := range Kinds() {
		out = append(out, encode(tb, sample(k)))
	}
	dtf, _ := AppendDTF(nil, 1, []byte("ab"), nil, []byte("cde"))
	out = append(out, dtf,
		encode(tb, NewAbort(1, 2, DiagProtocolError, WithAbortPIForm())),
		[]byte{0, 8, 0, 0, 1, 1, 0, 0},                              // byte 5 = 1, prefixed empty article
		mustHex(tb, "00 0F C0 30 62 00 09 FF 00 05 0C 03 41 42 20"), // long LI in a PGI
	)
	return out
}

// FuzzDecode: Decode never panics; whatever it accepts, Validate, String
// and the article walk survive; and where re-encoding succeeds, encoding is
// a fixed point: decode(encode(f)) has f's values and encodes to the same
// bytes.
func FuzzDecode(f *testing.F) {
	// The recorded FPDUs are the committed corpus, testdata/fuzz/FuzzDecode
	// (kept in step with the captures by TestFuzzCorpus).
	for _, s := range syntheticSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Decode(b)
		if err != nil {
			if _, ok := DiagnosticOf(err); !ok {
				t.Fatalf("decode error without a diagnostic: %v", err)
			}
			return
		}
		_ = Validate(&d)
		_ = d.String()
		if d.Kind == DTF {
			var n int
			if err := d.ForEachArticle(func(a []byte) error { n += len(a); return nil }); err == nil && n > len(d.Data) {
				t.Fatalf("articles hold %d bytes, payload %d", n, len(d.Data))
			}
		}
		if d.Kind.IsData() {
			_ = NewReassembler(100).Add(&d, func([]byte) error { return nil })
		}
		enc, err := AppendEncode(nil, &d)
		if err != nil {
			return
		}
		// Normalisation only shortens (minimal numbers, short LIs, dropped
		// LI 0 and repeats), except a PI 25 padded to 2 bytes (+1) and a
		// PGI LI that then needs the long form (+2).
		if len(enc) > len(b)+3*countUnits(d.Params) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(b), len(enc))
		}
		d2, err := Decode(enc)
		if err != nil {
			t.Fatalf("decode(encode(x)) failed: %v\n% X", err, enc)
		}
		if d2.Kind != d.Kind || d2.DstID != d.DstID || d2.SrcID != d.SrcID || !bytes.Equal(d2.Data, d.Data) ||
			!sameValues(d.Params, d2.Params) || len(d2.Repeated) != 0 {
			t.Fatalf("values changed:\n%s\n%s", &d, &d2)
		}
		enc2, err := AppendEncode(nil, &d2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable: %v\n% X\n% X", err, enc, enc2)
		}
	})
}

func countUnits(p Params) int {
	n := len(p)
	for _, u := range p {
		n += countUnits(u.Group)
	}
	return n
}

// readAll reads r to the end: the kinds and sizes of the FPDUs, and whether
// it ended on an error other than EOF.
func readAll(t *testing.T, r *Reader, src io.Reader) (got []string, failed bool) {
	r.Reset(src)
	if pc, err := r.ReadPreConnection(); err != nil {
		return nil, err != io.EOF
	} else if pc != nil {
		got = append(got, "pre:"+pc.RequesterID)
	}
	for range 100000 {
		f, err := r.Next()
		if err == io.EOF {
			return got, false
		}
		if err != nil {
			if _, ok := DiagnosticOf(err); !ok && !errors.Is(err, io.ErrNoProgress) {
				t.Fatalf("framing error without a diagnostic: %v", err)
			}
			return got, true
		}
		if HeaderLen+len(f.Data) > MaxFPDULen {
			t.Fatalf("FPDU larger than possible")
		}
		got = append(got, fmt.Sprintf("%s %d %d %d %d", f.Kind, f.DstID, f.SrcID, len(f.Data), len(f.Params)))
	}
	t.Fatal("no end after 100000 FPDUs")
	return nil, false
}

// FuzzSplitFrames feeds arbitrary bytes to the Reader as a whole buffer
// and one byte per Read: neither panics, and both see the same FPDUs and
// the same outcome, so frame reassembly does not depend on how the
// transport splits the stream.
func FuzzSplitFrames(f *testing.F) {
	// Seeds stay small (a few hundred bytes): the fuzzer minimises every new
	// interesting input byte by byte, and multi-kilobyte seeds made that
	// crawl for its whole 60 s budget.
	// The recorded streams are the committed corpus,
	// testdata/fuzz/FuzzSplitFrames (kept in step by TestFuzzCorpus).
	seeds := syntheticSeeds(f)
	for _, st := range streams(seeds) {
		f.Add(st)
	}
	f.Add(frame(seeds[len(seeds)-4:]...)) // concatenated in one NSDU
	pre, _ := AppendPreConnection(nil, "CXCLIENT", "pw", true)
	f.Add(append(pre, frame(seeds[0])...))
	pre, _ = AppendPreConnection(nil, "CXCLIENT", "pw", false)
	f.Add(append(pre, frame(seeds[0])...))
	f.Add([]byte{0xFF, 0xFF, 0, 6})
	// One pair of Readers per worker process, reset for each input: a
	// fresh 128 KiB buffer per run made minimisation crawl.
	r1, r2 := NewReader(nil), NewReader(nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		whole, failed1 := readAll(t, r1, bytes.NewReader(b))
		bytewise, failed2 := readAll(t, r2, iotest.OneByteReader(bytes.NewReader(b)))
		if failed1 != failed2 || len(whole) != len(bytewise) {
			t.Fatalf("outcome depends on read sizes: %d/%t vs %d/%t", len(whole), failed1, len(bytewise), failed2)
		}
		for i := range whole {
			if whole[i] != bytewise[i] {
				t.Fatalf("FPDU %d: %s vs %s", i, whole[i], bytewise[i])
			}
		}
	})
}
