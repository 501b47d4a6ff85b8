package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	waitPinned(t, n, 1)
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
	// The declared password was pinned at start-up: the first login costs
	// no derivation, but is audited and counted as a verified one.
	if checks("accepted") != 0 || checks("pinned") != 1 || checks("cached") != 1 || checks("rejected") != 5 {
		t.Errorf("credential checks: accepted %v pinned %v cached %v rejected %v; want 0, 1, 1, 5",
			checks("accepted"), checks("pinned"), checks("cached"), checks("rejected"))
	}
	// Identical guesses in flight share a derivation, so the count depends
	// on timing; the first guess waited for a slot.
	if w := value(fams, "vectis_credential_wait_seconds", map[string]string{"realm": "pesit"}); w < 1 || w > 20 {
		t.Errorf("wait histogram count %v, want 1 to 20",
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
	connect := func(password string) error { return login(n, "CXCLIENT", password) }
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

// waitPinned waits until node n has pinned want declared partner passwords
// (credentialPrimer), which it does in the background after starting.
func waitPinned(t *testing.T, n *testNode, want float64) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() error {
		got := value(scrape(t, n.api), "vectis_credential_checks_total", map[string]string{"realm": "pin", "result": "accepted"})
		if got != want {
			return fmt.Errorf("pinned declared passwords: %v, want %v", got, want)
		}
		return nil
	})
}

// A partner password declared in plain text is pinned on every node at
// start-up, so that no login of that partner pays a derivation, even the
// first one on a node that has never served it (a standby that just became
// leader); a change of the partner through the API unpins it, and the
// declared password, no longer the stored one, is not pinned again.
func TestDeclaredPasswordPinned(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, baseConfig(t, dir, "pinned"))
	waitPinned(t, n, 1)
	connect := func(password string) error { return login(n, "CXCLIENT", password) }
	checks := func(result string) float64 { return pesitChecks(t, n, result) }
	for range 3 {
		if err := connect("test123"); err != nil {
			t.Fatal(err)
		}
	}
	if checks("accepted") > 0 || checks("pinned") != 1 || checks("cached") != 2 {
		t.Errorf("3 logins with the declared password: %v derived, %v pinned, %v cached; want 0, 1, 2",
			checks("accepted"), checks("pinned"), checks("cached"))
	}
	if err := connect("wrong"); err == nil {
		t.Error("a wrong password was accepted beside a pinned one")
	}

	if code, body := n.do(t, "PUT", "/api/v1/partners/CXCLIENT/password", map[string]string{"password": "n3wpass"}); code/100 != 2 {
		t.Fatalf("password change: %d %s", code, body)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if err := connect("test123"); err == nil {
			return errors.New("the declared password still accepted after the API changed it")
		}
		return nil
	})
	if err := connect("n3wpass"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if got := checks("accepted"); got != 1 {
		t.Errorf("derivations for the first login with the changed password = %v, want 1", got)
	}
	if got := value(scrape(t, n.api), "vectis_credential_checks_total", map[string]string{"realm": "pin", "result": "rejected"}); got < 1 {
		t.Errorf("pin of the stale declared password after the change: %v rejected, want it tried and refused", got)
	}
}

// login opens a PeSIT session on n as partner with password, and closes it.
func login(n *testNode, partner, password string) error {
	s, err := client.Dial(context.Background(), clientConfig(n.pesit, partner, password))
	if err != nil {
		return err
	}
	return s.Close()
}

// pesitChecks is vectis_credential_checks_total{realm="pesit",result} on n.
func pesitChecks(t *testing.T, n *testNode, result string) float64 {
	return value(scrape(t, n.api), "vectis_credential_checks_total", map[string]string{"realm": "pesit", "result": result})
}

// TestStandbyPinsBeforeLeading: a standby pins the declared passwords too,
// so that when it takes over (here after the leader's SIGTERM) the first
// CONNECT of the partner costs it no derivation.
func TestStandbyPinsBeforeLeading(t *testing.T) {
	leader, standby := startCluster(t, t.TempDir(), 5*time.Second)
	waitPinned(t, standby, 1)
	if st, ok := statusOf(t, standby); !ok || st.IsLeader {
		t.Fatalf("standby status %+v (%v): want a standby", st, ok)
	}
	<-stopAsync(t, leader)
	waitServing(t, standby.pesit, 15*time.Second)
	testenv.Eventually(t, 10*time.Second, func() error { return login(standby, "CXCLIENT", "test123") })
	if got := pesitChecks(t, standby, "accepted"); got != 0 {
		t.Errorf("the new leader derived %v passwords for the first logins of a declared partner, want 0", got)
	}
	if got := pesitChecks(t, standby, "pinned"); got != 1 {
		t.Errorf("pinned logins on the new leader = %v, want 1", got)
	}
}
