package api

import (
	"fmt"
	"net"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// PeSIT identifier limits (PeSIT E §3.8.2).
const (
	maxPartnerID = 24 // PI 3
	maxServerID  = 24 // PI 4
	maxFileID    = 76 // PI 12
	// maxPartnerPassword is PI 5 bytes 1-8: the password proper (bytes 9-16
	// carry a new password and are not stored).
	maxPartnerPassword = 8
	maxUserName        = 64
	// A bound on the work one login can cause; bcrypt hashes from the
	// configuration ignore bytes past 72 anyway.
	maxUserPassword = 128
	minUserPassword = 12
	maxDescription  = 256
	maxPathLen      = 1024
)

// checkID validates a PeSIT identifier: 1..max printable ASCII characters
// without space, path separators or "..", so that it is safe in a URL, a log
// line and a file name pattern.
func checkID(kind, id string, max int) error {
	if id == "" {
		return fmt.Errorf("%s id is required", kind)
	}
	if len(id) > max {
		return fmt.Errorf("%s id %q is %d characters long; PeSIT allows at most %d", kind, truncate(id), len(id), max)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= 0x20 || c >= 0x7f {
			return fmt.Errorf("%s id must be printable ASCII without spaces (byte 0x%02x at %d)", kind, c, i)
		}
		if c == '/' || c == '\\' {
			return fmt.Errorf("%s id %q must not contain a path separator", kind, id)
		}
	}
	if strings.Contains(id, "..") {
		return fmt.Errorf("%s id %q must not contain \"..\"", kind, id)
	}
	if id == "." {
		return fmt.Errorf("%s id \".\" names a directory, not a %s", kind, kind)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// checkPartnerPassword validates PI 5 as a partner will send it: 1..8
// printable ASCII characters; the server compares blank-trimmed values, so
// leading or trailing blanks could never match.
func checkPartnerPassword(pw string) error {
	if pw == "" {
		return fmt.Errorf("password is required")
	}
	if len(pw) > maxPartnerPassword {
		return fmt.Errorf("password is %d characters long; PeSIT PI 5 carries at most %d", len(pw), maxPartnerPassword)
	}
	for i := 0; i < len(pw); i++ {
		if c := pw[i]; c < 0x20 || c >= 0x7f {
			return fmt.Errorf("password must be printable ASCII")
		}
	}
	if strings.TrimSpace(pw) != pw {
		return fmt.Errorf("password must not start or end with a blank (PeSIT trims blanks)")
	}
	return nil
}

func checkUserName(name string) error {
	if name == "" {
		return fmt.Errorf("user name is required")
	}
	if len(name) > maxUserName {
		return fmt.Errorf("user name is longer than %d characters", maxUserName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '@'
		if !ok {
			return fmt.Errorf("user name may contain only letters, digits, '-', '_', '.' and '@'")
		}
	}
	return nil
}

func checkUserPassword(pw string) error {
	if len(pw) < minUserPassword {
		return fmt.Errorf("password must be at least %d characters long", minUserPassword)
	}
	if len(pw) > maxUserPassword {
		return fmt.Errorf("password must be at most %d bytes long", maxUserPassword)
	}
	return nil
}

func checkDescription(d string) error {
	if len(d) > maxDescription {
		return fmt.Errorf("description is longer than %d characters", maxDescription)
	}
	for _, r := range d {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("description must not contain control characters")
		}
	}
	return nil
}

// checkDir validates a directory of a virtual file or a TLS file reference:
// no NUL or control character and no ".." element, so that the configured
// location is the one used (a relative directory is relative to the node's
// working directory, as in the configuration file).
func checkDir(field, dir string) error {
	if dir == "" {
		return nil
	}
	if len(dir) > maxPathLen {
		return fmt.Errorf("%s is longer than %d characters", field, maxPathLen)
	}
	for i := 0; i < len(dir); i++ {
		if dir[i] < 0x20 || dir[i] == 0x7f {
			return fmt.Errorf("%s must not contain control characters", field)
		}
	}
	for _, el := range strings.FieldsFunc(dir, func(r rune) bool { return r == '/' || r == '\\' }) {
		if el == ".." {
			return fmt.Errorf("%s %q must not contain a \"..\" element", field, dir)
		}
	}
	return nil
}

// namePlaceholders are the placeholders a name pattern may use (see
// pesit/server: expandName).
var namePlaceholders = [...]string{"partner", "file", "transferId", "date", "time", "uuid"}

// checkNamePattern validates the pattern that names a received file inside
// its receive directory: relative, no ".." element, no backslash, known
// placeholders only. It cannot name a path outside the directory.
func checkNamePattern(p string) error {
	if p == "" {
		return nil
	}
	if len(p) > maxPathLen {
		return fmt.Errorf("namePattern is longer than %d characters", maxPathLen)
	}
	if strings.HasPrefix(p, "/") || filepath.IsAbs(p) || strings.HasPrefix(p, "~") {
		return fmt.Errorf("namePattern %q must be relative to the receive directory", p)
	}
	if strings.ContainsAny(p, "\\:") {
		return fmt.Errorf("namePattern %q must not contain '\\' or ':'", p)
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return fmt.Errorf("namePattern must not contain control characters")
		}
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." || el == "." {
			return fmt.Errorf("namePattern %q must not contain %q elements", p, el)
		}
	}
	if path.Clean(p) != strings.TrimSuffix(p, "/") {
		return fmt.Errorf("namePattern %q is not a clean relative path", p)
	}
	rest := p
	for {
		i := strings.Index(rest, "${")
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return fmt.Errorf("namePattern %q: unterminated placeholder", p)
		}
		name := rest[i+2 : i+j]
		known := false
		for _, k := range namePlaceholders {
			if name == k {
				known = true
				break
			}
		}
		if !known {
			return fmt.Errorf("namePattern %q: unknown placeholder ${%s} (known: ${partner} ${file} ${transferId} ${date} ${time} ${uuid})", p, name)
		}
		rest = rest[i+j+1:]
	}
	return nil
}

// checkListen validates host:port with a port in 1..65535.
func checkListen(field, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want host:port or :port", field, addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%s %q: port must be a number from 1 to 65535", field, addr)
	}
	if strings.ContainsAny(host, " /\\") {
		return fmt.Errorf("%s %q: invalid host", field, addr)
	}
	return nil
}
