package fpdu

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vectis-ft/vectis/pesit/internal/codepage"
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
// (each at most 8 characters of codepage's invariant set), framed if asked.
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
			e, ok := codepage.InvariantToEBCDIC(c)
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
		c, ok := codepage.InvariantToASCII(e)
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
