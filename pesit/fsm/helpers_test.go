package fsm

import (
	"errors"
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// Test FPDUs: each kind with the parameters fpdu.Validate requires, so that
// the tests exercise the machine and not the codec's parameter rules.

func pi(id fpdu.PI, v ...byte) fpdu.Param { return fpdu.Param{ID: id, Value: v} }

func pgi(id fpdu.PI, members ...fpdu.Param) fpdu.Param {
	return fpdu.Param{ID: id, Group: fpdu.Params(members)}
}

func diagPI(d fpdu.Diagnostic) fpdu.Param {
	b := d.Bytes()
	return pi(fpdu.PIDiagnostic, b[:]...)
}

func u24(v uint32) []byte { return []byte{byte(v >> 16), byte(v >> 8), byte(v)} }

func fileID(name string) fpdu.Param {
	return pgi(fpdu.PGIFileID, pi(fpdu.PIFileType, 0), pi(fpdu.PIFileName, []byte(name)...))
}

func logical(articleLen uint16) fpdu.Param {
	return pgi(fpdu.PGILogical, pi(fpdu.PIArticleFormat, 0x80), pi(fpdu.PIArticleLength, byte(articleLen>>8), byte(articleLen)))
}

func physical() fpdu.Param {
	return pgi(fpdu.PGIPhysical, pi(fpdu.PISpaceUnit, 0), pi(fpdu.PISpaceMax, 0, 0, 0x10, 0))
}

func historical() fpdu.Param {
	return pgi(fpdu.PGIHistorical, pi(fpdu.PICreated, []byte("260119012505")...))
}

// mk builds an FPDU with the ids of a CX session (requester 0x62, server
// 0xE2); connection FPDUs but CONNECT carry both, the others the peer's.
func mk(k fpdu.Kind, params ...fpdu.Param) *fpdu.FPDU {
	f := &fpdu.FPDU{Kind: k, DstID: 0x62, Params: fpdu.Params(params)}
	switch k {
	case fpdu.AConnect, fpdu.Release, fpdu.RelConf:
		f.SrcID = 0xE2
	}
	return f
}

func data(k fpdu.Kind, payload []byte) *fpdu.FPDU {
	return &fpdu.FPDU{Kind: k, DstID: 0x62, Data: payload}
}

// connect is CX's CONNECT (digest §9.1) with the given PI 22, PI 7 and PI 23.
func connect(access byte, sync *SyncOption, resync bool) *fpdu.FPDU {
	p := []fpdu.Param{
		pi(fpdu.PIRequesterID, []byte("CXCLIENT")...),
		pi(fpdu.PIServerID, []byte("PESITSRV")...),
		pi(fpdu.PIAccessControl, []byte("test123 ")...),
		pi(fpdu.PIVersion, 2),
	}
	if sync != nil {
		b := sync.Bytes()
		p = append(p, pi(fpdu.PISyncOption, b[:]...))
	}
	p = append(p, pi(fpdu.PIAccessType, access))
	if resync {
		p = append(p, pi(fpdu.PIResync, 1))
	}
	f := mk(fpdu.Connect, p...)
	f.DstID, f.SrcID = 0, 0x62
	return f
}

func aconnect(sync SyncOption, resync bool) *fpdu.FPDU {
	b := sync.Bytes()
	p := []fpdu.Param{pi(fpdu.PIVersion, 2), pi(fpdu.PISyncOption, b[:]...)}
	if resync {
		p = append(p, pi(fpdu.PIResync, 1))
	}
	return mk(fpdu.AConnect, p...)
}

func create(restart bool) *fpdu.FPDU {
	p := []fpdu.Param{fileID("FILE"), pi(fpdu.PITransferID, 0, 0x24, 0xC9)}
	if restart {
		p = append(p, pi(fpdu.PIRestart, 1))
	}
	p = append(p, pi(fpdu.PIDataCode, 2), pi(fpdu.PIPriority, 0), pi(fpdu.PIEntitySize, 0xFF, 0xFF),
		logical(1024), physical(), historical())
	return mk(fpdu.Create, p...)
}

func selectF(restart bool) *fpdu.FPDU {
	p := []fpdu.Param{fileID("TESTFILE"), pi(fpdu.PITransferID, 0)}
	p = append(p, pi(fpdu.PIAttributes, 0xE0))
	if restart {
		p = append(p, pi(fpdu.PIRestart, 1))
	}
	p = append(p, pi(fpdu.PIPriority, 0), pi(fpdu.PIEntitySize, 0xFF, 0xFF))
	return mk(fpdu.Select, p...)
}

// answer builds a request's answer with diagnostic d; a negative answer
// carries PI 2 only, as a refused SELECT does.
func answer(k fpdu.Kind, d fpdu.Diagnostic) *fpdu.FPDU {
	if d.Type() != 0 {
		switch k {
		case fpdu.AckCreate, fpdu.AckSelect, fpdu.AckWrite, fpdu.AckORF, fpdu.AckRead, fpdu.AckMsg,
			fpdu.AckTransEnd, fpdu.AckCRF, fpdu.AckDeselect, fpdu.RConnect:
			return mk(k, diagPI(d))
		}
	}
	switch k {
	case fpdu.AckCreate:
		return mk(k, diagPI(d), pi(fpdu.PIEntitySize, 0x10, 0))
	case fpdu.AckSelect:
		return mk(k, diagPI(d), fileID("TESTFILE"), pi(fpdu.PITransferID, 0x24, 0xCB), pi(fpdu.PIEntitySize, 0x10, 0),
			logical(1024), physical(), historical())
	case fpdu.AckWrite:
		return mk(k, diagPI(d), pi(fpdu.PIRestartPoint, 0))
	}
	return sample(k)
}

// sample is a valid FPDU of kind k, with positive diagnostics, SYN number 3
// and ACK(SYN) number 2 (see fixture), IDT code 8.
func sample(k fpdu.Kind) *fpdu.FPDU {
	ok := diagPI(fpdu.DiagOK)
	switch k {
	case fpdu.Connect:
		return connect(2, &SyncOption{IntervalKB: 32, Window: 2}, true)
	case fpdu.AConnect:
		return aconnect(SyncOption{IntervalKB: 32, Window: 2}, true)
	case fpdu.RConnect:
		return mk(k, diagPI(fpdu.DiagNotAuthorised))
	case fpdu.Release, fpdu.Deselect, fpdu.AckDeselect, fpdu.CRF, fpdu.AckCRF, fpdu.AckRead, fpdu.DTFEnd,
		fpdu.AckORF, fpdu.AckTransEnd, fpdu.AckMsg:
		return mk(k, ok)
	case fpdu.Abort:
		return fpdu.NewAbort(0x62, 0xE2, fpdu.DiagProtocolError)
	case fpdu.RelConf, fpdu.ORF, fpdu.Write, fpdu.TransEnd, fpdu.AckIDT:
		return mk(k)
	case fpdu.Create:
		return create(false)
	case fpdu.Select:
		return selectF(false)
	case fpdu.AckCreate, fpdu.AckSelect, fpdu.AckWrite:
		return answer(k, fpdu.DiagOK)
	case fpdu.Read:
		return mk(k, pi(fpdu.PIRestartPoint, 0))
	case fpdu.Syn:
		return mk(k, pi(fpdu.PISyncNumber, 3))
	case fpdu.AckSyn:
		return mk(k, pi(fpdu.PISyncNumber, 2))
	case fpdu.Resyn:
		return mk(k, diagPI(fpdu.DiagTransmissionError), pi(fpdu.PIRestartPoint, 1))
	case fpdu.AckResyn:
		return mk(k, pi(fpdu.PIRestartPoint, 1))
	case fpdu.IDT:
		return idt(8, fpdu.DiagVoluntaryStop)
	case fpdu.Msg, fpdu.MsgDM:
		return mk(k, fileID("MSG"), pi(fpdu.PITransferID, 1), pi(fpdu.PIMessage, []byte("hello")...))
	case fpdu.MsgMM, fpdu.MsgFM:
		return mk(k, pi(fpdu.PIMessage, []byte(" world")...))
	case fpdu.DTF, fpdu.DTFDA, fpdu.DTFMA, fpdu.DTFFA:
		return data(k, []byte("article"))
	}
	panic("no sample for " + k.String())
}

func idt(code byte, d fpdu.Diagnostic) *fpdu.FPDU {
	return mk(fpdu.IDT, diagPI(d), pi(fpdu.PIEndCode, code))
}

func syn(n uint32) *fpdu.FPDU    { return mk(fpdu.Syn, pi(fpdu.PISyncNumber, u24(n)...)) }
func ackSyn(n uint32) *fpdu.FPDU { return mk(fpdu.AckSyn, pi(fpdu.PISyncNumber, u24(n)...)) }

// wantViolation checks that err is a *Violation with diagnostic d.
func wantViolation(t *testing.T, err error, d fpdu.Diagnostic, context string) {
	t.Helper()
	var v *Violation
	if !errors.As(err, &v) {
		t.Fatalf("%s: got %v, want a *Violation %v", context, err, d)
	}
	if v.Diag != d {
		t.Fatalf("%s: diagnostic %v, want %v (%v)", context, v.Diag, d, err)
	}
	if !errors.Is(err, d) {
		t.Fatalf("%s: errors.Is(err, %v) is false", context, d)
	}
}
