package fpdu

import "fmt"

// ValueType is the type letter of a PI in spec §4.7.2.1 e).
type ValueType byte

// The PI value types.
const (
	TypeC ValueType = 'C' // characters, 7-bit ASCII, trailing blanks not significant
	TypeN ValueType = 'N' // unsigned big-endian binary
	TypeS ValueType = 'S' // symbolic: one byte
	TypeM ValueType = 'M' // bit mask, b1 = 0x80
	TypeD ValueType = 'D' // date and time, 12 ASCII digits YYMMDDhhmmss
	TypeA ValueType = 'A' // aggregate or opaque
	TypeG ValueType = 'G' // parameter group (PGI)
)

func (t ValueType) String() string { return string(rune(t)) }

// PIInfo describes one Hors-SIT parameter (digest §3.2).
type PIInfo struct {
	ID   PI
	Name string
	Type ValueType
	// MinLen and MaxLen bound the value length accepted on receipt. For type
	// N, MaxLen bounds the significant bytes (leading zeros are tolerated).
	MinLen, MaxLen int
	// Width is the fixed encoded width of a numeric value, 0 for minimal.
	Width int
	// Members lists the PIs of a PGI.
	Members []PI
}

// piInfo is the Hors-SIT PI and PGI table (digest §3.2); a zero Type means
// the code is not in it.
func piInfo(id PI) PIInfo {
	switch id {
	case PICRC:
		return PIInfo{id, "crc", TypeS, 1, 1, 0, nil}
	case PIDiagnostic:
		return PIInfo{id, "diagnostic", TypeA, 3, 3, 3, nil}
	case PIRequesterID:
		return PIInfo{id, "requester-id", TypeC, 1, 24, 0, nil}
	case PIServerID:
		return PIInfo{id, "server-id", TypeC, 1, 24, 0, nil}
	case PIAccessControl:
		return PIInfo{id, "access-control", TypeC, 1, 16, 0, nil}
	case PIVersion:
		// The spec page says C/2; every real peer sends one binary byte 0x02.
		return PIInfo{id, "version", TypeN, 1, 1, 1, nil}
	case PISyncOption:
		return PIInfo{id, "sync-option", TypeA, 3, 3, 3, nil}
	case PGIFileID:
		return PIInfo{id, "file-id", TypeG, 0, 0, 0, []PI{PIRequesterID, PIServerID, PIFileType, PIFileName}}
	case PIFileType:
		return PIInfo{id, "file-type", TypeN, 1, 2, 0, nil}
	case PIFileName:
		return PIInfo{id, "file-name", TypeC, 1, 76, 0, nil}
	case PITransferID:
		return PIInfo{id, "transfer-id", TypeN, 1, 3, 0, nil}
	case PIAttributes:
		return PIInfo{id, "attributes", TypeM, 1, 1, 0, nil}
	case PIRestart:
		return PIInfo{id, "restart", TypeS, 1, 1, 0, nil}
	case PIDataCode:
		return PIInfo{id, "data-code", TypeS, 1, 1, 0, nil}
	case PIPriority:
		return PIInfo{id, "priority", TypeS, 1, 1, 0, nil}
	case PIRestartPoint:
		return PIInfo{id, "restart-point", TypeN, 1, 3, 0, nil}
	case PIEndCode:
		return PIInfo{id, "end-code", TypeS, 1, 1, 0, nil}
	case PISyncNumber:
		return PIInfo{id, "sync-number", TypeN, 1, 3, 0, nil}
	case PICompression:
		return PIInfo{id, "compression", TypeA, 2, 2, 0, nil}
	case PIAccessType:
		return PIInfo{id, "access-type", TypeS, 1, 1, 0, nil}
	case PIResync:
		return PIInfo{id, "resync", TypeS, 1, 1, 0, nil}
	case PIEntitySize:
		// Always 2 bytes on the wire: CX proposes FF FF and answers 10 00.
		return PIInfo{id, "entity-size", TypeN, 1, 2, 2, nil}
	case PIWatchdog:
		return PIInfo{id, "watchdog", TypeN, 1, 2, 0, nil}
	case PIByteCount:
		return PIInfo{id, "byte-count", TypeN, 1, 8, 0, nil}
	case PIArticleCount:
		return PIInfo{id, "article-count", TypeN, 1, 4, 0, nil}
	case PIDiagComplement:
		return PIInfo{id, "diag-complement", TypeA, 1, 254, 0, nil}
	case PGILogical:
		return PIInfo{id, "logical-attributes", TypeG, 0, 0, 0, []PI{PIArticleFormat, PIArticleLength, PIOrganisation, PILabel, PIKeyLength, PIKeyOffset}}
	case PIArticleFormat:
		return PIInfo{id, "article-format", TypeM, 1, 1, 0, nil}
	case PIArticleLength:
		return PIInfo{id, "article-length", TypeN, 1, 2, 0, nil}
	case PIOrganisation:
		return PIInfo{id, "organisation", TypeS, 1, 1, 0, nil}
	case PILabel:
		return PIInfo{id, "label", TypeC, 1, 80, 0, nil}
	case PIKeyLength:
		return PIInfo{id, "key-length", TypeN, 1, 2, 0, nil}
	case PIKeyOffset:
		return PIInfo{id, "key-offset", TypeN, 1, 2, 0, nil}
	case PGIPhysical:
		return PIInfo{id, "physical-attributes", TypeG, 0, 0, 0, []PI{PISpaceUnit, PISpaceMax}}
	case PISpaceUnit:
		return PIInfo{id, "space-unit", TypeS, 1, 1, 0, nil}
	case PISpaceMax:
		return PIInfo{id, "space-max", TypeN, 1, 4, 0, nil}
	case PGIHistorical:
		return PIInfo{id, "historical-attributes", TypeG, 0, 0, 0, []PI{PICreated, PIExtracted}}
	case PICreated:
		return PIInfo{id, "created", TypeD, 12, 12, 0, nil}
	case PIExtracted:
		return PIInfo{id, "extracted", TypeD, 12, 12, 0, nil}
	case PIClientID:
		return PIInfo{id, "client-id", TypeC, 1, 24, 0, nil}
	case PIBankID:
		return PIInfo{id, "bank-id", TypeC, 1, 24, 0, nil}
	case PIMessage:
		// Needs the long LI form above 254 bytes.
		return PIInfo{id, "message", TypeA, 1, 4096, 0, nil}
	case PIFreeMessage:
		// "No check is made by the protocol on the content" (spec, PI 99).
		return PIInfo{id, "free-message", TypeA, 1, 254, 0, nil}
	}
	return PIInfo{ID: id}
}

