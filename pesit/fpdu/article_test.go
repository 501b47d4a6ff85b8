package fpdu

import (
	"errors"
	"testing"
)

func articles(t *testing.T, f *FPDU) ([][]byte, error) {
	t.Helper()
	var out [][]byte
	err := f.ForEachArticle(func(a []byte) error {
		out = append(out, a)
		return nil
	})
	return out, err
}

func TestForEachArticle(t *testing.T) {
	cases := []struct {
		name string
		n    byte
		data string
		want []string
	}{
		{"single", 0, "hello", []string{"hello"}},
		{"multi", 3, "\x00\x02ab\x00\x00\x00\x01c", []string{"ab", "", "c"}},
		{"multi all empty", 2, "\x00\x00\x00\x00", []string{"", ""}},
		{"byte5=1 prefixed", 1, "\x00\x03abc", []string{"abc"}},
		{"byte5=1 raw", 1, "\x00\x05abc", []string{"\x00\x05abc"}},
		{"byte5=1 short raw", 1, "z", []string{"z"}},
		{"byte5=1 empty prefixed", 1, "\x00\x00", []string{""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &FPDU{Kind: DTF, SrcID: c.n, Data: []byte(c.data)}
			got, err := articles(t, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %q want %q", got, c.want)
			}
			for i := range got {
				if string(got[i]) != c.want[i] {
					t.Fatalf("got %q want %q", got, c.want)
				}
			}
		})
	}
}

func TestForEachArticleErrors(t *testing.T) {
	cases := []struct {
		name string
		f    FPDU
	}{
		{"empty single", FPDU{Kind: DTF}},
		{"empty byte5=1", FPDU{Kind: DTF, SrcID: 1}},
		{"sum short", FPDU{Kind: DTF, SrcID: 2, Data: []byte("\x00\x02ab\x00\x05c")}},
		{"sum long", FPDU{Kind: DTF, SrcID: 2, Data: []byte("\x00\x01a\x00\x01bX")}},
		{"count high", FPDU{Kind: DTF, SrcID: 3, Data: []byte("\x00\x01a\x00\x01b")}},
		{"count low", FPDU{Kind: DTF, SrcID: 2, Data: []byte("\x00\x01a\x00\x01b\x00\x01c")}},
		{"half prefix", FPDU{Kind: DTF, SrcID: 2, Data: []byte("\x00\x01a\x00")}},
		{"lost payload (capture)", FPDU{Kind: DTF, SrcID: 3}},
		{"not a DTF", FPDU{Kind: DTFDA, Data: []byte("x")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			err := c.f.ForEachArticle(func([]byte) error { calls++; return nil })
			if err == nil {
				t.Fatal("no error")
			}
			if calls != 0 {
				t.Fatalf("fn called %d times on a malformed DTF", calls)
			}
			if d, _ := DiagnosticOf(err); d != DiagProtocolError {
				t.Fatalf("diagnostic %v", d)
			}
			if c.f.Kind == DTF {
				if err := Validate(&c.f); err == nil {
					t.Fatal("Validate accepted it")
				}
			}
		})
	}
	stop := errors.New("stop")
	f := &FPDU{Kind: DTF, SrcID: 2, Data: []byte("\x00\x01a\x00\x01b")}
	calls := 0
	if err := f.ForEachArticle(func([]byte) error { calls++; return stop }); err != stop || calls != 1 {
		t.Fatalf("fn error: %v after %d calls", err, calls)
	}
}

func TestAppendDTF(t *testing.T) {
	a, b := []byte("first"), []byte("")
	dtf, err := AppendDTF(nil, 7, a, b, a)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Decode(dtf)
	if err != nil || f.SrcID != 3 || f.DstID != 7 {
		t.Fatalf("%v %s", err, &f)
	}
	got, err := articles(t, &f)
	if err != nil || len(got) != 3 || string(got[0]) != "first" || len(got[1]) != 0 || string(got[2]) != "first" {
		t.Fatalf("%q %v", got, err)
	}
	single, _ := AppendDTF(nil, 7, a)
	if single[5] != 0 || string(single[6:]) != "first" {
		t.Fatalf("single: % X", single)
	}
	if _, err := AppendDTF(nil, 1); err == nil {
		t.Error("DTF without article")
	}
	if _, err := AppendDTF(nil, 1, nil); err == nil {
		t.Error("single empty article")
	}
	if _, err := AppendDTF(nil, 1, make([][]byte, 256)...); err == nil {
		t.Error("256 articles")
	}
	if _, err := AppendDTF(nil, 1, make([]byte, 40000), make([]byte, 40000)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversize: %v", err)
	}
	// The largest single article fits exactly.
	if b, err := AppendDTF(nil, 1, make([]byte, MaxFPDULen-HeaderLen)); err != nil || len(b) != MaxFPDULen {
		t.Errorf("max single: %d %v", len(b), err)
	}
	// Never byte 5 = 1: two articles are N=2.
	two, _ := AppendDTF(nil, 1, a, a)
	if two[5] != 2 {
		t.Fatalf("byte 5 = %d", two[5])
	}
}

