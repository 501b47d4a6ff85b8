package fpdu

import "fmt"

// rule says whether a PI or PGI is mandatory in an FPDU or a PGI; the
// members of a PGI are checked only when the PGI is present.
type rule struct {
	id      PI
	must    bool
	members []rule
}

func m(id PI, members ...rule) rule { return rule{id: id, must: true, members: members} }
func o(id PI, members ...rule) rule { return rule{id: id, members: members} }

// fileIDRule is PGI 9 outside CONNECT: PI 3 and 4 optional, 11 and 12
// mandatory (spec §4.7.3, digest §3.2).
func fileIDRule() rule {
	return m(PGIFileID, o(PIRequesterID), o(PIServerID), m(PIFileType), m(PIFileName))
}

func logicalRule() rule {
	return m(PGILogical, o(PIArticleFormat), m(PIArticleLength), o(PIOrganisation), o(PILabel), o(PIKeyLength), o(PIKeyOffset))
}

func physicalRule() rule { return m(PGIPhysical, o(PISpaceUnit), m(PISpaceMax)) }

func historicalRule(must bool) rule {
	r := o(PGIHistorical, m(PICreated), o(PIExtracted))
	r.must = must
	return r
}

// rulesFor lists the Hors-SIT parameters of each kind (digest §2 and §3.3).
// "I" (optional with a default) and "O" are both optional here.
func rulesFor(k Kind) []rule {
	switch k {
	case Connect:
		return []rule{o(PICRC), m(PIRequesterID), m(PIServerID), o(PIAccessControl), m(PIVersion),
			o(PISyncOption), m(PIAccessType), o(PIResync), o(PIFreeMessage)}
	case AConnect:
		return []rule{o(PIAccessControl), m(PIVersion), o(PISyncOption), o(PIResync), o(PIFreeMessage)}
	case RConnect, Release, Deselect, AckDeselect:
		return []rule{m(PIDiagnostic), o(PIFreeMessage)}
	case RelConf:
		return []rule{o(PIFreeMessage)}
	case Abort:
		return []rule{m(PIDiagnostic), o(PIFreeMessage)}
	case Create:
		return []rule{fileIDRule(), m(PITransferID), o(PIRestart), o(PIDataCode), m(PIPriority), m(PIEntitySize),
			logicalRule(), physicalRule(), historicalRule(true), o(PIClientID), o(PIBankID), o(PIFreeMessage)}
	case AckCreate:
		return []rule{m(PIDiagnostic), o(PITransferID), m(PIEntitySize), o(PIFreeMessage)}
	case Select:
		return []rule{fileIDRule(), m(PITransferID), o(PIAttributes), o(PIRestart), m(PIPriority), m(PIEntitySize), o(PIFreeMessage)}
	case AckSelect:
		// PGI 50 (the file's dates) only informs the requester, which
		// receives the file as well without it; servers that leave it out
		// are accepted (liberal on input, as the client always was).
		return []rule{m(PIDiagnostic), fileIDRule(), m(PITransferID), o(PIDataCode), m(PIEntitySize),
			logicalRule(), physicalRule(), historicalRule(false), o(PIFreeMessage)}
	case ORF:
		return []rule{o(PICompression)}
	case AckORF:
		return []rule{m(PIDiagnostic), o(PICompression)}
	case CRF, AckCRF, AckRead, DTFEnd:
		return []rule{m(PIDiagnostic)}
	case Read:
		return []rule{m(PIRestartPoint)}
	case AckWrite:
		return []rule{m(PIDiagnostic), m(PIRestartPoint)}
	case TransEnd:
		return []rule{o(PIByteCount), o(PIArticleCount)}
	case AckTransEnd:
		return []rule{m(PIDiagnostic), o(PIByteCount), o(PIArticleCount)}
	case Syn, AckSyn:
		return []rule{m(PISyncNumber)}
	case Resyn:
		return []rule{m(PIDiagnostic), m(PIRestartPoint)}
	case AckResyn:
		return []rule{m(PIRestartPoint)}
	case IDT:
		// One of PI 2 and PI 19 is optional and the OCR lost which: accept
		// either missing, not both (checked in Validate).
		return []rule{o(PIDiagnostic), o(PIEndCode)}
	case Msg, MsgDM:
		r := fileIDRule()
		return []rule{r, m(PITransferID), o(PIAttributes), o(PIDataCode), historicalRule(false),
			o(PIClientID), o(PIBankID), o(PIMessage)}
	case MsgMM, MsgFM:
		return []rule{m(PIMessage)}
	case AckMsg:
		return []rule{m(PIDiagnostic), o(PITransferID), o(PIDataCode), o(PIMessage)}
	}
	return nil // WRITE, ACK(IDT) and data FPDUs carry no parameters
}

// isAck reports whether k answers a request with PI 2: a negative answer
// need not carry the other mandatory parameters (a refused SELECT has no
// file attributes to describe).
func isAck(k Kind) bool {
	switch k {
	case AckCreate, AckSelect, AckDeselect, AckORF, AckCRF, AckRead, AckWrite, AckTransEnd, AckMsg:
		return true
	}
	return false
}

