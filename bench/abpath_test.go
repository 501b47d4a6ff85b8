package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vectis-ft/vectis/pesit/client"
)

// BenchmarkRealPathAB compares two builds of `vectis serve` on the push
// with sync points of BenchmarkRealPath, in the same run: A, B and the raw
// copy in a rotating order, round after round, so that the load of a
// shared machine falls on all three alike. It reports the medians of A/raw,
// B/raw and B/A (throughput) and of each build's server CPU per GiB.
//
//	VECTIS_BINARY_A=/tmp/vectis-main VECTIS_BINARY_B=/tmp/vectis-branch \
//	  make bench BENCH=RealPathAB BENCH_PKGS=./bench BENCH_SIZE=67108864 BENCH_PAIRS=15
//
// VECTIS_BENCH_NOSYNC=1 compares the push without sync points instead.
func BenchmarkRealPathAB(b *testing.B) {
	binA, binB := os.Getenv("VECTIS_BINARY_A"), os.Getenv("VECTIS_BINARY_B")
	if binA == "" || binB == "" {
		b.Skip("set VECTIS_BINARY_A and VECTIS_BINARY_B to the two builds to compare")
	}
	size := envInt(b, "VECTIS_BENCH_SIZE", 64<<20)
	rounds := int(envInt(b, "VECTIS_BENCH_PAIRS", 15))
	sync := os.Getenv("VECTIS_BENCH_NOSYNC") == ""
	work := b.TempDir()
	src := writeRandom(b, work, size)
	for _, d := range []string{"a", "b"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o750); err != nil {
			b.Fatal(err)
		}
	}
	servers := []*served{
		startServe(b, serveOpts{maxSessions: 10, partners: []string{"BENCH"}, dir: filepath.Join(work, "a"), bin: binA}),
		startServe(b, serveOpts{maxSessions: 10, partners: []string{"BENCH"}, dir: filepath.Join(work, "b"), bin: binB}),
	}
	raw := startRaw(b, src)
	push := func(s *served) run {
		r := measure(b, s.pid, func() (client.Result, error) {
			return client.Push(context.Background(), realConfig(s.pesit, "BENCH", pw("BENCH"), "PESITSRV", sync),
				client.SendRequest{Source: src, VirtualFile: "INBOX", EntitySize: entitySize, NoRestart: true}, client.Retry{})
		})
		checkResult(b, "vectis serve push", r.res, size, sync)
		if err := os.RemoveAll(filepath.Join(s.dir, "in", "BENCH")); err != nil {
			b.Fatal(err)
		}
		return r.run
	}
	every := int64(0)
	if sync {
		every = syncKB << 10
	}
	push(servers[0])
	push(servers[1])
	raw.push(b, size, every)

	var a, bb, rw []run
	b.ResetTimer()
	for range b.N {
		for i := range rounds {
			for k := range 3 {
				switch (i + k) % 3 {
				case 0:
					a = append(a, push(servers[0]))
				case 1:
					bb = append(bb, push(servers[1]))
				case 2:
					rw = append(rw, raw.push(b, size, every))
				}
			}
		}
	}
	b.StopTimer()
	ra, rb, ba := make([]float64, len(rw)), make([]float64, len(rw)), make([]float64, len(rw))
	for i := range rw {
		ra[i] = rw[i].wall.Seconds() / a[i].wall.Seconds()
		rb[i] = rw[i].wall.Seconds() / bb[i].wall.Seconds()
		ba[i] = a[i].wall.Seconds() / bb[i].wall.Seconds()
	}
	gib := float64(size) / (1 << 30)
	srv := func(rs []run) float64 { return medianOf(rs, func(x run) float64 { return x.server.Seconds() }) / gib }
	mode := "push, sync 1 MiB"
	if !sync {
		mode = "push, no sync"
	}
	var t strings.Builder
	fmt.Fprintf(&t, "\n%s, %d MiB, %d rounds (medians): A/raw %.2f, B/raw %.2f, B/A %.2f; server CPU s/GiB A %.2f, B %.2f; MB/s A %.0f, B %.0f, raw %.0f\n",
		mode, size>>20, len(rw), median(ra), median(rb), median(ba), srv(a), srv(bb),
		medianOf(a, func(x run) float64 { return mbps(size, x.wall) }), medianOf(bb, func(x run) float64 { return mbps(size, x.wall) }),
		medianOf(rw, func(x run) float64 { return mbps(size, x.wall) }))
	b.ReportMetric(median(ra), "A/raw")
	b.ReportMetric(median(rb), "B/raw")
	b.ReportMetric(median(ba), "B/A")
	fmt.Print(t.String())
}
