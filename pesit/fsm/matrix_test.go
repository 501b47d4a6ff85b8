package fsm

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// The expected transition matrices, written out independently of table.go
// (a different notation, re-derived from spec §4.8.4 and digest §4), so that
// a slip in either shows up as a test failure. One line per state:
//
//	STATE  KIND->NEXT(action)  KIND->OK|KO(action)  KIND(ignore) ...
//
// "->OK|KO" is an answer whose next state depends on PI 2 (positive OK,
// negative KO). Every (state, kind) not listed must be rejected with 3/311,
// except ABORT, valid everywhere (-> CN01, action close).

const responderReceivesWant = `
CN01   CONNECT->CN02B(answer)
CN03   RELEASE->CN04B(answer) CREATE->SF01B(answer) SELECT->SF02B(answer) MSG->MS01B(answer) MSGDM->MS02(deliver)
MS02   MSGMM->MS02(deliver) MSGFM->MS01B(answer)
SF03   ORF->OF01B(answer) DESELECT->SF04B(answer)
OF02   CRF->OF03B(answer) WRITE->TDE01B(answer) READ->TDL01B(answer)
TDE02B DTF->TDE02B(deliver) DTFDA->TDE02B(deliver) DTFMA->TDE02B(deliver) DTFFA->TDE02B(deliver) SYN->TDE02B(deliver)
       DTF.END->TDE07(deliver) IDT->TDE06(answer) RESYN->TDE04(answer)
TDE03  ACK(RESYN)->TDE02B(deliver) RESYN->TDE04(answer) IDT->TDE06(answer)
       DTF(ignore) DTFDA(ignore) DTFMA(ignore) DTFFA(ignore) SYN(ignore) DTF.END(ignore) TRANS.END(ignore)
TDE04  IDT->TDE06(answer)
TDE05  ACK(IDT)->OF02(deliver) IDT->TDE06(answer)
       DTF(ignore) DTFDA(ignore) DTFMA(ignore) DTFFA(ignore) SYN(ignore) DTF.END(ignore) TRANS.END(ignore)
       RESYN(ignore) ACK(RESYN)(ignore)
TDE06  IDT(ignore)
TDE07  TRANS.END->TDE08B(answer) IDT->TDE06(answer)
TDE08B IDT->TDE06(answer)
TDL02B ACK(SYN)->TDL02B(deliver) IDT->TDL06(answer) RESYN->TDL04(answer)
TDL03  ACK(RESYN)->TDL02B(deliver) RESYN->TDL04(answer) IDT->TDL06(answer) ACK(SYN)(ignore)
TDL04  IDT->TDL06(answer)
TDL05  ACK(IDT)->OF02(deliver) IDT->TDL06(answer) ACK(SYN)(ignore) RESYN(ignore) ACK(RESYN)(ignore) TRANS.END(ignore)
TDL06  IDT(ignore)
TDL07  TRANS.END->TDL08B(answer) ACK(SYN)->TDL07(deliver) IDT->TDL06(answer)
TDL08B IDT->TDL06(answer)
`

const responderSendsWant = `
CN02B  ACONNECT->CN03 RCONNECT->CN01
CN04B  RELCONF->CN01
SF01B  ACK(CREATE)->SF03|CN03
SF02B  ACK(SELECT)->SF03|CN03
SF04B  ACK(DESELECT)->CN03
MS01B  ACK(MSG)->CN03
OF01B  ACK(ORF)->OF02|SF03
OF03B  ACK(CRF)->SF03
TDE01B ACK(WRITE)->TDE02B|OF02
TDE02B ACK(SYN)->TDE02B IDT->TDE05 RESYN->TDE03
TDE03  IDT->TDE05
TDE04  ACK(RESYN)->TDE02B IDT->TDE05
TDE06  ACK(IDT)->OF02
TDE07  ACK(SYN)->TDE07 IDT->TDE05
TDE08B ACK(TRANS.END)->OF02 IDT->TDE05
TDL01B ACK(READ)->TDL02B|OF02
TDL02B DTF->TDL02B DTFDA->TDL02B DTFMA->TDL02B DTFFA->TDL02B SYN->TDL02B DTF.END->TDL07 IDT->TDL05 RESYN->TDL03
TDL03  IDT->TDL05
TDL04  ACK(RESYN)->TDL02B IDT->TDL05
TDL06  ACK(IDT)->OF02
TDL07  IDT->TDL05
TDL08B ACK(TRANS.END)->OF02 IDT->TDL05
`

