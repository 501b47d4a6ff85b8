package election

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
)

// TestConfirmReadsTheKeyNow: Confirm answers from a read made after it was
// called. While the key is the leadership's it returns nil; once the key
// is deleted (a standby revoked the lease, an operator removed it) it
// returns ErrKeyDeleted and ends the leadership, even though no watch
// event or confirmation tick has reported the deletion yet.
func TestConfirmReadsTheKeyNow(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Size: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newMember(t, c.Endpoints(), "a", 5*time.Second)
	la := mustWin(t, campaignAsync(ctx, a), "a").l
	if err := la.Confirm(ctx); err != nil {
		t.Fatalf("Confirm while leading: %v", err)
	}
	if _, err := c.Client(t).Delete(ctx, la.Key()); err != nil {
		t.Fatal(err)
	}
	// No wait: the next read already sees the deletion.
	if err := la.Confirm(ctx); !errors.Is(err, ErrKeyDeleted) {
		t.Fatalf("Confirm after the key's deletion: %v, want ErrKeyDeleted", err)
	}
	select {
	case <-la.Done():
	default:
		t.Fatal("leadership still on after Confirm found its key gone")
	}
	if err := la.Confirm(ctx); err == nil {
		t.Fatal("Confirm after the end of leadership returned nil")
	}
}
