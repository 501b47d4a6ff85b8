package fsm

import "testing"

// BenchmarkReceivedSmallArticles is what a receiver pays per multi-article
// DTF of 255 short articles (a text file of short lines): the machine's
// check and the walk that hands each article on (Articles).
func BenchmarkReceivedSmallArticles(b *testing.B) {
	_, s := dataPhase(b, SyncOption{IntervalKB: IntervalUndefined, Window: 2})
	f := multiDTF(255, 40)
	b.ReportAllocs()
	b.SetBytes(255 * 40)
	n := 0
	for b.Loop() {
		if _, err := s.Received(f); err != nil {
			b.Fatal(err)
		}
		for _, a := range s.Articles() {
			n += len(a)
		}
	}
	if n == 0 {
		b.Fatal("no articles")
	}
}
