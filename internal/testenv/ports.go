package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Tests hand ports to programs that bind them later (a node's API and PeSIT
// listeners, PostgreSQL, etcd, kube-apiserver), so the port is free when it
// is chosen and must still be free when it is used. The usual trick, bind
// 127.0.0.1:0 and close, fails both ways: the kernel may return the same
// ephemeral port to the next bind(0) once the first listener is closed (CI
// saw a node's API and PeSIT server get the same port), and every outgoing
// connection on the machine draws its local port from that same range.
//
// So ports come from below the ephemeral range, where neither bind(0) nor
// connect(2) ever allocates, at random so that test binaries running side by
// side rarely meet, and never twice in one process. The set of handed-out
// ports is process-wide because the resource it guards is.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// lowestPort is the bottom of the range ports are drawn from; the top is
// just below the kernel's ephemeral range.
const lowestPort = 20000

// FreePort returns a TCP port that nothing listened on at 127.0.0.1 when it
// was checked and that this process has not handed out before.
func FreePort() (int, error) {
	hi := ephemeralLow()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 1000 {
		port := lowestPort + rand.IntN(hi-lowestPort)
		if handedOut.ports[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken
		}
		l.Close()
		handedOut.ports[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("testenv: no free port in [%d, %d) after 1000 tries", lowestPort, hi)
}

// FreePorts returns n distinct ports from FreePort, or fails the test.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	return ports
}

// FreeAddr returns "127.0.0.1:port" for a port from FreePort, or fails the
// test.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePorts(t, 1)[0]))
}

// ephemeralLow is the first port of the kernel's ephemeral range, or 32768
// (Linux's default) when it cannot be read or leaves too little below it.
func ephemeralLow() int {
	const fallback = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallback
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return fallback
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil || low < lowestPort+1000 {
		return fallback
	}
	return low
}
