package fpdu

import "strings"

// ConnectParams are the parameters of CONNECT that Vectis sends and reads.
type ConnectParams struct {
	RequesterID, ServerID string // PI 3, PI 4
	// Password is PI 5, blank-padded to 8 characters when shorter (as CX
	// sends it); empty: no PI 5.
	Password string
	// SyncIntervalKB and SyncWindow are PI 7, sent only when the interval
	// is not 0 (no sync points proposed).
	SyncIntervalKB uint16
	SyncWindow     uint8
	AccessType     uint8 // PI 22: 0 write, 1 read, 2 mixed
	Resync         bool  // PI 23 = 1, sent only when set
}

// NewConnect builds CONNECT (version E, PI 6 = 2) from connection id src.
func NewConnect(src byte, p ConnectParams) *FPDU {
	f := &FPDU{Kind: Connect, SrcID: src}
	q := &f.Params
	q.AddString(PIRequesterID, p.RequesterID)
	q.AddString(PIServerID, p.ServerID)
	if pw := p.Password; pw != "" {
		if len(pw) < 8 {
			pw += strings.Repeat(" ", 8-len(pw))
		}
		q.AddString(PIAccessControl, pw)
	}
	q.AddUint(PIVersion, 2)
	if p.SyncIntervalKB > 0 {
		q.AddSyncOption(p.SyncIntervalKB, p.SyncWindow)
	}
	q.AddUint(PIAccessType, uint64(p.AccessType))
	if p.Resync {
		q.AddUint(PIResync, 1)
	}
	return f
}

// ReadRConnect reads the refusal of an RCONNECT: PI 2 and the free text of
// PI 99.
func ReadRConnect(f *FPDU) (Diagnostic, string) {
	d, _ := f.Params.Diagnostic()
	text, _ := f.Params.String(PIFreeMessage)
	return d, text
}

// ReadConnect reads CONNECT: the parameters a responder decides on (PI 5
// is returned as sent, blanks included).
func ReadConnect(f *FPDU) ConnectParams {
	p := f.Params
	var c ConnectParams
	c.RequesterID, _ = p.String(PIRequesterID)
	c.ServerID, _ = p.String(PIServerID)
	if b, ok := p.Bytes(PIAccessControl); ok {
		c.Password = string(b)
	}
	c.SyncIntervalKB, c.SyncWindow, _ = p.SyncOption()
	if v, ok := p.Uint(PIAccessType); ok {
		c.AccessType = uint8(min(v, 0xFF))
	}
	v, _ := p.Uint(PIResync)
	c.Resync = v == 1
	return c
}

// AConnectParams are the parameters of ACONNECT that Vectis sends.
type AConnectParams struct {
	// SyncIntervalKB and SyncWindow are the agreed PI 7, always sent on 3
	// bytes (CX expects it), 0 0 0 when sync points are off.
	SyncIntervalKB uint16
	SyncWindow     uint8
	// Resync is PI 23, sent only when ResyncSent.
	Resync, ResyncSent bool
}

// NewAConnect builds ACONNECT (version E) to the requester's id dst from
// our id src.
func NewAConnect(dst, src byte, p AConnectParams) *FPDU {
	f := &FPDU{Kind: AConnect, DstID: dst, SrcID: src}
	f.Params.AddUint(PIVersion, 2)
	f.Params.AddSyncOption(p.SyncIntervalKB, p.SyncWindow)
	if p.ResyncSent {
		v := uint64(0)
		if p.Resync {
			v = 1
		}
		f.Params.AddUint(PIResync, v)
	}
	return f
}

// NewRelConf builds RELCONF (no parameters).
func NewRelConf(dst, src byte) *FPDU { return &FPDU{Kind: RelConf, DstID: dst, SrcID: src} }
