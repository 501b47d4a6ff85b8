package fpdu

import (
	"bytes"
	"errors"
	"fmt"
)

// PreConnLen is the size of the pre-connection message (spec §3.8.2):
// "PESIT   " + 8-byte requester id + 8-byte password, all EBCDIC.
const PreConnLen = 24

// ErrPreConnection reports a malformed pre-connection message.
var ErrPreConnection = errors.New("bad pre-connection message")

// preConnProtocol is "PESIT   " in EBCDIC.
var preConnProtocol = [8]byte{0xD7, 0xC5, 0xE2, 0xC9, 0xE3, 0x40, 0x40, 0x40}

// The 4-byte EBCDIC replies "ACK0" and "NAK0".
var (
	preConnACK = [4]byte{0xC1, 0xC3, 0xD2, 0xF0}
	preConnNAK = [4]byte{0xD5, 0xC1, 0xD2, 0xF0}
)

// PreConnection is the optional EBCDIC message some requesters send before
// CONNECT. RequesterID and Password are in ASCII with trailing blanks trimmed.
// Password is a secret: String redacts it.
type PreConnection struct {
	RequesterID, Password string
	// Framed is true when the message came with a 2-byte frame prefix
	// (00 18); the reply then carries one too (00 04).
	Framed bool
}

func (p *PreConnection) String() string {
	return fmt.Sprintf("PRECONNECTION requester=%q password=<redacted> framed=%t", p.RequesterID, p.Framed)
}

// AppendReply appends ACK0 (ok) or NAK0 in the same framing as the request.
func (p *PreConnection) AppendReply(dst []byte, ok bool) []byte {
	if p.Framed {
		return AppendPreConnectionReply(dst, ok)
	}
	return append(dst, preConnReply(ok)...)
}

func preConnReply(ok bool) []byte {
	if ok {
		return preConnACK[:]
	}
	return preConnNAK[:]
}

// AppendPreConnectionReply appends the framed reply: 00 04 then ACK0 (ok) or
// NAK0.
func AppendPreConnectionReply(dst []byte, ok bool) []byte {
	return append(append(dst, 0, 4), preConnReply(ok)...)
}

// AppendPreConnection appends the 24-byte message for id and password
// (each at most 8 characters of the EBCDIC table), framed if asked.
func AppendPreConnection(dst []byte, id, password string, framed bool) ([]byte, error) {
	if len(id) > 8 || len(password) > 8 {
		return dst, fmt.Errorf("fpdu: pre-connection id and password are at most 8 characters: %w", ErrPreConnection)
	}
	start := len(dst)
	if framed {
		dst = append(dst, 0, PreConnLen)
	}
	dst = append(dst, preConnProtocol[:]...)
	for _, s := range []string{id, password} {
		for i := range 8 {
			c := byte(' ')
			if i < len(s) {
				c = s[i]
			}
			e, ok := ASCIIToEBCDIC(c)
			if !ok {
				return dst[:start], fmt.Errorf("fpdu: pre-connection: character %q has no EBCDIC mapping: %w", c, ErrPreConnection)
			}
			dst = append(dst, e)
		}
	}
	return dst, nil
}

// ParsePreConnection decodes the 24-byte body of a pre-connection message.
func ParsePreConnection(b []byte) (*PreConnection, error) {
	if len(b) != PreConnLen {
		return nil, fmt.Errorf("fpdu: pre-connection of %d bytes, want %d: %w", len(b), PreConnLen, ErrPreConnection)
	}
	if !bytes.Equal(b[:8], preConnProtocol[:]) {
		return nil, fmt.Errorf("fpdu: pre-connection protocol is not \"PESIT   \": %w", ErrPreConnection)
	}
	id, err := ebcdicField(b[8:16])
	if err != nil {
		return nil, fmt.Errorf("fpdu: pre-connection requester id: %w", err)
	}
	pw, err := ebcdicField(b[16:24])
	if err != nil {
		// Never echo password bytes into an error.
		return nil, fmt.Errorf("fpdu: pre-connection password has a byte outside the EBCDIC table: %w", ErrPreConnection)
	}
	return &PreConnection{RequesterID: id, Password: pw}, nil
}

func ebcdicField(b []byte) (string, error) {
	var out [8]byte
	for i, e := range b {
		c, ok := EBCDICToASCII(e)
		if !ok {
			return "", fmt.Errorf("byte %#02x outside the EBCDIC table: %w", e, ErrPreConnection)
		}
		out[i] = c
	}
	return string(bytes.TrimRight(out[:len(b)], " ")), nil
}