const requesterReceivesWant = `
CN02A  ACONNECT->CN03(deliver) RCONNECT->CN01(close)
CN04A  RELCONF->CN01(close)
SF01A  ACK(CREATE)->SF03|CN03(deliver)
SF02A  ACK(SELECT)->SF03|CN03(deliver)
SF04A  ACK(DESELECT)->CN03(deliver)
MS01A  ACK(MSG)->CN03(deliver)
OF01A  ACK(ORF)->OF02|SF03(deliver)
OF03A  ACK(CRF)->SF03(deliver)
TDE01A ACK(WRITE)->TDE02A|OF02(deliver)
TDE02A ACK(SYN)->TDE02A(deliver) IDT->TDE06(answer) RESYN->TDE04(answer)
TDE03  ACK(RESYN)->TDE02A(deliver) IDT->TDE06(answer) ACK(SYN)(ignore) RESYN(ignore)
TDE04  IDT->TDE06(answer)
TDE05  ACK(IDT)->OF02(deliver) ACK(SYN)(ignore) RESYN(ignore) ACK(RESYN)(ignore) IDT(ignore)
TDE06  IDT(ignore)
TDE07  ACK(SYN)->TDE07(deliver) IDT->TDE06(answer) RESYN->TDE04(answer)
TDE08A ACK(TRANS.END)->OF02(deliver) IDT->TDE06(answer) RESYN->TDE04(answer) ACK(SYN)(ignore)
TDL01A ACK(READ)->TDL02A|OF02(deliver)
TDL02A DTF->TDL02A(deliver) DTFDA->TDL02A(deliver) DTFMA->TDL02A(deliver) DTFFA->TDL02A(deliver) SYN->TDL02A(deliver)
       DTF.END->TDL07(deliver) IDT->TDL06(answer) RESYN->TDL04(answer)
TDL03  ACK(RESYN)->TDL02A(deliver) IDT->TDL06(answer)
       DTF(ignore) DTFDA(ignore) DTFMA(ignore) DTFFA(ignore) SYN(ignore) DTF.END(ignore) RESYN(ignore)
TDL04  IDT->TDL06(answer)
TDL05  ACK(IDT)->OF02(deliver)
       DTF(ignore) DTFDA(ignore) DTFMA(ignore) DTFFA(ignore) SYN(ignore) DTF.END(ignore) RESYN(ignore) ACK(RESYN)(ignore) IDT(ignore)
TDL06  IDT(ignore)
TDL07  IDT->TDL06(answer)
TDL08A ACK(TRANS.END)->OF02(deliver) IDT->TDL06(answer)
`

const requesterSendsWant = `
CN01   CONNECT->CN02A
CN03   RELEASE->CN04A CREATE->SF01A SELECT->SF02A MSG->MS01A MSGDM->MS02
MS02   MSGMM->MS02 MSGFM->MS01A
SF03   ORF->OF01A DESELECT->SF04A
OF02   CRF->OF03A WRITE->TDE01A READ->TDL01A
TDE02A DTF->TDE02A DTFDA->TDE02A DTFMA->TDE02A DTFFA->TDE02A SYN->TDE02A DTF.END->TDE07 IDT->TDE05 RESYN->TDE03
TDE03  IDT->TDE05
TDE04  ACK(RESYN)->TDE02A IDT->TDE05
TDE06  ACK(IDT)->OF02
TDE07  TRANS.END->TDE08A IDT->TDE05
TDL02A ACK(SYN)->TDL02A IDT->TDL05 RESYN->TDL03
TDL03  IDT->TDL05
TDL04  ACK(RESYN)->TDL02A IDT->TDL05
TDL06  ACK(IDT)->OF02
TDL07  TRANS.END->TDL08A ACK(SYN)->TDL07 IDT->TDL05
`

