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

// TestCampaignOnARevokedLeaseEndsTheSession: a member whose lease another
// member revoked (the fast failover path) learns it from its next campaign
// and ends its session there, instead of at its next renewal (TTL/5
// later), so that it joins again with a lease it can write with.
func TestCampaignOnARevokedLeaseEndsTheSession(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Size: 1})
	const ttl = 10 * time.Second // renewals every 2 s: far from this test's instants
	m := newMember(t, c.Endpoints(), "revoked", ttl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Client().Revoke(ctx, m.Lease()); err != nil {
		t.Fatal(err)
	}
	_, err := m.Campaign(ctx)
	if !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("campaign on a revoked lease: %v, want ErrLeaseExpired", err)
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("the session still runs after etcd said its lease is gone")
	}
	if !errors.Is(m.Err(), ErrLeaseExpired) {
		t.Fatalf("session ended with %v, want ErrLeaseExpired", m.Err())
	}
}
