package testenv

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortsAreDistinctBindableAndNotEphemeral: ports handed out one at
// a time, each released before the next is drawn, never repeat (the CI
// failure was the same port handed to a node's API and PeSIT listeners),
// lie below the kernel's ephemeral range, and can be bound.
func TestFreePortsAreDistinctBindableAndNotEphemeral(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 300 {
		p := FreePorts(t, 1)[0]
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if p < lowestPort || p >= low {
			t.Fatalf("port %d outside [%d, %d)", p, lowestPort, low)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d: %v", p, err)
		}
		l.Close()
	}
}
