package fpdu

import (
	"errors"
	"fmt"
)

// AppendEncode appends the wire form of f (its own 2-byte length first, no
// outer frame prefix) to dst. Encoding is strict: units in ascending code
// order, numeric values of type N in their canonical width (minimal, or the
// fixed width of PI 6 and PI 25), no zero LI, no repeated code. An ABORT
// whose only parameter is a 3-byte PI 2 is sent bare unless f.AbortPIForm.
// On error dst is returned unchanged.
func AppendEncode(dst []byte, f *FPDU) ([]byte, error) {
	if !f.Kind.Known() {
		return dst, fmt.Errorf("fpdu: encode: %w", ErrUnknownKind)
	}
	start := len(dst)
	dst = append(dst, 0, 0, f.Kind.Phase(), f.Kind.Type(), f.DstID, f.SrcID)
	var err error
	switch {
	case f.Kind.IsData():
		if len(f.Params) != 0 {
			return dst[:start], fmt.Errorf("fpdu: encode %s: data FPDUs carry no parameters", f.Kind)
		}
		dst = append(dst, f.Data...)
	case len(f.Data) != 0:
		return dst[:start], fmt.Errorf("fpdu: encode %s: only data FPDUs carry data", f.Kind)
	case f.Kind == Abort && !f.AbortPIForm && len(f.Params) == 1 &&
		f.Params[0].ID == PIDiagnostic && len(f.Params[0].Value) == 3:
		dst = append(dst, f.Params[0].Value...)
	default:
		dst, err = appendParams(dst, f.Params, 0)
		if err != nil {
			return dst[:start], fmt.Errorf("fpdu: encode %s: %w", f.Kind, err)
		}
		if f.Kind == Abort && len(dst)-start-HeaderLen == 3 {
			// A 3-byte body would be read back as a bare diagnostic.
			return dst[:start], fmt.Errorf("fpdu: encode %s: a 3-byte PI-form body is ambiguous with the bare form", f.Kind)
		}
	}
	n := len(dst) - start
	if n > MaxFPDULen {
		return dst[:start], fmt.Errorf("fpdu: encode %s: %d bytes exceeds %d: %w", f.Kind, n, MaxFPDULen, ErrFrameTooLarge)
	}
	dst[start], dst[start+1] = byte(n>>8), byte(n)
	return dst, nil
}

var errDuplicate = errors.New("repeated parameter")

// appendParams writes the units of p in ascending code order without
// modifying or copying p: parameter lists are short, so a selection pass per
// unit costs less than sorting a copy.
func appendParams(dst []byte, p Params, group PI) ([]byte, error) {
	prev := -1
	for range p {
		next, count := -1, 0
		var u Param
		for _, c := range p {
			id := int(c.ID)
			if id <= prev {
				continue
			}
			switch {
			case next < 0 || id < next:
				next, count, u = id, 1, c
			case id == next:
				count++
			}
		}
		if count > 1 {
			return dst, fmt.Errorf("%s: %w", u.ID, errDuplicate)
		}
		prev = next
		var err error
		dst, err = appendUnit(dst, u, group)
		if err != nil {
			return dst, err
		}
	}
	return dst, nil
}

func appendUnit(dst []byte, u Param, group PI) ([]byte, error) {
	if !u.ID.IsGroup() {
		if u.Group != nil {
			return dst, fmt.Errorf("%s is not a PGI but has members", u.ID)
		}
		v := u.Value
		if info, ok := lookupPIInfo(u.ID); ok && info.Type == TypeN && len(v) > 0 {
			for len(v) > 1 && v[0] == 0 {
				v = v[1:]
			}
			if len(v) < info.Width {
				dst = appendLI(append(dst, byte(u.ID)), info.Width)
				for range info.Width - len(v) {
					dst = append(dst, 0)
				}
				return append(dst, v...), nil
			}
		}
		if len(v) == 0 {
			return dst, fmt.Errorf("%s: empty value (LI 0 is not allowed)", u.ID)
		}
		if len(v) > MaxFPDULen {
			return dst, fmt.Errorf("%s: value of %d bytes: %w", u.ID, len(v), ErrFrameTooLarge)
		}
		dst = appendLI(append(dst, byte(u.ID)), len(v))
		return append(dst, v...), nil
	}
	if group != 0 {
		return dst, fmt.Errorf("%s nested in %s", u.ID, group)
	}
	if u.Value != nil {
		return dst, fmt.Errorf("%s is a PGI but has a value", u.ID)
	}
	if len(u.Group) == 0 {
		return dst, fmt.Errorf("%s: empty group (LI 0 is not allowed)", u.ID)
	}
	// Reserve the long LI form, then shrink once the group size is known.
	mark := len(dst)
	dst = append(dst, byte(u.ID), 0xFF, 0, 0)
	var err error
	dst, err = appendParams(dst, u.Group, u.ID)
	if err != nil {
		return dst[:mark], err
	}
	n := len(dst) - mark - 4
	if n > MaxFPDULen {
		return dst[:mark], fmt.Errorf("%s: %d bytes: %w", u.ID, n, ErrFrameTooLarge)
	}
	if n < 0xFF {
		copy(dst[mark+2:], dst[mark+4:])
		dst = dst[:len(dst)-2]
		dst[mark+1] = byte(n)
		return dst, nil
	}
	dst[mark+2], dst[mark+3] = byte(n>>8), byte(n)
	return dst, nil
}

func appendLI(dst []byte, n int) []byte {
	if n < 0xFF {
		return append(dst, byte(n))
	}
	return append(dst, 0xFF, byte(n>>8), byte(n))
}
