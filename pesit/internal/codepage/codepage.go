// Package codepage is the one home of the ASCII <-> EBCDIC mapping of the
// PeSIT client and server: code page 037 on the wire, ISO 8859-1 locally,
// for text files sent with data code EBCDIC (PI 16 = 1), and its
// code-page-invariant subset for the pre-connection message, whose ids and
// passwords must read the same whatever code page the peer uses.
package codepage

import "golang.org/x/text/encoding/charmap"

// EBCDIC037 maps ASCII (Latin-1) to EBCDIC code page 037 and back. Bytes
// without an equivalent map to the substitute character of the target code.
type EBCDIC037 struct {
	ToEBCDIC, ToASCII [256]byte
}

// NewEBCDIC037 builds the tables (512 bytes; build once per transfer).
func NewEBCDIC037() *EBCDIC037 {
	t := &EBCDIC037{}
	for i := range 256 {
		t.ToEBCDIC[i], t.ToASCII[i] = 0x3F, 0x1A // EBCDIC SUB, ASCII SUB
	}
	for i := range 256 {
		r := charmap.CodePage037.DecodeByte(byte(i))
		if a, ok := charmap.ISO8859_1.EncodeRune(r); ok {
			t.ToASCII[i] = a
			t.ToEBCDIC[a] = byte(i)
		}
	}
	return t
}

// Translate rewrites b in place through table.
func Translate(b []byte, table *[256]byte) {
	for i, c := range b {
		b[i] = table[c]
	}
}

// invariantPunct are the punctuation marks (and the blank) that the EBCDIC
// code pages (037, 500, 1047, 1140) encode alike. Characters that differ between them
// ([ ] ! | ^ ...) are left out rather than guessed.
const invariantPunct = " .<(+&$*);-/,%_>?:#@'=\""

func invariant(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	for i := range len(invariantPunct) {
		if invariantPunct[i] == c {
			return true
		}
	}
	return false
}

// InvariantToEBCDIC maps an ASCII letter, digit, blank or invariant
// punctuation mark to EBCDIC, and reports false for any other byte.
func InvariantToEBCDIC(c byte) (byte, bool) {
	if !invariant(c) {
		return 0, false
	}
	return charmap.CodePage037.EncodeRune(rune(c))
}

// InvariantToASCII maps an EBCDIC byte back to the ASCII character of the
// invariant set, and reports false for any other byte.
func InvariantToASCII(e byte) (byte, bool) {
	r := charmap.CodePage037.DecodeByte(e)
	if r >= 0x80 || !invariant(byte(r)) {
		return 0, false
	}
	return byte(r), true
}