type want struct {
	next, fail State
	act        Action
}

var cellRE = regexp.MustCompile(`^([A-Z][A-Z().]*?)(?:->([A-Z0-9]+)(?:\|([A-Z0-9]+))?)?(?:\(([a-z]+)\))?$`)

func parseWant(t *testing.T, role Role, sent bool, text string) map[State]map[fpdu.Kind]want {
	t.Helper()
	kinds := map[string]fpdu.Kind{}
	for _, k := range fpdu.Kinds() {
		kinds[k.String()] = k
	}
	states := map[string]State{}
	for _, s := range States(role) {
		states[s.String()] = s
	}
	acts := map[string]Action{"deliver": Deliver, "answer": Answer, "ignore": Ignore, "close": Close}
	out := map[State]map[fpdu.Kind]want{}
	var cur State
	for _, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasPrefix(line, " ") {
			s, ok := states[fields[0]]
			if !ok {
				t.Fatalf("listing: %q is not a %v state", fields[0], role)
			}
			cur, fields = s, fields[1:]
			if out[cur] == nil {
				out[cur] = map[fpdu.Kind]want{}
			}
		}
		for _, c := range fields {
			m := cellRE.FindStringSubmatch(c)
			if m == nil {
				t.Fatalf("listing: bad cell %q", c)
			}
			k, ok := kinds[m[1]]
			if !ok {
				t.Fatalf("listing: unknown kind %q", m[1])
			}
			w := want{next: cur, act: acts[m[4]]}
			if m[2] != "" {
				w.next = states[m[2]]
			}
			if m[3] != "" {
				w.fail = states[m[3]]
			}
			if w.next == 0 || (m[3] != "" && w.fail == 0) || (!sent && w.act == 0) || (sent && m[4] != "") {
				t.Fatalf("listing: bad cell %q in %v", c, cur)
			}
			if _, dup := out[cur][k]; dup {
				t.Fatalf("listing: %v x %v twice", cur, k)
			}
			out[cur][k] = w
		}
	}
	for _, s := range States(role) {
		if out[s] == nil {
			out[s] = map[fpdu.Kind]want{}
		}
		act := Close
		if sent {
			act = 0
		}
		out[s][fpdu.Abort] = want{next: CN01, act: act}
	}
	return out
}

// fixture is a machine of role in state s whose flags satisfy the guards an
// FPDU of kind k needs where it is valid: mixed access, sync every 32 KB
// with window 2 and resync negotiated, SYN 1 acknowledged and SYN 2
// outstanding (so SYN 3 and ACK(SYN) 2 are valid), inside a segmented
// article for DTFMA/DTFFA, a selected file for READ and ACK(SELECT).
func fixture(role Role, s State, k fpdu.Kind) *Machine {
	m := &Machine{role: role, state: s}
	m.s.access = AccessMixed
	m.s.proposed = SyncOption{IntervalKB: 32, Window: 2}
	m.s.proposedResync = true
	m.s.sync, m.s.resync = m.s.proposed, true
	m.s.win = NewSyncWindow(m.s.sync, 0)
	if m.s.win.Syn(1) != nil || m.s.win.Ack(1) != nil || m.s.win.Syn(2) != nil {
		panic("fixture window")
	}
	m.s.seg = k == fpdu.DTFMA || k == fpdu.DTFFA
	m.s.dr = k == fpdu.Read
	m.s.pendingDR = k == fpdu.AckSelect
	return m
}

