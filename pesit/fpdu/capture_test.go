package fpdu

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/vectis-ft/vectis/internal/testenv/pesitcapture"
)

// loadCaptures returns every record of the committed captures
// (testdata/*.raw); a missing capture fails the test.
func loadCaptures(t testing.TB) []pesitcapture.Record {
	t.Helper()
	return pesitcapture.LoadAll(t)
}

// TestCapturesDecode decodes every recorded FPDU; every FPDU the recording
// server sent (dir=1, byte-exact) re-encodes to the same bytes. dir=0 FPDUs
// were re-serialised by the recorder (lost PGIs, non-minimal PI 13), so they
// need only decode, and re-decode to the same values after re-encoding.
func TestCapturesDecode(t *testing.T) {
	recs := loadCaptures(t)
	var dir1 int
	kinds := map[Kind]int{}
	for _, r := range recs {
		f, err := Decode(r.FPDU)
		if err != nil {
			t.Errorf("%v: decode: %v", r, err)
			continue
		}
		kinds[f.Kind]++
		if len(f.Unknown()) != 0 {
			t.Errorf("%v: unknown PIs %v", r, f.Unknown())
		}
		out, err := AppendEncode(nil, &f)
		if err != nil {
			t.Errorf("%v: re-encode %s: %v", r, &f, err)
			continue
		}
		if r.Sent {
			dir1++
			if !bytes.Equal(out, r.FPDU) {
				t.Errorf("%v: re-encoded\n got % X\nwant % X", r, out, r.FPDU)
			}
			if err := Validate(&f); err != nil {
				t.Errorf("%v: the recorder's %s does not validate: %v", r, f.Kind, err)
			}
		}
		g, err := Decode(out)
		if err != nil {
			t.Errorf("%v: decode re-encoded: %v", r, err)
			continue
		}
		if !sameValues(f.Params, g.Params) || f.Kind != g.Kind || f.DstID != g.DstID || f.SrcID != g.SrcID || !bytes.Equal(f.Data, g.Data) {
			t.Errorf("%v: values changed by re-encoding:\n%s\n%s", r, &f, &g)
		}
	}
	if dir1 == 0 || len(kinds) < 15 {
		t.Fatalf("captures too small: %d records, %d dir=1, kinds %v", len(recs), dir1, kinds)
	}
	t.Logf("%d records (%d dir=1), %d kinds", len(recs), dir1, len(kinds))
}

// sameValues compares parameter lists by value: numbers by magnitude (so a
// non-minimal PI 13 equals its minimal form), everything else by bytes,
// order ignored.
func sameValues(a, b Params) bool {
	if len(a) != len(b) {
		return false
	}
	for _, u := range a {
		v, ok := find(b, u.ID)
		if !ok {
			return false
		}
		if u.ID.IsGroup() {
			if !sameValues(u.Group, v.Group) {
				return false
			}
			continue
		}
		if info, _ := lookupPIInfo(u.ID); info.Type == TypeN &&
			bytes.Equal(bytes.TrimLeft(u.Value, "\x00"), bytes.TrimLeft(v.Value, "\x00")) {
			continue
		}
		if !bytes.Equal(u.Value, v.Value) {
			return false
		}
	}
	return true
}

// TestCaptureCXConnect checks the CX CONNECT of digest §9.1 value by value.
func TestCaptureCXConnect(t *testing.T) {
	recs := loadCaptures(t)
	var f FPDU
	var found bool
	for _, r := range recs {
		if !r.Sent && len(r.FPDU) > 3 && r.FPDU[2] == 0x40 && r.FPDU[3] == 0x20 {
			var err error
			if f, err = Decode(r.FPDU); err != nil {
				t.Fatalf("%v: %v", r, err)
			}
			found = true
			break
		}
	}
	if !found {
		t.Fatal("no CONNECT in the captures")
	}
	if f.Kind != Connect || f.DstID != 0 || f.SrcID != 0x62 {
		t.Fatalf("header: %s", &f)
	}
	str := func(id PI) string {
		s, ok := f.Params.String(id)
		if !ok {
			t.Errorf("%s missing", id)
		}
		return s
	}
	if got := str(PIRequesterID); got != "CXCLIENT" {
		t.Errorf("PI 3 = %q", got)
	}
	if got := str(PIServerID); got != "PESITSRV" {
		t.Errorf("PI 4 = %q", got)
	}
	if got := str(PIAccessControl); got != "test123" {
		t.Errorf("PI 5 = %q (trailing blank must be trimmed)", got)
	}
	if raw, _ := f.Params.Bytes(PIAccessControl); string(raw) != "test123 " {
		t.Errorf("PI 5 raw = %q", raw)
	}
	if v, ok := f.Params.Uint(PIVersion); !ok || v != 2 {
		t.Errorf("PI 6 = %d, %t", v, ok)
	}
	if iv, w, ok := f.Params.SyncOption(); !ok || iv != 32 || w != 2 {
		t.Errorf("PI 7 = interval %d window %d, %t", iv, w, ok)
	}
	if raw, _ := f.Params.Bytes(PISyncOption); !bytes.Equal(raw, []byte{0, 0x20, 2}) {
		t.Errorf("PI 7 raw = % X", raw)
	}
	if v, ok := f.Params.Uint(PIAccessType); !ok || v != 2 {
		t.Errorf("PI 22 = %d, %t", v, ok)
	}
	if len(f.Params) != 6 {
		t.Errorf("want 6 PIs, got %s", &f)
	}
	if err := Validate(&f); err != nil {
		t.Errorf("CX CONNECT does not validate: %v", err)
	}
	if s := f.String(); bytes.Contains([]byte(s), []byte("test123")) {
		t.Errorf("dump leaks the password: %s", s)
	}
}

// TestCaptureStream replays the push capture as a TCP-style stream (each
// record framed with the 2-byte prefix, data FPDUs concatenated as CX
// would) through Reader and checks the FPDU sequence survives intact.
func TestCaptureStream(t *testing.T) {
	recs := pesitcapture.Load(t, "cx-push-1mb.raw")
	var stream []byte
	var frame []byte
	flush := func() {
		if len(frame) > 0 {
			stream = append(stream, byte(len(frame)>>8), byte(len(frame)))
			stream = append(stream, frame...)
			frame = frame[:0]
		}
	}
	for _, r := range recs {
		k, _ := KindOf(r.FPDU[2], r.FPDU[3])
		if !k.Concatenable() {
			flush()
			frame = append(frame, r.FPDU...)
			flush()
			continue
		}
		frame = append(frame, r.FPDU...)
		if k == Syn || k == DTFEnd {
			flush()
		}
	}
	flush()
	rd := NewReader(bytes.NewReader(stream))
	if pc, err := rd.ReadPreConnection(); err != nil || pc != nil {
		t.Fatalf("ReadPreConnection = %v, %v", pc, err)
	}
	for i, r := range recs {
		f, err := rd.Next()
		if err != nil {
			t.Fatalf("record %d: %v", i+1, err)
		}
		want, _ := Decode(r.FPDU)
		if f.Kind != want.Kind || f.SrcID != want.SrcID || !reflect.DeepEqual(f.Params, want.Params) && len(want.Params) > 0 {
			t.Fatalf("record %d: got %s want %s", i+1, f, &want)
		}
	}
	if _, err := rd.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last FPDU: %v", err)
	}
}
