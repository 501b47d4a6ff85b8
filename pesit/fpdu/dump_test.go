package fpdu

import (
	"strings"
	"testing"
)

func TestStringRedactsPassword(t *testing.T) {
	f := sample(Connect)
	f.Params[2].Value = []byte("hunter2 ")
	s := f.String()
	if strings.Contains(s, "hunter2") || !strings.Contains(s, "5:<redacted>") {
		t.Fatalf("dump: %s", s)
	}
	for _, want := range []string{"CONNECT", "dst=00", "src=62", `3:"CXCLIENT"`, "6:2", "7:00 20 02", "22:2"} {
		if !strings.Contains(s, want) {
			t.Errorf("dump %q lacks %q", s, want)
		}
	}
	// Redacted inside a PGI too, and in ACONNECT.
	g := &FPDU{Kind: AConnect, Params: Params{{ID: PIAccessControl, Value: []byte("other")}, {ID: PGIFileID, Group: Params{{ID: PIAccessControl, Value: []byte("nested")}}}}}
	if s := g.String(); strings.Contains(s, "other") || strings.Contains(s, "nested") {
		t.Fatalf("dump: %s", s)
	}
	pc := &PreConnection{RequesterID: "ID", Password: "topsecret"}
	if strings.Contains(pc.String(), "topsecret") {
		t.Fatalf("pre-connection dump: %s", pc)
	}
}

func TestStringForms(t *testing.T) {
	cases := map[string]*FPDU{
		"ABORT dst=01 src=62 diag=3/311":              NewAbort(1, 0x62, DiagProtocolError),
		"DTF dst=E2 src=03 articles=3 data=9B":        sample(DTF),
		"ACK(CREATE) dst=62 src=00 {2:0/000 25:4096}": sample(AckCreate),
		`{9:{3:"CXCLIENT"`:                            sample(Create),
	}
	for want, f := range cases {
		if f.Kind == DTF {
			f.DstID = 0xE2
		}
		if s := f.String(); !strings.Contains(s, want) {
			t.Errorf("%q lacks %q", s, want)
		}
	}
	if s := (&FPDU{Kind: Select, Params: Params{{ID: 99, Value: []byte(strings.Repeat(" ", 254))}}}).String(); len(s) > 150 {
		t.Errorf("long value not shortened: %d chars", len(s))
	}
}
