package fpdu

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"testing/iotest"
	"time"
)

func frame(fpdus ...[]byte) []byte {
	var nsdu []byte
	for _, f := range fpdus {
		nsdu = append(nsdu, f...)
	}
	return append([]byte{byte(len(nsdu) >> 8), byte(len(nsdu))}, nsdu...)
}

func encode(t testing.TB, f *FPDU) []byte {
	t.Helper()
	b, err := AppendEncode(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReaderSplitsConcatenatedNSDU(t *testing.T) {
	dtf, _ := AppendDTF(nil, 0xE2, bytes.Repeat([]byte{'a'}, 1024), bytes.Repeat([]byte{'b'}, 1024), bytes.Repeat([]byte{'c'}, 1024))
	da, _ := AppendSegment(nil, DTFDA, 0xE2, bytes.Repeat([]byte{'d'}, 1006))
	fa, _ := AppendSegment(nil, DTFFA, 0xE2, bytes.Repeat([]byte{'d'}, 18))
	syn := encode(t, sample(Syn))
	// CX's layout with PI 25 = 4096: DTF(3) + DTFDA fill exactly 4096 bytes.
	if len(dtf)+len(da) != 4096 {
		t.Fatalf("layout: %d", len(dtf)+len(da))
	}
	stream := append(frame(dtf, da), frame(fa, syn)...)
	// One byte per Read: the reader must reassemble frames across reads.
	r := NewReader(iotest.OneByteReader(bytes.NewReader(stream)))
	var kinds []Kind
	var buffered []bool
	re := NewReassembler(1024)
	var c Counter
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, f.Kind)
		buffered = append(buffered, r.Buffered())
		if f.Kind.IsData() {
			if err := c.Add(f); err != nil {
				t.Fatal(err)
			}
			if err := re.Add(f, func([]byte) error { return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := []Kind{DTF, DTFDA, DTFFA, Syn}
	if !equalKinds(kinds, want) {
		t.Fatalf("kinds %v want %v", kinds, want)
	}
	if !equalBools(buffered, []bool{true, false, true, false}) {
		t.Fatalf("Buffered %v", buffered)
	}
	if c.Articles != 4 || c.Bytes != 4*1024 {
		t.Fatalf("counter %+v", c)
	}
}

func equalKinds(a, b []Kind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReaderErrors(t *testing.T) {
	syn := encode(t, sample(Syn))
	cases := []struct {
		name   string
		stream []byte
		want   error
	}{
		{"empty frame", []byte{0, 0}, ErrBadLength},
		{"frame below a header", []byte{0, 3, 0, 3, 0}, ErrBadLength},
		{"prefix only", []byte{0, 9}, ErrTruncated},
		{"one byte", []byte{0}, ErrTruncated},
		{"truncated frame", frame(syn)[:7], ErrTruncated},
		{"inner length beyond frame", frame(append([]byte{0, 0x20}, syn[2:]...)), ErrBadLength},
		{"inner length below header", frame(append([]byte{0, 2}, syn[2:]...)), ErrBadLength},
		{"trailing bytes in frame", frame(syn, []byte{0, 9, 0}), ErrTruncated},
		{"max frame claim, short stream", append([]byte{0xFF, 0xFF}, syn...), ErrTruncated},
		{"unknown kind", frame([]byte{0, 6, 0xC0, 0xEE, 1, 0}), ErrUnknownKind},
		{"LI overrun", frame(append([]byte{0, 9, 0xC0, 0x03, 1, 0}, 0x14, 5, 1)), ErrBadLength},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(c.stream))
			var err error
			for range 4 {
				if _, err = r.Next(); err != nil {
					break
				}
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if d, ok := DiagnosticOf(err); !ok || d != DiagProtocolError {
				t.Fatalf("diagnostic %v %t", d, ok)
			}
		})
	}
	// A frame over the configured limit is refused before it is read.
	r := NewReader(bytes.NewReader(frame(syn, syn)))
	r.SetMaxFrame(len(syn))
	if _, err := r.Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	// Clean EOF between frames.
	r = NewReader(bytes.NewReader(frame(syn)))
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("want io.EOF, got %v", err)
	}
	// A transport error is returned as is.
	boom := errors.New("boom")
	r = NewReader(iotest.ErrReader(boom))
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("transport error: %v", err)
	}
}

// TestReaderMaxFrames streams maximal 65535-byte frames back to back: the
// buffer starts small, grows to one maximal frame and no further, and then
// compacts without growing.
func TestReaderMaxFrames(t *testing.T) {
	big := make([]byte, MaxFPDULen-HeaderLen)
	for i := range big {
		big[i] = byte(i)
	}
	one, err := AppendDTF(nil, 1, big)
	if err != nil {
		t.Fatal(err)
	}
	var stream []byte
	for range 5 {
		stream = append(stream, frame(one)...)
		stream = append(stream, frame(encode(t, sample(Syn)))...)
	}
	r := NewReader(bytes.NewReader(stream))
	if cap(r.buf) != readerMinBuf {
		t.Fatalf("initial buffer of %d bytes, want %d", cap(r.buf), readerMinBuf)
	}
	for i := range 10 {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("FPDU %d: %v", i, err)
		}
		if i%2 == 0 && (f.Kind != DTF || !bytes.Equal(f.Data, big)) {
			t.Fatalf("FPDU %d: %s", i, f)
		}
		if cap(r.buf) != readerMaxBuf {
			t.Fatalf("after FPDU %d the buffer holds %d bytes, want %d", i, cap(r.buf), readerMaxBuf)
		}
	}
}

