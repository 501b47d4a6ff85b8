package api_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/store"
)

func TestPartnerCRUD(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		var p store.Partner
		r := e.must(201, asAdmin, "POST", "/api/v1/partners", map[string]any{
			"id": "CXCLIENT", "description": "Connect:Express", "access": "write",
			"files": []string{"INBOX"}, "maxSessions": 4, "password": "test123",
		})
		r.json(t, &p)
		if r.header.Get("Location") != "/api/v1/partners/CXCLIENT" || p.ID != "CXCLIENT" || !p.Enabled ||
			p.Access != store.AccessWrite || p.MaxSessions != 4 || len(p.Files) != 1 || p.CreatedAt.IsZero() {
			t.Fatalf("created %+v (Location %q)", p, r.header.Get("Location"))
		}
		hash, err := st.PartnerPasswordHash(ctx, "CXCLIENT")
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := store.VerifyPassword(hash, "test123"); !ok {
			t.Fatal("stored hash does not verify the password given at creation")
		}
		// Duplicate: 409.
		if code := e.must(409, asAdmin, "POST", "/api/v1/partners", map[string]any{"id": "CXCLIENT", "password": "x"}).errorCode(t); code != "conflict" {
			t.Errorf("duplicate create: %s", code)
		}
		// Get, list.
		e.must(200, asViewer, "GET", "/api/v1/partners/CXCLIENT", nil).json(t, &p)
		var l struct {
			Items []store.Partner
			Total int
		}
		e.must(200, asViewer, "GET", "/api/v1/partners", nil).json(t, &l)
		if l.Total != 1 || len(l.Items) != 1 || l.Items[0].ID != "CXCLIENT" {
			t.Errorf("list %+v", l)
		}
		// Update replaces the settings and leaves the password alone.
		p = store.Partner{}
		e.must(200, asAdmin, "PUT", "/api/v1/partners/CXCLIENT", map[string]any{
			"id": "CXCLIENT", "access": "both", "enabled": false, "description": "disabled",
		}).json(t, &p)
		if p.Access != store.AccessBoth || p.Enabled || p.Description != "disabled" || len(p.Files) != 0 {
			t.Errorf("updated %+v", p)
		}
		if h2, _ := st.PartnerPasswordHash(ctx, "CXCLIENT"); h2 != hash {
			t.Error("update changed the password hash")
		}
		// The password is write-only: refused in an update, changed only
		// through /password.
		r = e.must(400, asAdmin, "PUT", "/api/v1/partners/CXCLIENT", map[string]any{"access": "both", "password": "x"})
		if !strings.Contains(string(r.body), "/password") {
			t.Errorf("password in update: %s", r.body)
		}
		e.must(400, asAdmin, "PUT", "/api/v1/partners/CXCLIENT", map[string]any{"id": "OTHER", "access": "both"})
		e.must(204, asAdmin, "PUT", "/api/v1/partners/CXCLIENT/password", map[string]any{"password": "n3w-pw"})
		hash, _ = st.PartnerPasswordHash(ctx, "CXCLIENT")
		if ok, _ := store.VerifyPassword(hash, "n3w-pw"); !ok {
			t.Error("new password does not verify")
		}
		for _, bad := range []string{"", "123456789", " lead", "tab\there"} {
			e.must(400, asAdmin, "PUT", "/api/v1/partners/CXCLIENT/password", map[string]any{"password": bad})
		}
		e.must(404, asAdmin, "PUT", "/api/v1/partners/NOPE/password", map[string]any{"password": "abc"})
		e.must(404, asAdmin, "PUT", "/api/v1/partners/NOPE", map[string]any{"access": "both"})
		// A certificate-only partner needs no password; others do.
		e.must(201, asAdmin, "POST", "/api/v1/partners", map[string]any{"id": "CERTONLY", "certCN": "partner.example"})
		e.must(400, asAdmin, "POST", "/api/v1/partners", map[string]any{"id": "NOPW"})
		// Delete.
		e.must(204, asAdmin, "DELETE", "/api/v1/partners/CXCLIENT", nil)
		e.must(404, asViewer, "GET", "/api/v1/partners/CXCLIENT", nil)
		e.must(404, asAdmin, "DELETE", "/api/v1/partners/CXCLIENT", nil)
		// Audited with the actor.
		var audit store.AuditPage
		e.must(200, asAdmin, "GET", "/api/v1/audit?target=CXCLIENT&outcome=success", nil).json(t, &audit)
		var actions []string
		for _, ev := range audit.Items {
			if ev.Actor != "admin" {
				t.Errorf("audit actor %q", ev.Actor)
			}
			actions = append(actions, ev.Action)
		}
		if got := strings.Join(actions, ","); got != "partner.delete,partner.password,partner.update,partner.create" {
			t.Errorf("audit actions (newest first) %q", got)
		}
	})
}

