// Package pesitcapture loads the recorded PeSIT sessions that the codec,
// fsm and server tests replay. The captures live in the repository
// (pesit/fpdu/testdata), so a missing one is a broken checkout: the loaders
// fail the test, they never skip it.
//
// It also keeps the committed fuzz seed corpora (testdata/fuzz/<Target>)
// in step with the captures they are generated from.
package pesitcapture

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vectis-ft/vectis/internal/testenv"
)

// Names are the capture files, all of which must be present.
var Names = []string{"cx-push-1mb.raw", "cx-pull-1mb.raw"}

// Record is one record of a capture file:
//
//	record := dir(1) len(2, big-endian) fpdu(len)
//
// dir 0 was received by the recording server (sent by the CX client), dir 1
// was sent by the recording server. FPDU includes its own 2-byte length.
type Record struct {
	File string
	N    int  // 1-based record number in File
	Sent bool // dir 1: sent by the recording server, byte-exact
	FPDU []byte
}

func (r Record) String() string {
	dir := 0
	if r.Sent {
		dir = 1
	}
	return fmt.Sprintf("%s#%d(dir=%d)", r.File, r.N, dir)
}

// Dir is the directory holding the captures.
func Dir(tb testing.TB) string {
	tb.Helper()
	root, ok := testenv.RepoRoot()
	if !ok {
		tb.Fatal("pesitcapture: repository root (go.mod) not found")
	}
	return filepath.Join(root, "pesit", "fpdu", "testdata")
}

// Parse splits a capture file into records.
func Parse(name string, b []byte) ([]Record, error) {
	var recs []Record
	for len(b) > 0 {
		if len(b) < 3 {
			return nil, fmt.Errorf("%s: %d trailing bytes", name, len(b))
		}
		n := int(b[1])<<8 | int(b[2])
		if len(b)-3 < n {
			return nil, fmt.Errorf("%s: record %d claims %d bytes, %d left", name, len(recs)+1, n, len(b)-3)
		}
		if b[0] > 1 {
			return nil, fmt.Errorf("%s: record %d: direction byte %d", name, len(recs)+1, b[0])
		}
		recs = append(recs, Record{File: filepath.Base(name), N: len(recs) + 1, Sent: b[0] == 1, FPDU: b[3 : 3+n]})
		b = b[3+n:]
	}
	return recs, nil
}

// Load reads and parses the named capture; a missing or malformed file
// fails the test.
func Load(tb testing.TB, name string) []Record {
	tb.Helper()
	p := filepath.Join(Dir(tb), name)
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatalf("pesitcapture: capture %s is part of the repository: %v", name, err)
	}
	recs, err := Parse(p, b)
	if err != nil {
		tb.Fatalf("pesitcapture: %v", err)
	}
	return recs
}

// LoadAll loads every capture of Names, in that order.
func LoadAll(tb testing.TB) []Record {
	tb.Helper()
	var all []Record
	for _, n := range Names {
		all = append(all, Load(tb, n)...)
	}
	return all
}

// corpusHeader starts every file of a Go fuzz corpus.
const corpusHeader = "go test fuzz v1\n"

// CorpusEntry encodes one fuzz input (of types []byte or string, one per
// argument of the fuzz function) in Go's corpus file format.
func CorpusEntry(values ...any) []byte {
	var sb strings.Builder
	sb.WriteString(corpusHeader)
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			sb.WriteString("[]byte(" + strconv.Quote(string(v)) + ")\n")
		case string:
			sb.WriteString("string(" + strconv.Quote(v) + ")\n")
		default:
			panic(fmt.Sprintf("pesitcapture: corpus value of type %T", v))
		}
	}
	return []byte(sb.String())
}

// UpdateEnv, set to 1, makes CheckCorpus rewrite the corpus instead of
// comparing it.
const UpdateEnv = "VECTIS_UPDATE_CORPUS"

// CheckCorpus compares testdata/fuzz/<target> of the current package with
// entries (each from CorpusEntry): every entry must be there under its
// content hash, and nothing else, so that go test runs exactly the seeds
// derived from the captures. With VECTIS_UPDATE_CORPUS=1 it writes them
// instead.
func CheckCorpus(t *testing.T, target string, entries [][]byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	want := map[string][]byte{}
	for _, e := range entries {
		sum := sha256.Sum256(e)
		want[hex.EncodeToString(sum[:8])] = e
	}
	if os.Getenv(UpdateEnv) == "1" {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, e := range want {
			if err := os.WriteFile(filepath.Join(dir, name), e, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("wrote %d corpus entries to %s", len(want), dir)
		return
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("fuzz corpus %s: %v (regenerate with %s=1 go test -run %s)", dir, err, UpdateEnv, t.Name())
	}
	var got []string
	for _, de := range des {
		got = append(got, de.Name())
		e, ok := want[de.Name()]
		if !ok {
			t.Errorf("%s/%s is not derived from the captures (regenerate with %s=1)", dir, de.Name(), UpdateEnv)
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil || string(b) != string(e) {
			t.Errorf("%s/%s differs from its capture-derived content (%v)", dir, de.Name(), err)
		}
	}
	for name := range want {
		if !slices.Contains(got, name) {
			t.Errorf("%s/%s missing (regenerate with %s=1 go test -run %s)", dir, name, UpdateEnv, t.Name())
		}
	}
}
