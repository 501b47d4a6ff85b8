// Package testenv finds the real external programs that tests run against
// (PostgreSQL, etcd, kube-apiserver, helm) and decides what a test does when
// one is missing: skip on a developer machine, fail in CI.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// RequireEnv is the environment variable that turns a missing tool into a
// test failure instead of a skip. .ci/run sets it.
const RequireEnv = "VECTIS_REQUIRE_TOOLS"

// ToolsBinEnv names the directory that `make tools` fills.
const ToolsBinEnv = "VECTIS_TOOLS_BIN"

// Missing reports that a test dependency is absent: a failure when
// VECTIS_REQUIRE_TOOLS=1, a skip otherwise, with the same message either way.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("required test dependency missing: "+format, args...)
	}
	t.Skipf("skipped, test dependency missing (set "+RequireEnv+"=1 to fail instead): "+format, args...)
}

// Tool returns the path of the named program, looked up in VECTIS_TOOLS_BIN,
// then in <repo>/.tools/bin, then on PATH. If it is not found it calls Missing.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p, ok := LookTool(name); ok {
		return p
	}
	Missing(t, "%s not found in $%s, .tools/bin or PATH (run `make tools`)", name, ToolsBinEnv)
	return ""
}

// LookTool is Tool without the testing side effects.
func LookTool(name string) (string, bool) {
	var dirs []string
	if d := os.Getenv(ToolsBinEnv); d != "" {
		dirs = append(dirs, d)
	}
	if root, ok := RepoRoot(); ok {
		dirs = append(dirs, filepath.Join(root, ".tools", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	return "", false
}

// RepoRoot is the directory holding go.mod, found from this source file.
func RepoRoot() (string, bool) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", false
	}
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", false
	}
	return root, true
}
