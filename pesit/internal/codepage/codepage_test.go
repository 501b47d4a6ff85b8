package codepage

import (
	"testing"

	"golang.org/x/text/encoding/charmap"
)

func TestEBCDIC037(t *testing.T) {
	tb := NewEBCDIC037()
	b := []byte("Hello, 123\n")
	Translate(b, &tb.ToEBCDIC)
	want := []byte{0xC8, 0x85, 0x93, 0x93, 0x96, 0x6B, 0x40, 0xF1, 0xF2, 0xF3, 0x25}
	if string(b) != string(want) {
		t.Fatalf("to EBCDIC: % X, want % X", b, want)
	}
	Translate(b, &tb.ToASCII)
	if string(b) != "Hello, 123\n" {
		t.Fatalf("back to ASCII: %q", b)
	}
	for i := range 256 {
		if a := tb.ToASCII[tb.ToEBCDIC[i]]; a != byte(i) {
			t.Fatalf("Latin-1 %#x does not round-trip: %#x", i, a)
		}
	}
}

// TestInvariant checks that the invariant set is what the name says: the
// other EBCDIC code pages x/text knows encode it alike, and it
// round-trips.
func TestInvariant(t *testing.T) {
	mapped := 0
	for c := range 256 {
		e, ok := InvariantToEBCDIC(byte(c))
		if !ok {
			continue
		}
		mapped++
		for _, cp := range []*charmap.Charmap{charmap.CodePage1047, charmap.CodePage1140} {
			if other, ok := cp.EncodeRune(rune(c)); !ok || other != e {
				t.Errorf("%q: %#02x in CP037, %#02x in %v", rune(c), e, other, cp)
			}
		}
		if back, ok := InvariantToASCII(e); !ok || back != byte(c) {
			t.Errorf("%q -> %#02x -> %q", rune(c), e, back)
		}
	}
	seen := 0
	for e := range 256 {
		if _, ok := InvariantToASCII(byte(e)); ok {
			seen++
		}
	}
	// 26 + 26 + 10 letters and digits, blank, 22 punctuation marks.
	if mapped != 62+1+22 || seen != mapped {
		t.Errorf("%d ASCII and %d EBCDIC characters mapped", mapped, seen)
	}
	for _, c := range []byte("[]!|^\x00\xE9") {
		if _, ok := InvariantToEBCDIC(c); ok {
			t.Errorf("%q is not invariant but maps", c)
		}
	}
}
