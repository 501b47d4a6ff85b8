package fpdu

// The FPDUs that name a sync point: SYN and ACK(SYN) carry its number
// (PI 20); READ, ACK(WRITE), RESYN and ACK(RESYN) the point a transfer
// (re)starts from (PI 18). Builders return a new FPDU for dst, the peer's
// connection id; the Read functions are views of a received FPDU.

// NewSyn builds SYN{PI 20 = n}.
func NewSyn(dst byte, n uint32) *FPDU { return withUint(Syn, dst, PISyncNumber, uint64(n)) }

// NewAckSyn builds ACK(SYN){PI 20 = n}.
func NewAckSyn(dst byte, n uint32) *FPDU { return withUint(AckSyn, dst, PISyncNumber, uint64(n)) }

// ReadSyncNumber reads PI 20 of SYN or ACK(SYN), capped at 0xFFFFFF.
func ReadSyncNumber(f *FPDU) uint32 {
	n, _ := f.Params.Uint(PISyncNumber)
	return uint32(min(n, 0xFFFFFF))
}

// NewWrite builds WRITE (no parameters).
func NewWrite(dst byte) *FPDU { return &FPDU{Kind: Write, DstID: dst} }

// NewAckWrite builds ACK(WRITE){PI 2 = d, PI 18 = p}: the requester sends
// from sync point p (0: the start of the file).
func NewAckWrite(dst byte, d Diagnostic, p uint32) *FPDU {
	f := NewDiag(AckWrite, dst, d)
	f.Params.AddUint(PIRestartPoint, uint64(p))
	return f
}

// NewRead builds READ{PI 18 = p}: receive from sync point p (0: the start).
func NewRead(dst byte, p uint32) *FPDU { return withUint(Read, dst, PIRestartPoint, uint64(p)) }

// NewResyn builds RESYN{PI 2 = d, PI 18 = p}.
func NewResyn(dst byte, d Diagnostic, p uint32) *FPDU {
	f := NewDiag(Resyn, dst, d)
	f.Params.AddUint(PIRestartPoint, uint64(p))
	return f
}

// NewAckResyn builds ACK(RESYN){PI 18 = p}.
func NewAckResyn(dst byte, p uint32) *FPDU { return withUint(AckResyn, dst, PIRestartPoint, uint64(p)) }

// ReadPoint reads PI 18 of READ, ACK(WRITE), RESYN or ACK(RESYN), capped at
// 0xFFFFFF (pesit/fsm refuses a point above 999999).
func ReadPoint(f *FPDU) uint32 {
	p, _ := f.Params.Uint(PIRestartPoint)
	return uint32(min(p, 0xFFFFFF))
}

func withUint(k Kind, dst byte, id PI, v uint64) *FPDU {
	f := &FPDU{Kind: k, DstID: dst}
	f.Params.AddUint(id, v)
	return f
}