func seg(k Kind, s string) *FPDU { return &FPDU{Kind: k, DstID: 1, Data: []byte(s)} }

func TestReassembler(t *testing.T) {
	r := NewReassembler(10)
	var got []string
	collect := func(a []byte) error { got = append(got, string(a)); return nil }
	steps := []*FPDU{
		{Kind: DTF, SrcID: 2, Data: []byte("\x00\x02ab\x00\x01c")},
		seg(DTFDA, "0123"), seg(DTFFA, "45"), // no DTFMA: CX's layout
		seg(DTFDA, "01"), seg(DTFMA, "23"), seg(DTFMA, "45"), seg(DTFFA, "6789"), // exactly the max
		{Kind: DTF, Data: []byte("single")},
	}
	for i, f := range steps {
		if err := r.Add(f, collect); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if want := f.Kind == DTFDA || f.Kind == DTFMA; r.InProgress() != want {
			t.Fatalf("step %d: InProgress %t", i, r.InProgress())
		}
	}
	want := []string{"ab", "c", "012345", "0123456789", "single"}
	if len(got) != len(want) {
		t.Fatalf("got %q want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q want %q", got, want)
		}
	}
}

func TestReassemblerErrors(t *testing.T) {
	nop := func([]byte) error { return nil }
	cases := []struct {
		name  string
		steps []*FPDU
		diag  Diagnostic
		want  error
	}{
		{"over the max", []*FPDU{seg(DTFDA, "012345"), seg(DTFMA, "6789"), seg(DTFFA, "X")}, DiagArticleTooLong, ErrArticleTooLong},
		{"first segment over the max", []*FPDU{seg(DTFDA, "0123456789A")}, DiagArticleTooLong, ErrArticleTooLong},
		{"DTF article over the max", []*FPDU{{Kind: DTF, Data: []byte("0123456789A")}}, DiagArticleTooLong, ErrArticleTooLong},
		{"DTFMA alone", []*FPDU{seg(DTFMA, "x")}, DiagProtocolError, ErrSegmentSequence},
		{"DTFFA alone", []*FPDU{seg(DTFFA, "x")}, DiagProtocolError, ErrSegmentSequence},
		{"DTFDA twice", []*FPDU{seg(DTFDA, "x"), seg(DTFDA, "y")}, DiagProtocolError, ErrSegmentSequence},
		{"DTF inside", []*FPDU{seg(DTFDA, "x"), {Kind: DTF, Data: []byte("y")}}, DiagProtocolError, ErrSegmentSequence},
		{"not data", []*FPDU{sample(Syn)}, DiagProtocolError, ErrNotData},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReassembler(10)
			var err error
			for _, f := range c.steps {
				if err = r.Add(f, nop); err != nil {
					break
				}
			}
			if !errors.Is(err, c.want) || !errors.Is(err, c.diag) {
				t.Fatalf("got %v, want %v and %v", err, c.want, c.diag)
			}
			if r.InProgress() {
				t.Fatal("still in progress after an error")
			}
		})
	}
	// A huge claimed maximum is clamped to what PI 32 can express.
	if r := NewReassembler(1 << 30); r.max != MaxFPDULen {
		t.Fatalf("max %d", r.max)
	}
}

func TestCounter(t *testing.T) {
	var c Counter
	for _, f := range []*FPDU{
		{Kind: DTF, SrcID: 3, Data: []byte("\x00\x02ab\x00\x00\x00\x01c")},
		seg(DTFDA, "0123"), seg(DTFMA, "45"), seg(DTFFA, "6"),
		{Kind: DTF, Data: []byte("xyz")},
	} {
		if err := c.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	if c.Articles != 5 || c.Bytes != 3+7+3 {
		t.Fatalf("%+v", c)
	}
	if err := c.Add(&FPDU{Kind: DTF, SrcID: 2, Data: []byte{0, 5}}); err == nil {
		t.Fatal("counted a malformed DTF")
	}
	if c.Articles != 5 {
		t.Fatal("malformed DTF changed the count")
	}
}
