package fpdu

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// sample builds a representative FPDU of kind k carrying every mandatory
// parameter and a few optional ones, valid under Validate.
func sample(k Kind) *FPDU {
	f := &FPDU{Kind: k, DstID: 0x62}
	p := &f.Params
	fileID := func(g *Params) {
		g.AddString(PIRequesterID, "CXCLIENT")
		g.AddString(PIServerID, "PESITSRV")
		g.AddUint(PIFileType, 0)
		g.AddString(PIFileName, "TESTFILE")
	}
	switch k {
	case Connect:
		f.DstID, f.SrcID = 0, 0x62
		p.AddString(PIRequesterID, "CXCLIENT")
		p.AddString(PIServerID, "PESITSRV")
		p.AddString(PIAccessControl, "test123 ")
		p.AddUint(PIVersion, 2)
		p.AddSyncOption(32, 2)
		p.AddUint(PIAccessType, 2)
	case AConnect:
		f.SrcID = 0xE2
		p.AddUint(PIVersion, 2)
		p.AddSyncOption(32, 2)
		p.AddUint(PIResync, 0)
	case RConnect:
		p.AddDiagnostic(DiagNotAuthorised)
		p.AddString(PIFreeMessage, "unknown partner")
	case Release, Deselect, AckDeselect, CRF, AckCRF, AckRead, DTFEnd:
		if k == Release {
			f.SrcID = 0x62
		}
		p.AddDiagnostic(DiagOK)
	case RelConf:
		f.SrcID = 0xE2
	case Abort:
		f.SrcID = 0xE2
		p.AddDiagnostic(DiagProtocolError)
	case Create:
		var g, l, ph, h Params
		fileID(&g)
		l.Add(PIArticleFormat, []byte{0x80})
		l.AddUint(PIArticleLength, 1024)
		ph.AddUint(PISpaceUnit, 0)
		ph.AddUint(PISpaceMax, 1<<20)
		h.AddString(PICreated, "260119012505")
		p.AddGroup(PGIFileID, g)
		p.AddUint(PITransferID, 0x24C9)
		p.AddUint(PIDataCode, 2)
		p.AddUint(PIPriority, 0)
		p.AddUint(PIEntitySize, 0xFFFF)
		p.AddGroup(PGILogical, l)
		p.AddGroup(PGIPhysical, ph)
		p.AddGroup(PGIHistorical, h)
	case AckCreate:
		p.AddDiagnostic(DiagOK)
		p.AddUint(PIEntitySize, 4096)
	case Select:
		var g Params
		fileID(&g)
		p.AddGroup(PGIFileID, g)
		p.AddUint(PITransferID, 0)
		p.Add(PIAttributes, []byte{0xE0})
		p.AddUint(PIPriority, 0)
		p.AddUint(PIEntitySize, 0xFFFF)
		p.AddString(PIFreeMessage, strings.Repeat(" ", 254))
	case AckSelect:
		var g, l, ph, h Params
		g.AddUint(PIFileType, 0)
		g.AddString(PIFileName, "TESTFILE")
		l.Add(PIArticleFormat, []byte{0x80})
		l.AddUint(PIArticleLength, 1024)
		ph.AddUint(PISpaceMax, 1<<20)
		h.AddString(PICreated, "260119012505")
		p.AddDiagnostic(DiagOK)
		p.AddGroup(PGIFileID, g)
		p.AddUint(PITransferID, 0x24CB)
		p.AddUint(PIEntitySize, 0xFFFF)
		p.AddGroup(PGILogical, l)
		p.AddGroup(PGIPhysical, ph)
		p.AddGroup(PGIHistorical, h)
	case ORF:
		p.Add(PICompression, []byte{0, 0})
	case AckORF:
		p.AddDiagnostic(DiagOK)
		p.Add(PICompression, []byte{0, 0})
	case Read:
		p.AddUint(PIRestartPoint, 0)
	case AckWrite:
		p.AddDiagnostic(DiagOK)
		p.AddUint(PIRestartPoint, 7)
	case TransEnd:
		p.AddUint(PIByteCount, 1<<20)
		p.AddUint(PIArticleCount, 1024)
	case AckTransEnd:
		p.AddDiagnostic(DiagOK)
		p.AddUint(PIByteCount, 1<<20)
		p.AddUint(PIArticleCount, 1024)
	case Syn, AckSyn:
		p.AddUint(PISyncNumber, 31)
	case Resyn:
		p.AddDiagnostic(DiagTransmissionError)
		p.AddUint(PIRestartPoint, 3)
	case AckResyn:
		p.AddUint(PIRestartPoint, 3)
	case IDT:
		p.AddDiagnostic(DiagSpaceExhausted)
		p.AddUint(PIEndCode, 4)
	case Msg, MsgDM:
		var g Params
		fileID(&g)
		p.AddGroup(PGIFileID, g)
		p.AddUint(PITransferID, 1)
		p.AddString(PIMessage, strings.Repeat("m", 300)) // long LI form
	case MsgMM, MsgFM:
		p.AddString(PIMessage, "segment")
	case AckMsg:
		p.AddDiagnostic(DiagOK)
	case DTF:
		f.SrcID = 3
		f.Data = []byte{0, 2, 'a', 'b', 0, 0, 0, 1, 'c'}
	case DTFDA, DTFMA, DTFFA:
		f.Data = []byte("fragment")
	}
	return f
}

