package fsm

import (
	"fmt"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// Negotiation rules of the connection phase (PI 6, 7, 23) and of the file
// selection phase (PI 25), as pure functions: the server computes its
// ACONNECT and ACK(CREATE)/ACK(SELECT) answers with them, the client checks
// the answers it gets.

// VersionE is the value of PI 6 for PeSIT version E, the only version Vectis
// speaks.
const VersionE = 2

// NegotiateVersion checks the PI 6 of a CONNECT (value v, present ok).
//
// Version E (2) is accepted. Everything else is refused with 3/308, version
// D (1) included: Vectis does not emulate version D semantics, and a server
// may answer a lower version but never a higher one, so a proposal above 2
// cannot be met either. The value is read as an unsigned big-endian number
// with leading zeros tolerated; an ASCII "2" (0x32) is not 2. A missing or
// empty PI 6 is a missing mandatory parameter: 3/318.
func NegotiateVersion(v []byte, ok bool) (uint8, error) {
	if !ok || len(v) == 0 {
		return 0, fmt.Errorf("PI 6 (version) missing: %w", fpdu.DiagBadParameter)
	}
	n, good := beUint(v)
	if !good || n != VersionE {
		return 0, fmt.Errorf("PI 6 (version) % X: only version E (2) is supported: %w", v, fpdu.DiagVersionUnsupported)
	}
	return VersionE, nil
}

// IntervalUndefined is the PI 7 interval meaning "no bound on the data
// between two sync points".
const IntervalUndefined = 0xFFFF

// SyncOption is the value of PI 7: the sync-point interval in KB (1 KB =
// 1024 bytes; 0 = no sync points, IntervalUndefined = no bound) and the
// acknowledgement window (0 = sync points are not acknowledged).
type SyncOption struct {
	IntervalKB uint16
	Window     uint8
}

// Enabled reports whether sync points are used (spec flag ck).
func (o SyncOption) Enabled() bool { return o.IntervalKB != 0 }

// Bytes is the 3-byte wire value of PI 7. It always has 3 bytes: CX aborts
// on a shorter PI 7.
func (o SyncOption) Bytes() [3]byte {
	return [3]byte{byte(o.IntervalKB >> 8), byte(o.IntervalKB), o.Window}
}

// LimitBytes is the most data (in bytes, as counted by SyncWindow.Data) the
// sender may send between two sync points, and false when there is no bound
// (sync disabled or interval undefined).
func (o SyncOption) LimitBytes() (uint64, bool) {
	if o.IntervalKB == 0 || o.IntervalKB == IntervalUndefined {
		return 0, false
	}
	return uint64(o.IntervalKB) * 1024, true
}

func (o SyncOption) String() string {
	switch o.IntervalKB {
	case 0:
		return "no sync"
	case IntervalUndefined:
		return fmt.Sprintf("sync interval undefined, window %d", o.Window)
	}
	return fmt.Sprintf("sync every %d KB, window %d", o.IntervalKB, o.Window)
}

// normal clears the window when sync is off: the spec defines byte 3 only
// when the interval is non-zero.
func (o SyncOption) normal() SyncOption {
	if o.IntervalKB == 0 {
		o.Window = 0
	}
	return o
}

// ParseSyncOption decodes a PI 7 value. It must be exactly 3 bytes (3/318
// otherwise). A zero interval yields the zero SyncOption whatever byte 3 says.
func ParseSyncOption(v []byte) (SyncOption, error) {
	if len(v) != 3 {
		return SyncOption{}, fmt.Errorf("PI 7 (sync option) has %d bytes, want 3: %w", len(v), fpdu.DiagBadParameter)
	}
	return SyncOption{IntervalKB: uint16(v[0])<<8 | uint16(v[1]), Window: v[2]}.normal(), nil
}

// NegotiateSync computes the PI 7 a server puts in its ACONNECT, from the
// requester's proposal (value v, present ok) and what the server is willing
// to do (local; local.IntervalKB = 0 means the server does not want sync).
//
// Sync is used only if both sides want it; otherwise the answer is 00 00 00
// (an absent PI 7 means no sync). The server may lower the interval or the
// window, never raise them, and the smaller interval wins over a larger or
// an undefined one (undefined, 0xFFFF, is the largest value, so the smaller
// interval is simply the minimum). Put answer.Bytes() in the ACONNECT.
func NegotiateSync(v []byte, ok bool, local SyncOption) (SyncOption, error) {
	if !ok {
		return SyncOption{}, nil
	}
	prop, err := ParseSyncOption(v)
	if err != nil {
		return SyncOption{}, err
	}
	local = local.normal()
	if !prop.Enabled() || !local.Enabled() {
		return SyncOption{}, nil
	}
	return SyncOption{IntervalKB: min(prop.IntervalKB, local.IntervalKB), Window: min(prop.Window, local.Window)}, nil
}

// CheckSyncAnswer is the requester's check of the PI 7 in an ACONNECT:
// the server may turn sync off or lower the interval or the window, but not
// raise them nor turn on sync that was not proposed. A violation is a failed
// negotiation, 3/315.
func CheckSyncAnswer(proposed, answered SyncOption) error {
	proposed, answered = proposed.normal(), answered.normal()
	if !answered.Enabled() {
		return nil
	}
	if !proposed.Enabled() || answered.IntervalKB > proposed.IntervalKB || answered.Window > proposed.Window {
		return fmt.Errorf("ACONNECT PI 7 (%v) exceeds the proposal (%v): %w", answered, proposed, fpdu.DiagNegotiationFailure)
	}
	return nil
}

// NegotiateResync computes the PI 23 of an ACONNECT: min(proposal, local),
// with an absent proposal meaning 0. A proposal other than 0 or 1 is 3/318.
func NegotiateResync(v []byte, ok bool, local bool) (uint8, error) {
	if !ok {
		return 0, nil
	}
	prop, err := parseResync(v)
	if err != nil {
		return 0, err
	}
	if prop && local {
		return 1, nil
	}
	return 0, nil
}

func parseResync(v []byte) (bool, error) {
	n, good := beUint(v)
	if !good || len(v) == 0 || n > 1 {
		return false, fmt.Errorf("PI 23 (resync) % X is not 0 or 1: %w", v, fpdu.DiagBadParameter)
	}
	return n == 1, nil
}

// MaxEntitySize is the largest PI 25 (2 bytes).
const MaxEntitySize = 0xFFFF

// minSegmentedEntity is the smallest entity that carries a data FPDU with
// at least one data byte (6-byte header + 1).
const minSegmentedEntity = 7

// NegotiateEntitySize computes the PI 25 a server puts in ACK(CREATE) or
// ACK(SELECT): the requester's proposal, lowered to local (the server's own
// bound; 0 = no bound beyond 65535). The answer is never above the proposal.
//
// Without segmentation an article travels in one DTF, so the answer must be
// at least maxArticle + 6 (the FPDU header); with segmentation it must still
// hold a header and one byte. When that is impossible the server refuses the
// CREATE or SELECT with the returned error's diagnostic, 2/200 (insufficient
// file characteristics: the spec has no dedicated code, and 2/200 is the
// CREATE/SELECT diagnostic closest to "these attributes cannot be served").
// A proposal of 0 or above 65535 is not a valid PI 25: 3/318.
func NegotiateEntitySize(proposal uint64, local int, maxArticle int, segmentation bool) (int, error) {
	if proposal == 0 || proposal > MaxEntitySize {
		return 0, fmt.Errorf("PI 25 (entity size) %d out of 1..65535: %w", proposal, fpdu.DiagBadParameter)
	}
	answer := int(proposal)
	if local > 0 && local < answer {
		answer = local
	}
	need := maxArticle + 6
	if segmentation {
		need = minSegmentedEntity
	}
	if answer < need {
		return 0, fmt.Errorf("entity size %d (proposed %d, local bound %d) cannot carry %d-byte articles (segmentation %t): %w",
			answer, proposal, local, maxArticle, segmentation, fpdu.DiagInsufficientCharacteristics)
	}
	return answer, nil
}

// beUint reads an unsigned big-endian number of at most 8 bytes, leading
// zeros tolerated.
func beUint(v []byte) (uint64, bool) {
	if len(v) > 8 {
		for _, b := range v[:len(v)-8] {
			if b != 0 {
				return 0, false
			}
		}
		v = v[len(v)-8:]
	}
	var n uint64
	for _, b := range v {
		n = n<<8 | uint64(b)
	}
	return n, true
}
