package fpdu

// Decode decodes exactly one FPDU: b starts with the FPDU's own 2-byte length
// and must hold nothing else. The result aliases b. Decode checks the framing
// and the PI/PGI structure, not the presence of mandatory parameters (see
// Validate) nor the article layout of a DTF (see ForEachArticle).
func Decode(b []byte) (FPDU, error) {
	var f FPDU
	if err := decodeInto(&f, b, false); err != nil {
		return FPDU{}, err
	}
	return f, nil
}

// decodeInto decodes b into f. With reuse, f's Params and Repeated backing
// arrays are recycled (the Reader's hot path).
func decodeInto(f *FPDU, b []byte, reuse bool) error {
	if len(b) < HeaderLen {
		return protoErr(ErrTruncated, "FPDU of %d bytes, header needs %d", len(b), HeaderLen)
	}
	n := int(b[0])<<8 | int(b[1])
	if n < HeaderLen {
		return protoErr(ErrBadLength, "FPDU length %d below the header size", n)
	}
	if n != len(b) {
		if n > len(b) {
			return protoErr(ErrTruncated, "FPDU length %d exceeds the %d bytes available", n, len(b))
		}
		return protoErr(ErrBadLength, "FPDU length %d but %d bytes given", n, len(b))
	}
	k, ok := KindOf(b[2], b[3])
	if !ok {
		return protoErr(ErrUnknownKind, "phase %02X type %02X", b[2], b[3])
	}
	params, repeated := f.Params[:0], f.Repeated[:0]
	if !reuse {
		params, repeated = nil, nil
	}
	*f = FPDU{Kind: k, DstID: b[4], SrcID: b[5]}
	body := b[HeaderLen:]
	if k.IsData() {
		f.Data = body
		if reuse {
			f.Params, f.Repeated = params, repeated
		}
		return nil
	}
	if k == Abort && len(body) == 3 {
		// Bare diagnostic: the spec removes the PI code and length in ABORT.
		f.Params = append(params, Param{ID: PIDiagnostic, Value: body})
		f.Repeated = repeated
		return nil
	}
	f.AbortPIForm = k == Abort
	var err error
	params, repeated, err = decodeParams(params, repeated, body, 0)
	if err != nil {
		return err
	}
	f.Params, f.Repeated = params, repeated
	return nil
}

// readUnit splits the first PI/PGI unit off b: its code, value and the rest.
// The LI is one byte (0..254) or 0xFF followed by a 2-byte length.
func readUnit(b []byte) (id PI, value, rest []byte, err error) {
	if len(b) < 2 {
		return 0, nil, nil, protoErr(ErrTruncated, "parameter unit of %d bytes", len(b))
	}
	id = PI(b[0])
	n, hdr := int(b[1]), 2
	if n == 0xFF {
		if len(b) < 4 {
			return 0, nil, nil, protoErr(ErrTruncated, "%s: long LI cut short", id)
		}
		n, hdr = int(b[2])<<8|int(b[3]), 4
	}
	if n > len(b)-hdr {
		return 0, nil, nil, protoErr(ErrBadLength, "%s: LI %d overruns the %d bytes left", id, n, len(b)-hdr)
	}
	return id, b[hdr : hdr+n], b[hdr+n:], nil
}

// decodeParams parses a sequence of units. Inside a PGI (group != 0) a
// nested PGI is an error; unknown codes are kept as opaque PIs; an LI of 0
// means the unit is absent; a repeated code keeps the first occurrence.
func decodeParams(dst Params, repeated []PI, b []byte, group PI) (Params, []PI, error) {
	start := len(dst)
	for len(b) > 0 {
		id, value, rest, err := readUnit(b)
		if err != nil {
			return dst, repeated, err
		}
		b = rest
		if len(value) == 0 {
			continue // LI 0 is "rejected by the protocol": tolerate it as absent
		}
		if seen(dst[start:], id) {
			repeated = append(repeated, id)
			continue
		}
		if !id.IsGroup() {
			dst = append(dst, Param{ID: id, Value: value})
			continue
		}
		if group != 0 {
			return dst, repeated, protoErr(ErrBadLength, "%s nested in %s", id, group)
		}
		var members Params
		members, repeated, err = decodeParams(make(Params, 0, 4), repeated, value, id)
		if err != nil {
			return dst, repeated, err
		}
		dst = append(dst, Param{ID: id, Group: members})
	}
	return dst, repeated, nil
}

func seen(p Params, id PI) bool {
	for _, u := range p {
		if u.ID == id {
			return true
		}
	}
	return false
}
