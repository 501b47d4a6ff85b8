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