// lookupPIInfo returns the table entry for id and whether id is a Hors-SIT
// parameter.
func lookupPIInfo(id PI) (PIInfo, bool) {
	info := piInfo(id)
	return info, info.Type != 0
}

// Info returns the table entry of id; ok is false for a code that is not a
// Hors-SIT parameter.
func (id PI) Info() (info PIInfo, ok bool) { return lookupPIInfo(id) }

// IsGroup reports whether id is a PGI code (9, 30, 40, 50).
func (id PI) IsGroup() bool {
	return id == PGIFileID || id == PGILogical || id == PGIPhysical || id == PGIHistorical
}

// Known reports whether id is in the Hors-SIT table.
func (id PI) Known() bool { _, ok := lookupPIInfo(id); return ok }

// PICodes lists every Hors-SIT PI and PGI code in ascending order.
func PICodes() []PI {
	var out []PI
	for c := 1; c < 256; c++ {
		if PI(c).Known() {
			out = append(out, PI(c))
		}
	}
	return out
}

func (id PI) String() string {
	if info, ok := lookupPIInfo(id); ok {
		if id.IsGroup() {
			return fmt.Sprintf("PGI %d (%s)", uint8(id), info.Name)
		}
		return fmt.Sprintf("PI %d (%s)", uint8(id), info.Name)
	}
	return fmt.Sprintf("PI %d", uint8(id))
}
