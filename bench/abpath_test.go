package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/client"
)

// BenchmarkRealPathAB compares two builds of `vectis serve` on the push
// with sync points of BenchmarkRealPath, in the same run: A, B and the raw
// copy in a rotating order, round after round, so that the load of a
// shared machine falls on all three alike. It reports the medians of A/raw,
// B/raw and B/A (throughput), of each build's server CPU per GiB and of the
// client's (this process during the transfer: `vectis send` or `vectis
// receive` as pesit/client runs them).
//
//	VECTIS_BINARY_A=/tmp/vectis-main VECTIS_BINARY_B=/tmp/vectis-branch \
//	  make bench BENCH=RealPathAB BENCH_PKGS=./bench BENCH_SIZE=67108864 BENCH_PAIRS=15
//
// VECTIS_BENCH_NOSYNC=1 compares the transfer without sync points instead,
// VECTIS_BENCH_PULL=1 the pull (each server sends the same file) instead
// of the push. VECTIS_BENCH_CLI=1 runs the client as `vectis send` or
// `vectis receive` of the same build as the server, in a child process,
// so that the comparison covers the client's code too (pesit/client of
// this test binary otherwise serves both); its wall time then includes
// the command's start.
func BenchmarkRealPathAB(b *testing.B) {
	binA, binB := os.Getenv("VECTIS_BINARY_A"), os.Getenv("VECTIS_BINARY_B")
	if binA == "" || binB == "" {
		b.Skip("set VECTIS_BINARY_A and VECTIS_BINARY_B to the two builds to compare")
	}
	size := envInt(b, "VECTIS_BENCH_SIZE", 64<<20)
	rounds := int(envInt(b, "VECTIS_BENCH_PAIRS", 15))
	sync := os.Getenv("VECTIS_BENCH_NOSYNC") == ""
	pull := os.Getenv("VECTIS_BENCH_PULL") != ""
	work := b.TempDir()
	src := writeRandom(b, work, size)
	var servers []*served
	for _, d := range []struct{ dir, bin string }{{"a", binA}, {"b", binB}} {
		dir := filepath.Join(work, d.dir)
		if err := os.MkdirAll(filepath.Join(dir, "out"), 0o750); err != nil {
			b.Fatal(err)
		}
		if err := os.Link(src, filepath.Join(dir, "out", "OUTBOX")); err != nil {
			b.Fatal(err)
		}
		servers = append(servers, startServe(b, serveOpts{maxSessions: 10, partners: []string{"BENCH"}, dir: dir, bin: d.bin,
			extra: fmt.Sprintf("      - {id: OUTBOX, direction: send, sendDir: %q}\n", filepath.Join(dir, "out"))}))
	}
	raw := startRaw(b, src)
	dest := filepath.Join(work, "pulled.bin")
	b.Cleanup(func() { os.Remove(dest) })
	transfer := func(s *served) run {
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
	rawRun := func() run { return raw.push(b, size, every) }
	if pull {
		transfer = func(s *served) run {
			r := measure(b, s.pid, func() (client.Result, error) {
				return client.Pull(context.Background(), realConfig(s.pesit, "BENCH", pw("BENCH"), "PESITSRV", sync),
					client.ReceiveRequest{VirtualFile: "OUTBOX", Dest: dest, EntitySize: entitySize, NoRestart: true}, client.Retry{})
			})
			checkResult(b, "vectis serve pull", r.res, size, sync)
			checkPulled(b, dest, size)
			return r.run
		}
		rawRun = func() run { return raw.pull(b, dest, size, every) }
	}
	if os.Getenv("VECTIS_BENCH_CLI") != "" {
		transfer = func(s *served) run { return cliTransfer(b, s, pull, sync, src, dest, size) }
	}
	transfer(servers[0])
	transfer(servers[1])
	rawRun()

	var a, bb, rw []run
	b.ResetTimer()
	for range b.N {
		for i := range rounds {
			for _, k := range roundOrder(i) {
				switch k {
				case 0:
					a = append(a, transfer(servers[0]))
				case 1:
					bb = append(bb, transfer(servers[1]))
				case 2:
					rw = append(rw, rawRun())
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
	cli := func(rs []run) float64 {
		return medianOf(rs, func(x run) float64 { return (x.cpu - x.server).Seconds() }) / gib
	}
	mode := "push"
	if pull {
		mode = "pull"
	}
	if sync {
		mode += ", sync 1 MiB"
	} else {
		mode += ", no sync"
	}
	var t strings.Builder
	fmt.Fprintf(&t, "\n%s, %d MiB, %d rounds (medians): A/raw %.2f, B/raw %.2f, B/A %.2f; server CPU s/GiB A %.2f, B %.2f; client CPU s/GiB A %.2f, B %.2f; raw CPU s/GiB %.2f; MB/s A %.0f, B %.0f, raw %.0f\n",
		mode, size>>20, len(rw), median(ra), median(rb), median(ba), srv(a), srv(bb), cli(a), cli(bb),
		medianOf(rw, func(x run) float64 { return x.cpu.Seconds() })/gib,
		medianOf(a, func(x run) float64 { return mbps(size, x.wall) }), medianOf(bb, func(x run) float64 { return mbps(size, x.wall) }),
		medianOf(rw, func(x run) float64 { return mbps(size, x.wall) }))
	b.ReportMetric(median(ra), "A/raw")
	b.ReportMetric(median(rb), "B/raw")
	b.ReportMetric(median(ba), "B/A")
	fmt.Print(t.String())
}

// cliTransfer runs the push or pull as `vectis send` or `vectis receive`
// of the server's own build: wall time, the child's CPU and the server's.
func cliTransfer(b *testing.B, s *served, pull, sync bool, src, dest string, size int64) run {
	b.Helper()
	interval := "0"
	if sync {
		interval = strconv.Itoa(syncKB)
	}
	args := []string{"--addr", s.pesit, "--server-id", "PESITSRV", "--partner", "BENCH", "--sync-interval", interval,
		"--sync-window", strconv.Itoa(syncWindow), "--entity-size", strconv.Itoa(entitySize)}
	if pull {
		args = append([]string{"receive"}, append(args, "OUTBOX", dest)...)
	} else {
		args = append([]string{"send"}, append(args, "--file", "INBOX", src)...)
	}
	cmd := exec.Command(s.cmd.Path, args...)
	cmd.Env = append(os.Environ(), "VECTIS_PASSWORD="+pw("BENCH"))
	srv0 := procCPU(b, s.pid)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	el := time.Since(start)
	srv := procCPU(b, s.pid) - srv0
	if err != nil {
		b.Fatalf("vectis %s: %v\n%s", args[0], err, out)
	}
	cli := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if pull {
		checkPulled(b, dest, size)
	} else {
		in := filepath.Join(s.dir, "in", "BENCH")
		got, err := os.ReadDir(in)
		if err != nil || len(got) != 1 {
			b.Fatalf("vectis send: %s holds %v (%v), want the one file pushed", in, got, err)
		}
		if st, err := os.Stat(filepath.Join(in, got[0].Name())); err != nil || st.Size() != size {
			b.Fatalf("vectis send: %s: %v, want %d bytes", got[0].Name(), err, size)
		}
		if err := os.RemoveAll(in); err != nil {
			b.Fatal(err)
		}
	}
	return run{wall: el, cpu: cli + srv, server: srv}
}
