package fsm

import (
	"strings"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// The four tables below are the protocol: one per role and direction, one
// line per (states, FPDU kind) cell that is valid. Every cell not listed is
// invalid and yields a Violation 3/311. They follow spec §4.8.4 tables 1-10
// (connection, file selection, file opening, write and read transfer) plus
// the message service of §4.4.31, which §4.8 does not tabulate. ABORT is
// valid in every state, in both directions, and leads to CN01: compile adds
// it to every state of the role rather than listing it everywhere.
//
// Reading a line: {in(S1, S2), KIND, rule{next, fail, act, need, fx}}:
// in states S1 and S2, KIND moves to next (stay = no change) - or to fail
// when the FPDU is an answer whose PI 2 is negative -, provided the guards
// in need hold; act is what the caller does with a received FPDU; fx lists
// the flags and counters it updates.

// stay as a next state means "remain in the current state".
const stay State = 0xFF

// guard is a set of conditions on the flags (spec §4.8.1.3 "COND").
type guard uint16

const (
	gNotAB    guard = 1 << iota // NON ab: no interrupted transfer
	gCreated                    // the file was created (WRITE, not READ)
	gSelected                   // the file was selected (READ, not WRITE): flag dr
	gSync                       // ck: sync points negotiated
	gAckable                    // ck, window > 0 and a SYN outstanding (cc > 0)
	gResync                     // RESYN negotiated (PI 23 = 1, with sync)
	gWhole                      // not inside DTFDA ... DTFFA
	gInSeg                      // inside DTFDA ... DTFFA
)

var guardNames = []string{"not-ab", "created", "selected", "sync", "sync-outstanding", "resync", "between-articles", "inside-article"}

func (g guard) String() string {
	var names []string
	for i, n := range guardNames {
		if g&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	return strings.Join(names, "+")
}

// effect is a set of updates a valid FPDU makes to the session.
type effect uint16

const (
	fxReset    effect = 1 << iota // back to CN01: forget everything
	fxConnect                     // CONNECT: access type (PI 22), proposed PI 7 and PI 23
	fxAccept                      // ACONNECT: negotiated PI 7 and PI 23
	fxFileReq                     // CREATE/SELECT: pending dr, rel (PI 15)
	fxFileAck                     // positive ACK(CREATE/SELECT): dr, rel
	fxDeselect                    // ACK(DESELECT): clear ab, dr, rel
	fxWriteAck                    // positive ACK(WRITE): transfer starts after PI 18
	fxReadReq                     // READ: remember PI 18
	fxReadAck                     // positive ACK(READ): transfer starts after READ's PI 18
	fxData                        // DTF*: segment tracking, interval and window
	fxSyn                         // SYN: numbering and window
	fxAckSyn                      // ACK(SYN): acknowledgement
	fxIDT                         // IDT: remember PI 19 of the IDT to be acknowledged
	fxAckIDT                      // ACK(IDT): ab per that PI 19
	fxAckResyn                    // ACK(RESYN): numbering restarts after PI 18
)

// rule is one valid cell.
type rule struct {
	next State  // next state; 0 = invalid cell
	fail State  // next state when PI 2 is negative; 0 = PI 2 does not matter
	act  Action // received FPDUs only
	need guard
	fx   effect
}

type entry struct {
	from []State
	kind fpdu.Kind
	rule
}

func in(s ...State) []State { return s }

// Shorthands for the rules that recur.
func to(next State, act Action) rule       { return rule{next: next, act: act} }
func split(ok, ko State, fx effect) rule   { return rule{next: ok, fail: ko, fx: fx} }
func splitRx(ok, ko State, fx effect) rule { return rule{next: ok, fail: ko, act: Deliver, fx: fx} }
func when(next State, act Action, need guard, fx effect) rule {
	return rule{next: next, act: act, need: need, fx: fx}
}

var ignore = rule{next: stay, act: Ignore}

// dataRules lists the four data FPDUs; the segment guards differ per kind.
func dataRules(states []State, act Action) []entry {
	return []entry{
		{states, fpdu.DTF, when(stay, act, gWhole, fxData)},
		{states, fpdu.DTFDA, when(stay, act, gWhole, fxData)},
		{states, fpdu.DTFMA, when(stay, act, gInSeg, fxData)},
		{states, fpdu.DTFFA, when(stay, act, gInSeg, fxData)},
	}
}

func ignored(states []State, kinds ...fpdu.Kind) []entry {
	out := make([]entry, len(kinds))
	for i, k := range kinds {
		out[i] = entry{states, k, ignore}
	}
	return out
}

func concat(parts ...[]entry) []entry {
	var out []entry
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var dataKinds = []fpdu.Kind{fpdu.DTF, fpdu.DTFDA, fpdu.DTFMA, fpdu.DTFFA}

func plus(a []fpdu.Kind, b ...fpdu.Kind) []fpdu.Kind {
	return append(append([]fpdu.Kind(nil), a...), b...)
}

// responderReceives: what a server accepts from its requester.
var responderReceives = concat([]entry{
	// Connection (table 2).
	{in(CN01), fpdu.Connect, rule{next: CN02B, act: Answer, fx: fxConnect}},
	{in(CN03), fpdu.Release, to(CN04B, Answer)},
	// File selection (table 4); PI 22 is enforced on the answer (2/226).
	{in(CN03), fpdu.Create, rule{next: SF01B, act: Answer, fx: fxFileReq}},
	{in(CN03), fpdu.Select, rule{next: SF02B, act: Answer, fx: fxFileReq}},
	{in(SF03), fpdu.Deselect, to(SF04B, Answer)},
	// Message service (§4.4.31): only in CN03, one ACK(MSG) at the end.
	{in(CN03), fpdu.Msg, to(MS01B, Answer)},
	{in(CN03), fpdu.MsgDM, to(MS02, Deliver)},
	{in(MS02), fpdu.MsgMM, to(stay, Deliver)},
	{in(MS02), fpdu.MsgFM, to(MS01B, Answer)},
	// File opening (table 6).
	{in(SF03), fpdu.ORF, when(OF01B, Answer, gNotAB, 0)},
	{in(OF02), fpdu.CRF, to(OF03B, Answer)},
	// Write, server receiving (table 8).
	{in(OF02), fpdu.Write, when(TDE01B, Answer, gNotAB|gCreated, 0)},
	{in(TDE02B), fpdu.Syn, when(stay, Deliver, gSync|gWhole, fxSyn)},
	{in(TDE02B), fpdu.DTFEnd, when(TDE07, Deliver, gWhole, 0)},
	{in(TDE02B, TDE03), fpdu.Resyn, when(TDE04, Answer, gResync, 0)}, // TDE03: the requester wins
	{in(TDE03), fpdu.AckResyn, rule{next: TDE02B, act: Deliver, fx: fxAckResyn}},
	{in(TDE02B, TDE03, TDE04, TDE05, TDE07, TDE08B), fpdu.IDT, rule{next: TDE06, act: Answer, fx: fxIDT}},
	{in(TDE05), fpdu.AckIDT, rule{next: OF02, act: Deliver, fx: fxAckIDT}},
	{in(TDE07), fpdu.TransEnd, to(TDE08B, Answer)},
	// Read, server sending (table 10).
	{in(OF02), fpdu.Read, when(TDL01B, Answer, gNotAB|gSelected, fxReadReq)},
	{in(TDL02B, TDL07), fpdu.AckSyn, when(stay, Deliver, gAckable, fxAckSyn)},
	{in(TDL02B, TDL03), fpdu.Resyn, when(TDL04, Answer, gResync, 0)},
	{in(TDL03), fpdu.AckResyn, rule{next: TDL02B, act: Deliver, fx: fxAckResyn}},
	{in(TDL02B, TDL03, TDL04, TDL05, TDL07, TDL08B), fpdu.IDT, rule{next: TDL06, act: Answer, fx: fxIDT}},
	{in(TDL05), fpdu.AckIDT, rule{next: OF02, act: Deliver, fx: fxAckIDT}},
	{in(TDL07), fpdu.TransEnd, to(TDL08B, Answer)},
},
	dataRules(in(TDE02B), Deliver),
	// Collisions: what the requester sent before it saw our IDT or RESYN.
	ignored(in(TDE03), plus(dataKinds, fpdu.Syn, fpdu.DTFEnd, fpdu.TransEnd)...),
	ignored(in(TDE05), plus(dataKinds, fpdu.Syn, fpdu.DTFEnd, fpdu.TransEnd, fpdu.Resyn, fpdu.AckResyn)...),
	ignored(in(TDE06, TDL06), fpdu.IDT),
	ignored(in(TDL03), fpdu.AckSyn),
	ignored(in(TDL05), fpdu.AckSyn, fpdu.Resyn, fpdu.AckResyn, fpdu.TransEnd),
)

// responderSends: what a server may send.
var responderSends = []entry{
	{in(CN02B), fpdu.AConnect, rule{next: CN03, fx: fxAccept}},
	{in(CN02B), fpdu.RConnect, rule{next: CN01, fx: fxReset}},
	{in(CN04B), fpdu.RelConf, rule{next: CN01, fx: fxReset}},
	{in(SF01B), fpdu.AckCreate, split(SF03, CN03, fxFileAck)},
	{in(SF02B), fpdu.AckSelect, split(SF03, CN03, fxFileAck)},
	{in(SF04B), fpdu.AckDeselect, rule{next: CN03, fx: fxDeselect}}, // cannot be refused
	{in(MS01B), fpdu.AckMsg, rule{next: CN03}},
	{in(OF01B), fpdu.AckORF, split(OF02, SF03, 0)},
	{in(OF03B), fpdu.AckCRF, rule{next: SF03}}, // cannot be refused
	// Write, server receiving (table 8).
	{in(TDE01B), fpdu.AckWrite, split(TDE02B, OF02, fxWriteAck)},
	{in(TDE02B, TDE07), fpdu.AckSyn, rule{next: stay, need: gAckable, fx: fxAckSyn}},
	{in(TDE02B), fpdu.Resyn, rule{next: TDE03, need: gResync}},
	{in(TDE04), fpdu.AckResyn, rule{next: TDE02B, fx: fxAckResyn}},
	// IDT in TDE08B answers TRANS.END when the server cannot make the
	// transfer's end durable (its journal is down): the requester, which
	// accepts IDT in TDE08A, keeps its restart state, where a negative
	// ACK(TRANS.END) would end the exchange for good.
	{in(TDE02B, TDE03, TDE04, TDE07, TDE08B), fpdu.IDT, rule{next: TDE05, fx: fxIDT}},
	{in(TDE06), fpdu.AckIDT, rule{next: OF02, fx: fxAckIDT}},
	{in(TDE08B), fpdu.AckTransEnd, rule{next: OF02}},
	// Read, server sending (table 10).
	{in(TDL01B), fpdu.AckRead, split(TDL02B, OF02, fxReadAck)},
	{in(TDL02B), fpdu.DTF, rule{next: stay, need: gWhole, fx: fxData}},
	{in(TDL02B), fpdu.DTFDA, rule{next: stay, need: gWhole, fx: fxData}},
	{in(TDL02B), fpdu.DTFMA, rule{next: stay, need: gInSeg, fx: fxData}},
	{in(TDL02B), fpdu.DTFFA, rule{next: stay, need: gInSeg, fx: fxData}},
	{in(TDL02B), fpdu.Syn, rule{next: stay, need: gSync | gWhole, fx: fxSyn}},
	{in(TDL02B), fpdu.DTFEnd, rule{next: TDL07, need: gWhole}},
	{in(TDL02B), fpdu.Resyn, rule{next: TDL03, need: gResync}},
	{in(TDL04), fpdu.AckResyn, rule{next: TDL02B, fx: fxAckResyn}},
	{in(TDL02B, TDL03, TDL04, TDL07, TDL08B), fpdu.IDT, rule{next: TDL05, fx: fxIDT}},
	{in(TDL06), fpdu.AckIDT, rule{next: OF02, fx: fxAckIDT}},
	{in(TDL08B), fpdu.AckTransEnd, rule{next: OF02}},
}

// requesterReceives: what a client accepts from its server.
var requesterReceives = concat([]entry{
	{in(CN02A), fpdu.AConnect, rule{next: CN03, act: Deliver, fx: fxAccept}},
	{in(CN02A), fpdu.RConnect, rule{next: CN01, act: Close, fx: fxReset}},
	{in(CN04A), fpdu.RelConf, rule{next: CN01, act: Close, fx: fxReset}},
	{in(SF01A), fpdu.AckCreate, splitRx(SF03, CN03, fxFileAck)},
	{in(SF02A), fpdu.AckSelect, splitRx(SF03, CN03, fxFileAck)},
	{in(SF04A), fpdu.AckDeselect, rule{next: CN03, act: Deliver, fx: fxDeselect}},
	{in(MS01A), fpdu.AckMsg, to(CN03, Deliver)},
	{in(OF01A), fpdu.AckORF, splitRx(OF02, SF03, 0)},
	{in(OF03A), fpdu.AckCRF, to(SF03, Deliver)},
	// Write, requester sending (table 7).
	{in(TDE01A), fpdu.AckWrite, splitRx(TDE02A, OF02, fxWriteAck)},
	{in(TDE02A, TDE07), fpdu.AckSyn, when(stay, Deliver, gAckable, fxAckSyn)},
	// RESYN wins over DTF.END and TRANS.END (collision priority, digest
	// §4.5): the responder ignores them in TDE03, the requester resends.
	{in(TDE02A, TDE07, TDE08A), fpdu.Resyn, when(TDE04, Answer, gResync, 0)},
	{in(TDE03), fpdu.AckResyn, rule{next: TDE02A, act: Deliver, fx: fxAckResyn}},
	{in(TDE02A, TDE03, TDE04, TDE07, TDE08A), fpdu.IDT, rule{next: TDE06, act: Answer, fx: fxIDT}},
	{in(TDE05), fpdu.AckIDT, rule{next: OF02, act: Deliver, fx: fxAckIDT}},
	{in(TDE08A), fpdu.AckTransEnd, to(OF02, Deliver)},
	// Read, requester receiving (table 9).
	{in(TDL01A), fpdu.AckRead, splitRx(TDL02A, OF02, fxReadAck)},
	{in(TDL02A), fpdu.Syn, when(stay, Deliver, gSync|gWhole, fxSyn)},
	{in(TDL02A), fpdu.DTFEnd, when(TDL07, Deliver, gWhole, 0)},
	{in(TDL02A), fpdu.Resyn, when(TDL04, Answer, gResync, 0)},
	{in(TDL03), fpdu.AckResyn, rule{next: TDL02A, act: Deliver, fx: fxAckResyn}},
	{in(TDL02A, TDL03, TDL04, TDL07, TDL08A), fpdu.IDT, rule{next: TDL06, act: Answer, fx: fxIDT}},
	{in(TDL05), fpdu.AckIDT, rule{next: OF02, act: Deliver, fx: fxAckIDT}},
	{in(TDL08A), fpdu.AckTransEnd, to(OF02, Deliver)},
},
	dataRules(in(TDL02A), Deliver),
	// Collisions: what the server sent before it saw our IDT or RESYN; on a
	// tie (RESYN against RESYN, IDT against IDT) the requester wins.
	ignored(in(TDE03), fpdu.AckSyn, fpdu.Resyn),
	ignored(in(TDE05), fpdu.AckSyn, fpdu.Resyn, fpdu.AckResyn, fpdu.IDT),
	ignored(in(TDE06, TDL06), fpdu.IDT),
	ignored(in(TDE08A), fpdu.AckSyn),
	ignored(in(TDL03), plus(dataKinds, fpdu.Syn, fpdu.DTFEnd, fpdu.Resyn)...),
	ignored(in(TDL05), plus(dataKinds, fpdu.Syn, fpdu.DTFEnd, fpdu.Resyn, fpdu.AckResyn, fpdu.IDT)...),
)

// requesterSends: what a client may send.
var requesterSends = []entry{
	{in(CN01), fpdu.Connect, rule{next: CN02A, fx: fxConnect}},
	{in(CN03), fpdu.Release, rule{next: CN04A}},
	{in(CN03), fpdu.Create, rule{next: SF01A, fx: fxFileReq}},
	{in(CN03), fpdu.Select, rule{next: SF02A, fx: fxFileReq}},
	{in(CN03), fpdu.Msg, rule{next: MS01A}},
	{in(CN03), fpdu.MsgDM, rule{next: MS02}},
	{in(MS02), fpdu.MsgMM, rule{next: stay}},
	{in(MS02), fpdu.MsgFM, rule{next: MS01A}},
	{in(SF03), fpdu.Deselect, rule{next: SF04A}},
	{in(SF03), fpdu.ORF, rule{next: OF01A, need: gNotAB}},
	{in(OF02), fpdu.CRF, rule{next: OF03A}},
	// Write, requester sending (table 7).
	{in(OF02), fpdu.Write, rule{next: TDE01A, need: gNotAB | gCreated}},
	{in(TDE02A), fpdu.DTF, rule{next: stay, need: gWhole, fx: fxData}},
	{in(TDE02A), fpdu.DTFDA, rule{next: stay, need: gWhole, fx: fxData}},
	{in(TDE02A), fpdu.DTFMA, rule{next: stay, need: gInSeg, fx: fxData}},
	{in(TDE02A), fpdu.DTFFA, rule{next: stay, need: gInSeg, fx: fxData}},
	{in(TDE02A), fpdu.Syn, rule{next: stay, need: gSync | gWhole, fx: fxSyn}},
	{in(TDE02A), fpdu.DTFEnd, rule{next: TDE07, need: gWhole}},
	{in(TDE02A), fpdu.Resyn, rule{next: TDE03, need: gResync}},
	{in(TDE04), fpdu.AckResyn, rule{next: TDE02A, fx: fxAckResyn}},
	{in(TDE02A, TDE03, TDE04, TDE07), fpdu.IDT, rule{next: TDE05, fx: fxIDT}},
	{in(TDE06), fpdu.AckIDT, rule{next: OF02, fx: fxAckIDT}},
	{in(TDE07), fpdu.TransEnd, rule{next: TDE08A}},
	// Read, requester receiving (table 9).
	{in(OF02), fpdu.Read, rule{next: TDL01A, need: gNotAB | gSelected, fx: fxReadReq}},
	{in(TDL02A, TDL07), fpdu.AckSyn, rule{next: stay, need: gAckable, fx: fxAckSyn}},
	{in(TDL02A), fpdu.Resyn, rule{next: TDL03, need: gResync}},
	{in(TDL04), fpdu.AckResyn, rule{next: TDL02A, fx: fxAckResyn}},
	{in(TDL02A, TDL03, TDL04, TDL07), fpdu.IDT, rule{next: TDL05, fx: fxIDT}},
	{in(TDL06), fpdu.AckIDT, rule{next: OF02, fx: fxAckIDT}},
	{in(TDL07), fpdu.TransEnd, rule{next: TDL08A}},
}

const numKinds = 38

// table is a compiled table: one rule per state and kind index.
type table [numStates][numKinds]rule

// kindIndex maps a kind to 0..numKinds-1 through its phase and type bytes;
// 0xFF marks an unknown kind.
type kindIndexTable [3][256]uint8

func phaseIndex(p byte) int {
	switch p {
	case fpdu.PhaseData:
		return 0
	case fpdu.PhaseConnection:
		return 1
	case fpdu.PhaseFile:
		return 2
	}
	return -1
}

func buildKindIndex() *kindIndexTable {
	var t kindIndexTable
	for p := range t {
		for i := range t[p] {
			t[p][i] = 0xFF
		}
	}
	kinds := fpdu.Kinds()
	if len(kinds) != numKinds {
		panic("fsm: fpdu.Kinds() has changed; update numKinds")
	}
	for i, k := range kinds {
		t[phaseIndex(k.Phase())][k.Type()] = uint8(i)
	}
	return &t
}

var kindIdx = buildKindIndex()

func kindIndex(k fpdu.Kind) int {
	p := phaseIndex(k.Phase())
	if p < 0 {
		return -1
	}
	i := kindIdx[p][k.Type()]
	if i == 0xFF {
		return -1
	}
	return int(i)
}

// compile turns a listing into a table and adds ABORT everywhere. A cell
// listed twice, or a state of the other role, is a bug in the listing.
func compile(role Role, sent bool, entries []entry) *table {
	var t table
	for _, e := range entries {
		ki := kindIndex(e.kind)
		for _, s := range e.from {
			if !s.belongsTo(role) || ki < 0 || t[s][ki].next != 0 || e.next == 0 || sent == (e.act != 0) {
				panic("fsm: bad table cell " + s.String() + " x " + e.kind.String())
			}
			t[s][ki] = e.rule
		}
	}
	abort := rule{next: CN01, fx: fxReset}
	if !sent {
		abort.act = Close
	}
	ai := kindIndex(fpdu.Abort)
	for s := CN01; s < numStates; s++ {
		if s.belongsTo(role) {
			t[s][ai] = abort
		}
	}
	return &t
}

var (
	tResponderRx = compile(Responder, false, responderReceives)
	tResponderTx = compile(Responder, true, responderSends)
	tRequesterRx = compile(Requester, false, requesterReceives)
	tRequesterTx = compile(Requester, true, requesterSends)
)

// lookup returns the rule of a cell; a zero rule (next == 0) is invalid.
func lookup(role Role, sent bool, s State, k fpdu.Kind) rule {
	ki := kindIndex(k)
	if ki < 0 || s == 0 || s >= numStates {
		return rule{}
	}
	var t *table
	switch {
	case role == Responder && !sent:
		t = tResponderRx
	case role == Responder:
		t = tResponderTx
	case !sent:
		t = tRequesterRx
	default:
		t = tRequesterTx
	}
	return t[s][ki]
}
