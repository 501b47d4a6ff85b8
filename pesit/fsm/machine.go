package fsm

import (
	"errors"
	"fmt"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// Action tells the caller of Received what to do with a valid FPDU.
type Action uint8

const (
	// Deliver: process the FPDU (store data, take note of a confirmation);
	// no answer is owed, or it may be delayed (ACK(SYN) within the window).
	Deliver Action = iota + 1
	// Answer: process the FPDU and send the answer Owed names.
	Answer
	// Ignore: drop the FPDU. It crossed an FPDU of higher priority that the
	// local side sent (collision rules of spec §4.8.3, "pas de traitement").
	Ignore
	// Close: the connection is over (ABORT, RCONNECT, RELCONF received);
	// close the transport. The machine is back in CN01.
	Close
)

func (a Action) String() string {
	switch a {
	case Deliver:
		return "deliver"
	case Answer:
		return "answer"
	case Ignore:
		return "ignore"
	case Close:
		return "close"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// AccessType is PI 22 of CONNECT: what the connection may be used for.
type AccessType uint8

// The access types.
const (
	AccessWrite AccessType = 0 // CREATE only
	AccessRead  AccessType = 1 // SELECT only
	AccessMixed AccessType = 2 // both
)

// Allows reports whether a connection of access type a may carry a CREATE
// (write: 0 or 2) or a SELECT (read: 1 or 2). Other kinds are not governed
// by PI 22.
func (a AccessType) Allows(k fpdu.Kind) bool {
	switch k {
	case fpdu.Create:
		return a == AccessWrite || a == AccessMixed
	case fpdu.Select:
		return a == AccessRead || a == AccessMixed
	}
	return true
}

func (a AccessType) String() string {
	switch a {
	case AccessWrite:
		return "write"
	case AccessRead:
		return "read"
	case AccessMixed:
		return "mixed"
	}
	return fmt.Sprintf("AccessType(%d)", uint8(a))
}

// Violation is the error of an FPDU that is not valid where it occurs. For a
// received FPDU the caller sends fpdu.NewAbort(peer, own, v.Diag), records
// it with Sent and closes; Diag is 3/311 for an FPDU invalid in the state,
// 3/318 for a missing or bad parameter, 3/315 for an ACONNECT that raises
// the proposal. During a transfer Diag may be 2/217 (too many unacknowledged
// sync points) or 2/222 (too much data without a sync point): the caller may
// then interrupt with IDT (PI 19 = 4, PI 2 = Diag) instead of aborting.
// For a sent FPDU (Sent true) it is a bug in the caller, which must not put
// the FPDU on the wire. Either way the machine has not changed.
type Violation struct {
	Role  Role
	State State // the state the machine was, and still is, in
	Kind  fpdu.Kind
	Sent  bool
	Diag  fpdu.Diagnostic
	Err   error // the cause, when more than "invalid in this state"
}

func (v *Violation) Error() string {
	dir := "received"
	if v.Sent {
		dir = "sent"
	}
	msg := fmt.Sprintf("pesit %s in %v: %v %s", v.Role, v.State, v.Kind, dir)
	if v.Err != nil {
		msg += ": " + v.Err.Error()
	} else {
		msg += ": invalid in this state"
	}
	return msg + " (" + v.Diag.String() + ")"
}

// Unwrap exposes the diagnostic, so errors.Is(err, fpdu.DiagProtocolError)
// works, and the cause.
func (v *Violation) Unwrap() []error {
	if v.Err == nil {
		return []error{v.Diag}
	}
	return []error{v.Diag, v.Err}
}

// session is everything the machine remembers besides its state. It is a
// plain value: a transition works on a copy and commits it only on success,
// so that a Violation leaves the machine untouched.
type session struct {
	access         AccessType
	hasAccess      bool       // a CONNECT was sent or received
	proposed       SyncOption // PI 7 of the CONNECT
	proposedResync bool       // PI 23 of the CONNECT
	sync           SyncOption // negotiated PI 7 (flag ck = sync.Enabled())
	resync         bool       // negotiated PI 23
	ab             bool       // transfer interrupted: no ORF, READ, WRITE until DESELECT
	dr             bool       // the requester receives (the file was selected, not created)
	rel            bool       // restart requested (PI 15 = 1 accepted)
	pendingDR      bool       // the CREATE/SELECT awaiting its ACK was a SELECT
	pendingRel     bool       // ... and asked for a restart
	readPoint      uint32     // PI 18 of the READ awaiting its ACK
	cancel         uint8      // PI 19 of the IDT awaiting its ACK (0 when absent)
	seg            bool       // inside DTFDA ... DTFFA
	win            SyncWindow
}

// Machine is one side of a PeSIT connection: the state, the flags of spec
// §4.8.1.3 and the negotiated options. Feed it every FPDU received (Received)
// and every FPDU sent (Sent), in wire order. It does no I/O, starts no
// goroutine and does not allocate for data FPDUs. Not safe for concurrent
// use; a connection has one reader and one writer taking turns, or a lock.
type Machine struct {
	role  Role
	state State
	s     session
	// arts are the articles of the last data FPDU checked (Articles);
	// reused, so that a data FPDU costs no allocation once it has grown.
	arts [][]byte
}

// NewResponder returns a server-side machine in CN01.
func NewResponder() *Machine { return &Machine{role: Responder, state: CN01} }

// NewRequester returns a client-side machine in CN01.
func NewRequester() *Machine { return &Machine{role: Requester, state: CN01} }

// Role is the side this machine plays.
func (m *Machine) Role() Role { return m.role }

// State is the current state.
func (m *Machine) State() State { return m.state }

// AccessType is PI 22 of the CONNECT, and false before a CONNECT.
func (m *Machine) AccessType() (AccessType, bool) {
	return m.s.access, m.state != CN01 && m.state != CN02A
}

// SyncOption is the negotiated PI 7 (zero: no sync points), valid from CN03.
func (m *Machine) SyncOption() SyncOption { return m.s.sync }

// Resync reports whether RESYN was negotiated (PI 23 = 1 in ACONNECT).
func (m *Machine) Resync() bool { return m.s.resync }

// Interrupted is the spec's flag ab: a transfer was cancelled or suspended
// by IDT; ORF, WRITE and READ are refused until DESELECT.
func (m *Machine) Interrupted() bool { return m.s.ab }

// RequesterReceives is the spec's flag dr: the selected file was opened by
// SELECT (the requester reads) rather than CREATE.
func (m *Machine) RequesterReceives() bool { return m.s.dr }

// Restart is the spec's flag rel: the selected file is a restarted transfer
// (PI 15 = 1 in the accepted CREATE or SELECT).
func (m *Machine) Restart() bool { return m.s.rel }

// Window is the sync-point accounting of the current transfer (a copy):
// a sender asks Window().Blocked() and Window().NeedSync(n) before sending.
func (m *Machine) Window() SyncWindow { return m.s.win }

// Articles are the articles of the data FPDU last received (or sent), as
// the machine split them when it checked the FPDU: one for a single-article
// DTF or a piece of a segmented one, N for a multi-article DTF. They alias
// the FPDU's data and are valid until the next data FPDU. The caller stores
// them from here, so that a DTF's article headers are walked once.
func (m *Machine) Articles() [][]byte { return m.arts }

// Owed names the FPDU the local side owes its peer in the current state (for
// CN02B: ACONNECT, or RCONNECT to refuse), and false when none is owed.
func (m *Machine) Owed() (fpdu.Kind, bool) {
	k, ok := owed[m.state]
	return k, ok
}

var owed = map[State]fpdu.Kind{
	CN02B: fpdu.AConnect, CN04B: fpdu.RelConf,
	SF01B: fpdu.AckCreate, SF02B: fpdu.AckSelect, SF04B: fpdu.AckDeselect,
	OF01B: fpdu.AckORF, OF03B: fpdu.AckCRF, MS01B: fpdu.AckMsg,
	TDE01B: fpdu.AckWrite, TDE04: fpdu.AckResyn, TDE06: fpdu.AckIDT, TDE08B: fpdu.AckTransEnd,
	TDL01B: fpdu.AckRead, TDL04: fpdu.AckResyn, TDL06: fpdu.AckIDT, TDL08B: fpdu.AckTransEnd,
}

// Received validates an FPDU received from the peer in the current state and
// advances the state. It checks, in order: that the FPDU is valid in the
// state and its flags (3/311), its parameters with fpdu.Validate (3/318), a
// data FPDU with fpdu.SplitData (a malformed DTF is 3/311), the parameters the machine itself reads, and the
// sync-point accounting. On error the machine is unchanged and the error is
// a *Violation.
func (m *Machine) Received(f *fpdu.FPDU) (Action, error) {
	r, err := m.step(f, false)
	if err != nil {
		return 0, err
	}
	return r.act, nil
}

// Sent records an FPDU the local side sends, before or after writing it,
// and advances the state. An FPDU that may not be sent in the state is a
// bug in the caller: the error is a *Violation with Sent set and the
// machine is unchanged. Sent checks the parameters with fpdu.Validate too.
func (m *Machine) Sent(f *fpdu.FPDU) error {
	_, err := m.step(f, true)
	return err
}

func (m *Machine) violation(f *fpdu.FPDU, sent bool, d fpdu.Diagnostic, cause error) *Violation {
	return &Violation{Role: m.role, State: m.state, Kind: f.Kind, Sent: sent, Diag: d, Err: cause}
}

func (m *Machine) step(f *fpdu.FPDU, sent bool) (rule, error) {
	r := lookup(m.role, sent, m.state, f.Kind)
	if r.next == 0 {
		return r, m.violation(f, sent, fpdu.DiagProtocolError, nil)
	}
	if failed := m.s.unmet(r.need); failed != 0 {
		return r, m.violation(f, sent, fpdu.DiagProtocolError, fmt.Errorf("condition %v not met", failed))
	}
	if r.act == Ignore {
		return r, nil
	}
	// An ABORT ends the connection whatever it holds: validating it would
	// only turn the peer's abort into ours.
	if f.Kind == fpdu.Abort && !sent {
		m.s, m.state = session{}, CN01
		return r, nil
	}
	// A data FPDU is checked and split into its articles in one walk.
	var err error
	dataBytes := 0
	if f.Kind.IsData() {
		m.arts, dataBytes, err = fpdu.SplitData(f, m.arts[:0])
	} else {
		err = fpdu.Validate(f)
	}
	if err != nil {
		d, ok := fpdu.DiagnosticOf(err)
		if !ok {
			d = fpdu.DiagBadParameter
		}
		return r, m.violation(f, sent, d, err)
	}
	next := r.next
	if r.fail != 0 {
		d, _ := f.Params.Diagnostic() // Validate made sure PI 2 is there
		if d.Type() != 0 {
			next = r.fail
		}
	}
	s := m.s // work on a copy: commit only if every effect succeeds
	if err := s.apply(r.fx, f, m.role, dataBytes, sent, next != r.fail); err != nil {
		d, ok := fpdu.DiagnosticOf(err)
		if !ok {
			d = fpdu.DiagProtocolError
		}
		return r, m.violation(f, sent, d, err)
	}
	m.s = s
	if next != stay {
		m.state = next
	}
	return r, nil
}

// unmet returns the guards of need that do not hold.
func (s *session) unmet(need guard) guard {
	var bad guard
	check := func(g guard, ok bool) {
		if need&g != 0 && !ok {
			bad |= g
		}
	}
	check(gNotAB, !s.ab)
	check(gCreated, !s.dr)
	check(gSelected, s.dr)
	check(gSync, s.sync.Enabled())
	check(gAckable, s.win.Pending())
	check(gResync, s.resync && s.sync.Enabled())
	check(gWhole, !s.seg)
	check(gInSeg, s.seg)
	return bad
}

// apply performs the effects fx of a valid FPDU f on s; dataBytes is the
// data f carries, when it is a data FPDU. positive is false when f is an
// answer with a negative diagnostic.
func (s *session) apply(fx effect, f *fpdu.FPDU, role Role, dataBytes int, sent, positive bool) error {
	p := f.Params
	if fx&fxReset != 0 {
		*s = session{}
	}
	if fx&fxConnect != 0 {
		v, ok := p.Uint(fpdu.PIAccessType)
		if !ok || v > uint64(AccessMixed) {
			return fmt.Errorf("PI 22 (access type) must be 0, 1 or 2: %w", fpdu.DiagBadParameter)
		}
		s.access, s.hasAccess = AccessType(v), true
		s.proposed = SyncOption{}
		if b, ok := p.Bytes(fpdu.PISyncOption); ok {
			o, err := ParseSyncOption(b)
			if err != nil {
				return err
			}
			s.proposed = o
		}
		s.proposedResync = false
		if b, ok := p.Bytes(fpdu.PIResync); ok {
			r, err := parseResync(b)
			if err != nil {
				return err
			}
			s.proposedResync = r
		}
	}
	if fx&fxAccept != 0 {
		s.sync, s.resync = SyncOption{}, false
		if b, ok := p.Bytes(fpdu.PISyncOption); ok {
			o, err := ParseSyncOption(b)
			if err != nil {
				return err
			}
			s.sync = o
		}
		if err := CheckSyncAnswer(s.proposed, s.sync); err != nil {
			return err
		}
		if b, ok := p.Bytes(fpdu.PIResync); ok {
			r, err := parseResync(b)
			if err != nil {
				return err
			}
			if r && !s.proposedResync {
				return fmt.Errorf("ACONNECT PI 23 = 1 but resync was not proposed: %w", fpdu.DiagNegotiationFailure)
			}
			s.resync = r
		}
		s.win = NewSyncWindow(s.sync, 0)
	}
	if fx&fxFileReq != 0 {
		if sent && !s.access.Allows(f.Kind) {
			return fmt.Errorf("%v on a connection opened for access type %v: %w", f.Kind, s.access, fpdu.DiagProtocolError)
		}
		s.pendingDR = f.Kind == fpdu.Select
		s.pendingRel = false
		if v, ok := p.Uint(fpdu.PIRestart); ok {
			if v > 1 {
				return fmt.Errorf("PI 15 (restart) = %d: %w", v, fpdu.DiagBadParameter)
			}
			s.pendingRel = v == 1
		}
	}
	if fx&fxFileAck != 0 && positive {
		req := fpdu.Create
		if s.pendingDR {
			req = fpdu.Select
		}
		if !s.access.Allows(req) {
			// The responder must refuse with 2/226; a requester never
			// gets here because its Sent refused the request.
			return fmt.Errorf("positive %v on a connection opened for access type %v (refuse with 2/226): %w",
				f.Kind, s.access, fpdu.DiagProtocolError)
		}
		s.dr, s.rel = s.pendingDR, s.pendingRel
	}
	if fx&fxDeselect != 0 {
		s.ab, s.dr, s.rel = false, false, false
	}
	if fx&fxWriteAck != 0 && positive {
		pt, err := point(p)
		if err != nil {
			return err
		}
		s.startTransfer(pt, role)
	}
	if fx&fxReadReq != 0 {
		pt, err := point(p)
		if err != nil {
			return err
		}
		s.readPoint = pt
	}
	if fx&fxReadAck != 0 && positive {
		s.startTransfer(s.readPoint, role)
	}
	if fx&fxData != 0 {
		if err := s.win.Data(dataBytes); err != nil {
			return err
		}
		switch f.Kind {
		case fpdu.DTFDA:
			s.seg = true
		case fpdu.DTFFA:
			s.seg = false
		}
	}
	if fx&(fxSyn|fxAckSyn) != 0 {
		v, ok := p.Uint(fpdu.PISyncNumber)
		if !ok || v == 0 || v > MaxSyncNumber {
			return fmt.Errorf("PI 20 (sync number) out of 1..%d: %w", MaxSyncNumber, fpdu.DiagBadParameter)
		}
		var err error
		if fx&fxSyn != 0 {
			err = s.win.Syn(uint32(v))
		} else {
			err = s.win.Ack(uint32(v))
		}
		if err != nil {
			return err
		}
	}
	if fx&fxIDT != 0 {
		s.cancel = 0
		if v, ok := p.Uint(fpdu.PIEndCode); ok && v <= 0xFF {
			s.cancel = uint8(v)
		}
		s.seg = false
	}
	if fx&fxAckIDT != 0 {
		// Spec §4.8.1.3 note 1: ab is set by a cancel with end code
		// "suspension" or "cancellation"; code 4 (error, a restart must
		// follow) and an absent code leave it clear.
		s.ab = s.ab || s.cancel == 8 || s.cancel == 12 || s.cancel == 16
		s.cancel, s.seg = 0, false
	}
	if fx&fxAckResyn != 0 {
		pt, err := point(p)
		if err != nil {
			return err
		}
		s.win.Reset(pt)
		s.seg = false
	}
	return nil
}

func (s *session) startTransfer(pt uint32, role Role) {
	s.win = NewSyncWindow(s.sync, pt)
	if role == Responder {
		s.win = s.win.Strict()
	}
	s.seg, s.cancel = false, 0
}

// point reads PI 18, a sync point number (0 = start of the file).
func point(p fpdu.Params) (uint32, error) {
	v, ok := p.Uint(fpdu.PIRestartPoint)
	if !ok {
		return 0, nil // only a negative answer may lack it, and it is not read then
	}
	if v > MaxSyncNumber {
		return 0, fmt.Errorf("PI 18 (restart point) %d > %d: %w", v, MaxSyncNumber, fpdu.DiagBadParameter)
	}
	return uint32(v), nil
}

// IsViolation returns the *Violation in err's chain, if any.
func IsViolation(err error) (*Violation, bool) {
	var v *Violation
	ok := errors.As(err, &v)
	return v, ok
}
