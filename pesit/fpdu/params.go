package fpdu

import (
	"bytes"
	"time"
)

// DateLayout is the layout of type D values: YYMMDDhhmmss.
const DateLayout = "060102150405"

// Lookup finds the unit with code id: at the top level first, then inside
// the PGIs, so that callers need not know which group holds a PI.
func (p Params) Lookup(id PI) (Param, bool) {
	for _, u := range p {
		if u.ID == id {
			return u, true
		}
	}
	for _, u := range p {
		if u.Group != nil {
			if v, ok := u.Group.Lookup(id); ok {
				return v, true
			}
		}
	}
	return Param{}, false
}

// Has reports whether a unit with code id is present (see Lookup).
func (p Params) Has(id PI) bool {
	_, ok := p.Lookup(id)
	return ok
}

// Group returns the contents of PGI id.
func (p Params) Group(id PI) (Params, bool) {
	u, ok := p.Lookup(id)
	if !ok || !id.IsGroup() {
		return nil, false
	}
	return u.Group, true
}

// Bytes returns the raw value of PI id.
func (p Params) Bytes(id PI) ([]byte, bool) {
	u, ok := p.Lookup(id)
	if !ok {
		return nil, false
	}
	return u.Value, true
}

// Uint returns PI id as an unsigned big-endian number. It is lenient: leading
// zero bytes are accepted (CX sends PI 13 on 3 bytes). It reports false when
// the PI is absent, empty, or longer than 8 significant bytes.
func (p Params) Uint(id PI) (uint64, bool) {
	b, ok := p.Bytes(id)
	if !ok {
		return 0, false
	}
	return beUint(b)
}

// String returns PI id as text with trailing blanks trimmed (they are not
// significant in type C values).
func (p Params) String(id PI) (string, bool) {
	b, ok := p.Bytes(id)
	if !ok {
		return "", false
	}
	return string(bytes.TrimRight(b, " ")), true
}

// Diagnostic returns PI 2. For an ABORT decoded from the bare form the
// decoder stores the 3 bytes as PI 2 too, so both forms read the same.
func (p Params) Diagnostic() (Diagnostic, bool) {
	b, ok := p.Bytes(PIDiagnostic)
	if !ok || len(b) != 3 {
		return 0, false
	}
	return DiagnosticFromBytes([3]byte(b)), true
}

// SyncOption returns PI 7: the sync interval in KiB and the acknowledgement
// window.
func (p Params) SyncOption() (intervalKB uint16, window uint8, ok bool) {
	b, ok := p.Bytes(PISyncOption)
	if !ok || len(b) != 3 {
		return 0, 0, false
	}
	return uint16(b[0])<<8 | uint16(b[1]), b[2], true
}

// Unknown lists the codes, at any level, that are not Hors-SIT parameters of
// the PI table. The decoder keeps such units (CFT has proprietary
// extensions) and callers may log them.
func (p Params) Unknown() []PI {
	var out []PI
	for _, u := range p {
		if _, ok := lookupPIInfo(u.ID); !ok {
			out = append(out, u.ID)
		}
		if u.Group != nil {
			out = append(out, u.Group.Unknown()...)
		}
	}
	return out
}

// Add appends a PI unit; value is not copied. An existing unit with the
// same code is not replaced: AppendEncode rejects duplicates.
func (p *Params) Add(id PI, value []byte) {
	*p = append(*p, Param{ID: id, Value: value})
}

// AddUint appends a numeric PI with its canonical encoding: minimal length,
// or the fixed width that the PI requires (PI 25 on 2 bytes, PI 6 on 1, PI 7,
// PI 2 on 3).
func (p *Params) AddUint(id PI, v uint64) {
	p.Add(id, appendUint(nil, id, v))
}

// AddString appends a character PI as is (callers pad PI 5 if they want).
func (p *Params) AddString(id PI, s string) {
	p.Add(id, []byte(s))
}

// AddDiagnostic appends PI 2.
func (p *Params) AddDiagnostic(d Diagnostic) {
	b := d.Bytes()
	p.Add(PIDiagnostic, b[:])
}

// AddSyncOption appends PI 7, always on 3 bytes (a shorter PI 7 made CX abort).
func (p *Params) AddSyncOption(intervalKB uint16, window uint8) {
	p.Add(PISyncOption, []byte{byte(intervalKB >> 8), byte(intervalKB), window})
}

// AddDate appends a type D PI (PI 51, PI 52) as 12 ASCII digits. The spec
// has no time zone: callers pass the time in the zone the partner expects.
func (p *Params) AddDate(id PI, t time.Time) {
	p.Add(id, t.AppendFormat(make([]byte, 0, len(DateLayout)), DateLayout))
}

// Date parses a type D PI in loc (two-digit years are 1969..2068, as
// time.Parse reads them).
func (p Params) Date(id PI, loc *time.Location) (time.Time, bool) {
	b, ok := p.Bytes(id)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.ParseInLocation(DateLayout, string(b), loc)
	return t, err == nil
}

// Clone returns a deep copy of p that shares no memory with it, for keeping
// parameters beyond the next Reader.Next.
func (p Params) Clone() Params {
	if p == nil {
		return nil
	}
	out := make(Params, len(p))
	for i, u := range p {
		out[i].ID = u.ID
		if u.Value != nil {
			out[i].Value = append([]byte{}, u.Value...)
		}
		out[i].Group = u.Group.Clone()
	}
	return out
}

// AddGroup appends a PGI holding g.
func (p *Params) AddGroup(id PI, g Params) {
	if g == nil {
		g = Params{}
	}
	*p = append(*p, Param{ID: id, Group: g})
}

// beUint reads a big-endian unsigned number of any length whose significant
// part fits 8 bytes.
func beUint(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	for len(b) > 8 && b[0] == 0 {
		b = b[1:]
	}
	if len(b) > 8 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v, true
}

// appendUint appends v in the canonical width for PI id.
func appendUint(dst []byte, id PI, v uint64) []byte {
	n := 1
	for x := v >> 8; x != 0; x >>= 8 {
		n++
	}
	if info, ok := lookupPIInfo(id); ok && info.Width > n {
		n = info.Width
	}
	for i := n - 1; i >= 0; i-- {
		if i >= 8 {
			dst = append(dst, 0)
			continue
		}
		dst = append(dst, byte(v>>(8*uint(i))))
	}
	return dst
}