// Validate checks f against the Hors-SIT rules: known kind, mandatory PIs
// and PGIs per kind (members of a PGI when it is present), type and length
// of every known PI, PGIs holding only PIs, no repeated parameter. Unknown
// PIs are tolerated (see Params.Unknown). A parameter problem is a
// *ParamError wrapping DiagBadParameter (3/318) that names the PI; a
// malformed DTF wraps DiagProtocolError (3/311).
func Validate(f *FPDU) error {
	if !f.Kind.Known() {
		return protoErr(ErrUnknownKind, "validate %s", f.Kind)
	}
	if err := checkIDs(f); err != nil {
		return err
	}
	if f.Kind.IsData() {
		if len(f.Params) != 0 {
			return protoErr(ErrArticleLayout, "%s with parameters", f.Kind)
		}
		if len(f.Data) == 0 {
			return protoErr(ErrArticleLayout, "empty %s", f.Kind)
		}
		if f.Kind == DTF {
			return f.ForEachArticle(func([]byte) error { return nil })
		}
		return nil
	}
	if len(f.Data) != 0 {
		return protoErr(ErrArticleLayout, "%s with data", f.Kind)
	}
	if len(f.Repeated) > 0 {
		return &ParamError{Kind: f.Kind, PI: f.Repeated[0], Reason: "repeated"}
	}
	if err := checkValues(f.Kind, f.Params, 0); err != nil {
		return err
	}
	rules := rulesFor(f.Kind)
	if isAck(f.Kind) {
		if d, ok := f.Params.Diagnostic(); ok && d.Type() != 0 {
			rules = []rule{m(PIDiagnostic)}
		}
	}
	if err := checkRules(f.Kind, f.Params, rules, 0); err != nil {
		return err
	}
	if f.Kind == IDT && !f.Params.Has(PIDiagnostic) && !f.Params.Has(PIEndCode) {
		return &ParamError{Kind: f.Kind, PI: PIEndCode, Reason: "missing (IDT needs PI 2 or PI 19)"}
	}
	return nil
}

// checkIDs applies the connection-id rules of the header (spec §4.7.1,
// digest §1.2): CONNECT (0, X), ACONNECT (X, Y), RCONNECT (X, 0), RELEASE
// (Y, X), RELCONF (X, Y), ABORT (peer or 0, own), every other FPDU (peer,
// 0 or N). Byte 5 of file-phase FPDUs is not checked: it carries nothing,
// and refusing a peer for it would gain nothing.
func checkIDs(f *FPDU) error {
	switch f.Kind {
	case Connect:
		if f.DstID != 0 || f.SrcID == 0 {
			return protoErr(ErrBadID, "%s ids (%02X, %02X), want (00, requester id)", f.Kind, f.DstID, f.SrcID)
		}
	case AConnect, Release, RelConf:
		if f.DstID == 0 || f.SrcID == 0 {
			return protoErr(ErrBadID, "%s ids (%02X, %02X), both must be non-zero", f.Kind, f.DstID, f.SrcID)
		}
	case Abort:
		if f.SrcID == 0 {
			return protoErr(ErrBadID, "%s without a source id", f.Kind)
		}
	default:
		if f.DstID == 0 {
			return protoErr(ErrBadID, "%s with destination id 00", f.Kind)
		}
	}
	return nil
}

func checkRules(k Kind, p Params, rules []rule, group PI) error {
	for _, r := range rules {
		u, ok := find(p, r.id)
		if !ok {
			if r.must {
				return &ParamError{Kind: k, Group: group, PI: r.id, Reason: "missing"}
			}
			continue
		}
		if len(r.members) > 0 {
			if err := checkRules(k, u.Group, r.members, r.id); err != nil {
				return err
			}
		}
	}
	return nil
}

func find(p Params, id PI) (Param, bool) {
	for _, u := range p {
		if u.ID == id {
			return u, true
		}
	}
	return Param{}, false
}

// checkValues checks the type and length of every known unit of p.
func checkValues(k Kind, p Params, group PI) error {
	for i, u := range p {
		if seen(p[:i], u.ID) {
			return &ParamError{Kind: k, Group: group, PI: u.ID, Reason: "repeated"}
		}
		if u.ID.IsGroup() {
			if group != 0 {
				return &ParamError{Kind: k, Group: group, PI: u.ID, Reason: "PGI nested in a PGI"}
			}
			if u.Value != nil {
				return &ParamError{Kind: k, PI: u.ID, Reason: "PGI with a plain value"}
			}
			if err := checkValues(k, u.Group, u.ID); err != nil {
				return err
			}
			continue
		}
		if u.Group != nil {
			return &ParamError{Kind: k, Group: group, PI: u.ID, Reason: "PI with group members"}
		}
		info, ok := lookupPIInfo(u.ID)
		if !ok {
			continue
		}
		if reason := checkValue(info, u.Value); reason != "" {
			return &ParamError{Kind: k, Group: group, PI: u.ID, Reason: reason}
		}
	}
	return nil
}

// checkValue returns what is wrong with v for its table entry, or "".
func checkValue(info PIInfo, v []byte) string {
	if len(v) == 0 {
		return "empty"
	}
	switch info.Type {
	case TypeN:
		s := v
		for len(s) > 1 && s[0] == 0 {
			s = s[1:]
		}
		if len(s) > info.MaxLen {
			return fmt.Sprintf("value of %d significant bytes, type N/%d", len(s), info.MaxLen)
		}
		return ""
	case TypeC:
		for _, c := range v {
			if c >= 0x80 {
				return "non-ASCII byte in a type C value" // the byte itself may be a secret (PI 5)
			}
		}
	case TypeD:
		for _, c := range v {
			if c < '0' || c > '9' {
				return "date is not 12 digits YYMMDDhhmmss"
			}
		}
	}
	if len(v) < info.MinLen || len(v) > info.MaxLen {
		if info.MinLen == info.MaxLen {
			return fmt.Sprintf("length %d, type %s needs %d", len(v), info.Type, info.MaxLen)
		}
		return fmt.Sprintf("length %d, type %s/%d", len(v), info.Type, info.MaxLen)
	}
	return ""
}
