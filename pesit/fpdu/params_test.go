package fpdu

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLenientDecoding(t *testing.T) {
	// ACK(CREATE) with: PI 2, PI 13 non-minimal on 4 bytes, an LI-0 PI 99,
	// PI 12 with trailing blanks in the long LI form, an unknown PI 200,
	// a repeated PI 25 (first kept), a PGI 9 with a long LI.
	body := mustHex(t, "02 03 00 00 00"+
		" 09 FF 00 05 0C 03 41 42 20"+
		" 0D 04 00 00 24 C9"+
		" 0C FF 00 04 46 20 20 20"+
		" 19 02 10 00"+
		" 19 02 FF FF"+
		" 63 00"+
		" C8 02 CA FE")
	b := append([]byte{0, byte(HeaderLen + len(body)), 0xC0, 0x30, 0x62, 0}, body...)
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := f.Params.Uint(PITransferID); !ok || v != 0x24C9 {
		t.Errorf("PI 13 = %#x %t", v, ok)
	}
	if s, ok := f.Params.String(PIFileName); !ok || s != "F" {
		t.Errorf("PI 12 = %q %t (top level first)", s, ok)
	}
	if g, ok := f.Params.Group(PGIFileID); !ok || len(g) != 1 {
		t.Errorf("PGI 9 = %v", g)
	} else if s, _ := g.String(PIFileName); s != "AB" {
		t.Errorf("PGI 9 PI 12 = %q", s)
	}
	if v, _ := f.Params.Uint(PIEntitySize); v != 4096 {
		t.Errorf("PI 25 = %d, want the first occurrence", v)
	}
	if f.Params.Has(PIFreeMessage) {
		t.Error("LI 0 must read as absent")
	}
	if !reflect.DeepEqual(f.Repeated, []PI{PIEntitySize}) {
		t.Errorf("Repeated = %v", f.Repeated)
	}
	if !reflect.DeepEqual(f.Unknown(), []PI{200}) {
		t.Errorf("Unknown = %v", f.Unknown())
	}
	if v, ok := f.Params.Bytes(200); !ok || string(v) != "\xCA\xFE" {
		t.Errorf("unknown PI not kept: % X", v)
	}
	var pe *ParamError
	if err := Validate(&f); !errors.As(err, &pe) || pe.PI != PIEntitySize || !errors.Is(err, DiagBadParameter) {
		t.Errorf("Validate of a repeated PI: %v", err)
	}
	if !strings.Contains(f.String(), "repeated") {
		t.Errorf("dump hides the repetition: %s", &f)
	}
	// Re-encoding is strict: minimal PI 13, short LI, PIs in code order,
	// the unknown PI kept, the absent ones not invented.
	out, err := AppendEncode(nil, &f)
	if err != nil {
		t.Fatal(err)
	}
	want := mustHex(t, "00 2A C0 30 62 00 02 03 00 00 00 09 05 0C 03 41 42 20 0C 04 46 20 20 20 0D 02 24 C9 19 02 10 00 C8 02 CA FE")
	want[1] = byte(len(want))
	if string(out) != string(want) {
		t.Errorf("re-encoded\n got % X\nwant % X", out, want)
	}
}

