package server_test

import (
	"testing"

	"github.com/vectis-ft/vectis/internal/testenv/pesitcapture"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// captureSessionSeeds are FuzzSession inputs from the captures: what CX
// sent after its CONNECT, framed as on the wire. The push's data phase is
// cut after two sync points (the seed stays small; DTF.END to RELEASE
// follow).
func captureSessionSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, name := range pesitcapture.Names {
		var (
			seed []byte
			syns int
			skip bool
		)
		for i, r := range pesitcapture.Load(t, name) {
			if r.Sent || i == 0 { // the fuzz target sends the CONNECT itself
				continue
			}
			k, ok := fpdu.KindOf(r.FPDU[2], r.FPDU[3])
			if !ok {
				t.Fatalf("%v: unknown FPDU kind", r)
			}
			switch {
			case k == fpdu.DTFEnd:
				skip = false
			case skip:
				continue
			case k == fpdu.Syn:
				if syns++; syns == 2 {
					skip = true
				}
			}
			seed = append(seed, byte(len(r.FPDU)>>8), byte(len(r.FPDU)))
			seed = append(seed, r.FPDU...)
		}
		out = append(out, seed)
	}
	return out
}

// TestFuzzSessionCorpus: the committed corpus testdata/fuzz/FuzzSession is
// exactly what the captures give (regenerate with VECTIS_UPDATE_CORPUS=1 go
// test -run TestFuzzSessionCorpus).
func TestFuzzSessionCorpus(t *testing.T) {
	var entries [][]byte
	for _, s := range captureSessionSeeds(t) {
		entries = append(entries, pesitcapture.CorpusEntry(s))
	}
	pesitcapture.CheckCorpus(t, "FuzzSession", entries)
}
