package codepage

import "testing"

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
