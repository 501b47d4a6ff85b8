package fsm

import (
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

func diagOf(err error) fpdu.Diagnostic {
	if err == nil {
		return fpdu.DiagOK
	}
	d, ok := fpdu.DiagnosticOf(err)
	if !ok {
		return fpdu.DiagConnectionOther
	}
	return d
}

func TestNegotiateVersion(t *testing.T) {
	for _, c := range []struct {
		v    []byte
		ok   bool
		want fpdu.Diagnostic
	}{
		{[]byte{2}, true, fpdu.DiagOK},
		{[]byte{0, 2}, true, fpdu.DiagOK}, // leading zero tolerated
		{[]byte{1}, true, fpdu.DiagVersionUnsupported},
		{[]byte{3}, true, fpdu.DiagVersionUnsupported},
		{[]byte{0x44}, true, fpdu.DiagVersionUnsupported}, // pesitwizard's bad byte
		{[]byte("2"), true, fpdu.DiagVersionUnsupported},  // ASCII is not binary 2
		{[]byte{}, true, fpdu.DiagBadParameter},
		{nil, false, fpdu.DiagBadParameter},
	} {
		v, err := NegotiateVersion(c.v, c.ok)
		if got := diagOf(err); got != c.want {
			t.Errorf("version % X (%v): %v, want %v", c.v, c.ok, got, c.want)
		}
		if err == nil && v != VersionE {
			t.Errorf("version % X: %d", c.v, v)
		}
	}
}

func TestNegotiateSync(t *testing.T) {
	for _, c := range []struct {
		name  string
		prop  []byte
		ok    bool
		local SyncOption
		want  [3]byte
		diag  fpdu.Diagnostic
	}{
		{"absent: no sync, still answered", nil, false, SyncOption{32, 2}, [3]byte{0, 0, 0}, 0},
		{"CX proposal accepted", []byte{0, 0x20, 2}, true, SyncOption{32, 2}, [3]byte{0, 0x20, 2}, 0},
		{"server lowers interval and window", []byte{1, 0, 8}, true, SyncOption{32, 2}, [3]byte{0, 0x20, 2}, 0},
		{"server never raises", []byte{0, 4, 1}, true, SyncOption{32, 16}, [3]byte{0, 4, 1}, 0},
		{"smaller beats undefined (proposal undefined)", []byte{0xFF, 0xFF, 4}, true, SyncOption{32, 8}, [3]byte{0, 0x20, 4}, 0},
		{"smaller beats undefined (local undefined)", []byte{0, 0x20, 2}, true, SyncOption{IntervalUndefined, 8}, [3]byte{0, 0x20, 2}, 0},
		{"both undefined", []byte{0xFF, 0xFF, 3}, true, SyncOption{IntervalUndefined, 5}, [3]byte{0xFF, 0xFF, 3}, 0},
		{"requester wants none", []byte{0, 0, 5}, true, SyncOption{32, 2}, [3]byte{0, 0, 0}, 0},
		{"server wants none", []byte{0, 0x20, 2}, true, SyncOption{}, [3]byte{0, 0, 0}, 0},
		{"window 0 stays 0", []byte{0, 0x20, 0}, true, SyncOption{32, 2}, [3]byte{0, 0x20, 0}, 0},
		{"local window 0 lowers", []byte{0, 0x20, 2}, true, SyncOption{32, 0}, [3]byte{0, 0x20, 0}, 0},
		{"one-byte PI 7", []byte{0}, true, SyncOption{32, 2}, [3]byte{}, fpdu.DiagBadParameter},
		{"four-byte PI 7", []byte{0, 0, 0x20, 2}, true, SyncOption{32, 2}, [3]byte{}, fpdu.DiagBadParameter},
	} {
		got, err := NegotiateSync(c.prop, c.ok, c.local)
		if d := diagOf(err); d != c.diag {
			t.Errorf("%s: %v, want %v", c.name, d, c.diag)
			continue
		}
		if err == nil && got.Bytes() != c.want {
			t.Errorf("%s: answer % X, want % X", c.name, got.Bytes(), c.want)
		}
		if err == nil && got.Enabled() {
			if CheckSyncAnswer(SyncOption{IntervalKB: uint16(c.prop[0])<<8 | uint16(c.prop[1]), Window: c.prop[2]}, got) != nil {
				t.Errorf("%s: requester rejects the server's own answer %v", c.name, got)
			}
		}
	}
}

func TestCheckSyncAnswer(t *testing.T) {
	prop := SyncOption{32, 2}
	for _, c := range []struct {
		ans SyncOption
		ok  bool
	}{
		{SyncOption{}, true},
		{SyncOption{32, 2}, true},
		{SyncOption{16, 1}, true},
		{SyncOption{33, 2}, false},
		{SyncOption{32, 3}, false},
		{SyncOption{IntervalUndefined, 2}, false},
	} {
		err := CheckSyncAnswer(prop, c.ans)
		if (err == nil) != c.ok || (err != nil && diagOf(err) != fpdu.DiagNegotiationFailure) {
			t.Errorf("answer %v to %v: %v", c.ans, prop, err)
		}
	}
	if CheckSyncAnswer(SyncOption{}, SyncOption{4, 1}) == nil {
		t.Error("sync granted that was not proposed")
	}
}

func TestNegotiateResync(t *testing.T) {
	for _, c := range []struct {
		v     []byte
		ok    bool
		local bool
		want  uint8
		diag  fpdu.Diagnostic
	}{
		{nil, false, true, 0, 0},
		{[]byte{0}, true, true, 0, 0},
		{[]byte{1}, true, true, 1, 0},
		{[]byte{1}, true, false, 0, 0},
		{[]byte{0}, true, false, 0, 0},
		{[]byte{2}, true, true, 0, fpdu.DiagBadParameter},
		{[]byte{}, true, true, 0, fpdu.DiagBadParameter},
	} {
		got, err := NegotiateResync(c.v, c.ok, c.local)
		if diagOf(err) != c.diag || got != c.want {
			t.Errorf("resync % X %v local %v: %d %v, want %d %v", c.v, c.ok, c.local, got, err, c.want, c.diag)
		}
	}
}

func TestNegotiateEntitySize(t *testing.T) {
	for _, c := range []struct {
		name          string
		prop          uint64
		local, maxArt int
		seg           bool
		want          int
		diag          fpdu.Diagnostic
	}{
		{"CX proposes 65535, server takes 4096", 65535, 4096, 1024, false, 4096, 0},
		{"no local bound", 65535, 0, 1024, false, 65535, 0},
		{"never above the proposal", 2048, 8192, 1024, false, 2048, 0},
		{"exactly article + 6", 1030, 0, 1024, false, 1030, 0},
		{"one short of article + 6", 1029, 0, 1024, false, 0, fpdu.DiagInsufficientCharacteristics},
		{"local bound too small", 65535, 1000, 1024, false, 0, fpdu.DiagInsufficientCharacteristics},
		{"segmentation allows small entities", 512, 0, 4096, true, 512, 0},
		{"segmentation still needs a header and a byte", 6, 0, 4096, true, 0, fpdu.DiagInsufficientCharacteristics},
		{"zero", 0, 0, 10, true, 0, fpdu.DiagBadParameter},
		{"over 2 bytes", 70000, 0, 10, false, 0, fpdu.DiagBadParameter},
	} {
		got, err := NegotiateEntitySize(c.prop, c.local, c.maxArt, c.seg)
		if diagOf(err) != c.diag || got != c.want {
			t.Errorf("%s: %d %v, want %d %v", c.name, got, err, c.want, c.diag)
		}
		if err == nil && (uint64(got) > c.prop || (!c.seg && got < c.maxArt+6)) {
			t.Errorf("%s: answer %d breaks the rule", c.name, got)
		}
	}
}

func TestSyncWindow(t *testing.T) {
	w := NewSyncWindow(SyncOption{IntervalKB: 1, Window: 2}, 0)
	if w.Next() != 1 || w.Blocked() || w.NeedSync(1024) {
		t.Fatalf("fresh window: next %d blocked %v needsync %v", w.Next(), w.Blocked(), w.NeedSync(1024))
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Data(1000))
	if !w.NeedSync(25) || w.NeedSync(24) {
		t.Fatal("NeedSync at the 1024-byte interval")
	}
	if d := diagOf(w.Data(25)); d != fpdu.DiagTooMuchDataWithoutSync {
		t.Fatalf("over the interval: %v", d)
	}
	must(w.Data(24))
	must(w.Syn(1))
	must(w.Data(10))
	must(w.Syn(2))
	if !w.Blocked() || w.Outstanding() != 2 {
		t.Fatalf("two unacknowledged with window 2: blocked %v", w.Blocked())
	}
	if d := diagOf(w.Data(1)); d != fpdu.DiagTooManyUnackedSyncs {
		t.Fatalf("data at the bound: %v", d)
	}
	if d := diagOf(w.Syn(3)); d != fpdu.DiagTooManyUnackedSyncs {
		t.Fatalf("SYN over the window: %v", d)
	}
	if d := diagOf(w.Ack(3)); d != fpdu.DiagBadParameter {
		t.Fatalf("ACK of an unsent point: %v", d)
	}
	must(w.Ack(2)) // acknowledges 1 too
	if w.Outstanding() != 0 || w.Pending() || w.LastAcked() != 2 {
		t.Fatalf("after ACK 2: outstanding %d", w.Outstanding())
	}
	if d := diagOf(w.Ack(1)); d != fpdu.DiagBadParameter {
		t.Fatalf("ACK of an acknowledged point: %v", d)
	}
	if d := diagOf(w.Syn(4)); d != fpdu.DiagBadParameter {
		t.Fatalf("SYN skipping a number: %v", d)
	}

	// W = 0: no acknowledgements at all, no bound on outstanding SYNs.
	w = NewSyncWindow(SyncOption{IntervalKB: 1}, 0)
	for n := uint32(1); n <= 20; n++ {
		must(w.Data(1024))
		must(w.Syn(n))
	}
	if w.Blocked() || w.Pending() {
		t.Fatal("window 0 blocks or expects ACKs")
	}
	if d := diagOf(w.Ack(20)); d != fpdu.DiagProtocolError {
		t.Fatalf("ACK(SYN) with window 0: %v", d)
	}

	// Undefined interval: no 2/222; no sync: everything passes, SYN does not.
	w = NewSyncWindow(SyncOption{IntervalKB: IntervalUndefined, Window: 1}, 0)
	must(w.Data(1 << 30))
	if w.NeedSync(1 << 30) {
		t.Fatal("NeedSync with an undefined interval")
	}
	w = NewSyncWindow(SyncOption{}, 0)
	must(w.Data(1 << 30))
	if d := diagOf(w.Syn(1)); d != fpdu.DiagProtocolError {
		t.Fatalf("SYN without sync: %v", d)
	}

	// Restart from point 7: numbering resumes at 8; 1 is tolerated first.
	w = NewSyncWindow(SyncOption{IntervalKB: 4, Window: 1}, 7)
	if w.Next() != 8 {
		t.Fatalf("next after restart from 7: %d", w.Next())
	}
	v := w
	must(v.Syn(8))
	v = w
	must(v.Syn(1))
	if d := diagOf(v.Syn(9)); d != fpdu.DiagBadParameter {
		t.Fatalf("after renumbering from 1, SYN 9: %v", d)
	}
	// A responder's window numbers on from 7 only.
	v = w.Strict()
	if d := diagOf(v.Syn(1)); d != fpdu.DiagBadParameter {
		t.Fatalf("strict window after restart from 7, SYN 1: %v", d)
	}
	must(v.Syn(8))
	if d := diagOf(w.Syn(MaxSyncNumber + 1)); d != fpdu.DiagBadParameter {
		t.Fatalf("SYN over 999999: %v", d)
	}
}