func TestFileAndServerCRUD(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		var f store.VirtualFile
		e.must(201, asAdmin, "POST", "/api/v1/files", map[string]any{
			"id": "INBOX", "direction": "receive", "receiveDir": "./data/in",
			"namePattern": "${partner}/${file}-${transferId}", "maxSize": 1 << 20,
		}).json(t, &f)
		if f.RecordFormat != store.RecordVariable || f.DataCode != store.DataBinary || f.MaxSize != 1<<20 {
			t.Errorf("defaults not applied: %+v", f)
		}
		e.must(409, asAdmin, "POST", "/api/v1/files", map[string]any{"id": "INBOX", "direction": "send", "sendDir": "/out"})
		e.must(200, asAdmin, "PUT", "/api/v1/files/INBOX", map[string]any{
			"direction": "both", "receiveDir": "/in", "sendDir": "/out", "recordFormat": "fixed", "recordLength": 80, "dataCode": "ebcdic",
		}).json(t, &f)
		if f.Direction != store.FileBoth || f.RecordLength != 80 || f.DataCode != store.DataEBCDIC {
			t.Errorf("update %+v", f)
		}
		e.must(200, asViewer, "GET", "/api/v1/files/INBOX", nil).json(t, &f)
		if f.SendDir != "/out" {
			t.Errorf("get %+v", f)
		}
		// A PI 12 of 76 characters is fine, 77 is not.
		long := strings.Repeat("F", 76)
		e.must(201, asAdmin, "POST", "/api/v1/files", map[string]any{"id": long, "direction": "send", "sendDir": "/out"})
		e.must(200, asViewer, "GET", "/api/v1/files/"+long, nil)
		e.must(400, asAdmin, "POST", "/api/v1/files", map[string]any{"id": long + "F", "direction": "send", "sendDir": "/out"})
		var fl struct{ Total int }
		e.must(200, asViewer, "GET", "/api/v1/files", nil).json(t, &fl)
		if fl.Total != 2 {
			t.Errorf("files total %d", fl.Total)
		}
		e.must(204, asAdmin, "DELETE", "/api/v1/files/INBOX", nil)
		e.must(404, asViewer, "GET", "/api/v1/files/INBOX", nil)

		var s struct {
			store.Server
			Running bool
		}
		e.must(201, asAdmin, "POST", "/api/v1/servers", map[string]any{
			"id": "PESITSRV", "listen": ":5000", "maxSessions": 100,
			"tls": map[string]any{"listen": ":5001", "certFile": "/etc/vectis/tls.crt", "keyFile": "/etc/vectis/tls.key"},
		}).json(t, &s)
		if !s.AutoStart || s.TLS.Listen != ":5001" || s.Running {
			t.Errorf("created server %+v", s)
		}
		e.must(400, asAdmin, "POST", "/api/v1/servers", map[string]any{"id": "TLSNOKEY", "listen": ":5000", "tls": map[string]any{"listen": ":5001"}})
		e.must(200, asOper, "POST", "/api/v1/servers/PESITSRV/start", nil)
		e.must(200, asViewer, "GET", "/api/v1/servers/PESITSRV", nil).json(t, &s)
		if !s.Running {
			t.Error("running not reported after start")
		}
		e.must(200, asAdmin, "PUT", "/api/v1/servers/PESITSRV", map[string]any{"listen": "0.0.0.0:6000", "autoStart": false}).json(t, &s)
		if s.Listen != "0.0.0.0:6000" || s.AutoStart {
			t.Errorf("updated server %+v", s)
		}
		e.must(200, asOper, "POST", "/api/v1/servers/PESITSRV/stop", nil).json(t, &s)
		if s.Running || strings.Join(e.servers.calls, ",") != "start PESITSRV,apply PESITSRV,stop PESITSRV" {
			t.Errorf("after stop: running %v, calls %v", s.Running, e.servers.calls)
		}
		e.must(204, asAdmin, "DELETE", "/api/v1/servers/PESITSRV", nil)
		e.must(404, asViewer, "GET", "/api/v1/servers/PESITSRV", nil)
	})
}

