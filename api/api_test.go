package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/api"
	"github.com/vectis-ft/vectis/store"
)

// threeMembers is a cluster view as the HA layer reports it.
type threeMembers struct{ leader bool }

func (c threeMembers) Status(context.Context) (api.ClusterStatus, error) {
	return api.ClusterStatus{
		ClusterName: "vectis-cluster",
		IsLeader:    c.leader,
		Members: []api.Member{
			{Name: "vectis-0", Address: "10.0.0.10", IsLeader: true},
			{Name: "vectis-1", Address: "10.0.0.11"},
			{Name: "vectis-2", Address: "10.0.0.12"},
		},
		Leader:      "vectis-0",
		Epoch:       7,
		LeaderSince: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}, nil
}

// noLeader is a standby that sees no leader (between two terms).
type noLeader struct{}

func (noLeader) Status(context.Context) (api.ClusterStatus, error) {
	return api.ClusterStatus{ClusterName: "vectis-cluster", Members: []api.Member{{Name: "vectis-1", Address: "10.0.0.11"}}, MemberCount: 1}, nil
}

func TestClusterStatusJSON(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	cases := []struct {
		name    string
		view    api.ClusterView
		want    string // the documented contract, exactly
		extras  map[string]any
		members int
	}{
		{
			name: "standalone",
			view: api.Standalone{ClusterName: "vectis-cluster", Name: "vectis-0", Address: "10.0.0.10"},
			want: `{"clusterName": "vectis-cluster", "isLeader": true,
				"members": [{"name": "vectis-0", "address": "10.0.0.10", "isLeader": true}], "memberCount": 1}`,
		},
		{
			name: "standby of three",
			view: threeMembers{leader: false},
			want: `{"clusterName": "vectis-cluster", "isLeader": false, "members": [
				{"name": "vectis-0", "address": "10.0.0.10", "isLeader": true},
				{"name": "vectis-1", "address": "10.0.0.11", "isLeader": false},
				{"name": "vectis-2", "address": "10.0.0.12", "isLeader": false}], "memberCount": 3}`,
			extras: map[string]any{"epoch": float64(7), "leader": "vectis-0", "leaderSince": "2026-01-02T03:04:05Z"},
		},
	}
	cases = append(cases, struct {
		name    string
		view    api.ClusterView
		want    string
		extras  map[string]any
		members int
	}{
		name: "no leader",
		view: noLeader{},
		want: `{"clusterName": "vectis-cluster", "isLeader": false,
			"members": [{"name": "vectis-1", "address": "10.0.0.11", "isLeader": false}], "memberCount": 1}`,
		extras: map[string]any{"leader": nil},
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, st, func(cfg *api.Config) { cfg.Cluster = c.view; cfg.Leadership = nil })
			r := e.must(200, asViewer, "GET", "/api/cluster/status", nil)
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var got, want map[string]any
			r.json(t, &got)
			if err := json.Unmarshal([]byte(c.want), &want); err != nil {
				t.Fatal(err)
			}
			for k, v := range want {
				if !reflect.DeepEqual(got[k], v) {
					t.Errorf("%s = %#v, want %#v", k, got[k], v)
				}
			}
			// Members carry exactly name, address, isLeader.
			for _, m := range got["members"].([]any) {
				if len(m.(map[string]any)) != 3 {
					t.Errorf("member %v has fields beyond name, address, isLeader", m)
				}
			}
			for k, v := range c.extras {
				if _, ok := got[k]; !ok {
					t.Errorf("extra %s missing", k)
				}
				if !reflect.DeepEqual(got[k], v) {
					t.Errorf("extra %s = %#v, want %#v", k, got[k], v)
				}
			}
			// The documented keys come first, in the documented order.
			if !strings.HasPrefix(string(r.body), `{"clusterName":"vectis-cluster","isLeader":`) ||
				!strings.Contains(string(r.body), `],"memberCount":`) {
				t.Errorf("key order differs from the contract: %s", r.body)
			}
		})
	}
}