func TestDecodeParamErrors(t *testing.T) {
	cases := map[string]string{
		"LI overruns":            "14 05 01",
		"long LI overruns":       "14 FF 01 00 01",
		"long LI cut":            "14 FF 01",
		"unit cut":               "14",
		"PGI LI overruns inside": "09 04 0C 09 41 42",
		"PGI nested":             "09 05 1E 03 20 01 01",
	}
	for name, h := range cases {
		body := mustHex(t, h)
		b := append([]byte{0, byte(HeaderLen + len(body)), 0xC0, 0x03, 1, 0}, body...)
		if f, err := Decode(b); err == nil {
			t.Errorf("%s: decoded %s", name, &f)
		} else if d, _ := DiagnosticOf(err); d != DiagProtocolError {
			t.Errorf("%s: diagnostic %v", name, d)
		}
	}
	frames := map[string][]byte{
		"short":            {0, 6, 0xC0},
		"length too big":   {0, 9, 0xC0, 0x03, 1, 0, 0x14},
		"length too small": {0, 5, 0xC0, 0x03, 1, 0},
		"extra bytes":      {0, 6, 0xC0, 0x38, 1, 0, 0},
		"unknown kind":     {0, 6, 0x40, 0x99, 1, 0},
		"nil":              nil,
	}
	for name, b := range frames {
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParamsAccessors(t *testing.T) {
	var p Params
	p.AddDiagnostic(DiagFileNotFound)
	p.AddString(PIAccessControl, "pw      ")
	p.Add(PITransferID, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	p.Add(PIRestartPoint, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	if d, ok := p.Diagnostic(); !ok || d != DiagFileNotFound || d.String() != "2/205" {
		t.Errorf("Diagnostic %v %t", d, ok)
	}
	if raw, _ := p.Bytes(PIDiagnostic); string(raw) != "\x02\x00\xCD" {
		t.Errorf("2/205 on the wire: % X", raw)
	}
	if s, _ := p.String(PIAccessControl); s != "pw" {
		t.Errorf("String %q", s)
	}
	if _, ok := p.Uint(PITransferID); ok {
		t.Error("9 significant bytes read as a uint64")
	}
	if v, ok := p.Uint(PIRestartPoint); !ok || v != 1 {
		t.Errorf("leading zeros: %d %t", v, ok)
	}
	if _, ok := p.Uint(PISyncNumber); ok {
		t.Error("absent PI read")
	}
	if _, _, ok := p.SyncOption(); ok {
		t.Error("absent PI 7 read")
	}
	if _, ok := p.Group(PIDiagnostic); ok {
		t.Error("PI 2 is not a group")
	}
}

func TestPITable(t *testing.T) {
	codes := PICodes()
	want := []PI{1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 25, 26, 27, 28, 29,
		30, 31, 32, 33, 37, 38, 39, 40, 41, 42, 50, 51, 52, 61, 62, 91, 99}
	if !reflect.DeepEqual(codes, want) {
		t.Fatalf("PICodes %v", codes)
	}
	for _, c := range codes {
		info, _ := c.Info()
		if info.Name == "" || info.ID != c {
			t.Errorf("%d: %+v", c, info)
		}
		if c.IsGroup() != (info.Type == TypeG) {
			t.Errorf("%s: group mismatch", c)
		}
		for _, mem := range info.Members {
			if !mem.Known() || mem.IsGroup() {
				t.Errorf("%s member %s", c, mem)
			}
		}
		if info.Type != TypeG && (info.MinLen < 1 || info.MaxLen < info.MinLen) {
			t.Errorf("%s: lengths %d..%d", c, info.MinLen, info.MaxLen)
		}
	}
	for _, c := range []PI{8, 10, 24, 34, 36, 63, 71, 83, 255} {
		if c.Known() {
			t.Errorf("%d should not be in the Hors-SIT table", c)
		}
	}
}

func TestDateAndClone(t *testing.T) {
	var p Params
	when := time.Date(2026, 1, 19, 1, 25, 5, 0, time.UTC)
	p.AddDate(PICreated, when)
	if s, _ := p.String(PICreated); s != "260119012505" {
		t.Fatalf("date %q", s)
	}
	if got, ok := p.Date(PICreated, time.UTC); !ok || !got.Equal(when) {
		t.Fatalf("Date = %v %t", got, ok)
	}
	p.AddString(PIExtracted, "2601190125XX")
	if _, ok := p.Date(PIExtracted, time.UTC); ok {
		t.Fatal("bad date parsed")
	}
	f := sample(Create)
	g := f.Clone()
	if !reflect.DeepEqual(f, g) {
		t.Fatal("clone differs")
	}
	g.Params[0].Group[0].Value[0] = 'Z'
	if s, _ := f.Params.String(PIRequesterID); s != "CXCLIENT" {
		t.Fatalf("clone shares memory: %q", s)
	}
}
