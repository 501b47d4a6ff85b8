package fpdu

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// packed runs lines (text) or articles through a Packer and renders each DTF
// as its articles, "|"-separated, with "*" marking a multi-article DTF.
func packed(t *testing.T, entity, maxN int, multi, text bool, arts ...string) ([]string, error) {
	t.Helper()
	var out []string
	var p Packer
	p.Reset(entity, maxN, multi, func(k Kind, data []byte, n byte) error {
		switch {
		case k == DTFDA || k == DTFMA:
			out = append(out, k.String()+":"+string(data))
			return nil
		case k == DTFFA:
			out = append(out, "DTFFA:"+string(data))
			return nil
		case len(data) > entity-HeaderLen:
			t.Fatalf("a DTF of %d bytes, entity size %d", len(data), entity)
		case n == 0:
			out = append(out, string(data))
			return nil
		}
		var parts []string
		f := FPDU{Kind: DTF, SrcID: n, Data: data}
		if err := f.ForEachArticle(func(a []byte) error { parts = append(parts, string(a)); return nil }); err != nil {
			t.Fatalf("emitted a bad multi-article DTF: %v", err)
		}
		out = append(out, "*"+strings.Join(parts, "|"))
		return nil
	})
	for _, a := range arts {
		add := p.Add
		if text {
			add = p.AddLine
		}
		if err := add([]byte(a)); err != nil {
			return out, err
		}
	}
	return out, p.Flush()
}

func TestPacker(t *testing.T) {
	long := strings.Repeat("x", 8) // 6 + 8 > 12: no room for an empty line beside it
	for _, c := range []struct {
		name        string
		entity, max int
		multi, text bool
		in          []string
		want        string
		err         error
	}{
		{"binary alone", 100, 255, false, false, []string{"ab", "cd"}, "[ab cd]", nil},
		{"binary multi up to N", 100, 2, true, false, []string{"a", "b", "c"}, "[*a|b c]", nil},
		{"binary multi up to the entity size", 6 + 10, 255, true, false, []string{"abc", "def", "g"}, "[*abc|def g]", nil},
		{"binary too long to share goes alone", 6 + 10, 255, true, false, []string{"a", "abcdefghi"}, "[a abcdefghi]", nil},
		{"binary too long for a DTF is segmented", 6 + 4, 255, false, false, []string{"abcdefghij", "k"}, "[DTFDA:abcd DTFMA:efgh DTFFA:ij k]", nil},
		{"text lines one per DTF, empty lines keep company", 100, 255, false, true, []string{"a", "", "b", "c"}, "[*a| b c]", nil},
		{"text leading empty line", 100, 255, false, true, []string{"", "a", "b"}, "[*|a b]", nil},
		{"text multi", 100, 255, true, true, []string{"a", "", "b"}, "[*a||b]", nil},
		{"text empty line keeps the last line when the DTF is full", 6 + 8, 255, true, true, []string{"ab", "cd", ""}, "[ab *cd|]", nil},
		{"text line too long for company goes alone", 6 + 12, 255, false, true, []string{"a", long}, "[a " + long + "]", nil},
		{"text empty line left alone by a long line", 6 + 12, 255, false, true, []string{"", long}, "[]", ErrLoneEmpty},
		{"text one empty line", 100, 255, false, true, []string{""}, "[]", ErrLoneEmpty},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := packed(t, c.entity, c.max, c.multi, c.text, c.in...)
			if !errors.Is(err, c.err) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if s := fmt.Sprint(got); s != c.want {
				t.Fatalf("DTFs %s, want %s", s, c.want)
			}
		})
	}
}
