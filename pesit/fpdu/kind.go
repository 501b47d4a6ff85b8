package fpdu

import "fmt"

// Kind identifies an FPDU by its phase and type bytes (header bytes 2 and 3),
// packed as phase<<8 | type so that it can be a constant and a map key.
type Kind uint16

// Phase bytes of the FPDU header.
const (
	PhaseConnection byte = 0x40 // CONNECT ... ABORT
	PhaseData       byte = 0x00 // DTF, DTFDA, DTFMA, DTFFA
	PhaseFile       byte = 0xC0 // every other FPDU
)

// The FPDU kinds of PeSIT E, Hors-SIT profile (digest §2, spec §4.7.1).
//
// Names follow Go's initialism style: an initialism keeps its capitals (ORF,
// CRF, DTF, IDT, the DM/MM/FM of MsgDM), an abbreviated word is written as a
// word (RelConf for RELease CONFirmation, Syn, Resyn, Msg). String returns the
// spec's name, which is what logs and dumps show.
const (
	Connect  Kind = 0x4020
	AConnect Kind = 0x4021
	RConnect Kind = 0x4022
	Release  Kind = 0x4023
	RelConf  Kind = 0x4024
	Abort    Kind = 0x4025

	Create      Kind = 0xC011
	AckCreate   Kind = 0xC030
	Select      Kind = 0xC012
	AckSelect   Kind = 0xC031
	Deselect    Kind = 0xC013
	AckDeselect Kind = 0xC032
	ORF         Kind = 0xC014
	AckORF      Kind = 0xC033
	CRF         Kind = 0xC015
	AckCRF      Kind = 0xC034
	Read        Kind = 0xC001
	AckRead     Kind = 0xC035
	Write       Kind = 0xC002
	AckWrite    Kind = 0xC036
	TransEnd    Kind = 0xC008
	AckTransEnd Kind = 0xC037

	DTF   Kind = 0x0000
	DTFDA Kind = 0x0041
	DTFMA Kind = 0x0040
	DTFFA Kind = 0x0042

	DTFEnd   Kind = 0xC004
	Syn      Kind = 0xC003
	AckSyn   Kind = 0xC038
	Resyn    Kind = 0xC005
	AckResyn Kind = 0xC039
	IDT      Kind = 0xC006
	AckIDT   Kind = 0xC03A

	Msg    Kind = 0xC016
	MsgDM  Kind = 0xC017
	MsgMM  Kind = 0xC018
	MsgFM  Kind = 0xC019
	AckMsg Kind = 0xC03B
)

var kindNames = map[Kind]string{
	Connect: "CONNECT", AConnect: "ACONNECT", RConnect: "RCONNECT",
	Release: "RELEASE", RelConf: "RELCONF", Abort: "ABORT",
	Create: "CREATE", AckCreate: "ACK(CREATE)", Select: "SELECT", AckSelect: "ACK(SELECT)",
	Deselect: "DESELECT", AckDeselect: "ACK(DESELECT)", ORF: "ORF", AckORF: "ACK(ORF)",
	CRF: "CRF", AckCRF: "ACK(CRF)", Read: "READ", AckRead: "ACK(READ)",
	Write: "WRITE", AckWrite: "ACK(WRITE)", TransEnd: "TRANS.END", AckTransEnd: "ACK(TRANS.END)",
	DTF: "DTF", DTFDA: "DTFDA", DTFMA: "DTFMA", DTFFA: "DTFFA",
	DTFEnd: "DTF.END", Syn: "SYN", AckSyn: "ACK(SYN)", Resyn: "RESYN", AckResyn: "ACK(RESYN)",
	IDT: "IDT", AckIDT: "ACK(IDT)",
	Msg: "MSG", MsgDM: "MSGDM", MsgMM: "MSGMM", MsgFM: "MSGFM", AckMsg: "ACK(MSG)",
}

// Kinds lists every known kind, in a stable order, for table-driven tests.
func Kinds() []Kind {
	return []Kind{
		Connect, AConnect, RConnect, Release, RelConf, Abort,
		Create, AckCreate, Select, AckSelect, Deselect, AckDeselect,
		ORF, AckORF, CRF, AckCRF, Read, AckRead, Write, AckWrite, TransEnd, AckTransEnd,
		DTF, DTFDA, DTFMA, DTFFA, DTFEnd, Syn, AckSyn, Resyn, AckResyn, IDT, AckIDT,
		Msg, MsgDM, MsgMM, MsgFM, AckMsg,
	}
}

// KindOf returns the kind for the phase and type bytes of a header, and
// whether it is a known kind.
func KindOf(phase, typ byte) (Kind, bool) {
	k := Kind(uint16(phase)<<8 | uint16(typ))
	_, ok := kindNames[k]
	return k, ok
}

// Phase is header byte 2.
func (k Kind) Phase() byte { return byte(k >> 8) }

// Type is header byte 3.
func (k Kind) Type() byte { return byte(k) }

// Known reports whether k is an FPDU kind of PeSIT E.
func (k Kind) Known() bool { _, ok := kindNames[k]; return ok }

// IsData reports whether k carries file data (DTF and its segments).
func (k Kind) IsData() bool { return k.Phase() == PhaseData }

// Concatenable reports whether k may share an NSDU with other FPDUs
// (spec §4.5: only the data FPDUs, DTF.END and SYN).
func (k Kind) Concatenable() bool { return k.IsData() || k == DTFEnd || k == Syn }

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("FPDU(%02X/%02X)", k.Phase(), k.Type())
}
