package fileroot

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	root, err := New(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data", "in"), 0o750); err != nil {
		t.Fatal(err)
	}
	// A link inside the root that leads out of it.
	if err := os.Symlink("/etc", filepath.Join(dir, "data", "etc")); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{
		filepath.Join(dir, "data"),
		filepath.Join(dir, "data", "in"),
		filepath.Join(dir, "data", "in", "not", "yet", "made"),
		filepath.Join(dir, "data", "x", "..", "in"),
	} {
		if err := root.Check(ok); err != nil {
			t.Errorf("Check(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{
		"/etc",
		filepath.Join(dir, "data-other"),
		filepath.Join(dir, "data", "..", "elsewhere"),
		filepath.Join(dir, "data", "etc"),
		filepath.Join(dir, "data", "etc", "cron.d"),
		dir,
	} {
		if err := root.Check(bad); !errors.Is(err, ErrOutside) {
			t.Errorf("Check(%q) = %v, want ErrOutside", bad, err)
		}
	}
	if err := (Root{}).Check("/etc"); err != nil {
		t.Errorf("the zero Root refused /etc: %v", err)
	}
}

func TestRelativeRoot(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	root, err := New("./data")
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Check("./data/in"); err != nil {
		t.Errorf("relative dir under a relative root: %v", err)
	}
	if err := root.Check("./in"); !errors.Is(err, ErrOutside) {
		t.Errorf("./in under ./data: %v", err)
	}
}
