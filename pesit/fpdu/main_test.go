package fpdu

import (
	"testing"

	"go.uber.org/goleak"
)

// The TCP test starts a server goroutine; goleak checks that it ends.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
