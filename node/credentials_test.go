package node

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/client"
)

// Regression for issue 16 defects 1 and 3, on a real node (SQLite store,
// argon2id partner hash): wrong passwords are throttled without password
// work once the burst is spent, every derived login is audited, and a
// partner that proved its password recently still gets in from the same
// address while it is throttled (its credential is cached).
func TestPeSITLoginsThrottledAndAudited(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, baseConfig(t, dir, "guarded"))
	ctx := context.Background()
	good := clientConfig(n.pesit, "CXCLIENT", "test123")
	connect := func(cfg client.Config) error {
		s, err := client.Dial(ctx, cfg)
		if err != nil {
			return err
		}
		return s.Close()
	}
	if err := connect(good); err != nil {
		t.Fatalf("first login: %v", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	start := time.Now()
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := connect(clientConfig(n.pesit, "CXCLIENT", "guess")); err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed != 20 {
		t.Fatalf("%d of 20 wrong passwords refused", failed)
	}
	t.Logf("20 concurrent wrong passwords answered in %v", time.Since(start))
	// Throttled now: the good password is still accepted, from the cache.
	if err := connect(good); err != nil {
		t.Fatalf("login with the right password while throttled: %v", err)
	}

	fams := scrape(t, n.api)
	logins := func(result string) float64 {
		return value(fams, "vectis_pesit_logins_total", map[string]string{"result": result})
	}
	if logins("failure") != 5 || logins("throttled") != 15 || logins("success") != 2 {
		t.Errorf("logins: failure %v throttled %v success %v; want 5 (the burst), 15, 2",
			logins("failure"), logins("throttled"), logins("success"))
	}
	checks := func(result string) float64 {
		return value(fams, "vectis_credential_checks_total", map[string]string{"realm": "pesit", "result": result})
	}
	if checks("accepted") != 1 || checks("cached") != 1 || checks("rejected") != 5 {
		t.Errorf("credential checks: accepted %v cached %v rejected %v; want 1, 1, 5",
			checks("accepted"), checks("cached"), checks("rejected"))
	}
	// Identical guesses in flight share a derivation, so the count depends
	// on timing; the first login and the first guess waited for a slot.
	if w := value(fams, "vectis_credential_wait_seconds", map[string]string{"realm": "pesit"}); w < 2 || w > 21 {
		t.Errorf("wait histogram count %v, want 2 to 21",
			value(fams, "vectis_credential_wait_seconds", map[string]string{"realm": "pesit"}))
	}

	code, body := n.do(t, "GET", "/api/v1/audit?action=pesit.auth&limit=100", nil)
	if code != 200 {
		t.Fatalf("audit: %d %s", code, body)
	}
	var page struct {
		Items []struct {
			Actor, Target, Outcome, Detail string
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	for _, ev := range page.Items {
		outcomes[ev.Outcome]++
		if ev.Actor != "CXCLIENT" || ev.Target != "PESITSRV" || ev.Detail == "" {
			t.Errorf("audit event %+v", ev)
		}
	}
	if outcomes["success"] != 1 || outcomes["failure"] != 5 {
		t.Errorf("pesit.auth audit outcomes %v, want 1 success (derived) and 5 failures", outcomes)
	}
}

// Issue 17 item 3: a CONNECT reads its partner from the in-memory view, not
// the store, and the view follows API changes: a disabled partner is
// refused, a new password replaces the old one (also in the cache).
func TestPartnerViewFollowsChanges(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, baseConfig(t, dir, "viewed"))
	ctx := context.Background()
	connect := func(password string) error {
		s, err := client.Dial(ctx, clientConfig(n.pesit, "CXCLIENT", password))
		if err != nil {
			return err
		}
		return s.Close()
	}
	storeOps := func(op string) float64 {
		v := value(scrape(t, n.api), "vectis_store_operation_seconds", map[string]string{"operation": op})
		if v < 0 {
			t.Fatal("no vectis_store_operation_seconds on /metrics")
		}
		return v
	}
	if err := connect("test123"); err != nil {
		t.Fatal(err)
	}
	before := storeOps("get_partner") + storeOps("partner_password_hash")
	for range 10 {
		if err := connect("test123"); err != nil {
			t.Fatal(err)
		}
	}
	if after := storeOps("get_partner") + storeOps("partner_password_hash"); after != before {
		t.Errorf("10 CONNECTs made %v partner reads from the store, want 0 (the view)", after-before)
	}

	if code, body := n.do(t, "PUT", "/api/v1/partners/CXCLIENT/password", map[string]string{"password": "n3wpass"}); code/100 != 2 {
		t.Fatalf("password change: %d %s", code, body)
	}
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("the old password refused", func() bool { return connect("test123") != nil }))
	if err := connect("n3wpass"); err != nil {
		t.Errorf("new password: %v", err)
	}
	if code, body := n.do(t, "PUT", "/api/v1/partners/CXCLIENT", map[string]any{"access": "both", "enabled": false}); code/100 != 2 {
		t.Fatalf("disable: %d %s", code, body)
	}
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("the disabled partner refused", func() bool { return connect("n3wpass") != nil }))
}
