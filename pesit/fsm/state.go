package fsm

import "strconv"

// State is a state of the PeSIT protocol machine, named as in spec §4.8.1.1.
// A suffix A marks a requester-only state, B a responder-only state; the
// others are shared. The MS states (message service) are Vectis names: the
// spec describes MSG but gives its states no name in §4.8.
type State uint8

// The states. The zero value is not a state.
const (
	CN01  State = iota + 1 // idle, not connected
	CN02A                  // CONNECT sent, waiting for ACONNECT or RCONNECT
	CN02B                  // CONNECT received, local answer (ACONNECT/RCONNECT) pending
	CN03                   // connected
	CN04A                  // RELEASE sent, waiting for RELCONF
	CN04B                  // RELEASE received, RELCONF pending

	SF01A // CREATE sent, waiting for ACK(CREATE)
	SF01B // CREATE received, ACK(CREATE) pending
	SF02A // SELECT sent, waiting for ACK(SELECT)
	SF02B // SELECT received, ACK(SELECT) pending
	SF03  // file selected
	SF04A // DESELECT sent, waiting for ACK(DESELECT)
	SF04B // DESELECT received, ACK(DESELECT) pending

	OF01A // ORF sent, waiting for ACK(ORF)
	OF01B // ORF received, ACK(ORF) pending
	OF02  // file open, no transfer running
	OF03A // CRF sent, waiting for ACK(CRF)
	OF03B // CRF received, ACK(CRF) pending

	TDE01A // WRITE sent, waiting for ACK(WRITE)
	TDE01B // WRITE received, ACK(WRITE) pending
	TDE02A // requester sending data
	TDE02B // responder receiving data
	TDE03  // RESYN sent, waiting for ACK(RESYN)
	TDE04  // RESYN received, ACK(RESYN) pending
	TDE05  // IDT sent, waiting for ACK(IDT)
	TDE06  // IDT received, ACK(IDT) pending
	TDE07  // DTF.END sent or received
	TDE08A // TRANS.END sent, waiting for ACK(TRANS.END)
	TDE08B // TRANS.END received, ACK(TRANS.END) pending

	TDL01A // READ sent, waiting for ACK(READ)
	TDL01B // READ received, ACK(READ) pending
	TDL02A // requester receiving data
	TDL02B // responder sending data
	TDL03  // RESYN sent, waiting for ACK(RESYN)
	TDL04  // RESYN received, ACK(RESYN) pending
	TDL05  // IDT sent, waiting for ACK(IDT)
	TDL06  // IDT received, ACK(IDT) pending
	TDL07  // DTF.END sent or received
	TDL08A // TRANS.END sent, waiting for ACK(TRANS.END)
	TDL08B // TRANS.END received, ACK(TRANS.END) pending

	MS01A // MSG or MSGFM sent, waiting for ACK(MSG)
	MS01B // MSG or MSGFM received, ACK(MSG) pending
	MS02  // segmented message in progress (MSGDM seen, MSGFM not yet)

	numStates = iota + 1 // one past the last state
)

var stateNames = [numStates]string{
	CN01: "CN01", CN02A: "CN02A", CN02B: "CN02B", CN03: "CN03", CN04A: "CN04A", CN04B: "CN04B",
	SF01A: "SF01A", SF01B: "SF01B", SF02A: "SF02A", SF02B: "SF02B", SF03: "SF03", SF04A: "SF04A", SF04B: "SF04B",
	OF01A: "OF01A", OF01B: "OF01B", OF02: "OF02", OF03A: "OF03A", OF03B: "OF03B",
	TDE01A: "TDE01A", TDE01B: "TDE01B", TDE02A: "TDE02A", TDE02B: "TDE02B", TDE03: "TDE03", TDE04: "TDE04",
	TDE05: "TDE05", TDE06: "TDE06", TDE07: "TDE07", TDE08A: "TDE08A", TDE08B: "TDE08B",
	TDL01A: "TDL01A", TDL01B: "TDL01B", TDL02A: "TDL02A", TDL02B: "TDL02B", TDL03: "TDL03", TDL04: "TDL04",
	TDL05: "TDL05", TDL06: "TDL06", TDL07: "TDL07", TDL08A: "TDL08A", TDL08B: "TDL08B",
	MS01A: "MS01A", MS01B: "MS01B", MS02: "MS02",
}

func (s State) String() string {
	if s > 0 && s < numStates {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Transferring reports whether s is a data-transfer state (TDE02..TDE08,
// TDL02..TDL08), where the Td idle timer does not apply and IDT is possible.
func (s State) Transferring() bool {
	return s >= TDE02A && s <= TDE08B || s >= TDL02A && s <= TDL08B
}

// Role says which side of a connection a Machine plays.
type Role uint8

const (
	// Requester opens the connection (the client; spec "demandeur", suffix A).
	Requester Role = iota + 1
	// Responder accepts it (the server; spec "serveur", suffix B).
	Responder
)

func (r Role) String() string {
	switch r {
	case Requester:
		return "requester"
	case Responder:
		return "responder"
	}
	return "Role(" + strconv.Itoa(int(r)) + ")"
}

// States lists, in declaration order, the states a machine of role r can be in.
func States(r Role) []State {
	var out []State
	for s := CN01; s < numStates; s++ {
		if s.belongsTo(r) {
			out = append(out, s)
		}
	}
	return out
}

func (s State) belongsTo(r Role) bool {
	if s == 0 || s >= numStates {
		return false
	}
	switch stateNames[s][len(stateNames[s])-1] {
	case 'A':
		return r == Requester
	case 'B':
		return r == Responder
	}
	return true
}
