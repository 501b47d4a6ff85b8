package fpdu

import (
	"bytes"
	"testing"
)

// FuzzSplitData: SplitData accepts exactly the data FPDUs Validate accepts,
// and returns the articles ForEachArticle hands out, with their size.
func FuzzSplitData(f *testing.F) {
	f.Add(byte(0), []byte("abc"))
	f.Add(byte(1), []byte{0, 3, 'a', 'b', 'c'})
	f.Add(byte(1), []byte{0, 9, 'a'})
	f.Add(byte(2), []byte{0, 1, 'a', 0, 0})
	f.Add(byte(2), []byte{0, 1, 'a', 0, 2, 'b'})
	f.Add(byte(3), []byte{0, 1, 'a', 0, 0, 0, 1, 'c', 'x'})
	f.Fuzz(func(t *testing.T, n byte, data []byte) {
		for _, k := range []Kind{DTF, DTFDA, DTFMA, DTFFA} {
			fp := &FPDU{Kind: k, DstID: 1, SrcID: n, Data: data}
			got, size, err := SplitData(fp, nil)
			if verr := Validate(fp); (err == nil) != (verr == nil) {
				t.Fatalf("%v byte 5 = %d, % X: SplitData %v, Validate %v", k, n, data, err, verr)
			}
			if err != nil {
				if d, _ := DiagnosticOf(err); d != DiagProtocolError || len(got) != 0 {
					t.Fatalf("%v: error %v (%v), articles %q", k, err, d, got)
				}
				continue
			}
			var want [][]byte
			if k == DTF {
				fp.ForEachArticle(func(a []byte) error { want = append(want, a); return nil })
			} else {
				want = [][]byte{data}
			}
			total := 0
			for _, a := range want {
				total += len(a)
			}
			if len(got) != len(want) || size != total {
				t.Fatalf("%v byte 5 = %d: %d articles of %d bytes, want %d of %d", k, n, len(got), size, len(want), total)
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("%v: article %d is % X, want % X", k, i, got[i], want[i])
				}
			}
		}
	})
}