// TestStandbyRefusesLiveActions: on a standby, starting or stopping a server
// and cancelling a transfer answer 409 naming the leader, and reach no
// listener or session; configuration writes still work (they go to the
// shared store).
func TestStandbyRefusesLiveActions(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st)
	e.leader.set(false, "vectis-1")
	e.must(201, asAdmin, "POST", "/api/v1/servers", map[string]any{"id": "PESITSRV", "listen": ":5000"})
	claim(t, st)
	tr := newTransfer(t, st, store.Transfer{PartnerID: "CXCLIENT", FileID: "INBOX"})
	e.cancel.live[tr.ID] = true
	for _, path := range []string{"/api/v1/servers/PESITSRV/start", "/api/v1/servers/PESITSRV/stop", "/api/v1/transfers/" + tr.ID + "/cancel"} {
		r := e.must(409, asOper, "POST", path, nil)
		var body struct{ Error, Message, Leader string }
		r.json(t, &body)
		if body.Error != "not_leader" || body.Leader != "vectis-1" || !strings.Contains(body.Message, `"vectis-1"`) {
			t.Errorf("POST %s on a standby: %s", path, r.body)
		}
	}
	if len(e.servers.calls) != 0 || len(e.cancel.cancelled) != 0 {
		t.Errorf("a standby acted: servers %v, cancelled %v", e.servers.calls, e.cancel.cancelled)
	}
	// Becoming leader makes the same calls work.
	e.leader.set(true, "vectis-0")
	var sv struct{ Running bool }
	e.must(200, asOper, "POST", "/api/v1/servers/PESITSRV/start", nil).json(t, &sv)
	if !sv.Running {
		t.Error("start answered running=false")
	}
	e.must(202, asOper, "POST", "/api/v1/transfers/"+tr.ID+"/cancel", nil)
	// A start the server manager refuses is a 409 with its reason.
	e.servers.fail = errors.New("listen tcp :5000: bind: address already in use")
	r := e.must(409, asOper, "POST", "/api/v1/servers/PESITSRV/start", nil)
	if !strings.Contains(string(r.body), "address already in use") {
		t.Errorf("start failure body %s", r.body)
	}
	e.must(404, asOper, "POST", "/api/v1/servers/NOPE/start", nil)
}

func TestCancelTransfer(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		claim(t, st)
		live := newTransfer(t, st, store.Transfer{PartnerID: "CXCLIENT", FileID: "INBOX"})
		idle := newTransfer(t, st, store.Transfer{PartnerID: "CXCLIENT", FileID: "INBOX", Status: store.StatusInterrupted})
		done := newTransfer(t, st, store.Transfer{PartnerID: "CXCLIENT", FileID: "INBOX", Status: store.StatusCompleted})
		e.cancel.live[live.ID] = true

		e.must(202, asOper, "POST", "/api/v1/transfers/"+live.ID+"/cancel", nil)
		if len(e.cancel.cancelled) != 1 || e.cancel.cancelled[0] != live.ID {
			t.Fatalf("cancelled %v, want [%s]", e.cancel.cancelled, live.ID)
		}
		// No session any more: 409, not a second IDT.
		if code := e.must(409, asOper, "POST", "/api/v1/transfers/"+live.ID+"/cancel", nil).errorCode(t); code != "conflict" {
			t.Errorf("second cancel: %s", code)
		}
		e.must(409, asOper, "POST", "/api/v1/transfers/"+idle.ID+"/cancel", nil)
		r := e.must(409, asOper, "POST", "/api/v1/transfers/"+done.ID+"/cancel", nil)
		if !strings.Contains(string(r.body), "completed") {
			t.Errorf("cancel of a completed transfer: %s", r.body)
		}
		e.must(404, asOper, "POST", "/api/v1/transfers/00000000-0000-0000-0000-000000000000/cancel", nil)
		if len(e.cancel.cancelled) != 1 {
			t.Errorf("cancelled %v", e.cancel.cancelled)
		}
		var audit store.AuditPage
		e.must(200, asViewer, "GET", "/api/v1/audit?action=transfer.cancel&outcome=success", nil).json(t, &audit)
		if len(audit.Items) != 1 || audit.Items[0].Target != live.ID || audit.Items[0].Actor != "operator" {
			t.Errorf("audit of the cancel: %+v", audit.Items)
		}
	})
}

