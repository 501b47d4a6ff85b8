package client

import "golang.org/x/text/encoding/charmap"

// ebcdicTables maps ASCII (Latin-1) to EBCDIC code page 037 and back, for
// text files sent or received with data code EBCDIC (PI 16 = 1). Bytes
// without an equivalent map to the substitute character of the target code.
type ebcdicTables struct {
	toEBCDIC, toASCII [256]byte
}

func newEBCDICTables() *ebcdicTables {
	t := &ebcdicTables{}
	for i := range 256 {
		t.toEBCDIC[i], t.toASCII[i] = 0x3F, 0x1A // EBCDIC SUB, ASCII SUB
	}
	for i := range 256 {
		r := charmap.CodePage037.DecodeByte(byte(i))
		if a, ok := charmap.ISO8859_1.EncodeRune(r); ok {
			t.toASCII[i] = a
			t.toEBCDIC[a] = byte(i)
		}
	}
	return t
}

// translate rewrites b in place through table.
func translate(b []byte, table *[256]byte) {
	for i, c := range b {
		b[i] = table[c]
	}
}
