package client

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchServerEnv); spec != "" {
		os.Exit(runBenchServer(spec))
	}
	goleak.VerifyTestMain(m)
}

// writeRandom writes size pseudo-random bytes (seeded) to dir/name.
func writeRandom(t testing.TB, dir, name string, size int64, seed uint64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		for i := 0; i < int(n); i += 8 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < int(n); j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeText writes a text file of lines of varied lengths, empty lines
// included, each ended by "\n".
func writeText(t testing.TB, dir, name string, lines int, seed uint64) string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	var b strings.Builder
	for i := range lines {
		n := r.IntN(200)
		if i%17 == 0 {
			n = 0
		}
		for j := range n {
			b.WriteByte(byte('a' + (i+j)%26))
		}
		b.WriteByte('\n')
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSHA(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func sameFile(t testing.TB, want, got string) {
	t.Helper()
	if a, b := fileSHA(t, want), fileSHA(t, got); a != b {
		wi, _ := os.Stat(want)
		gi, _ := os.Stat(got)
		t.Fatalf("%s (%d bytes, sha256 %s) differs from %s (%d bytes, sha256 %s)", got, gi.Size(), b, want, wi.Size(), a)
	}
}

// testLogger sends slog records to t.Log when VECTIS_TEST_LOG is set.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("VECTIS_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
