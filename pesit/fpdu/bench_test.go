package fpdu

import (
	"bytes"
	"io"
	"testing"
)

// dtf64K is a multi-article DTF of 63 articles of 1024 bytes: 6 + 63 x 1026
// = 64644 bytes, the largest such DTF within 65535.
func dtf64K(tb testing.TB) (articles [][]byte, wire []byte) {
	tb.Helper()
	articles = make([][]byte, 63)
	for i := range articles {
		articles[i] = bytes.Repeat([]byte{byte(i)}, 1024)
	}
	wire, err := AppendDTF(nil, 0xE2, articles...)
	if err != nil {
		tb.Fatal(err)
	}
	return articles, wire
}

// loopReader serves the same stream forever without allocating, so that a
// Reader benchmark measures the codec, not the source.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	if len(l.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

// TestHotPathAllocs asserts the hot path allocates nothing: reading a DTF
// through Reader.Next and walking its articles, reassembling segments,
// counting, and queueing DTFs on a Writer.
func TestHotPathAllocs(t *testing.T) {
	_, wire := dtf64K(t)
	da, _ := AppendSegment(nil, DTFDA, 0xE2, make([]byte, 1000))
	fa, _ := AppendSegment(nil, DTFFA, 0xE2, make([]byte, 24))
	stream := append(frame(wire), frame(da, fa)...)
	r := NewReader(&loopReader{data: stream})
	re := NewReassembler(1024)
	var c Counter
	var total int
	count := func(a []byte) error { total += len(a); return nil }
	// Warm up: the reassembly buffer grows once to the article size.
	for range 3 {
		f, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if err := re.Add(f, count); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(200, func() {
		f, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == DTF {
			if err := f.ForEachArticle(count); err != nil {
				t.Fatal(err)
			}
		} else if err := re.Add(f, count); err != nil {
			t.Fatal(err)
		}
		if err := c.Add(f); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Reader.Next + ForEachArticle: %v allocs per FPDU, want 0", allocs)
	}
	if total == 0 || c.Articles == 0 {
		t.Fatal("nothing read")
	}

	articles, _ := dtf64K(t)
	w := NewWriter(io.Discard)
	syn := sample(Syn)
	allocs = testing.AllocsPerRun(100, func() {
		if err := w.QueueDTF(0xE2, articles[:8]...); err != nil {
			t.Fatal(err)
		}
		if err := w.Queue(syn); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Writer.QueueDTF: %v allocs, want 0", allocs)
	}
}

func BenchmarkDecodeDTF64K(b *testing.B) {
	_, wire := dtf64K(b)
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		f, err := Decode(wire)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.ForEachArticle(func(a []byte) error { n += len(a); return nil }); err != nil {
			b.Fatal(err)
		}
	}
	if n == 0 {
		b.Fatal("no data")
	}
}

func BenchmarkEncodeDTF64K(b *testing.B) {
	articles, wire := dtf64K(b)
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	buf := make([]byte, 0, len(wire))
	for b.Loop() {
		var err error
		buf, err = AppendDTF(buf[:0], 0xE2, articles...)
		if err != nil {
			b.Fatal(err)
		}
	}
	if !bytes.Equal(buf, wire) {
		b.Fatal("encoding differs")
	}
}

// BenchmarkReaderDTF64K reads framed 64 KiB DTFs through Reader.Next and
// walks their articles, as a receiving session does.
func BenchmarkReaderDTF64K(b *testing.B) {
	_, wire := dtf64K(b)
	var stream []byte
	for range 4 {
		stream = append(stream, frame(wire)...)
	}
	r := NewReader(&loopReader{data: stream})
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	n := 0
	count := func(a []byte) error { n += len(a); return nil }
	for b.Loop() {
		f, err := r.Next()
		if err != nil {
			b.Fatal(err)
		}
		if err := f.ForEachArticle(count); err != nil {
			b.Fatal(err)
		}
	}
	if n == 0 {
		b.Fatal("no data")
	}
}

// BenchmarkReaderCXPattern reads CX's push layout: NSDUs of DTF(3 x 1024) +
// DTFDA(1006), then DTFFA(18) + the next DTF..., reassembling segments.
func BenchmarkReaderCXPattern(b *testing.B) {
	art := make([]byte, 1024)
	dtf, _ := AppendDTF(nil, 0xE2, art, art, art)
	da, _ := AppendSegment(nil, DTFDA, 0xE2, art[:1006])
	fa, _ := AppendSegment(nil, DTFFA, 0xE2, art[:18])
	var stream []byte
	stream = append(stream, frame(dtf, da)...)
	for range 16 {
		stream = append(stream, frame(fa, dtf, da)...)
	}
	stream = append(stream, frame(fa)...)
	// MB/s counts article bytes: one pass over the stream tells how many
	// per FPDU on average.
	var c Counter
	fpdus := 0
	for r := NewReader(bytes.NewReader(stream)); ; fpdus++ {
		f, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		_ = c.Add(f)
	}
	b.SetBytes(int64(c.Bytes) / int64(fpdus))
	r := NewReader(&loopReader{data: stream})
	re := NewReassembler(1024)
	articles := 0
	onArticle := func([]byte) error { articles++; return nil }
	b.ReportAllocs()
	for b.Loop() {
		f, err := r.Next()
		if err != nil {
			b.Fatal(err)
		}
		if err := re.Add(f, onArticle); err != nil {
			b.Fatal(err)
		}
	}
	if articles == 0 && b.N > 3 {
		b.Fatal("no article")
	}
}

func BenchmarkDecodeConnect(b *testing.B) {
	wire := encode(b, sample(Connect))
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(wire); err != nil {
			b.Fatal(err)
		}
	}
}