func TestTransfersListFiltersPaginationStats(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		claim(t, st)
		type spec struct {
			partner string
			dir     store.TransferDirection
			status  store.TransferStatus
			bytes   int64
		}
		specs := []spec{
			{"CXCLIENT", store.DirReceive, store.StatusCompleted, 100},
			{"CXCLIENT", store.DirReceive, store.StatusFailed, 10},
			{"CFTBANK", store.DirSend, store.StatusCompleted, 1000},
			{"CFTBANK", store.DirReceive, store.StatusInProgress, 5},
			{"CXCLIENT", store.DirSend, store.StatusCompleted, 50},
		}
		var mid time.Time
		var ids []string
		for i, s := range specs {
			tr := newTransfer(t, st, store.Transfer{PartnerID: s.partner, FileID: "INBOX", Direction: s.dir, PesitID: int64(i + 1)})
			if s.status != store.StatusInProgress {
				if err := st.FinishTransfer(ctx, 1, tr.ID, store.TransferResult{Status: s.status, Bytes: s.bytes}); err != nil {
					t.Fatal(err)
				}
			} else if err := st.AddTransferProgress(ctx, 1, tr.ID, s.bytes, 1); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, tr.ID)
			if i == 2 {
				// The store stamps transfers with the wall clock: the
				// pauses are the time between the two groups that the
				// from/to filters below must tell apart.
				time.Sleep(20 * time.Millisecond)
				mid = time.Now().UTC()
				time.Sleep(20 * time.Millisecond)
			}
		}
		list := func(q string) store.TransferPage {
			t.Helper()
			var p store.TransferPage
			e.must(200, asViewer, "GET", "/api/v1/transfers"+q, nil).json(t, &p)
			return p
		}
		count := func(q string) int { return len(list(q).Items) }
		for q, want := range map[string]int{
			"":                  5,
			"?status=completed": 3,
			"?partner=CXCLIENT": 3,
			"?direction=send":   2,
			"?partner=CFTBANK&direction=receive&status=in_progress": 1,
			"?file=INBOX": 5,
			"?file=OTHER": 0,
			"?from=" + url.QueryEscape(mid.Format(time.RFC3339Nano)): 2,
			"?to=" + url.QueryEscape(mid.Format(time.RFC3339Nano)):   3,
		} {
			if got := count(q); got != want {
				t.Errorf("GET /api/v1/transfers%s: %d items, want %d", q, got, want)
			}
		}
		// Pagination: newest first, two per page, the cursor walks them all once.
		var seen []string
		q := "?limit=2"
		for pages := 0; ; pages++ {
			if pages > 5 {
				t.Fatal("pagination does not end")
			}
			p := list(q)
			if len(p.Items) > 2 {
				t.Fatalf("page of %d with limit=2", len(p.Items))
			}
			for _, it := range p.Items {
				seen = append(seen, it.ID)
			}
			if p.Next == "" {
				break
			}
			q = "?limit=2&cursor=" + url.QueryEscape(p.Next)
		}
		want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
		if fmt.Sprint(seen) != fmt.Sprint(want) {
			t.Errorf("paged ids %v, want newest first %v", seen, want)
		}
		// One transfer.
		var one store.Transfer
		e.must(200, asViewer, "GET", "/api/v1/transfers/"+ids[2], nil).json(t, &one)
		if one.PartnerID != "CFTBANK" || one.Bytes != 1000 || one.Status != store.StatusCompleted || one.FinishedAt.IsZero() {
			t.Errorf("transfer %+v", one)
		}
		e.must(404, asViewer, "GET", "/api/v1/transfers/no-such-transfer", nil)
		// Stats.
		var stats struct {
			Total            int
			ByStatus         map[string]int
			ByDirection      map[string]int
			Bytes            int64
			BytesByDirection map[string]int64
		}
		e.must(200, asViewer, "GET", "/api/v1/transfers/stats", nil).json(t, &stats)
		if stats.Total != 5 || stats.ByStatus["completed"] != 3 || stats.ByStatus["failed"] != 1 || stats.ByStatus["in_progress"] != 1 ||
			stats.ByDirection["send"] != 2 || stats.ByDirection["receive"] != 3 || stats.Bytes != 1165 ||
			stats.BytesByDirection["send"] != 1050 || stats.BytesByDirection["receive"] != 115 {
			t.Errorf("stats %+v", stats)
		}
		e.must(200, asViewer, "GET", "/api/v1/transfers/stats?partner=CFTBANK", nil).json(t, &stats)
		if stats.Total != 2 || stats.Bytes != 1005 {
			t.Errorf("stats for CFTBANK %+v", stats)
		}
		// Bad parameters are 400 naming the parameter.
		for _, q := range []string{"?status=done", "?direction=up", "?from=yesterday", "?limit=0", "?limit=1001", "?limit=x",
			"?partner=" + strings.Repeat("P", 25), "?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "?cursor=" + strings.Repeat("c", 600)} {
			r := e.must(400, asViewer, "GET", "/api/v1/transfers"+q, nil)
			if r.errorCode(t) != "bad_request" {
				t.Errorf("%s: %s", q, r.body)
			}
		}
		e.must(400, asViewer, "GET", "/api/v1/transfers/stats?status=done", nil)
	})
}

