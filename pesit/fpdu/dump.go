package fpdu

import (
	"fmt"
	"strings"
)

// String renders f on one line for logs and traces, e.g.
//
//	CONNECT dst=00 src=62 {3:"CXCLIENT" 4:"PESITSRV" 5:<redacted> 6:2 7:00 20 02 22:2}
//
// PI 5 (access control) is always redacted, at any level; data payloads are
// summarised by size, never printed.
func (f *FPDU) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s dst=%02X src=%02X", f.Kind, f.DstID, f.SrcID)
	switch {
	case f.Kind.IsData():
		if f.Kind == DTF && f.SrcID > 1 {
			fmt.Fprintf(&sb, " articles=%d", f.SrcID)
		}
		fmt.Fprintf(&sb, " data=%dB", len(f.Data))
	case f.Kind == Abort && !f.AbortPIForm && len(f.Params) == 1:
		if d, ok := f.Params.Diagnostic(); ok {
			fmt.Fprintf(&sb, " diag=%s (%s)", d.String(), d.Text())
			break
		}
		fallthrough
	default:
		if len(f.Params) > 0 {
			sb.WriteByte(' ')
			dumpParams(&sb, f.Params)
		}
	}
	if len(f.Repeated) > 0 {
		fmt.Fprintf(&sb, " repeated=%v", f.Repeated)
	}
	return sb.String()
}

func dumpParams(sb *strings.Builder, p Params) {
	sb.WriteByte('{')
	for i, u := range p {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(sb, "%d:", uint8(u.ID))
		switch {
		case u.ID.IsGroup():
			dumpParams(sb, u.Group)
		case u.ID == PIAccessControl:
			sb.WriteString("<redacted>")
		default:
			dumpValue(sb, u.ID, u.Value)
		}
	}
	sb.WriteByte('}')
}

func dumpValue(sb *strings.Builder, id PI, v []byte) {
	info, _ := lookupPIInfo(id)
	switch info.Type {
	case TypeN, TypeS:
		if n, ok := beUint(v); ok {
			fmt.Fprintf(sb, "%d", n)
			return
		}
	case TypeC, TypeD:
		if printable(v) {
			dumpText(sb, v)
			return
		}
	case TypeA:
		if id == PIDiagnostic && len(v) == 3 {
			sb.WriteString(DiagnosticFromBytes([3]byte(v)).String())
			return
		}
		if len(v) > 16 && printable(v) {
			dumpText(sb, v)
			return
		}
	}
	if len(v) > 32 {
		fmt.Fprintf(sb, "% X...(%dB)", v[:32], len(v))
		return
	}
	fmt.Fprintf(sb, "% X", v)
}

// dumpText quotes v, shortened so that one PI 91 or PI 99 cannot flood a
// log line.
func dumpText(sb *strings.Builder, v []byte) {
	if len(v) > 64 {
		fmt.Fprintf(sb, "%q...(%dB)", v[:64], len(v))
		return
	}
	fmt.Fprintf(sb, "%q", v)
}

func printable(v []byte) bool {
	for _, c := range v {
		if c < 0x20 || c > 0x7E {
			return false
		}
	}
	return true
}