// TestReaderSmallFramesStaySmall: a session of small frames, and a claimed
// length that the stream never delivers, do not grow the buffer beyond the
// step that holds the frame.
func TestReaderSmallFramesStaySmall(t *testing.T) {
	var stream []byte
	for range 1000 {
		stream = append(stream, frame(encode(t, sample(Syn)))...)
	}
	r := NewReader(bytes.NewReader(stream))
	for range 1000 {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if cap(r.buf) != readerMinBuf {
		t.Fatalf("buffer grew to %d bytes for small frames", cap(r.buf))
	}
	// A prefix claiming 5000 bytes: one step (8 KiB), then a truncation error.
	r = NewReader(bytes.NewReader([]byte{0x13, 0x88, 0, 6}))
	if _, err := r.Next(); err == nil {
		t.Fatal("truncated frame accepted")
	}
	if cap(r.buf) != 2*readerMinBuf {
		t.Fatalf("buffer of %d bytes for a 5000-byte claim, want %d", cap(r.buf), 2*readerMinBuf)
	}
}

func TestWriterQueueRespectsEntitySize(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	w.SetEntitySize(4096)
	art := bytes.Repeat([]byte{'x'}, 1024)
	// CX's pattern: DTF(3) + DTFDA(1006) = 4096, then DTFFA(18) + next.
	for range 2 {
		if err := w.QueueDTF(0xE2, art, art, art); err != nil {
			t.Fatal(err)
		}
		da, _ := AppendSegment(nil, DTFDA, 0xE2, art[:1006])
		fa, _ := AppendSegment(nil, DTFFA, 0xE2, art[:18])
		for _, b := range [][]byte{da, fa} {
			f, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Queue(&f); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Queue(sample(Syn)); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(sample(AckSyn)); err != nil { // flushes the queue first
		t.Fatal(err)
	}
	if w.Pending() != 0 {
		t.Fatal("Write left data queued")
	}
	r := NewReader(bytes.NewReader(out.Bytes()))
	var sizes []int
	for {
		b, err := r.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(b))
		if len(b) > 4096 {
			t.Fatalf("NSDU of %d bytes over the entity size", len(b))
		}
	}
	// [DTF DTFDA] [DTFFA DTF] [DTFDA DTFFA SYN] [ACK(SYN)]
	want := []int{4096, 24 + 3084, 1012 + 24 + 9, 9}
	if len(sizes) != len(want) {
		t.Fatalf("frames %v want %v", sizes, want)
	}
	for i := range want {
		if sizes[i] != want[i] {
			t.Fatalf("frames %v want %v", sizes, want)
		}
	}
	// Refusals.
	if err := w.Queue(sample(Create)); err == nil {
		t.Fatal("queued a CREATE")
	}
	if err := w.QueueDTF(1, make([]byte, 5000)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("DTF over the entity size: %v", err)
	}
	if w.Pending() != 0 {
		t.Fatal("refused FPDU left bytes queued")
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

func TestWriterStickyError(t *testing.T) {
	boom := errors.New("boom")
	w := NewWriter(failWriter{boom})
	if err := w.Write(sample(Syn)); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if err := w.Queue(sample(Syn)); !errors.Is(err, boom) {
		t.Fatal(err)
	}
}

// TestTCPSession carries FPDUs over a real loopback TCP connection in both
// directions: framing survives arbitrary segmentation by the kernel.
func TestTCPSession(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const dtfs = 200
	art := bytes.Repeat([]byte{0x5A}, 1000)
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		r, w := NewReader(c), NewWriter(c)
		if pc, err := r.ReadPreConnection(); err != nil || pc == nil || pc.RequesterID != "CXCLIENT" || pc.Password != "secret" {
			done <- errors.Join(errors.New("pre-connection"), err)
			return
		}
		if _, err := c.Write(AppendPreConnectionReply(nil, true)); err != nil {
			done <- err
			return
		}
		var cnt Counter
		for {
			f, err := r.Next()
			if err != nil {
				done <- err
				return
			}
			switch f.Kind {
			case Connect:
				err = w.Write(sample(AConnect))
			case DTF:
				err = cnt.Add(f)
			case DTFEnd:
				var p Params
				p.AddDiagnostic(DiagOK)
				p.AddUint(PIArticleCount, cnt.Articles)
				p.AddUint(PIByteCount, cnt.Bytes)
				err = w.Write(&FPDU{Kind: AckTransEnd, DstID: 0x62, Params: p})
				done <- err
				return
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	pre, _ := AppendPreConnection(nil, "CXCLIENT", "secret", true)
	if _, err := c.Write(pre); err != nil {
		t.Fatal(err)
	}
	r, w := NewReader(c), NewWriter(c)
	if ok, err := r.ReadPreConnectionReply(); err != nil || !ok {
		t.Fatalf("pre-connection reply %t %v", ok, err)
	}
	if err := w.Write(sample(Connect)); err != nil {
		t.Fatal(err)
	}
	if f, err := r.Next(); err != nil || f.Kind != AConnect {
		t.Fatalf("%v %v", f, err)
	}
	w.SetEntitySize(8192)
	for range dtfs {
		if err := w.QueueDTF(0xE2, art, art[:10]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Queue(sample(DTFEnd)); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := f.Params.Uint(PIArticleCount); n != 2*dtfs {
		t.Errorf("server counted %d articles", n)
	}
	if n, _ := f.Params.Uint(PIByteCount); n != dtfs*1010 {
		t.Errorf("server counted %d bytes", n)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestWriterBufferSizing: a Writer allocates nothing until used, stays small
// for connection FPDUs, and sizes its buffer to the entity size once it is
// set, so that queuing data does not allocate.
func TestWriterBufferSizing(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	if w.buf != nil {
		t.Fatal("buffer allocated before use")
	}
	if err := w.Write(sample(AckSyn)); err != nil {
		t.Fatal(err)
	}
	if cap(w.buf) > writerMinBuf {
		t.Fatalf("buffer of %d bytes for an ACK(SYN)", cap(w.buf))
	}
	w.SetEntitySize(4096)
	art := bytes.Repeat([]byte{'x'}, 1000)
	allocs := testing.AllocsPerRun(50, func() {
		if err := w.QueueDTF(1, art, art, art); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 || cap(w.buf) != 2+2*4096 {
		t.Fatalf("%v allocs per queued DTF, buffer %d bytes; want 0 and %d", allocs, cap(w.buf), 2+2*4096)
	}
}