func TestAuditFilters(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st)
	e.must(201, asAdmin, "POST", "/api/v1/files", map[string]any{"id": "A1", "direction": "send", "sendDir": "/out"})
	e.must(403, asViewer, "DELETE", "/api/v1/files/A1", nil)
	e.must(401, cred{user: "admin", password: "wrong-password"}, "GET", "/api/v1/files", nil)
	var p store.AuditPage
	e.must(200, asAdmin, "GET", "/api/v1/audit", nil).json(t, &p)
	if len(p.Items) != 3 {
		t.Fatalf("audit %+v", p.Items)
	}
	for q, want := range map[string]string{
		"?action=file.create":              "admin file.create A1 success",
		"?outcome=denied":                  "viewer api.authorize DELETE /api/v1/files/A1 denied",
		"?action=api.auth&outcome=failure": "admin api.auth GET /api/v1/files failure",
		"?actor=viewer":                    "viewer api.authorize DELETE /api/v1/files/A1 denied",
	} {
		e.must(200, asAdmin, "GET", "/api/v1/audit"+q, nil).json(t, &p)
		if len(p.Items) != 1 {
			t.Errorf("%s: %d events", q, len(p.Items))
			continue
		}
		ev := p.Items[0]
		if got := strings.Join([]string{ev.Actor, ev.Action, ev.Target, string(ev.Outcome)}, " "); got != want {
			t.Errorf("%s: %q, want %q", q, got, want)
		}
	}
	e.must(200, asAdmin, "GET", "/api/v1/audit?limit=1", nil).json(t, &p)
	if len(p.Items) != 1 || p.Next == "" {
		t.Errorf("limit=1: %d items, next %q", len(p.Items), p.Next)
	}
	e.must(400, asAdmin, "GET", "/api/v1/audit?outcome=maybe", nil)
	e.must(400, asAdmin, "GET", "/api/v1/audit?from=nope", nil)
}
