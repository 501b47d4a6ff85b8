// Package codepage holds the EBCDIC translation shared by the PeSIT client
// and server for text files sent with data code EBCDIC (PI 16 = 1): code
// page 037 on the wire, ISO 8859-1 locally.
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
