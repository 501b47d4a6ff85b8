package fpdu

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/vectis-ft/vectis/pesit/internal/codepage"
)

func TestPreConnectionConstants(t *testing.T) {
	if got := mustHex(t, "D7 C5 E2 C9 E3 40 40 40"); !bytes.Equal(got, preConnProtocol[:]) {
		t.Fatal("protocol constant")
	}
	for s, want := range map[string]string{"ACK0": "C1 C3 D2 F0", "NAK0": "D5 C1 D2 F0"} {
		var got []byte
		for i := range len(s) {
			e, _ := codepage.InvariantToEBCDIC(s[i])
			got = append(got, e)
		}
		if !bytes.Equal(got, mustHex(t, want)) {
			t.Errorf("%q = % X", s, got)
		}
	}
	if !bytes.Equal(preConnACK[:], mustHex(t, "C1 C3 D2 F0")) || !bytes.Equal(preConnNAK[:], mustHex(t, "D5 C1 D2 F0")) {
		t.Error("ACK0/NAK0 constants")
	}
}

func TestPreConnection(t *testing.T) {
	syn := frame(encode(t, sample(Connect)))
	for _, framed := range []bool{true, false} {
		msg, err := AppendPreConnection(nil, "CXCLIENT", "pw_1", framed)
		if err != nil {
			t.Fatal(err)
		}
		if framed && (len(msg) != 26 || msg[0] != 0 || msg[1] != 0x18) {
			t.Fatalf("framed: % X", msg)
		}
		if !framed && len(msg) != 24 {
			t.Fatalf("bare: % X", msg)
		}
		r := NewReader(iotest.OneByteReader(bytes.NewReader(append(msg, syn...))))
		pc, err := r.ReadPreConnection()
		if err != nil {
			t.Fatal(err)
		}
		if pc.RequesterID != "CXCLIENT" || pc.Password != "pw_1" || pc.Framed != framed {
			t.Fatalf("%+v", pc)
		}
		f, err := r.Next()
		if err != nil || f.Kind != Connect {
			t.Fatalf("CONNECT after pre-connection: %v %v", f, err)
		}
		reply := pc.AppendReply(nil, false)
		want := mustHex(t, "D5 C1 D2 F0")
		if framed {
			want = append([]byte{0, 4}, want...)
		}
		if !bytes.Equal(reply, want) {
			t.Fatalf("reply % X", reply)
		}
		ok, err := NewReader(bytes.NewReader(reply)).ReadPreConnectionReply()
		if err != nil || ok {
			t.Fatalf("reply read back: %t %v", ok, err)
		}
	}
	if got := AppendPreConnectionReply(nil, true); !bytes.Equal(got, mustHex(t, "00 04 C1 C3 D2 F0")) {
		t.Fatalf("ACK0 % X", got)
	}
	// A stream that starts with an FPDU: nothing consumed.
	r := NewReader(bytes.NewReader(syn))
	if pc, err := r.ReadPreConnection(); pc != nil || err != nil {
		t.Fatalf("%v %v", pc, err)
	}
	if f, err := r.Next(); err != nil || f.Kind != Connect {
		t.Fatalf("%v %v", f, err)
	}
	if _, err := r.ReadPreConnection(); err == nil {
		t.Fatal("ReadPreConnection after Next")
	}
}

func TestPreConnectionErrors(t *testing.T) {
	good, _ := AppendPreConnection(nil, "ID", "PW", true)
	badProto := append([]byte(nil), good...)
	badProto[6] = 0xC1 // "PESAT"
	badChar := append([]byte(nil), good...)
	badChar[2+16] = 0x4A // cent sign, code-page dependent: not in the table
	cases := map[string][]byte{
		"protocol":      badProto,
		"password byte": badChar,
		"truncated":     good[:20],
		"short":         {0, 0x18},
	}
	for name, b := range cases {
		_, err := NewReader(bytes.NewReader(b)).ReadPreConnection()
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
		if name == "password byte" && bytes.Contains([]byte(err.Error()), []byte("4a")) {
			t.Errorf("error reveals a password byte: %v", err)
		}
	}
	if _, err := AppendPreConnection(nil, "NINECHARS", "", false); !errors.Is(err, ErrPreConnection) {
		t.Errorf("long id: %v", err)
	}
	if _, err := AppendPreConnection(nil, "ID", "[]", false); !errors.Is(err, ErrPreConnection) {
		t.Errorf("unmapped character: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(mustHex(t, "00 04 C1 C3 D2 F1"))).ReadPreConnectionReply(); !errors.Is(err, ErrPreConnection) {
		t.Errorf("bad reply: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(nil)).ReadPreConnection(); err != io.EOF {
		t.Errorf("empty stream: %v", err)
	}
}