func TestMatrix(t *testing.T) {
	for _, tc := range []struct {
		role    Role
		sent    bool
		listing string
	}{
		{Responder, false, responderReceivesWant},
		{Responder, true, responderSendsWant},
		{Requester, false, requesterReceivesWant},
		{Requester, true, requesterSendsWant},
	} {
		dir := "receives"
		if tc.sent {
			dir = "sends"
		}
		t.Run(fmt.Sprintf("%v %s", tc.role, dir), func(t *testing.T) {
			wants := parseWant(t, tc.role, tc.sent, tc.listing)
			valid, invalid := 0, 0
			for _, s := range States(tc.role) {
				for _, k := range fpdu.Kinds() {
					w, ok := wants[s][k]
					cell := fmt.Sprintf("%v x %v", s, k)
					m := fixture(tc.role, s, k)
					act, err := feed(m, tc.sent, sample(k))
					if !ok {
						invalid++
						wantViolation(t, err, fpdu.DiagProtocolError, cell)
						if m.State() != s {
							t.Fatalf("%s: rejected FPDU moved the machine to %v", cell, m.State())
						}
						continue
					}
					valid++
					if err != nil {
						t.Fatalf("%s: %v", cell, err)
					}
					if m.State() != w.next || (!tc.sent && act != w.act) {
						t.Fatalf("%s: -> %v (%v), want %v (%v)", cell, m.State(), act, w.next, w.act)
					}
					if w.fail != 0 {
						m := fixture(tc.role, s, k)
						act, err := feed(m, tc.sent, answer(k, fpdu.DiagFileNotFound))
						if err != nil || m.State() != w.fail || (!tc.sent && act != w.act) {
							t.Fatalf("%s negative: -> %v (%v, %v), want %v", cell, m.State(), act, err, w.fail)
						}
					}
				}
			}
			if n := len(States(tc.role)) * len(fpdu.Kinds()); valid+invalid != n {
				t.Fatalf("covered %d cells, want %d", valid+invalid, n)
			}
			t.Logf("%d valid cells, %d invalid", valid, invalid)
		})
	}
}

func feed(m *Machine, sent bool, f *fpdu.FPDU) (Action, error) {
	if sent {
		return 0, m.Sent(f)
	}
	return m.Received(f)
}

// TestMatrixBadParameters: in every valid, non-ignored cell where the kind
// has a mandatory parameter, the same FPDU without parameters is rejected
// with 3/318 (a data FPDU without data with 3/311), and the machine stays.
func TestMatrixBadParameters(t *testing.T) {
	bare := map[fpdu.Kind]bool{fpdu.RelConf: true, fpdu.ORF: true, fpdu.Write: true, fpdu.TransEnd: true,
		fpdu.AckIDT: true, fpdu.Abort: true}
	for _, tc := range []struct {
		role    Role
		sent    bool
		listing string
	}{
		{Responder, false, responderReceivesWant},
		{Responder, true, responderSendsWant},
		{Requester, false, requesterReceivesWant},
		{Requester, true, requesterSendsWant},
	} {
		wants := parseWant(t, tc.role, tc.sent, tc.listing)
		for _, s := range States(tc.role) {
			for k, w := range wants[s] {
				if w.act == Ignore || bare[k] {
					continue
				}
				cell := fmt.Sprintf("%v %v: %v x %v", tc.role, map[bool]string{false: "receives", true: "sends"}[tc.sent], s, k)
				m := fixture(tc.role, s, k)
				f := sample(k)
				f.Params, f.Data = nil, nil
				_, err := feed(m, tc.sent, f)
				d := fpdu.DiagBadParameter
				if k.IsData() {
					d = fpdu.DiagProtocolError
				}
				wantViolation(t, err, d, cell)
				if m.State() != s {
					t.Fatalf("%s: moved to %v", cell, m.State())
				}
			}
		}
	}
}

