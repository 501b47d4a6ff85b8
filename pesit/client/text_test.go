package client

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTextRoundTrip pushes a variable-format text file (PI 16 = 0 or 1)
// to the real server and pulls it back. Both sides carry one article per
// line without its end of line: the file the server stores and the one the
// client gets back are byte-identical to an LF source; CRLF becomes LF and
// a last line without "\n" gets one (package doc of pesit/server). Empty
// lines, even runs of them and at the start and end, survive both with and
// without multi-article DTFs agreed.
func TestTextRoundTrip(t *testing.T) {
	lf := "first line\n\n\nthird, after two empty lines\n" + strings.Repeat("x", 4000) + "\n\n" +
		strings.Repeat("line of text\n", 3000) + strings.Repeat("\n", 300) + "last\n\n"
	cases := []struct {
		name      string
		src, want string
		ebcdic    bool
		multi     bool
	}{
		{"LF", lf, lf, false, false},
		{"LF multi-article", lf, lf, false, true},
		{"LF EBCDIC", lf + "accentué £\n", lf + "accentué £\n", true, false},
		{"leading empty lines", "\n\nabc\n", "\n\nabc\n", false, false},
		{"CRLF", "a\r\nb\r\n\r\nc\r\n", "a\nb\n\nc\n", false, false},
		{"no final newline", "a\nb", "a\nb\n", false, false},
		{"empty file", "", "", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ts := startServer(t, serverOpts{syncKB: 4, window: 2, entity: 4096, text: !c.ebcdic, ebcdic: c.ebcdic, multi: c.multi})
			local := t.TempDir()
			src := filepath.Join(local, "src.txt")
			if err := os.WriteFile(src, []byte(c.src), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := Dial(ctx, ts.config(false, 4, 2))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			code := DataASCII
			if c.ebcdic {
				code = DataEBCDIC
			}
			req := SendRequest{Source: src, VirtualFile: "TEXT", Format: FormatVariable, DataCode: code, ArticleLength: 4000, EntitySize: 4096}
			if c.multi {
				req.MultiArticle = 50
			}
			res, err := s.Send(ctx, req)
			if err != nil {
				t.Fatalf("push: %v", err)
			}
			checkText(t, "pushed file on the server", filepath.Join(ts.in, "TEXT"), c.want)
			if want := int64(len(strings.ReplaceAll(c.want, "\n", ""))); res.DataBytes != want {
				t.Errorf("push PI 27 = %d, want %d data bytes", res.DataBytes, want)
			}

			if err := os.WriteFile(filepath.Join(ts.out, "TEXT"), []byte(c.src), 0o644); err != nil {
				t.Fatal(err)
			}
			back := filepath.Join(local, "back.txt")
			res, err = s.Receive(ctx, ReceiveRequest{VirtualFile: "TEXT", Dest: back})
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			checkText(t, "pulled file", back, c.want)
			if want := int64(strings.Count(c.want, "\n")); res.Articles != want {
				t.Errorf("pull PI 28 = %d, want %d lines", res.Articles, want)
			}
			if err := s.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func checkText(t *testing.T, what, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, []byte(want)) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d bytes, want %d; first difference at %d: %s", what, len(got), len(want), i,
			fmt.Sprintf("%q vs %q", got[i:min(i+20, len(got))], want[i:min(i+20, len(want))]))
	}
}
