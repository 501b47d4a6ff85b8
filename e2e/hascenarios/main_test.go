//go:build e2e

// Package hascenarios proves the HA promises of issue 6 with Vectis nodes
// as separate processes (so that a scenario can SIGKILL, SIGSTOP or SIGTERM
// them), a real 3-member etcd, real PostgreSQL and a real kube-apiserver
// holding the pods whose leader label the nodes manage. An invariant
// monitor runs through every scenario: it connects to every node's PeSIT
// port and watches every pod's labels, and each scenario asserts that no two
// nodes ever accepted at once and no two pods were ever labelled at once.
//
// Run with `make e2e`, or after `make build`:
//
//	VECTIS_E2E_BINARY=$PWD/bin/vectis go test -tags e2e -count=1 -v -run TestHA ./e2e/hascenarios
package hascenarios

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
)

// row is one line of the summary table.
type row struct {
	order         int
	scenario      string
	result        string // PASS, FAIL, SKIP
	takeover      string
	listenOverlap time.Duration
	labelOverlap  time.Duration
	bytesLost     string
	note          string
}

// summary collects one row per scenario; TestMain prints it after m.Run.
// It is package state only because TestMain, which prints it, cannot be
// handed anything by the tests.
type summary struct {
	mu   sync.Mutex
	rows map[string]*row
}

var results = &summary{rows: map[string]*row{}}

// get returns the row of a scenario, creating it.
func (s *summary) get(order int, name string) *row {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rows[name]
	if !ok {
		r = &row{order: order, scenario: name, takeover: "-", bytesLost: "-"}
		s.rows[name] = r
	}
	return r
}

func (s *summary) update(order int, name string, f func(r *row)) {
	r := s.get(order, name)
	s.mu.Lock()
	defer s.mu.Unlock()
	f(r)
}

func (s *summary) print(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rows) == 0 {
		return
	}
	list := make([]*row, 0, len(s.rows))
	for _, r := range s.rows {
		list = append(list, r)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].order < list[j].order })
	var b strings.Builder
	fmt.Fprintf(&b, "\nHA scenarios (TTL %v; overlaps are the longest time two nodes accepted / two pods were labelled)\n", ttl)
	fmt.Fprintf(&b, "%-44s %-6s %-34s %-13s %-12s %-10s %s\n", "scenario", "result", "takeover", "listen-ovl-ms", "label-ovl-ms", "bytes-lost", "note")
	for _, r := range list {
		fmt.Fprintf(&b, "%-44s %-6s %-34s %-13d %-12d %-10s %s\n", r.scenario, r.result, r.takeover,
			r.listenOverlap.Milliseconds(), r.labelOverlap.Milliseconds(), r.bytesLost, r.note)
	}
	fmt.Fprint(w, b.String())
}

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Shutdown()
	results.print(os.Stdout)
	if code == 0 {
		if err := goleak.Find(
			// client-go's klog starts its flush daemon at import.
			goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
