package testenv

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// Eventually calls cond until it returns nil and fails the test, with
// cond's last error, if that does not happen within timeout. cond says
// what it waits for in its error ("2 members, want 3"), so a failure reads
// as the state the test was stuck in. The timeout is a bound on a hang, not
// a claim about speed: give it room on a slow, shared machine.
//
// Call it from the test's goroutine (it may call t.Fatalf).
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("not within %v: %v", timeout, err)
	}
}

// Poll calls cond until it returns nil or timeout passes, and returns
// cond's last error then. It polls quickly at first and backs off to
// every 50 ms, so a condition that holds soon is seen soon.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// Until adapts a boolean condition for Eventually; its failure says only
// that the condition stayed false, so prefer an error that names the
// state where one is at hand.
func Until(cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errStillFalse
	}
}

var errStillFalse = errors.New("condition still false")

// Awaiting is Until with a name: its failure says what the test was
// waiting for ("session end"), for a condition that has no state of its
// own worth reporting.
func Awaiting(what string, cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("still waiting for %s", what)
	}
}