// TestGuards: cells valid in the matrix are refused with 3/311 when their
// condition on the flags does not hold.
func TestGuards(t *testing.T) {
	type mod func(m *Machine)
	ab := func(m *Machine) { m.s.ab = true }
	selected := func(m *Machine) { m.s.dr = true }
	created := func(m *Machine) { m.s.dr = false }
	noSync := func(m *Machine) { m.s.sync = SyncOption{}; m.s.win = NewSyncWindow(SyncOption{}, 0) }
	noResync := func(m *Machine) { m.s.resync = false }
	noWindow := func(m *Machine) {
		m.s.sync.Window = 0
		m.s.win = NewSyncWindow(m.s.sync, 0)
		_ = m.s.win.Syn(1)
		_ = m.s.win.Syn(2)
	}
	allAcked := func(m *Machine) { _ = m.s.win.Ack(2) }
	inSeg := func(m *Machine) { m.s.seg = true }
	whole := func(m *Machine) { m.s.seg = false }
	for _, c := range []struct {
		role   Role
		sent   bool
		state  State
		f      *fpdu.FPDU
		break_ mod
	}{
		{Responder, false, SF03, sample(fpdu.ORF), ab},
		{Requester, true, SF03, sample(fpdu.ORF), ab},
		{Responder, false, OF02, sample(fpdu.Write), ab},
		{Responder, false, OF02, sample(fpdu.Write), selected},
		{Responder, false, OF02, sample(fpdu.Read), ab},
		{Responder, false, OF02, sample(fpdu.Read), created},
		{Requester, true, OF02, sample(fpdu.Write), selected},
		{Requester, true, OF02, sample(fpdu.Read), created},
		{Responder, false, TDE02B, syn(3), noSync},
		{Responder, false, TDE02B, syn(3), inSeg},
		{Responder, false, TDE02B, sample(fpdu.DTF), inSeg},
		{Responder, false, TDE02B, sample(fpdu.DTFDA), inSeg},
		{Responder, false, TDE02B, sample(fpdu.DTFMA), whole},
		{Responder, false, TDE02B, sample(fpdu.DTFFA), whole},
		{Responder, false, TDE02B, sample(fpdu.DTFEnd), inSeg},
		{Responder, false, TDE02B, sample(fpdu.Resyn), noResync},
		{Responder, false, TDE02B, sample(fpdu.Resyn), noSync},
		{Responder, false, TDL02B, ackSyn(2), noWindow},
		{Responder, false, TDL02B, ackSyn(2), allAcked},
		{Responder, false, TDL02B, ackSyn(2), noSync},
		{Responder, true, TDE02B, ackSyn(2), allAcked},
		{Responder, true, TDL02B, syn(3), inSeg},
		{Responder, true, TDL02B, sample(fpdu.DTFEnd), inSeg},
		{Responder, true, TDL02B, sample(fpdu.DTFFA), whole},
		{Requester, false, TDL02A, sample(fpdu.DTFMA), whole},
		{Requester, false, TDL02A, syn(3), noSync},
		{Requester, true, TDE02A, sample(fpdu.Resyn), noResync},
		{Requester, true, TDE02A, sample(fpdu.DTF), inSeg},
		{Requester, false, TDE02A, ackSyn(2), allAcked},
	} {
		name := fmt.Sprintf("%v %v in %v sent=%v", c.role, c.f.Kind, c.state, c.sent)
		m := fixture(c.role, c.state, c.f.Kind)
		if _, err := feed(m, c.sent, c.f); err != nil {
			t.Fatalf("%s: valid without the breaking change: %v", name, err)
		}
		m = fixture(c.role, c.state, c.f.Kind)
		c.break_(m)
		_, err := feed(m, c.sent, c.f)
		wantViolation(t, err, fpdu.DiagProtocolError, name)
		if m.State() != c.state {
			t.Fatalf("%s: moved to %v", name, m.State())
		}
	}
}