// ReadPreConnection must be called once, before the first Next. If the
// stream starts with a pre-connection message, framed (00 18 D7 C5 ...) or
// bare (D7 C5 ...), it consumes and returns it; if it starts with an FPDU
// frame it consumes nothing and returns nil, nil.
func (r *Reader) ReadPreConnection() (*PreConnection, error) {
	if r.started {
		return nil, errors.New("fpdu: ReadPreConnection after the stream was read")
	}
	r.started = true
	// 4 bytes tell the forms apart; any valid stream starts with more.
	if err := r.fill(4); err != nil {
		return nil, err
	}
	b := r.buf[r.rpos:r.wpos]
	framed := b[0] == 0 && b[1] == PreConnLen && b[2] == preConnProtocol[0] && b[3] == preConnProtocol[1]
	bare := b[0] == preConnProtocol[0] && b[1] == preConnProtocol[1]
	if !framed && !bare {
		return nil, nil
	}
	n := PreConnLen
	if framed {
		n += 2
	}
	if err := r.fill(n); err != nil {
		return nil, err
	}
	msg := r.buf[r.rpos+n-PreConnLen : r.rpos+n]
	r.rpos += n
	p, err := ParsePreConnection(msg)
	if err != nil {
		return nil, err
	}
	p.Framed = framed
	return p, nil
}

// ReadPreConnectionReply reads the 4-byte ACK0/NAK0 answer (framed 00 04 or
// bare) for a requester that sent a pre-connection message.
func (r *Reader) ReadPreConnectionReply() (ok bool, err error) {
	if err := r.fill(4); err != nil {
		return false, err
	}
	b := r.buf[r.rpos:r.wpos]
	n := 4
	if b[0] == 0 && b[1] == 4 {
		n = 6
		if err := r.fill(n); err != nil {
			return false, err
		}
		b = r.buf[r.rpos:r.wpos]
	}
	reply := [4]byte(b[n-4 : n])
	r.rpos += n
	r.started = true
	switch reply {
	case preConnACK:
		return true, nil
	case preConnNAK:
		return false, nil
	}
	return false, fmt.Errorf("fpdu: pre-connection reply % X is neither ACK0 nor NAK0: %w", reply, ErrPreConnection)
}

// ebcdicTable maps the code-page-invariant EBCDIC characters (shared by
// CP037, CP500 and CP1047) to ASCII: letters, digits, blank and the common
// punctuation. Characters that differ between code pages ([ ] ! | ^ ...) are
// left out rather than guessed.
var ebcdicTable = [...][2]byte{
	{0x40, ' '}, {0x4B, '.'}, {0x4C, '<'}, {0x4D, '('}, {0x4E, '+'}, {0x50, '&'},
	{0x5B, '$'}, {0x5C, '*'}, {0x5D, ')'}, {0x5E, ';'}, {0x60, '-'}, {0x61, '/'},
	{0x6B, ','}, {0x6C, '%'}, {0x6D, '_'}, {0x6E, '>'}, {0x6F, '?'}, {0x7A, ':'},
	{0x7B, '#'}, {0x7C, '@'}, {0x7D, '\''}, {0x7E, '='}, {0x7F, '"'},
}

// EBCDICToASCII maps one EBCDIC byte of the table to ASCII.
func EBCDICToASCII(e byte) (byte, bool) {
	switch {
	case e >= 0x81 && e <= 0x89:
		return 'a' + e - 0x81, true
	case e >= 0x91 && e <= 0x99:
		return 'j' + e - 0x91, true
	case e >= 0xA2 && e <= 0xA9:
		return 's' + e - 0xA2, true
	case e >= 0xC1 && e <= 0xC9:
		return 'A' + e - 0xC1, true
	case e >= 0xD1 && e <= 0xD9:
		return 'J' + e - 0xD1, true
	case e >= 0xE2 && e <= 0xE9:
		return 'S' + e - 0xE2, true
	case e >= 0xF0 && e <= 0xF9:
		return '0' + e - 0xF0, true
	}
	for _, p := range ebcdicTable {
		if p[0] == e {
			return p[1], true
		}
	}
	return 0, false
}

// ASCIIToEBCDIC maps one ASCII character of the table to EBCDIC.
func ASCIIToEBCDIC(c byte) (byte, bool) {
	switch {
	case c >= 'a' && c <= 'i':
		return 0x81 + c - 'a', true
	case c >= 'j' && c <= 'r':
		return 0x91 + c - 'j', true
	case c >= 's' && c <= 'z':
		return 0xA2 + c - 's', true
	case c >= 'A' && c <= 'I':
		return 0xC1 + c - 'A', true
	case c >= 'J' && c <= 'R':
		return 0xD1 + c - 'J', true
	case c >= 'S' && c <= 'Z':
		return 0xE2 + c - 'S', true
	case c >= '0' && c <= '9':
		return 0xF0 + c - '0', true
	}
	for _, p := range ebcdicTable {
		if p[1] == c {
			return p[0], true
		}
	}
	return 0, false
}