func TestRoundTripEveryKind(t *testing.T) {
	for _, k := range Kinds() {
		t.Run(k.String(), func(t *testing.T) {
			f := sample(k)
			if err := Validate(f); err != nil {
				t.Fatalf("sample does not validate: %v", err)
			}
			b, err := AppendEncode([]byte("prefix"), f)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if string(b[:6]) != "prefix" {
				t.Fatalf("AppendEncode clobbered dst")
			}
			b = b[6:]
			if b[2] != k.Phase() || b[3] != k.Type() || b[4] != f.DstID || b[5] != f.SrcID {
				t.Fatalf("header % X", b[:6])
			}
			g, err := Decode(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if k == Abort {
				if len(b) != 9 {
					t.Errorf("ABORT not bare: % X", b)
				}
			}
			if !reflect.DeepEqual(normal(f), normal(&g)) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", g, *f)
			}
			if err := Validate(&g); err != nil {
				t.Fatalf("decoded FPDU does not validate: %v", err)
			}
			// Through the framing layer too.
			var buf bytes.Buffer
			w := NewWriter(&buf)
			if err := w.Write(f); err != nil {
				t.Fatal(err)
			}
			r := NewReader(&buf)
			h, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normal(f), normal(h)) {
				t.Fatalf("via Reader:\n got %v\nwant %v", h, f)
			}
		})
	}
}

// normal clears what legitimately differs between a built FPDU and a
// decoded one: the PI-form flag of an ABORT, nil versus empty slices.
func normal(f *FPDU) FPDU {
	g := *f
	if g.Kind == Abort {
		g.AbortPIForm = false
	}
	if len(g.Params) == 0 {
		g.Params = nil
	}
	if len(g.Repeated) == 0 {
		g.Repeated = nil
	}
	if len(g.Data) == 0 {
		g.Data = nil
	}
	return g
}

