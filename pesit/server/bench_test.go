package server_test

import (
	"runtime"
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// BenchmarkReceiveDTF measures the receive hot path over loopback TCP: one
// op is 1 MiB sent as 1024 single-article DTFs of 1 KiB, concatenated four
// per NSDU as a CX peer does, into a real temporary file. It reports the
// heap allocations per received DTF (the goal is 0) across the whole
// process; the client side only writes a prebuilt buffer. Sync points are
// off so that only DTFs are measured (SYNs cost one fsync each by design).
// Run: go test -run '^$' -bench ReceiveDTF -benchtime 20x ./pesit/server/
func BenchmarkReceiveDTF(b *testing.B) {
	e := newEnv(b, func(c *server.Config) { c.SyncIntervalKB = 0 })
	p := dial(b, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 1, spaceKB: 1 << 30})

	const perOp = 1024
	art := randomData(1024, 1)
	var frames []byte
	for i := 0; i < perOp/4; i++ {
		body := []byte{}
		for range 4 {
			body, _ = fpdu.AppendEncode(body, &fpdu.FPDU{Kind: fpdu.DTF, DstID: p.srvID, Data: art})
		}
		frames = append(frames, byte(len(body)>>8), byte(len(body)))
		frames = append(frames, body...)
	}
	b.SetBytes(perOp * 1024)
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		if _, err := p.c.Write(frames); err != nil {
			b.Fatal(err)
		}
	}
	// Everything must have been received: TRANS.END counts are checked.
	p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	p.sendKind(fpdu.TransEnd, uintParam(fpdu.PIByteCount, uint64(b.N*perOp*1024)), uintParam(fpdu.PIArticleCount, uint64(b.N*perOp)))
	f := p.expectAny()
	b.StopTimer()
	runtime.ReadMemStats(&after)
	if f.Kind != fpdu.AckTransEnd {
		b.Fatalf("got %v", f.Kind)
	}
	if d, _ := f.Params.Diagnostic(); !d.OK() {
		b.Fatalf("ACK(TRANS.END) %v", d)
	}
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N*perOp), "allocs/DTF")
	p.closeFile()
	p.release()
}
