package api

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzNamePattern: a name pattern the API accepts, once its placeholders are
// replaced by any value a PeSIT id can take, names a path inside the receive
// directory; and a directory it accepts has no ".." element.
func FuzzNamePattern(f *testing.F) {
	for _, s := range []string{
		"${partner}/${file}-${transferId}", "${file}", "a/b/c.txt", "../x", "/etc/passwd", "a/../../b",
		"${date}/${time}_${uuid}", "..", ".", "a//b", `a\..\b`, "${partner", "C:x", "~root/x", "a/./b", "x/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if checkNamePattern(p) == nil && p != "" {
			// Placeholder values come from validated ids (checkID) or from
			// the server (numbers, dates, uuids): none holds a separator.
			name := strings.NewReplacer("${partner}", "P", "${file}", "F", "${transferId}", "42",
				"${date}", "20260101", "${time}", "120000", "${uuid}", "u").Replace(p)
			const base = "/srv/in"
			full := filepath.Join(base, name)
			if !strings.HasPrefix(full, base+"/") {
				t.Fatalf("accepted pattern %q resolves to %q, outside %s", p, full, base)
			}
		}
		if checkDir("dir", p) == nil {
			for _, el := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
				if el == ".." {
					t.Fatalf("accepted directory %q has a .. element", p)
				}
			}
		}
		if checkID("file", p, maxFileID) == nil {
			if strings.ContainsAny(p, `/\ `) || strings.Contains(p, "..") || len(p) > maxFileID || p == "" {
				t.Fatalf("accepted id %q", p)
			}
		}
	})
}
