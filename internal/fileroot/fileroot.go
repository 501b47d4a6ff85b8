// Package fileroot confines the directories of virtual files (and the
// partial files in them) to one configured root, vectis.fileRoot, so that an
// API admin cannot make the PeSIT server write to /etc or serve /root
// (issue 16, defect 13).
package fileroot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrOutside is returned for a path that is not under the root.
var ErrOutside = errors.New("outside the file root")

// Root is a directory that paths must stay under. The zero Root confines
// nothing (tests and embedding).
type Root struct {
	dir string // absolute and clean; symbolic links resolved if it exists
}

// New returns the root at dir, made absolute against the working
// directory, as relative receiveDir and sendDir values are.
func New(dir string) (Root, error) {
	if dir == "" {
		return Root{}, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Root{}, fmt.Errorf("file root %q: %w", dir, err)
	}
	return Root{dir: resolve(abs)}, nil
}

// Dir is the root directory; empty for the zero Root.
func (r Root) Dir() string { return r.dir }

// Check returns an error wrapping ErrOutside unless path is the root or
// under it, both as written and once the symbolic links of its existing
// part are resolved (a link inside the root to /etc does not get out).
func (r Root) Check(path string) error {
	if r.dir == "" {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("%q: %w", path, err)
	}
	if !within(r.dir, abs) {
		return fmt.Errorf("%q is %w %s", path, ErrOutside, r.dir)
	}
	if real := resolve(abs); !within(r.dir, real) {
		return fmt.Errorf("%q resolves to %q, %w %s", path, real, ErrOutside, r.dir)
	}
	return nil
}

func within(root, p string) bool {
	if p == root {
		return true
	}
	return strings.HasPrefix(p, strings.TrimSuffix(root, string(filepath.Separator))+string(filepath.Separator))
}

// resolve evaluates the symbolic links of the longest existing prefix of
// the absolute path p and appends the rest unchanged.
func resolve(p string) string {
	rest := ""
	cur := p
	for {
		if real, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(real, rest)
		} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, os.ErrPermission) {
			return p
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}
