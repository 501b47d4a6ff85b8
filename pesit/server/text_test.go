package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestTextPullDTFShapes pulls a text file with empty lines everywhere as a
// partner without multi-article DTFs: no DTF is empty or has byte 5 = 1, a
// multi-article DTF carries at most one non-empty line (only empty lines are
// grouped), the lines and PI 27/28 are right. A file of one empty line has
// no PeSIT form and ends with IDT 2/299.
func TestTextPullDTFShapes(t *testing.T) {
	e := newEnv(t, nil)
	e.dir.AddFile(server.VirtualFile{ID: "TEXT", Direction: server.DirectionBoth, ReceiveDir: e.recvDir, SendDir: e.sendDir,
		RecordFormat: server.RecordVariable, RecordLength: 1024, DataCode: 0})
	var b strings.Builder
	b.WriteString("\n\n")
	for i := range 3000 {
		b.WriteString(strings.Repeat(string(rune('a'+i%26)), i%90))
		b.WriteString("\r\n"[i%2:])
		if i%7 == 0 {
			b.WriteString(strings.Repeat("\n", i%300))
		}
	}
	b.WriteString(strings.Repeat("\n", 600))
	text := b.String()
	if err := os.WriteFile(filepath.Join(e.sendDir, "TEXT"), []byte(text), 0o640); err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSuffix(strings.ReplaceAll(text, "\r\n", "\n"), "\n"), "\n")

	p := dial(t, e.srv.Addr())
	p.connect()
	_, recLen := p.selectAndRead("TEXT", 0, false, 0)
	var got []string
	dataBytes := 0
	for done := false; !done; {
		f := p.expectAny()
		switch f.Kind {
		case fpdu.DTF:
			if f.SrcID == 1 || (f.SrcID == 0 && len(f.Data) == 0) {
				t.Fatalf("DTF with byte 5 = %d and %d data bytes", f.SrcID, len(f.Data))
			}
			nonEmpty := 0
			if err := f.ForEachArticle(func(a []byte) error {
				if len(a) > recLen {
					t.Fatalf("line of %d bytes, PI 32 = %d", len(a), recLen)
				}
				if len(a) > 0 {
					nonEmpty++
				}
				got = append(got, string(a))
				dataBytes += len(a)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if f.SrcID > 1 && nonEmpty > 1 {
				t.Fatalf("multi-article DTF with %d non-empty lines to a partner without multi-article", nonEmpty)
			}
		case fpdu.Syn:
			n, _ := f.Params.Uint(fpdu.PISyncNumber)
			p.sendKind(fpdu.AckSyn, uintParam(fpdu.PISyncNumber, n))
		case fpdu.DTFEnd:
			done = true
		default:
			t.Fatalf("%v during the data phase", f.Kind)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("line %d = %q, want %q", i, got[i], want[i])
		}
	}
	p.transEnd(dataBytes, len(got))
	p.closeFile()

	if err := os.WriteFile(filepath.Join(e.sendDir, "TEXT"), []byte("\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	p.selectAndRead("TEXT", 0, false, 0)
	idt := p.expect(fpdu.IDT)
	if d, _ := idt.Params.Diagnostic(); d != fpdu.DiagFileOther {
		t.Fatalf("IDT %v for a file of one empty line, want 2/299", d)
	}
	p.sendKind(fpdu.AckIDT)
	p.closeFile()
	p.release()
}
