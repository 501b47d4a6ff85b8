//go:build linux

package server

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRestartIndexMemoryIsBounded: a sink remembers a bounded number of
// indexed points however long the transfer, and a cut back to a recent
// point still moves the file's index to it.
func TestRestartIndexMemoryIsBounded(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f.part"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := &sink{f: f, indexOn: true, indexKey: indexKey("transfer")}
	const points = 10 * indexKeep
	for n := uint32(1); n <= points; n++ {
		if !s.writeIndex(syncPoint{num: n, offset: int64(n) << 20}) {
			t.Skip("this file system has no user extended attributes")
		}
	}
	if len(s.indexed) > 2*indexKeep {
		t.Fatalf("the sink remembers %d points after %d, want at most %d", len(s.indexed), points, 2*indexKeep)
	}
	// A RESYN three points back.
	back := int64(points-3) << 20
	if err := s.cutIndex(back); err != nil {
		t.Fatal(err)
	}
	_, pt, ok := readRestartIndex(f)
	if !ok || pt.num != points-3 || pt.offset != back {
		t.Fatalf("index after the cut: %+v (ok %v), want point %d at %d", pt, ok, points-3, back)
	}
	// Behind every point remembered: the index goes, the journal decides.
	if err := s.cutIndex(1 << 20); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := readRestartIndex(f); ok {
		t.Fatal("an index is left after a cut behind every point the sink remembers")
	}
}
