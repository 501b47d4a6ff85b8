package client

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/server"
)

// benchServerEnv makes TestMain run a pesit/server instead of the tests:
// BenchmarkConcurrentPushes re-executes the test binary with it, so that
// the server's peak RSS is measured alone. Value: "syncKB,window,entity,
// maxSessions".
const benchServerEnv = "VECTIS_BENCH_SERVER"

// runBenchServer serves on loopback, prints "ADDR host:port" on stdout and
// runs until stdin is closed. It returns the exit code.
func runBenchServer(spec string) int {
	var syncKB, window, entity, maxSes int
	if _, err := fmt.Sscanf(spec, "%d,%d,%d,%d", &syncKB, &window, &entity, &maxSes); err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q: %v\n", benchServerEnv, spec, err)
		return 2
	}
	root, err := os.MkdirTemp("", "vectis-bench-server-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(root)
	dir := &memDirectory{in: filepath.Join(root, "in"), out: filepath.Join(root, "out"), recFormat: server.RecordVariable, dataCode: 2}
	for _, d := range []string{dir.in, dir.out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	cfg := server.Config{ID: "VECTIS", Addr: "127.0.0.1:0", SyncIntervalKB: uint16(syncKB), SyncWindow: uint8(window),
		MaxEntitySize: entity, MaxSessions: maxSes, InactivityTimeout: 2 * time.Minute,
		MaxConnsPerAddr: -1} // every bench client comes from 127.0.0.1
	srv, err := server.New(cfg, server.Deps{Directory: dir, Journal: &memJournal{}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if path := os.Getenv("VECTIS_BENCH_SERVER_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	fmt.Printf("ADDR %s\n", srv.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// benchServer is a pesit/server in a child process.
type benchServer struct {
	addr string
	pid  int
	stop func() error
}

func startBenchServer(b *testing.B, syncKB uint16, window uint8, entity, maxSes int) *benchServer {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d,%d,%d", benchServerEnv, syncKB, window, entity, maxSes))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var once sync.Once
	var werr error
	stop := func() error {
		once.Do(func() {
			stdin.Close()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case werr = <-done:
			case <-time.After(40 * time.Second):
				_ = cmd.Process.Kill()
				werr = fmt.Errorf("bench server did not stop: %v", <-done)
			}
		})
		return werr
	}
	b.Cleanup(func() { _ = stop() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		b.Fatalf("bench server: %q, %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return &benchServer{addr: addr, pid: cmd.Process.Pid, stop: stop}
}
