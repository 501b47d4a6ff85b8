package server_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// FuzzSession feeds a real server arbitrary bytes after the CX CONNECT: it
// must answer with an FPDU stream or close, never panic, and keep serving.
// Seeds are a valid push prefix and its variations.
// Run: go test -run '^$' -fuzz FuzzSession -fuzztime 60s ./pesit/server/
func FuzzSession(f *testing.F) {
	var push bytes.Buffer
	push.Write(createFrame(1, createOpts{file: "TESTFILE", pi13: 0x24C9}))
	push.Write(frame(fpdu.ORF, 1, 0, pi(fpdu.PICompression, 0, 0)))
	push.Write(frame(fpdu.Write, 1, 0))
	push.Write(frame(fpdu.DTF, 1, 0, []byte("hello")))
	push.Write(frame(fpdu.DTF, 1, 2, []byte{0, 1, 'a', 0, 0}))
	push.Write(frame(fpdu.DTFDA, 1, 0, []byte("seg")))
	push.Write(frame(fpdu.DTFFA, 1, 0, []byte("ment")))
	push.Write(frame(fpdu.Syn, 1, 0, pi(fpdu.PISyncNumber, 1)))
	push.Write(frame(fpdu.DTFEnd, 1, 0, pi(fpdu.PIDiagnostic, 0, 0, 0)))
	push.Write(frame(fpdu.TransEnd, 1, 0, pi(fpdu.PIByteCount, 17), pi(fpdu.PIArticleCount, 4)))
	f.Add(push.Bytes())
	f.Add(selectFrame(1, "TESTFILE", 0, false))
	f.Add(frame(fpdu.Msg, 1, 0, pgi(fpdu.PGIFileID, pi(fpdu.PIFileType, 0), pis(fpdu.PIFileName, "M")), pi(fpdu.PITransferID, 1)))
	f.Add([]byte{0, 6, 0, 6, 0xC0, 0x14, 1, 0})
	f.Add([]byte{0xFF, 0xFF, 0})

	e := newEnv(f, func(c *server.Config) {
		c.InactivityTimeout = 100 * time.Millisecond
		c.IdleTimeout = 100 * time.Millisecond
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		p := dial(t, e.srv.Addr())
		p.raw(cxConnect)
		p.srvID = p.expect(fpdu.AConnect).SrcID
		p.c.Write(in)
		p.c.(*net.TCPConn).CloseWrite() // EOF ends the session at once, not after Tp
		// Whatever comes back must be well framed, until the server closes.
		p.c.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			if _, err := p.r.Next(); err != nil {
				if err != io.EOF && !isClosedErr(err) {
					t.Fatalf("server output: %v", err)
				}
				break
			}
		}
		q := dial(t, e.srv.Addr())
		q.connect()
		q.release()
	})
}

func isClosedErr(err error) bool {
	return err != nil && (bytes.Contains([]byte(err.Error()), []byte("reset")) || bytes.Contains([]byte(err.Error()), []byte("closed")))
}