func TestHealthReadinessMetrics(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st)
	e.must(200, anon, "GET", "/healthz", nil)
	e.must(200, anon, "GET", "/readyz", nil)
	e.ready.mu.Lock()
	e.ready.err = errors.New("store: database unavailable")
	e.ready.mu.Unlock()
	rr := e.must(503, anon, "GET", "/readyz", nil)
	if code := rr.errorCode(t); code != "unavailable" || strings.Contains(string(rr.body), "database unavailable") {
		t.Errorf("readyz %s: want unavailable without the internal reason", rr.body)
	}
	if !strings.Contains(e.logs.String(), "database unavailable") {
		t.Error("the reason of not ready is not logged")
	}
	e.must(200, anon, "GET", "/healthz", nil) // liveness does not depend on the store

	e.must(200, asViewer, "GET", "/api/v1/partners", nil)
	m := string(e.must(200, anon, "GET", "/metrics", nil).body)
	for _, want := range []string{
		`vectis_api_requests_total{code="200",method="GET",route="/api/v1/partners"} 1`,
		`vectis_api_requests_total{code="503",method="GET",route="/readyz"} 1`,
		"vectis_api_request_duration_seconds_bucket",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// With MetricsAuth the scrape needs a viewer.
	e2 := newEnv(t, st, func(c *api.Config) { c.MetricsAuth = true })
	e2.must(401, anon, "GET", "/metrics", nil)
	e2.must(200, asViewer, "GET", "/metrics", nil)

	// Without a registry there is no /metrics.
	e3 := newEnv(t, st, func(c *api.Config) { c.Metrics = nil })
	e3.must(404, anon, "GET", "/metrics", nil)
}

func TestNewRejectsBadConfig(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	cl := api.Standalone{Name: "n"}
	for name, cfg := range map[string]api.Config{
		"no store":     {Cluster: cl},
		"no cluster":   {Store: st},
		"bad role":     {Store: st, Cluster: cl, Users: []api.StaticUser{{Name: "x", Password: "p", Role: "root"}}},
		"no password":  {Store: st, Cluster: cl, Users: []api.StaticUser{{Name: "x", Role: store.RoleAdmin}}},
		"bad hash":     {Store: st, Cluster: cl, Users: []api.StaticUser{{Name: "x", PasswordHash: "md5:abc", Role: store.RoleAdmin}}},
		"bad name":     {Store: st, Cluster: cl, Users: []api.StaticUser{{Name: "a b", Password: "p", Role: store.RoleAdmin}}},
		"twice":        {Store: st, Cluster: cl, Users: []api.StaticUser{{Name: "x", Password: "p", Role: store.RoleAdmin}, {Name: "x", Password: "q", Role: store.RoleViewer}}},
		"short bcrypt": {Store: st, Cluster: cl, Users: []api.StaticUser{{Name: "x", PasswordHash: "$2a$10$short", Role: store.RoleAdmin}}},
	} {
		if _, err := api.New(cfg); err == nil {
			t.Errorf("%s: New accepted the configuration", name)
		}
	}
	// A bcrypt hash from the configuration file is accepted and works.
	e := newEnv(t, st, func(c *api.Config) {
		c.Users = append(c.Users, api.StaticUser{Name: "ops", Role: store.RoleViewer,
			// bcrypt.GenerateFromPassword("correct horse", 10)
			PasswordHash: "$2a$10$7XddAL4YPUMrdA9GhP7jvuGa3dZuZWuoLxIkxsKLM.DUPN.xFBBqm"})
	})
	e.must(200, cred{user: "ops", password: "correct horse"}, "GET", "/api/v1/whoami", nil)
}
