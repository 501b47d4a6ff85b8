package fsm

import (
	"fmt"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// MaxSyncNumber is the largest sync point number (PI 20).
const MaxSyncNumber = 999999

// SyncWindow is the sync-point accounting of one transfer, the same for the
// sender and the receiver (digest §4.3):
//
//   - numbering: SYNs are numbered from the restart point + 1, by 1;
//   - window W: at most W SYNs unacknowledged (last sent - last acked <= W);
//     at the bound the sender sends no more data until an ACK(SYN); W = 0
//     means SYNs are not acknowledged at all;
//   - interval: at most IntervalKB*1024 data bytes between two SYNs.
//
// A sender asks Blocked and NeedSync before sending and records what it
// sends; a receiver records what it receives and turns an error into an
// IDT or ABORT. Errors carry the diagnostic: 2/217 too many unacknowledged
// sync points, 2/222 too much data without a sync point, 3/318 a bad sync
// number, 3/311 sync or acknowledgement not negotiated. A failed call
// changes nothing. The zero value is a window with sync disabled.
type SyncWindow struct {
	opt       SyncOption
	lastSent  uint32
	lastAcked uint32
	fresh     bool   // no SYN since the last Reset
	since     uint64 // data bytes since the last SYN (or Reset)
	// strict refuses the renumbering from 1 after a restart (Syn): a
	// responder's window, whose journal names restart points by number.
	strict bool
}

// NewSyncWindow starts the accounting of a transfer that (re)starts after
// sync point point (0 for a new transfer).
func NewSyncWindow(opt SyncOption, point uint32) SyncWindow {
	w := SyncWindow{opt: opt.normal()}
	w.Reset(point)
	return w
}

// Reset restarts the numbering after point, e.g. after ACK(WRITE), READ or
// ACK(RESYN): point counts as sent and acknowledged.
func (w *SyncWindow) Reset(point uint32) {
	w.lastSent, w.lastAcked, w.since, w.fresh = point, point, 0, true
}

// Strict returns w refusing the renumbering from 1 after a restart (Syn).
func (w SyncWindow) Strict() SyncWindow {
	w.strict = true
	return w
}

// Option is the negotiated PI 7.
func (w SyncWindow) Option() SyncOption { return w.opt }

// LastSent is the number of the last SYN sent (or received).
func (w SyncWindow) LastSent() uint32 { return w.lastSent }

// LastAcked is the number of the last acknowledged SYN.
func (w SyncWindow) LastAcked() uint32 { return w.lastAcked }

// Next is the number the next SYN must carry.
func (w SyncWindow) Next() uint32 { return w.lastSent + 1 }

// Outstanding is the number of SYNs not yet acknowledged.
func (w SyncWindow) Outstanding() uint32 { return w.lastSent - w.lastAcked }

// Pending reports whether there is a SYN to acknowledge (spec condition cc>0).
func (w SyncWindow) Pending() bool {
	return w.opt.Enabled() && w.opt.Window > 0 && w.lastSent > w.lastAcked
}

// Since is the number of data bytes counted since the last SYN.
func (w SyncWindow) Since() uint64 { return w.since }

// Blocked reports whether the sender is at the window bound and must wait
// for an ACK(SYN) before sending more data or another SYN.
func (w SyncWindow) Blocked() bool {
	return w.opt.Enabled() && w.opt.Window > 0 && w.Outstanding() >= uint32(w.opt.Window)
}

// NeedSync reports whether the sender must place a SYN before sending an
// article of n data bytes: the data since the last SYN would exceed the
// interval. It is false right after a SYN, because a SYN cannot make room
// for an article that is itself longer than the interval (Data rejects it).
func (w SyncWindow) NeedSync(n int) bool {
	limit, ok := w.opt.LimitBytes()
	return ok && w.since > 0 && w.since+uint64(n) > limit
}

// Data records n data bytes (DTF payload without the multi-article length
// prefixes; compression headers included).
func (w *SyncWindow) Data(n int) error {
	if !w.opt.Enabled() {
		return nil
	}
	if w.Blocked() {
		return fmt.Errorf("data while %d sync points are unacknowledged (window %d): %w",
			w.Outstanding(), w.opt.Window, fpdu.DiagTooManyUnackedSyncs)
	}
	if limit, ok := w.opt.LimitBytes(); ok && w.since+uint64(n) > limit {
		return fmt.Errorf("%d data bytes since the last sync point, interval is %d: %w",
			w.since+uint64(n), limit, fpdu.DiagTooMuchDataWithoutSync)
	}
	w.since += uint64(n)
	return nil
}

// Syn records SYN number num. It must be Next(); as the only leniency, the
// first SYN after a restart from a point p > 0 may also be 1 (the spec does
// not say how numbering resumes; Vectis sends p+1), except in a responder's
// window (Strict): the server's journal names restart points by number, and
// a second restart from "point 1" would not say which (docs/interop.md).
func (w *SyncWindow) Syn(num uint32) error {
	if !w.opt.Enabled() {
		return fmt.Errorf("SYN %d but sync points were not negotiated: %w", num, fpdu.DiagProtocolError)
	}
	base := w.lastSent
	switch {
	case num == w.lastSent+1 && num <= MaxSyncNumber:
	case num == 1 && w.fresh && !w.strict:
		base = 0
	default:
		return fmt.Errorf("SYN %d, want %d: %w", num, w.lastSent+1, fpdu.DiagBadParameter)
	}
	acked := w.lastAcked
	if base == 0 {
		acked = 0
	}
	if w.opt.Window > 0 && num-acked > uint32(w.opt.Window) {
		return fmt.Errorf("SYN %d with %d acknowledged and window %d: %w",
			num, acked, w.opt.Window, fpdu.DiagTooManyUnackedSyncs)
	}
	w.lastSent, w.lastAcked, w.since, w.fresh = num, acked, 0, false
	return nil
}

// Ack records ACK(SYN) number num, which acknowledges every point up to num.
// It must name a point sent and not yet acknowledged.
func (w *SyncWindow) Ack(num uint32) error {
	if !w.opt.Enabled() || w.opt.Window == 0 {
		return fmt.Errorf("ACK(SYN) %d but acknowledgements were not negotiated: %w", num, fpdu.DiagProtocolError)
	}
	if num <= w.lastAcked || num > w.lastSent {
		return fmt.Errorf("ACK(SYN) %d, outstanding are %d..%d: %w", num, w.lastAcked+1, w.lastSent, fpdu.DiagBadParameter)
	}
	w.lastAcked = num
	return nil
}
