package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// TestInvalidFPDUsAnsweredByTheMachine: an FPDU that lacks a mandatory
// parameter is refused by the state machine, which runs fpdu.Validate on
// everything received (pesit/fsm), with ABORT 3/318 and the machine's own
// account of it in the log. The server validates nothing again: a CONNECT
// it would have answered with RCONNECT never gets that far.
func TestInvalidFPDUsAnsweredByTheMachine(t *testing.T) {
	e := newEnv(t, nil)
	connected := func(p *peer) { p.connect() }
	cases := []struct {
		name   string
		before func(p *peer)
		frame  func(p *peer) []byte
		state  string
	}{
		{"CONNECT without PI 22", func(*peer) {}, func(*peer) []byte {
			return frame(fpdu.Connect, 0, 0x62, pis(fpdu.PIRequesterID, partnerID), pis(fpdu.PIServerID, serverID),
				pis(fpdu.PIAccessControl, password), pi(fpdu.PIVersion, 2))
		}, "CN01: CONNECT received"},
		{"CREATE without PI 13", connected, func(p *peer) []byte {
			return frame(fpdu.Create, p.srvID, 0, pgi(fpdu.PGIFileID, pi(fpdu.PIFileType, 0), pis(fpdu.PIFileName, "TESTFILE")),
				pi(fpdu.PIPriority, 0), pi(fpdu.PIEntitySize, 0xFF, 0xFF),
				pgi(fpdu.PGILogical, pi(fpdu.PIArticleFormat, 0x80), pi(fpdu.PIArticleLength, 4, 0)),
				pgi(fpdu.PGIPhysical, pi(fpdu.PISpaceUnit, 0), pi(fpdu.PISpaceMax, 0, 0, 4, 0)))
		}, "CN03: CREATE received"},
		{"SELECT without PI 25", connected, func(p *peer) []byte {
			return frame(fpdu.Select, p.srvID, 0, pgi(fpdu.PGIFileID, pi(fpdu.PIFileType, 0), pis(fpdu.PIFileName, "TESTFILE")),
				pi(fpdu.PITransferID, 0, 0, 7), pi(fpdu.PIPriority, 0))
		}, "CN03: SELECT received"},
		{"MSG without PI 13", connected, func(p *peer) []byte {
			return frame(fpdu.Msg, p.srvID, 0, pgi(fpdu.PGIFileID, pi(fpdu.PIFileType, 0), pis(fpdu.PIFileName, "M")),
				pis(fpdu.PIMessage, "hello"))
		}, "CN03: MSG received"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := dial(t, e.srv.Addr())
			c.before(p)
			p.raw(c.frame(p))
			p.expectDiag(fpdu.Abort, fpdu.DiagBadParameter)
			p.expectClosed()
			testenv.Eventually(t, 5*time.Second, testenv.Awaiting("the abort in the log", func() bool {
				return strings.Contains(e.logs.String(), "pesit responder in "+c.state)
			}))
		})
	}
}
