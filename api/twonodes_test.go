package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/api"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/store"
)

// TestTwoNodesShareTheStore: two nodes, each with its own store handle on
// one PostgreSQL database, as in a cluster. A partner written through the
// standby's API is served at once by the leader's API, and the leader's
// store announces the change (what its PeSIT servers reload on); the live
// action on the standby is refused with the leader's name.
func TestTwoNodesShareTheStore(t *testing.T) {
	url := pgtest.Start(t)
	open := func() *store.Store {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := store.Open(ctx, store.Config{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return st
	}
	stA, stB := open(), open()
	leader := newEnv(t, stA)
	standby := newEnv(t, stB, func(c *api.Config) { c.Cluster = threeMembers{leader: false} })
	standby.leader.set(false, "vectis-0")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := stA.Subscribe(ctx)

	standby.must(201, asAdmin, "POST", "/api/v1/partners", map[string]any{"id": "CXCLIENT", "password": "test123"})
	var p store.Partner
	leader.must(200, asViewer, "GET", "/api/v1/partners/CXCLIENT", nil).json(t, &p)
	if p.ID != "CXCLIENT" {
		t.Fatalf("leader sees %+v", p)
	}
	select {
	case c := <-changes:
		if c.Kind != store.KindPartner || c.ID != "CXCLIENT" || c.Op != store.OpCreate {
			t.Errorf("change %+v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the leader's store announced no change")
	}
	standby.must(201, asAdmin, "POST", "/api/v1/servers", map[string]any{"id": "PESITSRV", "listen": ":5000"})
	r := standby.must(409, asOper, "POST", "/api/v1/servers/PESITSRV/stop", nil)
	var body struct{ Error, Leader string }
	r.json(t, &body)
	if body.Error != "not_leader" || body.Leader != "vectis-0" {
		t.Errorf("standby stop: %s", r.body)
	}
	leader.must(200, asOper, "POST", "/api/v1/servers/PESITSRV/stop", nil)
	var st api.ClusterStatus
	standby.must(200, asViewer, "GET", "/api/cluster/status", nil).json(t, &st)
	if st.IsLeader || st.MemberCount != 3 {
		t.Errorf("standby status %+v", st)
	}
}