func TestEncodeStrict(t *testing.T) {
	cases := []struct {
		name string
		p    Params
		want string // hex of the parameter area
	}{
		{"ascending order", Params{{ID: PIEntitySize, Value: []byte{0x10, 0}}, {ID: PIDiagnostic, Value: []byte{0, 0, 0}}}, "0203000000 19021000"},
		{"minimal N", Params{{ID: PITransferID, Value: []byte{0, 0x24, 0xC9}}}, "0d0224c9"},
		{"zero is one byte", Params{{ID: PIRestartPoint, Value: []byte{0, 0, 0}}}, "120100"},
		{"PI 25 two bytes", Params{{ID: PIEntitySize, Value: []byte{0xC8}}}, "190200c8"},
		{"PI 6 one byte", Params{{ID: PIVersion, Value: []byte{0, 2}}}, "060102"},
		{"long LI", Params{{ID: PIMessage, Value: bytes.Repeat([]byte{'x'}, 255)}}, "5bff00ff" + strings.Repeat("78", 255)},
		{"group order", Params{{ID: PGILogical, Group: Params{{ID: PIArticleLength, Value: []byte{4, 0}}, {ID: PIArticleFormat, Value: []byte{0x80}}}}}, "1e07 1f0180 20020400"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := AppendEncode(nil, &FPDU{Kind: AckCreate, DstID: 1, Params: c.p})
			if err != nil {
				t.Fatal(err)
			}
			want := mustHex(t, c.want)
			if !bytes.Equal(b[6:], want) {
				t.Fatalf("got % X want % X", b[6:], want)
			}
		})
	}
	var p Params
	p.AddUint(PISyncNumber, 0x010203)
	p.AddUint(PIVersion, 2)
	p.AddUint(PIEntitySize, 200)
	p.AddUint(PIByteCount, 1<<40)
	want := [][]byte{{1, 2, 3}, {2}, {0, 200}, {1, 0, 0, 0, 0, 0}}
	for i, u := range p {
		if !bytes.Equal(u.Value, want[i]) {
			t.Errorf("AddUint(%s) = % X want % X", u.ID, u.Value, want[i])
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	cases := map[string]*FPDU{
		"unknown kind":    {Kind: Kind(0xC0FF)},
		"duplicate":       {Kind: CRF, Params: Params{{ID: 2, Value: []byte{0, 0, 0}}, {ID: 2, Value: []byte{0, 0, 0}}}},
		"empty value":     {Kind: CRF, Params: Params{{ID: 99, Value: nil}}},
		"empty group":     {Kind: Create, Params: Params{{ID: PGIFileID, Group: Params{}}}},
		"nested group":    {Kind: Create, Params: Params{{ID: PGIFileID, Group: Params{{ID: PGILogical, Group: Params{{ID: 32, Value: []byte{1}}}}}}}},
		"PI with group":   {Kind: Create, Params: Params{{ID: PIFileName, Group: Params{{ID: 32, Value: []byte{1}}}}}},
		"data params":     {Kind: DTF, Params: Params{{ID: 2, Value: []byte{0, 0, 0}}}},
		"non-data data":   {Kind: Syn, Data: []byte{1}},
		"too long":        {Kind: DTF, Data: make([]byte, MaxFPDULen)},
		"ambiguous abort": {Kind: Abort, AbortPIForm: true, Params: Params{{ID: 99, Value: []byte{' '}}}},
	}
	for name, f := range cases {
		b, err := AppendEncode([]byte{1, 2}, f)
		if err == nil {
			t.Errorf("%s: encoded % X", name, b)
		}
		if !bytes.Equal(b, []byte{1, 2}) {
			t.Errorf("%s: dst changed on error: % X", name, b)
		}
	}
}

func TestAbortForms(t *testing.T) {
	bare := mustHex(t, "00 09 40 25 01 62 03 01 37")
	f, err := Decode(bare)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := f.Params.Diagnostic(); !ok || d != DiagProtocolError || f.AbortPIForm {
		t.Fatalf("bare ABORT: %v %t %s", d, ok, &f)
	}
	if b, _ := AppendEncode(nil, NewAbort(1, 0x62, DiagProtocolError)); !bytes.Equal(b, bare) {
		t.Fatalf("NewAbort = % X", b)
	}
	piForm := mustHex(t, "00 0B 40 25 01 62 02 03 03 01 37")
	f, err = Decode(piForm)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := f.Params.Diagnostic(); !ok || d != DiagProtocolError || !f.AbortPIForm {
		t.Fatalf("PI-form ABORT: %v %t %s", d, ok, &f)
	}
	if b, _ := AppendEncode(nil, NewAbort(1, 0x62, DiagProtocolError, WithAbortPIForm())); !bytes.Equal(b, piForm) {
		t.Fatalf("NewAbort(WithAbortPIForm) = % X", b)
	}
	a := NewAbort(0, 0x61, DiagIdleTimeout, WithFreeMessage("idle"))
	b, err := AppendEncode(nil, a)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Decode(b)
	if err != nil || !reflect.DeepEqual(normal(a), normal(&g)) {
		t.Fatalf("ABORT with PI 99: %v %s", err, &g)
	}
	if err := Validate(&g); err != nil {
		t.Fatal(err)
	}
	// A diagnostic unwraps from a codec error.
	_, err = Decode(mustHex(t, "00 05 40 25 01"))
	if d, ok := DiagnosticOf(err); !ok || d != DiagProtocolError || !errors.Is(err, ErrTruncated) {
		t.Fatalf("truncated ABORT: %v", err)
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.ReplaceAll(s, " ", "")
	b := make([]byte, len(s)/2)
	for i := range b {
		var v byte
		for _, c := range s[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				v |= byte(c - 'a' + 10)
			case c >= 'A' && c <= 'F':
				v |= byte(c - 'A' + 10)
			default:
				t.Fatalf("bad hex %q", s)
			}
		}
		b[i] = v
	}
	return b
}
