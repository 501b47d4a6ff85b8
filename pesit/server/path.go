package server

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

var errBadFileName = errors.New("invalid file name")

// checkFileID validates PI 12 before it is used as a lookup key or as the
// ${file} placeholder: 1..76 printable ASCII characters, no path separator,
// no "." or "..", so that no peer-supplied name can walk the file system.
func checkFileID(s string) error {
	if len(s) == 0 || len(s) > 76 {
		return fmt.Errorf("%w: length %d", errBadFileName, len(s))
	}
	if s == "." || s == ".." || strings.Contains(s, "..") {
		return fmt.Errorf("%w: %q contains a dot-dot", errBadFileName, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '/' || c == '\\' || c == ':' {
			return fmt.Errorf("%w: %q has byte 0x%02x at %d", errBadFileName, s, c, i)
		}
	}
	return nil
}

// nameVars are the values of the file-name placeholders.
type nameVars struct {
	Partner    string
	File       string
	TransferID int64
	Now        time.Time
	UUID       string
}

// expandName substitutes the placeholders of pattern and returns a local,
// slash-free-of-escape relative path. An unknown placeholder is an error so a
// typo in the configuration does not silently produce odd names.
func expandName(pattern string, v nameVars) (string, error) {
	if pattern == "" {
		pattern = "${file}"
	}
	var b strings.Builder
	for i := 0; i < len(pattern); {
		j := strings.Index(pattern[i:], "${")
		if j < 0 {
			b.WriteString(pattern[i:])
			break
		}
		b.WriteString(pattern[i : i+j])
		i += j
		k := strings.IndexByte(pattern[i:], '}')
		if k < 0 {
			return "", fmt.Errorf("name pattern %q: unterminated placeholder", pattern)
		}
		name := pattern[i+2 : i+k]
		i += k + 1
		switch name {
		case "partner":
			b.WriteString(v.Partner)
		case "file":
			b.WriteString(v.File)
		case "transferId":
			b.WriteString(strconv.FormatInt(v.TransferID, 10))
		case "date":
			b.WriteString(v.Now.Format("20060102"))
		case "time":
			b.WriteString(v.Now.Format("150405"))
		case "uuid":
			b.WriteString(v.UUID)
		default:
			return "", fmt.Errorf("name pattern %q: unknown placeholder ${%s}", pattern, name)
		}
	}
	rel := filepath.Clean(filepath.FromSlash(b.String()))
	if !filepath.IsLocal(rel) || strings.HasPrefix(filepath.Base(rel), ".") {
		return "", fmt.Errorf("%w: %q escapes its directory or is hidden", errBadFileName, rel)
	}
	return rel, nil
}

// tempNameFor is the temporary name of a file being received: hidden, in the
// same directory as the final name, so that the final rename is atomic. It
// is derived from the final name alone, so that a restart finds it even when
// the journal did not keep it (another node after a failover, for one).
func tempNameFor(rel string) string {
	return filepath.Join(filepath.Dir(rel), "."+filepath.Base(rel)+".part")
}
