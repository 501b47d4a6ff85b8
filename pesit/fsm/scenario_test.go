package fsm

import (
	"bytes"
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// pair runs a requester and a responder in lockstep: every FPDU goes
// through the sender's Sent, the codec (encode, decode, as on the wire) and
// the receiver's Received.
type pair struct {
	t    *testing.T
	c, s *Machine
}

func newPair(t *testing.T) *pair { return &pair{t: t, c: NewRequester(), s: NewResponder()} }

func wire(t *testing.T, f *fpdu.FPDU) *fpdu.FPDU {
	t.Helper()
	b, err := fpdu.AppendEncode(nil, f)
	if err != nil {
		t.Fatalf("encode %v: %v", f.Kind, err)
	}
	g, err := fpdu.Decode(b)
	if err != nil {
		t.Fatalf("decode %v: %v", f.Kind, err)
	}
	return &g
}

// c2s sends f from the requester; the responder must react with act.
func (p *pair) c2s(f *fpdu.FPDU, act Action) {
	p.t.Helper()
	p.send(p.c, p.s, f, act)
}

// s2c sends f from the responder; the requester must react with act.
func (p *pair) s2c(f *fpdu.FPDU, act Action) {
	p.t.Helper()
	p.send(p.s, p.c, f, act)
}

func (p *pair) send(from, to *Machine, f *fpdu.FPDU, act Action) {
	p.t.Helper()
	if err := from.Sent(f); err != nil {
		p.t.Fatalf("%v sends %v: %v", from.Role(), f.Kind, err)
	}
	got, err := to.Received(wire(p.t, f))
	if err != nil {
		p.t.Fatalf("%v receives %v: %v", to.Role(), f.Kind, err)
	}
	if got != act {
		p.t.Fatalf("%v receives %v in %v: action %v, want %v", to.Role(), f.Kind, to.State(), got, act)
	}
}

func (p *pair) in(c, s State) {
	p.t.Helper()
	if p.c.State() != c || p.s.State() != s {
		p.t.Fatalf("requester in %v, responder in %v; want %v and %v", p.c.State(), p.s.State(), c, s)
	}
}

var cxSync = SyncOption{IntervalKB: 32, Window: 2}

// connectCX opens a connection the way CX does (PI 7 = 00 20 02, PI 22 =
// access), the server negotiating with local as its own sync wishes.
func (p *pair) connectCX(access byte, local SyncOption) {
	p.t.Helper()
	c := connect(access, &cxSync, false)
	p.c2s(c, Answer)
	p.in(CN02A, CN02B)
	if k, ok := p.s.Owed(); !ok || k != fpdu.AConnect {
		p.t.Fatalf("owed in CN02B: %v %v", k, ok)
	}
	v, _ := c.Params.Bytes(fpdu.PISyncOption)
	o, err := NegotiateSync(v, true, local)
	if err != nil {
		p.t.Fatal(err)
	}
	rs, _ := c.Params.Bytes(fpdu.PIResync)
	_, hasRS := c.Params.Bytes(fpdu.PIResync)
	r, err := NegotiateResync(rs, hasRS, false)
	if err != nil || r != 0 {
		p.t.Fatalf("resync %d %v", r, err)
	}
	p.s2c(aconnect(o, false), Deliver)
	p.in(CN03, CN03)
}

func (p *pair) release() {
	p.t.Helper()
	p.c2s(mk(fpdu.Release, diagPI(fpdu.DiagOK)), Answer)
	p.in(CN04A, CN04B)
	p.s2c(mk(fpdu.RelConf), Close)
	p.in(CN01, CN01)
}

// pushBlocks sends n blocks of CX's layout: 8 x [DTF(3 x 1024) DTFDA(1006)
// DTFFA(18)] = 32 KiB, with SYN/ACK(SYN) after each block but the last.
func (p *pair) pushBlocks(first uint32, n int) {
	p.t.Helper()
	art := bytes.Repeat([]byte{'x'}, 1024)
	var multi []byte
	for range 3 {
		multi = append(multi, 4, 0)
		multi = append(multi, art...)
	}
	dtf3 := data(fpdu.DTF, multi)
	dtf3.SrcID = 3
	for b := range n {
		for range 8 {
			p.c2s(dtf3, Deliver)
			p.c2s(data(fpdu.DTFDA, art[:1006]), Deliver)
			p.c2s(data(fpdu.DTFFA, art[1006:]), Deliver)
		}
		if b < n-1 {
			num := first + uint32(b)
			p.c2s(syn(num), Deliver)
			if !p.s.Window().Pending() {
				p.t.Fatalf("SYN %d received, nothing pending", num)
			}
			p.s2c(ackSyn(num), Deliver)
		}
	}
}

// TestCXPush is digest §9.1: CX pushes 1 MiB.
func TestCXPush(t *testing.T) {
	p := newPair(t)
	p.connectCX(2, SyncOption{IntervalKB: 64, Window: 4}) // the server lowers nothing: CX's 32 KB/2 win
	if got := p.s.SyncOption(); got != cxSync || p.c.SyncOption() != cxSync {
		t.Fatalf("negotiated %v / %v, want %v", p.s.SyncOption(), p.c.SyncOption(), cxSync)
	}
	if a, ok := p.s.AccessType(); !ok || a != AccessMixed {
		t.Fatalf("access type %v %v", a, ok)
	}
	p.c2s(create(false), Answer)
	p.in(SF01A, SF01B)
	p.s2c(answer(fpdu.AckCreate, fpdu.DiagOK), Deliver)
	p.in(SF03, SF03)
	p.c2s(mk(fpdu.ORF, pi(fpdu.PICompression, 0, 0)), Answer)
	p.s2c(sample(fpdu.AckORF), Deliver)
	p.in(OF02, OF02)
	p.c2s(mk(fpdu.Write), Answer)
	p.in(TDE01A, TDE01B)
	p.s2c(answer(fpdu.AckWrite, fpdu.DiagOK), Deliver)
	p.in(TDE02A, TDE02B)
	p.pushBlocks(1, 32)
	if w := p.s.Window(); w.LastSent() != 31 || w.LastAcked() != 31 || w.Since() != 32768 {
		t.Fatalf("server window: sent %d acked %d since %d", w.LastSent(), w.LastAcked(), w.Since())
	}
	p.c2s(sample(fpdu.DTFEnd), Deliver)
	p.in(TDE07, TDE07)
	p.c2s(mk(fpdu.TransEnd, pi(fpdu.PIByteCount, 0x10, 0, 0), pi(fpdu.PIArticleCount, 4, 0)), Answer)
	p.in(TDE08A, TDE08B)
	p.s2c(mk(fpdu.AckTransEnd, diagPI(fpdu.DiagOK), pi(fpdu.PIByteCount, 0x10, 0, 0), pi(fpdu.PIArticleCount, 4, 0)), Deliver)
	p.in(OF02, OF02)
	p.c2s(sample(fpdu.CRF), Answer)
	p.s2c(sample(fpdu.AckCRF), Deliver)
	p.in(SF03, SF03)
	p.c2s(sample(fpdu.Deselect), Answer)
	p.s2c(sample(fpdu.AckDeselect), Deliver)
	p.in(CN03, CN03)
	p.release()
}

// TestCXPull is digest §9.2: CX pulls a file; the server sends it with
// sync points every 32 KiB.
func TestCXPull(t *testing.T) {
	p := newPair(t)
	p.connectCX(2, SyncOption{IntervalKB: 32, Window: 2})
	p.c2s(selectF(false), Answer)
	p.s2c(answer(fpdu.AckSelect, fpdu.DiagOK), Deliver)
	p.in(SF03, SF03)
	if !p.s.RequesterReceives() || !p.c.RequesterReceives() {
		t.Fatal("dr not set after SELECT")
	}
	p.c2s(sample(fpdu.ORF), Answer)
	p.s2c(sample(fpdu.AckORF), Deliver)
	// WRITE is invalid after SELECT.
	_, err := p.s.Received(mk(fpdu.Write))
	wantViolation(t, err, fpdu.DiagProtocolError, "WRITE after SELECT")
	p.c2s(mk(fpdu.Read, pi(fpdu.PIRestartPoint, 0)), Answer)
	p.in(TDL01A, TDL01B)
	p.s2c(sample(fpdu.AckRead), Deliver)
	p.in(TDL02A, TDL02B)
	art := bytes.Repeat([]byte{'y'}, 1024)
	var n uint32
	for i := range 100 {
		// The sender's duty, asked of the machine's window.
		if w := p.s.Window(); w.NeedSync(len(art)) {
			n = w.Next()
			p.s2c(syn(n), Deliver)
			if w := p.s.Window(); w.Blocked() {
				t.Fatalf("blocked after SYN %d with window 2", n)
			}
			p.c2s(ackSyn(n), Deliver)
		}
		p.s2c(data(fpdu.DTF, art), Deliver)
		_ = i
	}
	if n != 3 {
		t.Fatalf("100 KiB at 32 KiB per sync point: last SYN %d, want 3", n)
	}
	p.s2c(sample(fpdu.DTFEnd), Deliver)
	p.in(TDL07, TDL07)
	p.c2s(mk(fpdu.TransEnd, pi(fpdu.PIByteCount, 0x01, 0x90, 0), pi(fpdu.PIArticleCount, 100)), Answer)
	p.s2c(sample(fpdu.AckTransEnd), Deliver)
	p.in(OF02, OF02)
	p.c2s(sample(fpdu.CRF), Answer)
	p.s2c(sample(fpdu.AckCRF), Deliver)
	p.c2s(sample(fpdu.Deselect), Answer)
	p.s2c(sample(fpdu.AckDeselect), Deliver)
	if p.s.RequesterReceives() {
		t.Fatal("dr still set after DESELECT")
	}
	p.release()
}

// TestRefusedThenRelease: CX sends RELEASE straight after a refused CREATE
// or SELECT, with no DESELECT (digest §4.2, §9.4).
func TestRefusedThenRelease(t *testing.T) {
	for _, c := range []struct {
		req *fpdu.FPDU
		ack fpdu.Kind
		d   fpdu.Diagnostic
	}{
		{create(false), fpdu.AckCreate, fpdu.DiagFileExists},
		{selectF(false), fpdu.AckSelect, fpdu.DiagFileNotFound},
	} {
		p := newPair(t)
		p.connectCX(2, cxSync)
		p.c2s(c.req, Answer)
		p.s2c(answer(c.ack, c.d), Deliver)
		p.in(CN03, CN03)
		// No file is selected: DESELECT is invalid, RELEASE is fine.
		_, err := p.s.Received(sample(fpdu.Deselect))
		wantViolation(t, err, fpdu.DiagProtocolError, "DESELECT after a refusal")
		p.release()
	}
}

// TestAccessType: PI 22 = 1 (read) forbids CREATE. The server must refuse
// it with 2/226; a positive answer is a bug the machine reports, and a
// requester cannot even send it.
func TestAccessType(t *testing.T) {
	p := newPair(t)
	p.connectCX(1, cxSync)
	if a, _ := p.s.AccessType(); a.Allows(fpdu.Create) || !a.Allows(fpdu.Select) {
		t.Fatalf("access %v", a)
	}
	wantViolation(t, p.c.Sent(create(false)), fpdu.DiagProtocolError, "requester CREATE on a read connection")
	if _, err := p.s.Received(create(false)); err != nil {
		t.Fatal(err)
	}
	wantViolation(t, p.s.Sent(answer(fpdu.AckCreate, fpdu.DiagOK)), fpdu.DiagProtocolError, "positive ACK(CREATE)")
	if p.s.State() != SF01B {
		t.Fatalf("state %v after a rejected send", p.s.State())
	}
	if err := p.s.Sent(answer(fpdu.AckCreate, fpdu.DiagTransferRefused)); err != nil || p.s.State() != CN03 {
		t.Fatalf("refusal: %v, state %v", err, p.s.State())
	}
}

// TestIDTRestart: the server runs out of disk (2/219) and interrupts with
// IDT code 4 while the requester's data is still in flight; the requester
// closes, deselects and restarts with a new CREATE (PI 15 = 1) from the
// server's last acknowledged sync point.
func TestIDTRestart(t *testing.T) {
	p := newPair(t)
	p.connectCX(2, cxSync)
	p.c2s(create(false), Answer)
	p.s2c(answer(fpdu.AckCreate, fpdu.DiagOK), Deliver)
	p.c2s(sample(fpdu.ORF), Answer)
	p.s2c(sample(fpdu.AckORF), Deliver)
	p.c2s(mk(fpdu.Write), Answer)
	p.s2c(answer(fpdu.AckWrite, fpdu.DiagOK), Deliver)
	p.pushBlocks(1, 3) // SYN 1 and 2 acknowledged
	// The server sends IDT; the requester, not having seen it, sends more.
	stop := idt(4, fpdu.DiagSpaceExhausted)
	if err := p.s.Sent(stop); err != nil {
		t.Fatal(err)
	}
	if p.s.State() != TDE05 {
		t.Fatalf("server in %v after IDT", p.s.State())
	}
	inFlight := []*fpdu.FPDU{syn(3), data(fpdu.DTF, []byte("a")), data(fpdu.DTFDA, []byte("b")), data(fpdu.DTFFA, []byte("c")), sample(fpdu.DTFEnd)}
	for _, f := range inFlight {
		if err := p.c.Sent(f); err != nil {
			t.Fatalf("requester sends %v: %v", f.Kind, err)
		}
		if act, err := p.s.Received(wire(t, f)); err != nil || act != Ignore {
			t.Fatalf("server in TDE05 receives %v: %v %v, want ignore", f.Kind, act, err)
		}
	}
	// The requester is now in TDE07 (it sent DTF.END) and gets the IDT.
	if act, err := p.c.Received(wire(t, stop)); err != nil || act != Answer || p.c.State() != TDE06 {
		t.Fatalf("requester receives IDT: %v %v in %v", act, err, p.c.State())
	}
	p.c2s(mk(fpdu.AckIDT), Deliver)
	p.in(OF02, OF02)
	if p.c.Interrupted() || p.s.Interrupted() {
		t.Fatal("IDT code 4 set ab")
	}
	p.c2s(mk(fpdu.CRF, diagPI(fpdu.DiagSpaceExhausted)), Answer)
	p.s2c(mk(fpdu.AckCRF, diagPI(fpdu.DiagCannotClose)), Deliver) // CRF cannot be refused
	p.in(SF03, SF03)
	p.c2s(sample(fpdu.Deselect), Answer)
	p.s2c(mk(fpdu.AckDeselect, diagPI(fpdu.DiagDeselectError)), Deliver) // nor DESELECT
	p.in(CN03, CN03)
	p.c2s(create(true), Answer)
	p.s2c(answer(fpdu.AckCreate, fpdu.DiagOK), Deliver)
	if !p.s.Restart() || !p.c.Restart() {
		t.Fatal("rel not set by CREATE PI 15 = 1")
	}
	p.c2s(sample(fpdu.ORF), Answer)
	p.s2c(sample(fpdu.AckORF), Deliver)
	p.c2s(mk(fpdu.Write), Answer)
	p.s2c(mk(fpdu.AckWrite, diagPI(fpdu.DiagOK), pi(fpdu.PIRestartPoint, 2)), Deliver)
	if p.s.Window().Next() != 3 || p.c.Window().Next() != 3 {
		t.Fatalf("after a restart from point 2 the next SYN is %d/%d, want 3", p.s.Window().Next(), p.c.Window().Next())
	}
	p.pushBlocks(3, 2)
	p.c2s(sample(fpdu.DTFEnd), Deliver)
	p.c2s(mk(fpdu.TransEnd), Answer)
	p.s2c(sample(fpdu.AckTransEnd), Deliver)
	p.in(OF02, OF02)
}

// TestIDTSuspendSetsAB: a suspension (code 8) or a cancellation sets ab:
// the file cannot be reopened nor written until DESELECT clears it.
func TestIDTSuspendSetsAB(t *testing.T) {
	for _, code := range []byte{8, 12, 16} {
		p := newPair(t)
		p.connectCX(2, cxSync)
		p.c2s(create(false), Answer)
		p.s2c(answer(fpdu.AckCreate, fpdu.DiagOK), Deliver)
		p.c2s(sample(fpdu.ORF), Answer)
		p.s2c(sample(fpdu.AckORF), Deliver)
		p.c2s(mk(fpdu.Write), Answer)
		p.s2c(answer(fpdu.AckWrite, fpdu.DiagOK), Deliver)
		p.c2s(data(fpdu.DTF, []byte("x")), Deliver)
		p.c2s(idt(code, fpdu.DiagVoluntaryStop), Answer)
		p.in(TDE05, TDE06)
		p.s2c(mk(fpdu.AckIDT), Deliver)
		p.in(OF02, OF02)
		if !p.c.Interrupted() || !p.s.Interrupted() {
			t.Fatalf("code %d: ab not set", code)
		}
		wantViolation(t, p.c.Sent(mk(fpdu.Write)), fpdu.DiagProtocolError, "requester WRITE with ab")
		_, err := p.s.Received(mk(fpdu.Write))
		wantViolation(t, err, fpdu.DiagProtocolError, "WRITE with ab")
		p.c2s(sample(fpdu.CRF), Answer)
		p.s2c(sample(fpdu.AckCRF), Deliver)
		_, err = p.s.Received(sample(fpdu.ORF))
		wantViolation(t, err, fpdu.DiagProtocolError, "ORF with ab")
		p.c2s(sample(fpdu.Deselect), Answer)
		p.s2c(sample(fpdu.AckDeselect), Deliver)
		if p.c.Interrupted() || p.s.Interrupted() {
			t.Fatalf("code %d: DESELECT did not clear ab", code)
		}
		p.release()
	}
}

// TestIDTCollision: both sides send IDT at once; the requester wins
// (spec §4.8.3): the server answers it and the requester ignores the
// server's, so both end in OF02 with the requester's code.
func TestIDTCollision(t *testing.T) {
	p := newPair(t)
	p.connectCX(2, cxSync)
	p.c2s(selectF(false), Answer)
	p.s2c(answer(fpdu.AckSelect, fpdu.DiagOK), Deliver)
	p.c2s(sample(fpdu.ORF), Answer)
	p.s2c(sample(fpdu.AckORF), Deliver)
	p.c2s(mk(fpdu.Read, pi(fpdu.PIRestartPoint, 0)), Answer)
	p.s2c(sample(fpdu.AckRead), Deliver)
	cIDT, sIDT := idt(16, fpdu.DiagVoluntaryStop), idt(4, fpdu.DiagIOError)
	if err := p.c.Sent(cIDT); err != nil {
		t.Fatal(err)
	}
	if err := p.s.Sent(sIDT); err != nil {
		t.Fatal(err)
	}
	if act, err := p.c.Received(wire(t, sIDT)); err != nil || act != Ignore {
		t.Fatalf("requester: %v %v", act, err)
	}
	if act, err := p.s.Received(wire(t, cIDT)); err != nil || act != Answer || p.s.State() != TDL06 {
		t.Fatalf("server: %v %v %v", act, err, p.s.State())
	}
	p.s2c(mk(fpdu.AckIDT), Deliver)
	p.in(OF02, OF02)
	if !p.c.Interrupted() || !p.s.Interrupted() {
		t.Fatal("the requester's cancellation (16) did not set ab on both sides")
	}
}

// TestMessageSegmented: MSGDM, MSGMM*, MSGFM, then one ACK(MSG); messages
// are only valid in CN03.
func TestMessageSegmented(t *testing.T) {
	p := newPair(t)
	p.connectCX(2, cxSync)
	p.c2s(sample(fpdu.MsgDM), Deliver)
	p.in(MS02, MS02)
	p.c2s(sample(fpdu.MsgMM), Deliver)
	p.c2s(sample(fpdu.MsgMM), Deliver)
	_, err := p.s.Received(sample(fpdu.Msg))
	wantViolation(t, err, fpdu.DiagProtocolError, "MSG inside a segmented message")
	p.c2s(sample(fpdu.MsgFM), Answer)
	p.in(MS01A, MS01B)
	if k, ok := p.s.Owed(); !ok || k != fpdu.AckMsg {
		t.Fatalf("owed %v %v", k, ok)
	}
	p.s2c(mk(fpdu.AckMsg, diagPI(fpdu.DiagOK), pi(fpdu.PIMessage, []byte("reply")...)), Deliver)
	p.in(CN03, CN03)
	p.c2s(sample(fpdu.Msg), Answer)
	p.s2c(mk(fpdu.AckMsg, diagPI(fpdu.DiagMessageTypeRefused)), Deliver)
	p.in(CN03, CN03)
	p.c2s(create(false), Answer)
	p.s2c(answer(fpdu.AckCreate, fpdu.DiagOK), Deliver)
	_, err = p.s.Received(sample(fpdu.Msg))
	wantViolation(t, err, fpdu.DiagProtocolError, "MSG with a file selected")
}

// TestConnectRefused: RCONNECT closes both sides.
func TestConnectRefused(t *testing.T) {
	p := newPair(t)
	p.c2s(connect(2, nil, false), Answer)
	p.s2c(mk(fpdu.RConnect, diagPI(fpdu.DiagNotAuthorised)), Close)
	p.in(CN01, CN01)
}

// TestAbortAnywhere: ABORT ends the connection from any state, whatever it
// holds, and resets the flags.
func TestAbortAnywhere(t *testing.T) {
	p := newPair(t)
	p.connectCX(2, cxSync)
	p.c2s(create(false), Answer)
	p.s2c(answer(fpdu.AckCreate, fpdu.DiagOK), Deliver)
	f := fpdu.NewAbort(0x62, 0xE2, fpdu.DiagAdministrativeStop)
	p.s2c(f, Close)
	p.in(CN01, CN01)
	if _, ok := p.s.AccessType(); ok || p.s.SyncOption() != (SyncOption{}) {
		t.Fatal("session not reset by ABORT")
	}
	// A malformed ABORT still closes.
	m := NewResponder()
	if act, err := m.Received(&fpdu.FPDU{Kind: fpdu.Abort}); err != nil || act != Close {
		t.Fatalf("bare ABORT: %v %v", act, err)
	}
}

// TestSyncViolations: the receiver detects a peer that overruns the
// interval (2/222), the window (2/217) or misnumbers (3/318); the machine
// stays put so the caller can interrupt with IDT instead of aborting.
func TestSyncViolations(t *testing.T) {
	start := func() *pair {
		p := newPair(t)
		p.connectCX(2, SyncOption{IntervalKB: 4, Window: 1})
		p.c2s(create(false), Answer)
		p.s2c(answer(fpdu.AckCreate, fpdu.DiagOK), Deliver)
		p.c2s(sample(fpdu.ORF), Answer)
		p.s2c(sample(fpdu.AckORF), Deliver)
		p.c2s(mk(fpdu.Write), Answer)
		p.s2c(answer(fpdu.AckWrite, fpdu.DiagOK), Deliver)
		return p
	}
	kb := bytes.Repeat([]byte{1}, 1024)

	p := start()
	for range 4 {
		p.c2s(data(fpdu.DTF, kb), Deliver)
	}
	_, err := p.s.Received(data(fpdu.DTF, kb[:1]))
	wantViolation(t, err, fpdu.DiagTooMuchDataWithoutSync, "fifth KB at a 4 KB interval")
	wantViolation(t, p.c.Sent(data(fpdu.DTF, kb[:1])), fpdu.DiagTooMuchDataWithoutSync, "sender over the interval")
	if p.s.State() != TDE02B {
		t.Fatalf("state %v", p.s.State())
	}
	if err := p.s.Sent(idt(4, fpdu.DiagTooMuchDataWithoutSync)); err != nil {
		t.Fatal(err)
	}

	p = start()
	p.c2s(syn(1), Deliver)
	// Window 1: SYN 1 outstanding blocks the sender.
	if !p.c.Window().Blocked() {
		t.Fatal("sender not blocked with one unacknowledged SYN and window 1")
	}
	wantViolation(t, p.c.Sent(data(fpdu.DTF, kb)), fpdu.DiagTooManyUnackedSyncs, "sender data at the window bound")
	_, err = p.s.Received(data(fpdu.DTF, kb))
	wantViolation(t, err, fpdu.DiagTooManyUnackedSyncs, "data at the window bound")
	_, err = p.s.Received(syn(2))
	wantViolation(t, err, fpdu.DiagTooManyUnackedSyncs, "SYN 2 at the window bound")
	_, err = p.s.Received(syn(5))
	wantViolation(t, err, fpdu.DiagBadParameter, "SYN 5 after 1")
	wantViolation(t, p.s.Sent(ackSyn(2)), fpdu.DiagBadParameter, "ACK(SYN) of an unsent point")
	p.s2c(ackSyn(1), Deliver)
	p.c2s(data(fpdu.DTF, kb), Deliver)
}

// TestResync: RESYN is refused unless negotiated, and runs when it is.
func TestResync(t *testing.T) {
	p := newPair(t)
	c := connect(2, &cxSync, true)
	p.c2s(c, Answer)
	v, _ := c.Params.Bytes(fpdu.PIResync)
	r, err := NegotiateResync(v, true, true)
	if err != nil || r != 1 {
		t.Fatalf("resync %d %v", r, err)
	}
	p.s2c(aconnect(cxSync, true), Deliver)
	if !p.c.Resync() || !p.s.Resync() {
		t.Fatal("resync not recorded")
	}
	p.c2s(create(false), Answer)
	p.s2c(answer(fpdu.AckCreate, fpdu.DiagOK), Deliver)
	p.c2s(sample(fpdu.ORF), Answer)
	p.s2c(sample(fpdu.AckORF), Deliver)
	p.c2s(mk(fpdu.Write), Answer)
	p.s2c(answer(fpdu.AckWrite, fpdu.DiagOK), Deliver)
	p.c2s(data(fpdu.DTF, []byte("abc")), Deliver)
	p.c2s(syn(1), Deliver)
	p.s2c(ackSyn(1), Deliver)
	p.c2s(data(fpdu.DTFDA, []byte("abc")), Deliver)
	// The receiver asks to resume from point 1, mid-article.
	p.s2c(mk(fpdu.Resyn, diagPI(fpdu.DiagTransmissionError), pi(fpdu.PIRestartPoint, 1)), Answer)
	p.in(TDE04, TDE03)
	p.c2s(mk(fpdu.AckResyn, pi(fpdu.PIRestartPoint, 1)), Deliver)
	p.in(TDE02A, TDE02B)
	// The segmented article was abandoned; numbering resumes at 2.
	p.c2s(data(fpdu.DTF, []byte("abc")), Deliver)
	p.c2s(syn(2), Deliver)

	// Without resync the requester may not send RESYN, nor may it come.
	q := newPair(t)
	q.connectCX(2, cxSync)
	if q.s.Resync() {
		t.Fatal("resync on without a proposal")
	}
	_, err = NegotiateResync([]byte{2}, true, true)
	wantViolation2(t, err, fpdu.DiagBadParameter)
}

func wantViolation2(t *testing.T, err error, d fpdu.Diagnostic) {
	t.Helper()
	if got, ok := fpdu.DiagnosticOf(err); !ok || got != d {
		t.Fatalf("error %v, want diagnostic %v", err, d)
	}
}

// TestRequesterChecksACONNECT: a server that raises the sync proposal or
// grants resync that was not proposed gets 3/315.
func TestRequesterChecksACONNECT(t *testing.T) {
	for _, a := range []*fpdu.FPDU{
		aconnect(SyncOption{IntervalKB: 64, Window: 2}, false),
		aconnect(SyncOption{IntervalKB: 32, Window: 3}, false),
		aconnect(cxSync, true),
	} {
		c := NewRequester()
		if err := c.Sent(connect(2, &cxSync, false)); err != nil {
			t.Fatal(err)
		}
		_, err := c.Received(a)
		wantViolation(t, err, fpdu.DiagNegotiationFailure, "raised ACONNECT")
		if c.State() != CN02A {
			t.Fatalf("state %v", c.State())
		}
	}
	// And the responder may not send such an ACONNECT either.
	s := NewResponder()
	if _, err := s.Received(connect(2, nil, false)); err != nil {
		t.Fatal(err)
	}
	wantViolation(t, s.Sent(aconnect(cxSync, false)), fpdu.DiagNegotiationFailure, "ACONNECT with sync nobody asked for")
}

// TestMachinePIChecks: parameters the machine reads itself.
func TestMachinePIChecks(t *testing.T) {
	s := NewResponder()
	_, err := s.Received(connect(3, nil, false))
	wantViolation(t, err, fpdu.DiagBadParameter, "PI 22 = 3")
	if s.State() != CN01 {
		t.Fatalf("state %v", s.State())
	}
	if err := s.Sent(fpdu.NewAbort(0x62, 0xE2, fpdu.DiagBadParameter)); err != nil {
		t.Fatalf("ABORT from CN01: %v", err)
	}
	p := newPair(t)
	p.connectCX(2, cxSync)
	bad := create(false)
	for i := range bad.Params {
		if bad.Params[i].ID == fpdu.PITransferID {
			bad.Params = append(bad.Params[:i+1], append(fpdu.Params{pi(fpdu.PIRestart, 7)}, bad.Params[i+1:]...)...)
			break
		}
	}
	_, err = p.s.Received(bad)
	wantViolation(t, err, fpdu.DiagBadParameter, "PI 15 = 7")
}
