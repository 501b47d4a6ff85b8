// Package storetest is the conformance suite every store back end must pass.
// store's own tests run it against PostgreSQL and SQLite.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/bcrypt"

	"github.com/vectis-ft/vectis/store"
)

// NewConfig returns the configuration of a store on a fresh, empty database.
// Opening it twice gives two Store values on the same database.
type NewConfig func(t testing.TB) store.Config

// Run runs the suite. Each subtest gets its own database.
func Run(t *testing.T, newConfig NewConfig) {
	tests := []struct {
		name string
		fn   func(t *testing.T, newConfig NewConfig)
	}{
		{"Migrations", testMigrations},
		{"Partners", testPartners},
		{"Files", testFiles},
		{"Servers", testServers},
		{"Leadership", testLeadership},
		{"FencingUnderLoad", testFencingUnderLoad},
		{"Ownership", testOwnership},
		{"Transfers", testTransfers},
		{"Unpublished", testUnpublished},
		{"TransferPagination", testTransferPagination},
		{"TransferStats", testTransferStats},
		{"ConcurrentTransferUpdates", testConcurrentTransferUpdates},
		{"Audit", testAudit},
		{"Purge", testPurge},
		{"UsersAndTokens", testUsersAndTokens},
		{"ExpireInterrupted", testExpireInterrupted},
		{"CancelResting", testCancelResting},
		{"AuditExcludePrefixes", testAuditExcludePrefixes},
		{"DotIDs", testDotIDs},
		{"ApplyDeclaredIdempotent", testApplyDeclared},
		{"ApplyDeclaredConcurrent", testApplyDeclaredConcurrent},
		{"ApplyDeclaredHashToPassword", testApplyDeclaredHashToPassword},
		{"Subscribe", testSubscribe},
		{"Watch", testWatch},
		{"ReadYourWrites", testReadYourWrites},
		{"Metrics", testMetrics},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newConfig) })
	}
}

// Open opens a store and closes it at cleanup.
func Open(t testing.TB, cfg store.Config) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustIs(t testing.TB, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want errors.Is(err, %v)", what, err, target)
	}
}

func must(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Fixtures shared by the tests.

// SamplePartner returns a valid partner.
func SamplePartner(id string) store.Partner {
	return store.Partner{ID: id, Description: "partner " + id, Enabled: true, Access: store.AccessBoth,
		Files: []string{"INBOX", "OUTBOX"}, MaxSessions: 4}
}

// SampleFile returns a valid virtual file.
func SampleFile(id string) store.VirtualFile {
	return store.VirtualFile{ID: id, Direction: store.FileBoth, ReceiveDir: "/data/in", SendDir: "/data/out",
		NamePattern: "${partner}/${file}-${transferId}", MaxSize: 1 << 30, RecordFormat: store.RecordVariable,
		RecordLength: 4096, DataCode: store.DataBinary}
}

// SampleServer returns a valid server definition.
func SampleServer(id string) store.Server {
	return store.Server{ID: id, Listen: ":5000", MaxSessions: 100, AutoStart: true,
		TLS: store.ServerTLS{Listen: ":5001", CertFile: "/tls/tls.crt", KeyFile: "/tls/tls.key"}}
}

// SampleTransfer returns a valid transfer to create.
func SampleTransfer(partner string, pesitID int64) store.Transfer {
	return store.Transfer{ServerID: "PESITSRV", PartnerID: partner, FileID: "INBOX", Direction: store.DirReceive,
		PesitID: pesitID, LocalPath: "/data/in/x", TempPath: "/data/in/.x.part", Node: "node-a",
		FileCreated: "260119012505"}
}

func testMigrations(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	before, err := s.MigrationStatus(ctx)
	must(t, err, "status")
	if len(before) == 0 {
		t.Fatal("no migrations")
	}
	for _, m := range before {
		if !m.Applied || m.AppliedAt.IsZero() {
			t.Fatalf("migration %d %s not applied after Open", m.Version, m.Name)
		}
	}
	must(t, s.Migrate(ctx), "re-run migrations")
	after, err := s.MigrationStatus(ctx)
	must(t, err, "status")
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("re-running migrations changed the version table:\nbefore %+v\nafter  %+v", before, after)
	}
}

func testPartners(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	hash, err := store.HashPassword("s3cret")
	must(t, err, "hash")
	p := SamplePartner("CXCLIENT")
	p.CertCN = "client.example"
	created, err := s.CreatePartner(ctx, p, hash)
	must(t, err, "create")
	if created.CreatedAt.IsZero() || !created.CreatedAt.Equal(created.UpdatedAt) {
		t.Fatalf("timestamps not set: %+v", created)
	}
	got, err := s.GetPartner(ctx, "CXCLIENT")
	must(t, err, "get")
	if !reflect.DeepEqual(got, created) {
		t.Fatalf("get returned %+v, want %+v", got, created)
	}
	_, err = s.CreatePartner(ctx, p, hash)
	mustIs(t, err, store.ErrConflict, "duplicate create")

	stored, err := s.PartnerPasswordHash(ctx, "CXCLIENT")
	must(t, err, "password hash")
	if ok, err := store.VerifyPassword(stored, "s3cret"); !ok || err != nil {
		t.Fatalf("stored hash does not verify: %v %v", ok, err)
	}
	if ok, _ := store.VerifyPassword(stored, "wrong"); ok {
		t.Fatal("wrong password verified")
	}
	hash2, _ := store.HashPassword("other")
	must(t, s.SetPartnerPassword(ctx, "CXCLIENT", hash2), "set password")
	stored, _ = s.PartnerPasswordHash(ctx, "CXCLIENT")
	if ok, _ := store.VerifyPassword(stored, "other"); !ok {
		t.Fatal("new password does not verify")
	}
	mustIs(t, s.SetPartnerPassword(ctx, "NOPE", hash2), store.ErrNotFound, "set password of missing partner")
	_, err = s.PartnerPasswordHash(ctx, "NOPE")
	mustIs(t, err, store.ErrNotFound, "password of missing partner")

	p.Description, p.Access, p.Files, p.Enabled = "changed", store.AccessRead, nil, false
	// Every fingerprint is kept, and the interop settings round-trip.
	p.CertCN, p.CertSHA256 = "", []string{"ab" + fmt.Sprintf("%062x", 7), "cd" + fmt.Sprintf("%062x", 8)}
	p.MultiArticle, p.Segment, p.Strict = true, true, true
	upd, err := s.UpdatePartner(ctx, p)
	must(t, err, "update")
	if !upd.MultiArticle || !upd.Segment || !upd.Strict || len(upd.CertSHA256) != 2 {
		t.Fatalf("update lost settings: %+v", upd)
	}
	if upd.Description != "changed" || upd.Access != store.AccessRead || upd.Files != nil || upd.Enabled ||
		!upd.CreatedAt.Equal(created.CreatedAt) || upd.UpdatedAt.Before(created.UpdatedAt) {
		t.Fatalf("update result %+v", upd)
	}
	got, _ = s.GetPartner(ctx, "CXCLIENT")
	if !reflect.DeepEqual(got, upd) {
		t.Fatalf("after update get %+v, want %+v", got, upd)
	}
	stored, _ = s.PartnerPasswordHash(ctx, "CXCLIENT")
	if ok, _ := store.VerifyPassword(stored, "other"); !ok {
		t.Fatal("UpdatePartner must not touch the password")
	}
	for _, fp := range p.CertSHA256 {
		byFP, err := s.PartnerByCert(ctx, "whatever", fp)
		must(t, err, "by fingerprint")
		if byFP.ID != "CXCLIENT" {
			t.Fatalf("by fingerprint: %s", byFP.ID)
		}
	}
	_, err = s.PartnerByCert(ctx, "", "ab"+fmt.Sprintf("%062x", 9))
	mustIs(t, err, store.ErrNotFound, "unknown fingerprint")
	_, err = s.PartnerByCert(ctx, "client.example", "")
	mustIs(t, err, store.ErrNotFound, "cleared CN mapping")

	_, err = s.UpdatePartner(ctx, SamplePartner("NOPE"))
	mustIs(t, err, store.ErrNotFound, "update missing")
	bad := SamplePartner("THIS-ID-IS-WAY-TOO-LONG-FOR-PI3")
	_, err = s.CreatePartner(ctx, bad, hash)
	mustIs(t, err, store.ErrInvalid, "too long id")
	bad = SamplePartner("OK")
	bad.Access = "all"
	_, err = s.CreatePartner(ctx, bad, hash)
	mustIs(t, err, store.ErrInvalid, "bad access")

	_, err = s.CreatePartner(ctx, SamplePartner("AAA"), hash)
	must(t, err, "create AAA")
	list, err := s.ListPartners(ctx)
	must(t, err, "list")
	if len(list) != 2 || list[0].ID != "AAA" || list[1].ID != "CXCLIENT" {
		t.Fatalf("list = %+v", list)
	}
	must(t, s.DeletePartner(ctx, "AAA"), "delete")
	mustIs(t, s.DeletePartner(ctx, "AAA"), store.ErrNotFound, "delete twice")
	_, err = s.GetPartner(ctx, "AAA")
	mustIs(t, err, store.ErrNotFound, "get deleted")
}

func testFiles(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	f := SampleFile("INBOX")
	created, err := s.CreateFile(ctx, f)
	must(t, err, "create")
	got, err := s.GetFile(ctx, "INBOX")
	must(t, err, "get")
	if !reflect.DeepEqual(got, created) {
		t.Fatalf("get %+v, want %+v", got, created)
	}
	_, err = s.CreateFile(ctx, f)
	mustIs(t, err, store.ErrConflict, "duplicate")
	f.Overwrite, f.DataCode, f.RecordFormat, f.RecordLength = true, store.DataEBCDIC, store.RecordFixed, 80
	upd, err := s.UpdateFile(ctx, f)
	must(t, err, "update")
	got, _ = s.GetFile(ctx, "INBOX")
	if !reflect.DeepEqual(got, upd) || !got.Overwrite || got.DataCode != store.DataEBCDIC || got.RecordLength != 80 {
		t.Fatalf("after update %+v", got)
	}
	_, err = s.UpdateFile(ctx, SampleFile("NOPE"))
	mustIs(t, err, store.ErrNotFound, "update missing")
	bad := SampleFile("X")
	bad.Direction = store.FileReceive
	bad.ReceiveDir = ""
	_, err = s.CreateFile(ctx, bad)
	mustIs(t, err, store.ErrInvalid, "receive without receiveDir")
	_, err = s.CreateFile(ctx, SampleFile("A"))
	must(t, err, "create A")
	list, err := s.ListFiles(ctx)
	must(t, err, "list")
	if len(list) != 2 || list[0].ID != "A" {
		t.Fatalf("list %+v", list)
	}
	must(t, s.DeleteFile(ctx, "A"), "delete")
	mustIs(t, s.DeleteFile(ctx, "A"), store.ErrNotFound, "delete twice")
	_, err = s.GetFile(ctx, "A")
	mustIs(t, err, store.ErrNotFound, "get deleted")
}

func testServers(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	v := SampleServer("PESITSRV")
	created, err := s.CreateServer(ctx, v)
	must(t, err, "create")
	got, err := s.GetServer(ctx, "PESITSRV")
	must(t, err, "get")
	if !reflect.DeepEqual(got, created) {
		t.Fatalf("get %+v, want %+v", got, created)
	}
	_, err = s.CreateServer(ctx, v)
	mustIs(t, err, store.ErrConflict, "duplicate")
	v.TLS = store.ServerTLS{}
	v.AutoStart = false
	v.Listen = "127.0.0.1:6000"
	_, err = s.UpdateServer(ctx, v)
	must(t, err, "update")
	got, _ = s.GetServer(ctx, "PESITSRV")
	if got.TLS != (store.ServerTLS{}) || got.AutoStart || got.Listen != "127.0.0.1:6000" {
		t.Fatalf("after update %+v", got)
	}
	bad := SampleServer("BAD")
	bad.Listen = "5000"
	_, err = s.CreateServer(ctx, bad)
	mustIs(t, err, store.ErrInvalid, "listen without port")
	_, err = s.UpdateServer(ctx, SampleServer("NOPE"))
	mustIs(t, err, store.ErrNotFound, "update missing")
	list, err := s.ListServers(ctx)
	must(t, err, "list")
	if len(list) != 1 {
		t.Fatalf("list %+v", list)
	}
	must(t, s.DeleteServer(ctx, "PESITSRV"), "delete")
	mustIs(t, s.DeleteServer(ctx, "PESITSRV"), store.ErrNotFound, "delete twice")
}

func testLeadership(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	l, err := s.Leadership(ctx)
	must(t, err, "leadership")
	if l.Epoch != 0 || l.Member != "" {
		t.Fatalf("fresh leadership %+v", l)
	}
	mustIs(t, s.CheckEpoch(ctx, 1), store.ErrStaleEpoch, "check before any claim")
	must(t, s.ClaimLeadership(ctx, 5, "a"), "claim 5 a")
	l1, _ := s.Leadership(ctx)
	if l1.Epoch != 5 || l1.Member != "a" || l1.Since.IsZero() {
		t.Fatalf("after claim %+v", l1)
	}
	must(t, s.ClaimLeadership(ctx, 5, "a"), "re-claim same epoch same member")
	l2, _ := s.Leadership(ctx)
	if !l2.Since.Equal(l1.Since) {
		t.Fatalf("re-claim moved since: %v -> %v", l1.Since, l2.Since)
	}
	mustIs(t, s.ClaimLeadership(ctx, 5, "b"), store.ErrStaleEpoch, "same epoch other member")
	mustIs(t, s.ClaimLeadership(ctx, 4, "b"), store.ErrStaleEpoch, "lower epoch")
	must(t, s.CheckEpoch(ctx, 5), "check current epoch")

	// A leader-only write carrying epoch N is rejected once N+1 is recorded;
	// the owner of a transfer may still write its sync points and outcome
	// (it drains), until a newer term takes the transfer over.
	tr, err := s.CreateTransfer(ctx, 5, SampleTransfer("P", 1))
	must(t, err, "create transfer at epoch 5")
	must(t, s.ClaimLeadership(ctx, 6, "b"), "claim 6 b")
	mustIs(t, s.CheckEpoch(ctx, 5), store.ErrStaleEpoch, "check old epoch")
	_, err = s.CreateTransfer(ctx, 5, SampleTransfer("P", 2))
	mustIs(t, err, store.ErrStaleEpoch, "create with old epoch")
	_, err = s.UpdateTransfer(ctx, 5, tr.ID, func(*store.Transfer) error { return nil })
	mustIs(t, err, store.ErrStaleEpoch, "update with old epoch")
	_, err = s.TakeOverTransfer(ctx, 5, "a", tr.ID, 5)
	mustIs(t, err, store.ErrStaleEpoch, "take over with old epoch")
	_, err = s.Purge(ctx, 5, time.Hour)
	mustIs(t, err, store.ErrStaleEpoch, "purge with old epoch")
	_, err = s.InterruptOrphans(ctx, 5, "a", func(store.Transfer) bool { return true })
	mustIs(t, err, store.ErrStaleEpoch, "orphan sweep with old epoch")
	must(t, s.RecordSyncPoint(ctx, 5, tr.ID, store.SyncPoint{Number: 1, Offset: 10, Articles: 1}), "owner drains")
	// Nor is a write from an epoch that does not own the transfer accepted.
	mustIs(t, s.RecordSyncPoint(ctx, 6, tr.ID, store.SyncPoint{Number: 2}), store.ErrNotOwner, "leader, not owner")
	mustIs(t, s.RecordSyncPoint(ctx, 7, tr.ID, store.SyncPoint{Number: 2}), store.ErrNotOwner, "unclaimed epoch")
	got, _ := s.GetTransfer(ctx, tr.ID)
	if got.SyncPoint != (store.SyncPoint{Number: 1, Offset: 10, Articles: 1}) || got.Status != store.StatusInProgress || got.Epoch != 5 {
		t.Fatalf("refused writes changed the record: %+v", got)
	}
	_, err = s.TakeOverTransfer(ctx, 6, "b", tr.ID, 5)
	must(t, err, "new leader takes over")
	mustIs(t, s.RecordSyncPoint(ctx, 5, tr.ID, store.SyncPoint{Number: 9}), store.ErrNotOwner, "old owner after takeover")
	mustIs(t, s.RecordSyncPointDeferred(ctx, 5, tr.ID, store.SyncPoint{Number: 9}), store.ErrNotOwner, "old owner's deferred write after takeover")
	mustIs(t, s.FinishTransfer(ctx, 5, tr.ID, store.TransferResult{Status: store.StatusCompleted}),
		store.ErrNotOwner, "old owner finishes after takeover")
	if !errors.Is(store.ErrNotOwner, store.ErrConflict) {
		t.Fatal("ErrNotOwner must be a conflict (HTTP 409)")
	}
	must(t, s.RecordSyncPoint(ctx, 6, tr.ID, store.SyncPoint{Number: 2, Offset: 20, Articles: 2}), "new owner writes")
	got, _ = s.GetTransfer(ctx, tr.ID)
	if got.Epoch != 6 || got.Node != "b" || got.SyncPoint.Number != 2 {
		t.Fatalf("owner not recorded on takeover: %+v", got)
	}
	mustIs(t, s.ClaimLeadership(ctx, 0, "x"), store.ErrInvalid, "epoch 0")

	// Leadership changes are audited, once per change (not per renewal).
	p, err := s.ListAudit(ctx, store.AuditFilter{Action: "leader.claim"})
	must(t, err, "audit")
	if len(p.Items) != 2 || p.Items[0].Actor != "b" || p.Items[0].Target != "epoch 6" || p.Items[1].Actor != "a" {
		t.Fatalf("leadership audit %+v", p.Items)
	}
}

// testFencingUnderLoad: the owner hammers a transfer with epoch 1 while
// another member claims epoch 2, takes the transfer over and writes a marker.
// From the moment the takeover returns, no epoch-1 write may succeed, and the
// marker must survive.
func testFencingUnderLoad(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	cfg := newConfig(t)
	oldLeader := Open(t, cfg)
	newLeader := oldLeader
	if oldLeader.Driver() == store.DriverPostgres {
		newLeader = Open(t, cfg) // another process, as far as the database can tell
	}
	must(t, oldLeader.ClaimLeadership(ctx, 1, "old"), "claim 1")
	tr, err := oldLeader.CreateTransfer(ctx, 1, SampleTransfer("P", 1))
	must(t, err, "create")
	isTaken := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	var landed atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(1); i < 100000; i++ {
				select {
				case <-isTaken:
					// After the takeover: every write of the old owner must fail, for a while.
					for j := range 20 {
						err := oldLeader.RecordSyncPoint(ctx, 1, tr.ID, store.SyncPoint{Number: int64(w*1000 + j)})
						if !errors.Is(err, store.ErrNotOwner) {
							errs <- fmt.Errorf("old owner's write after takeover returned %v", err)
							return
						}
					}
					return
				default:
				}
				err := oldLeader.RecordSyncPoint(ctx, 1, tr.ID, store.SyncPoint{Number: i})
				if err == nil {
					landed.Add(1)
				} else if !errors.Is(err, store.ErrNotOwner) {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	must(t, newLeader.ClaimLeadership(ctx, 2, "new"), "claim 2")
	_, err = newLeader.TakeOverTransfer(ctx, 2, "new", tr.ID, 1)
	must(t, err, "take over")
	must(t, newLeader.RecordSyncPoint(ctx, 2, tr.ID, store.SyncPoint{Number: 999999}), "new owner write")
	close(isTaken)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if landed.Load() == 0 {
		t.Fatal("no write of the owner landed before the takeover: the test proved nothing")
	}
	got, err := newLeader.GetTransfer(ctx, tr.ID)
	must(t, err, "get")
	if got.SyncPoint.Number != 999999 || got.Epoch != 2 || got.Node != "new" {
		t.Fatalf("an old owner's write landed after the takeover: %+v", got)
	}
}

// testOwnership: the takeover is a compare-and-set on the owner epoch, two
// takeovers from the same owner race and exactly one wins, and the orphan
// sweep interrupts only what gone says, keeping sync points.
func testOwnership(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	cfg := newConfig(t)
	a := Open(t, cfg)
	b := a
	if a.Driver() == store.DriverPostgres {
		b = Open(t, cfg)
	}
	must(t, a.ClaimLeadership(ctx, 3, "a"), "claim 3")
	in := SampleTransfer("P", 1)
	in.Node = "a"
	tr, err := a.CreateTransfer(ctx, 3, in)
	must(t, err, "create")
	if tr.Epoch != 3 || tr.Node != "a" {
		t.Fatalf("owner at create %+v", tr)
	}
	must(t, a.RecordSyncPoint(ctx, 3, tr.ID, store.SyncPoint{Number: 4, Offset: 4096, Articles: 4}), "sync")
	must(t, b.ClaimLeadership(ctx, 4, "b"), "claim 4")

	// Two sessions of the new leader race for the same transfer.
	var wins, refused atomic.Int32
	var wg sync.WaitGroup
	for _, s := range []*store.Store{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.TakeOverTransfer(ctx, 4, "b", tr.ID, 3)
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, store.ErrNotOwner):
				refused.Add(1)
			default:
				t.Errorf("take over: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || refused.Load() != 3 {
		t.Fatalf("takeover race: %d won, %d refused; want 1 and 3", wins.Load(), refused.Load())
	}
	got, _ := b.GetTransfer(ctx, tr.ID)
	if got.Epoch != 4 || got.Node != "b" || got.RestartCount != 1 || got.Status != store.StatusInProgress ||
		got.SyncPoint.Number != 4 {
		t.Fatalf("after takeover %+v", got)
	}
	_, err = b.TakeOverTransfer(ctx, 4, "b", "missing", 3)
	mustIs(t, err, store.ErrNotFound, "take over a missing transfer")
	must(t, b.FinishTransfer(ctx, 4, tr.ID, store.TransferResult{Status: store.StatusCompleted}), "complete")
	_, err = b.TakeOverTransfer(ctx, 4, "b", tr.ID, 4)
	mustIs(t, err, store.ErrNotOwner, "a completed transfer is not taken over")

	// Orphans: gone owners' in_progress transfers are interrupted.
	must(t, b.ClaimLeadership(ctx, 5, "c"), "claim 5")
	mk := func(node string, pi int64) store.Transfer {
		x := SampleTransfer("P", pi)
		x.Node = node
		r, err := b.CreateTransfer(ctx, 5, x)
		must(t, err, "create")
		return r
	}
	dead := mk("c", 10)
	must(t, b.RecordSyncPoint(ctx, 5, dead.ID, store.SyncPoint{Number: 7, Offset: 7000, Articles: 7}), "sync")
	own := mk("c", 11) // c restarted it, say, and still runs it
	must(t, b.ClaimLeadership(ctx, 6, "d"), "claim 6")
	draining := SampleTransfer("P", 12)
	draining.Node = "d"
	dr, err := b.CreateTransfer(ctx, 6, draining)
	must(t, err, "create")
	must(t, b.ClaimLeadership(ctx, 7, "e"), "claim 7")
	mine := SampleTransfer("P", 13)
	mine.Node = "e"
	mr, err := b.CreateTransfer(ctx, 7, mine)
	must(t, err, "create")
	var asked []string
	out, err := b.InterruptOrphans(ctx, 7, "e", func(x store.Transfer) bool {
		asked = append(asked, x.ID)
		return x.ID == dead.ID
	})
	must(t, err, "sweep")
	if len(out) != 1 || out[0].ID != dead.ID {
		t.Fatalf("sweep interrupted %+v, want only %s", out, dead.ID)
	}
	if len(asked) != 3 {
		t.Fatalf("sweep asked about %d transfers, want 3 (its own live one is not asked)", len(asked))
	}
	got, _ = b.GetTransfer(ctx, dead.ID)
	if got.Status != store.StatusInterrupted || got.SyncPoint != (store.SyncPoint{Number: 7, Offset: 7000, Articles: 7}) ||
		got.Epoch != 7 || got.Node != "e" || got.Diagnostic == "" {
		t.Fatalf("orphan after sweep %+v", got)
	}
	mustIs(t, b.RecordSyncPoint(ctx, 5, dead.ID, store.SyncPoint{Number: 8}), store.ErrNotOwner, "gone owner after sweep")
	for _, id := range []string{own.ID, dr.ID, mr.ID} {
		got, _ := b.GetTransfer(ctx, id)
		if got.Status != store.StatusInProgress {
			t.Fatalf("live transfer %s swept: %+v", id, got)
		}
	}
	// The draining owner finishes what it owns; the sweep does not race it.
	must(t, b.FinishTransfer(ctx, 6, dr.ID, store.TransferResult{Status: store.StatusCompleted}), "drained")
	r, err := b.FindRestartable(ctx, store.RestartKey{PartnerID: "P", Direction: store.DirReceive, PesitID: 10, FileID: "INBOX"})
	must(t, err, "orphan is restartable")
	if r.ID != dead.ID {
		t.Fatalf("restartable %+v", r)
	}
}

func testTransfers(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	must(t, s.ClaimLeadership(ctx, 1, "node-a"), "claim")
	in := SampleTransfer("CXCLIENT", 42)
	tr, err := s.CreateTransfer(ctx, 1, in)
	must(t, err, "create")
	if tr.ID == "" || tr.Status != store.StatusInProgress || tr.Epoch != 1 || tr.CreatedAt.IsZero() || !tr.FinishedAt.IsZero() {
		t.Fatalf("created %+v", tr)
	}
	got, err := s.GetTransfer(ctx, tr.ID)
	must(t, err, "get")
	if !reflect.DeepEqual(got, tr) {
		t.Fatalf("get %+v\nwant %+v", got, tr)
	}
	dup := in
	dup.ID = tr.ID
	_, err = s.CreateTransfer(ctx, 1, dup)
	mustIs(t, err, store.ErrConflict, "duplicate id")
	bad := in
	bad.Direction = "sideways"
	_, err = s.CreateTransfer(ctx, 1, bad)
	mustIs(t, err, store.ErrInvalid, "bad direction")

	must(t, s.RecordSyncPoint(ctx, 1, tr.ID, store.SyncPoint{Number: 3, Offset: 3 << 20, Articles: 768}), "sync point")
	got, _ = s.GetTransfer(ctx, tr.ID)
	if got.SyncPoint != (store.SyncPoint{Number: 3, Offset: 3 << 20, Articles: 768}) || got.Bytes != 3<<20 || got.Articles != 768 {
		t.Fatalf("after sync point %+v", got)
	}
	// A deferred write is a write like the others for every reader.
	must(t, s.RecordSyncPointDeferred(ctx, 1, tr.ID, store.SyncPoint{Number: 4, Offset: 4 << 20, Articles: 1024}), "deferred sync point")
	got, _ = s.GetTransfer(ctx, tr.ID)
	if got.SyncPoint != (store.SyncPoint{Number: 4, Offset: 4 << 20, Articles: 1024}) || got.Bytes != 4<<20 || got.Articles != 1024 {
		t.Fatalf("after deferred sync point %+v", got)
	}
	must(t, s.RecordSyncPoint(ctx, 1, tr.ID, store.SyncPoint{Number: 3, Offset: 3 << 20, Articles: 768}), "sync point again")
	must(t, s.AddTransferProgress(ctx, 1, tr.ID, 100, 1), "progress")
	got, _ = s.GetTransfer(ctx, tr.ID)
	if got.Bytes != 3<<20+100 || got.Articles != 769 {
		t.Fatalf("after progress %+v", got)
	}
	mustIs(t, s.RecordSyncPoint(ctx, 1, "missing", store.SyncPoint{}), store.ErrNotFound, "sync point of missing")
	mustIs(t, s.RecordSyncPointDeferred(ctx, 1, "missing", store.SyncPoint{}), store.ErrNotFound, "deferred sync point of missing")
	mustIs(t, s.RecordSyncPointDeferred(ctx, 1, tr.ID, store.SyncPoint{Number: -1}), store.ErrInvalid, "deferred negative point")
	mustIs(t, s.AddTransferProgress(ctx, 1, "missing", 1, 1), store.ErrNotFound, "progress of missing")
	mustIs(t, s.FinishTransfer(ctx, 1, "missing", store.TransferResult{Status: store.StatusFailed}), store.ErrNotFound, "finish missing")
	_, err = s.UpdateTransfer(ctx, 1, "missing", func(*store.Transfer) error { return nil })
	mustIs(t, err, store.ErrNotFound, "update missing")
	_, err = s.GetTransfer(ctx, "missing")
	mustIs(t, err, store.ErrNotFound, "get missing")

	// Interrupted, then found for restart by (partner, direction, PI 13, file).
	must(t, s.FinishTransfer(ctx, 1, tr.ID, store.TransferResult{Status: store.StatusInterrupted, Bytes: got.Bytes,
		Articles: got.Articles, Diagnostic: "2.201"}), "interrupt")
	got, _ = s.GetTransfer(ctx, tr.ID)
	if got.Status != store.StatusInterrupted || !got.FinishedAt.IsZero() || got.Diagnostic != "2.201" {
		t.Fatalf("interrupted %+v", got)
	}
	key := store.RestartKey{PartnerID: "CXCLIENT", Direction: store.DirReceive, PesitID: 42, FileID: "INBOX"}
	r, err := s.FindRestartable(ctx, key)
	must(t, err, "find restartable")
	if r.ID != tr.ID || r.SyncPoint.Number != 3 {
		t.Fatalf("restartable %+v", r)
	}
	// A restart on another node resumes into the same partial file.
	if r.TempPath != "/data/in/.x.part" || r.LocalPath != "/data/in/x" {
		t.Fatalf("restartable paths %q %q, want the recorded temporary and final paths", r.TempPath, r.LocalPath)
	}
	// PI 51 is kept: a restart CREATE with another one is refused.
	if r.FileCreated != "260119012505" {
		t.Fatalf("restartable PI 51 %q, want the recorded one", r.FileCreated)
	}
	for _, k := range []store.RestartKey{
		{PartnerID: "OTHER", Direction: store.DirReceive, PesitID: 42, FileID: "INBOX"},
		{PartnerID: "CXCLIENT", Direction: store.DirSend, PesitID: 42, FileID: "INBOX"},
		{PartnerID: "CXCLIENT", Direction: store.DirReceive, PesitID: 43, FileID: "INBOX"},
		{PartnerID: "CXCLIENT", Direction: store.DirReceive, PesitID: 42, FileID: "OUTBOX"},
	} {
		_, err = s.FindRestartable(ctx, k)
		mustIs(t, err, store.ErrNotFound, fmt.Sprintf("restart key %+v", k))
	}
	restarted, err := s.UpdateTransfer(ctx, 1, tr.ID, func(x *store.Transfer) error {
		x.Status = store.StatusInProgress
		x.RestartCount++
		x.Node = "node-b"
		return nil
	})
	must(t, err, "restart")
	if restarted.RestartCount != 1 || restarted.Node != "node-b" || restarted.Status != store.StatusInProgress {
		t.Fatalf("restarted %+v", restarted)
	}
	errBoom := errors.New("boom")
	_, err = s.UpdateTransfer(ctx, 1, tr.ID, func(x *store.Transfer) error { x.Bytes = 0; return errBoom })
	if !errors.Is(err, errBoom) {
		t.Fatalf("mutate error not returned: %v", err)
	}
	must(t, s.FinishTransfer(ctx, 1, tr.ID, store.TransferResult{Status: store.StatusCompleted, Bytes: 5 << 20,
		Articles: 1280, SHA256: fmt.Sprintf("%064x", 1), Anomalies: []string{"article_count", "entity_exceeded"}}), "complete")
	got, _ = s.GetTransfer(ctx, tr.ID)
	if got.Status != store.StatusCompleted || got.FinishedAt.IsZero() || got.Bytes != 5<<20 || got.RestartCount != 1 ||
		got.SHA256 != fmt.Sprintf("%064x", 1) || !slices.Equal(got.Anomalies, []string{"article_count", "entity_exceeded"}) {
		t.Fatalf("completed %+v", got)
	}
	_, err = s.FindRestartable(ctx, key)
	mustIs(t, err, store.ErrNotFound, "completed is not restartable")
}

// testUnpublished: ListUnpublished returns exactly the completed receives
// whose temp_path is set, oldest first; SettlePublished clears it once, as
// a compare-and-set on the path, and both are refused to a stale leader.
func testUnpublished(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	must(t, s.ClaimLeadership(ctx, 1, "node-a"), "claim")
	mk := func(pi int64, dir store.TransferDirection, st store.TransferStatus, temp string) store.Transfer {
		in := SampleTransfer("CXCLIENT", pi)
		in.Direction, in.TempPath = dir, temp
		tr, err := s.CreateTransfer(ctx, 1, in)
		must(t, err, "create")
		if st != store.StatusInProgress {
			must(t, s.FinishTransfer(ctx, 1, tr.ID, store.TransferResult{Status: st, Bytes: 10, Diagnostic: "d"}), "finish")
		}
		return tr
	}
	first := mk(1, store.DirReceive, store.StatusCompleted, "/data/in/.a.part")
	time.Sleep(2 * time.Millisecond) // distinct updated_at
	second := mk(2, store.DirReceive, store.StatusCompleted, "/data/in/.b.part")
	mk(3, store.DirReceive, store.StatusInProgress, "/data/in/.c.part")
	mk(4, store.DirReceive, store.StatusFailed, "/data/in/.d.part")
	mk(5, store.DirReceive, store.StatusInterrupted, "/data/in/.e.part")
	mk(6, store.DirReceive, store.StatusCompleted, "")
	mk(7, store.DirSend, store.StatusCompleted, "/data/out/f")

	ids := func(ts []store.Transfer) []string {
		var out []string
		for _, x := range ts {
			out = append(out, x.ID)
		}
		return out
	}
	got, err := s.ListUnpublished(ctx, 1, 10)
	must(t, err, "list unpublished")
	if w := []string{first.ID, second.ID}; !reflect.DeepEqual(ids(got), w) {
		t.Fatalf("unpublished %v, want %v (the completed receives with a temporary path, oldest first)", ids(got), w)
	}
	if got[0].TempPath != "/data/in/.a.part" || got[0].LocalPath != "/data/in/x" {
		t.Fatalf("unpublished paths %q %q", got[0].TempPath, got[0].LocalPath)
	}
	if got, err := s.ListUnpublished(ctx, 1, 1); err != nil || !reflect.DeepEqual(ids(got), []string{first.ID}) {
		t.Fatalf("limit 1: %v %v", ids(got), err)
	}

	ok, err := s.SettlePublished(ctx, 1, first.ID, "/data/in/.other.part", "")
	must(t, err, "settle with another path")
	if ok {
		t.Fatal("settle matched a record whose temporary path differs")
	}
	ok, err = s.SettlePublished(ctx, 1, first.ID, "/data/in/.a.part", "")
	must(t, err, "settle")
	if !ok {
		t.Fatal("settle matched nothing")
	}
	if ok, err := s.SettlePublished(ctx, 1, first.ID, "/data/in/.a.part", ""); err != nil || ok {
		t.Fatalf("second settle: %v %v, want no match", ok, err)
	}
	rec, _ := s.GetTransfer(ctx, first.ID)
	if rec.TempPath != "" || rec.Status != store.StatusCompleted || rec.Diagnostic != "d" || rec.Bytes != 10 {
		t.Fatalf("after settle %+v: want temp_path cleared, the rest kept", rec)
	}
	ok, err = s.SettlePublished(ctx, 1, second.ID, "/data/in/.b.part", "conflict")
	must(t, err, "settle with diagnostic")
	rec, _ = s.GetTransfer(ctx, second.ID)
	if !ok || rec.TempPath != "" || rec.Diagnostic != "conflict" || rec.Status != store.StatusCompleted {
		t.Fatalf("after settle with diagnostic %+v", rec)
	}
	if got, err := s.ListUnpublished(ctx, 1, 10); err != nil || len(got) != 0 {
		t.Fatalf("unpublished after settling: %v %v", ids(got), err)
	}
	_, err = s.SettlePublished(ctx, 1, second.ID, "", "")
	mustIs(t, err, store.ErrInvalid, "settle without a path")

	key := store.RestartKey{PartnerID: "CXCLIENT", Direction: store.DirReceive, PesitID: 2, FileID: "INBOX"}
	found, err := s.FindCompletedReceive(ctx, key, time.Now().Add(-time.Hour))
	must(t, err, "find completed receive")
	if found.ID != second.ID {
		t.Fatalf("completed receive %s, want %s", found.ID, second.ID)
	}
	_, err = s.FindCompletedReceive(ctx, key, time.Now().Add(time.Hour))
	mustIs(t, err, store.ErrNotFound, "completed receive finished before since")
	for _, pi := range []int64{3, 4, 5, 7} { // in progress, failed, interrupted, send
		k := key
		k.PesitID = pi
		_, err = s.FindCompletedReceive(ctx, k, time.Now().Add(-time.Hour))
		mustIs(t, err, store.ErrNotFound, fmt.Sprintf("completed receive for PI 13 = %d", pi))
	}

	must(t, s.ClaimLeadership(ctx, 2, "node-b"), "claim 2")
	_, err = s.ListUnpublished(ctx, 1, 10)
	mustIs(t, err, store.ErrStaleEpoch, "list by a stale leader")
	_, err = s.SettlePublished(ctx, 1, first.ID, "/data/in/.a.part", "")
	mustIs(t, err, store.ErrStaleEpoch, "settle by a stale leader")
}

func testTransferPagination(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	must(t, s.ClaimLeadership(ctx, 1, "n"), "claim")
	var all []store.Transfer
	var mid time.Time
	for i := range 25 {
		partner := "P1"
		if i%3 == 0 {
			partner = "P2"
		}
		tr, err := s.CreateTransfer(ctx, 1, SampleTransfer(partner, int64(i)))
		must(t, err, "create")
		if i%5 == 0 {
			must(t, s.FinishTransfer(ctx, 1, tr.ID, store.TransferResult{Status: store.StatusCompleted}), "finish")
			tr, _ = s.GetTransfer(ctx, tr.ID)
		}
		all = append(all, tr)
		if i == 12 {
			time.Sleep(2 * time.Millisecond)
			mid = time.Now()
			time.Sleep(2 * time.Millisecond)
		}
	}
	// Expected order: newest first, ties broken by id descending.
	want := append([]store.Transfer(nil), all...)
	sort.Slice(want, func(i, j int) bool {
		if !want[i].CreatedAt.Equal(want[j].CreatedAt) {
			return want[i].CreatedAt.After(want[j].CreatedAt)
		}
		return want[i].ID > want[j].ID
	})
	collect := func(f store.TransferFilter) []store.Transfer {
		var out []store.Transfer
		for pages := 0; ; pages++ {
			if pages > 30 {
				t.Fatal("pagination does not end")
			}
			p, err := s.ListTransfers(ctx, f)
			must(t, err, "list")
			if len(p.Items) > f.Limit && f.Limit > 0 {
				t.Fatalf("page of %d > limit %d", len(p.Items), f.Limit)
			}
			out = append(out, p.Items...)
			if p.Next == "" {
				return out
			}
			f.Cursor = p.Next
		}
	}
	ids := func(ts []store.Transfer) []string {
		var out []string
		for _, x := range ts {
			out = append(out, x.ID)
		}
		return out
	}
	filter := func(pred func(store.Transfer) bool) []string {
		var out []string
		for _, x := range want {
			if pred(x) {
				out = append(out, x.ID)
			}
		}
		return out
	}
	if got := ids(collect(store.TransferFilter{Limit: 10})); !reflect.DeepEqual(got, ids(want)) {
		t.Fatalf("paged list:\n got %v\nwant %v", got, ids(want))
	}
	if got := ids(collect(store.TransferFilter{})); !reflect.DeepEqual(got, ids(want)) {
		t.Fatalf("default page size list differs")
	}
	if got, w := ids(collect(store.TransferFilter{Limit: 3, PartnerID: "P2"})),
		filter(func(x store.Transfer) bool { return x.PartnerID == "P2" }); !reflect.DeepEqual(got, w) || len(w) != 9 {
		t.Fatalf("by partner: got %v want %v", got, w)
	}
	if got, w := ids(collect(store.TransferFilter{Limit: 2, Status: store.StatusCompleted})),
		filter(func(x store.Transfer) bool { return x.Status == store.StatusCompleted }); !reflect.DeepEqual(got, w) || len(w) != 5 {
		t.Fatalf("by status: got %v want %v", got, w)
	}
	if got, w := ids(collect(store.TransferFilter{Limit: 4, Status: store.StatusInProgress, PartnerID: "P1"})),
		filter(func(x store.Transfer) bool { return x.Status == store.StatusInProgress && x.PartnerID == "P1" }); !reflect.DeepEqual(got, w) {
		t.Fatalf("by status and partner: got %v want %v", got, w)
	}
	if got, w := ids(collect(store.TransferFilter{Limit: 5, Since: mid})),
		filter(func(x store.Transfer) bool { return !x.CreatedAt.Before(mid) }); !reflect.DeepEqual(got, w) || len(w) != 12 {
		t.Fatalf("since: got %d want %d", len(got), len(w))
	}
	if got, w := ids(collect(store.TransferFilter{Limit: 5, Until: mid})),
		filter(func(x store.Transfer) bool { return x.CreatedAt.Before(mid) }); !reflect.DeepEqual(got, w) || len(w) != 13 {
		t.Fatalf("until: got %d want %d", len(got), len(w))
	}
	if p, err := s.ListTransfers(ctx, store.TransferFilter{ServerID: "NONE"}); err != nil || len(p.Items) != 0 || p.Next != "" {
		t.Fatalf("empty result: %+v %v", p, err)
	}
	_, err := s.ListTransfers(ctx, store.TransferFilter{Cursor: "!!not a cursor"})
	mustIs(t, err, store.ErrInvalid, "bad cursor")
}

func testConcurrentTransferUpdates(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	must(t, s.ClaimLeadership(ctx, 1, "n"), "claim")
	tr, err := s.CreateTransfer(ctx, 1, SampleTransfer("P", 1))
	must(t, err, "create")
	const workers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers*2)
	for w := range workers {
		wg.Add(2)
		go func() { // atomic SQL increments
			defer wg.Done()
			for range each {
				if err := s.AddTransferProgress(ctx, 1, tr.ID, 1000, 1); err != nil {
					errs <- fmt.Errorf("worker %d progress: %w", w, err)
					return
				}
			}
		}()
		go func() { // read-modify-write under the row lock
			defer wg.Done()
			for range each {
				_, err := s.UpdateTransfer(ctx, 1, tr.ID, func(x *store.Transfer) error {
					x.SyncPoint.Number++
					x.SyncPoint.Offset += 4096
					x.SyncPoint.Articles += 2
					return nil
				})
				if err != nil {
					errs <- fmt.Errorf("worker %d update: %w", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := s.GetTransfer(ctx, tr.ID)
	must(t, err, "get")
	// UpdateTransfer writes back Bytes/Articles it read, so the increments of
	// AddTransferProgress survive only if the two never interleave inside a
	// read-modify-write: the row lock makes that so.
	wantSP := store.SyncPoint{Number: workers * each, Offset: workers * each * 4096, Articles: workers * each * 2}
	if got.SyncPoint != wantSP || got.Bytes != workers*each*1000 || got.Articles != workers*each {
		t.Fatalf("lost update: sync point %+v (want %+v), bytes %d (want %d), articles %d (want %d)",
			got.SyncPoint, wantSP, got.Bytes, workers*each*1000, got.Articles, workers*each)
	}
}

func testAudit(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	var all []store.AuditEvent
	for i := range 12 {
		e := store.AuditEvent{Time: base.Add(time.Duration(i/2) * time.Minute), Actor: "admin", Action: "partner.update",
			Target: fmt.Sprintf("P%d", i%3), Outcome: store.OutcomeSuccess, Detail: "changed access"}
		if i%4 == 0 {
			e.Actor, e.Action, e.Outcome = "CXCLIENT", "pesit.auth", store.OutcomeFailure
		}
		got, err := s.AppendAudit(ctx, e)
		must(t, err, "append")
		if got.ID == 0 || !got.Time.Equal(e.Time) {
			t.Fatalf("appended %+v", got)
		}
		all = append(all, got)
	}
	e, err := s.AppendAudit(ctx, store.AuditEvent{Actor: "node-a", Action: "leader.claim"})
	must(t, err, "append with defaults")
	if e.Time.IsZero() || e.Outcome != store.OutcomeSuccess {
		t.Fatalf("defaults not applied: %+v", e)
	}
	_, err = s.AppendAudit(ctx, store.AuditEvent{Action: "x"})
	mustIs(t, err, store.ErrInvalid, "no actor")
	var got []store.AuditEvent
	f := store.AuditFilter{Limit: 5, Until: base.Add(time.Hour / 2)}
	for {
		p, err := s.ListAudit(ctx, f)
		must(t, err, "list")
		got = append(got, p.Items...)
		if p.Next == "" {
			break
		}
		f.Cursor = p.Next
	}
	if len(got) != 12 {
		t.Fatalf("listed %d events, want 12", len(got))
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], all[11-i]) { // same-time pairs: higher id first
			t.Fatalf("event %d = %+v, want %+v", i, got[i], all[11-i])
		}
	}
	p, err := s.ListAudit(ctx, store.AuditFilter{Action: "pesit.auth", Outcome: store.OutcomeFailure})
	must(t, err, "filter")
	if len(p.Items) != 3 {
		t.Fatalf("auth failures %d, want 3", len(p.Items))
	}
	p, err = s.ListAudit(ctx, store.AuditFilter{Target: "P1", Actor: "admin"})
	must(t, err, "filter target")
	for _, e := range p.Items {
		if e.Target != "P1" || e.Actor != "admin" {
			t.Fatalf("filter leaked %+v", e)
		}
	}
	if len(p.Items) != 3 {
		t.Fatalf("P1 by admin: %d", len(p.Items))
	}
	p, err = s.ListAudit(ctx, store.AuditFilter{Since: base.Add(5 * time.Minute), Until: base.Add(time.Hour / 2)})
	must(t, err, "since")
	if len(p.Items) != 2 {
		t.Fatalf("since: %d", len(p.Items))
	}
	_, err = s.ListAudit(ctx, store.AuditFilter{Cursor: "garbage"})
	mustIs(t, err, store.ErrInvalid, "bad cursor")
}

func testPurge(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	must(t, s.ClaimLeadership(ctx, 3, "n"), "claim")
	oldDone, _ := s.CreateTransfer(ctx, 3, SampleTransfer("P", 1))
	oldOpen, _ := s.CreateTransfer(ctx, 3, SampleTransfer("P", 2))
	oldInterrupted, _ := s.CreateTransfer(ctx, 3, SampleTransfer("P", 3))
	must(t, s.FinishTransfer(ctx, 3, oldDone.ID, store.TransferResult{Status: store.StatusFailed}), "finish")
	must(t, s.FinishTransfer(ctx, 3, oldInterrupted.ID, store.TransferResult{Status: store.StatusInterrupted}), "interrupt")
	_, err := s.AppendAudit(ctx, store.AuditEvent{Time: time.Now().Add(-2 * time.Hour), Actor: "a", Action: "old"})
	must(t, err, "old audit")
	oldAudit, err := s.ListAudit(ctx, store.AuditFilter{})
	must(t, err, "list audit")
	time.Sleep(300 * time.Millisecond)
	newDone, _ := s.CreateTransfer(ctx, 3, SampleTransfer("P", 4))
	must(t, s.FinishTransfer(ctx, 3, newDone.ID, store.TransferResult{Status: store.StatusCompleted}), "finish new")
	_, err = s.AppendAudit(ctx, store.AuditEvent{Actor: "a", Action: "new"})
	must(t, err, "new audit")

	res, err := s.Purge(ctx, 3, 150*time.Millisecond)
	must(t, err, "purge")
	if res.Transfers != 1 || res.AuditEvents != int64(len(oldAudit.Items)) {
		t.Fatalf("purge result %+v, want 1 transfer and %d audit events", res, len(oldAudit.Items))
	}
	_, err = s.GetTransfer(ctx, oldDone.ID)
	mustIs(t, err, store.ErrNotFound, "purged transfer")
	for _, id := range []string{oldOpen.ID, oldInterrupted.ID, newDone.ID} {
		_, err := s.GetTransfer(ctx, id)
		must(t, err, "kept transfer")
	}
	p, _ := s.ListAudit(ctx, store.AuditFilter{})
	if len(p.Items) != 1 || p.Items[0].Action != "new" {
		t.Fatalf("audit after purge %+v", p.Items)
	}
	_, err = s.Purge(ctx, 3, 0)
	mustIs(t, err, store.ErrInvalid, "zero retention")
}

func testUsersAndTokens(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	h, _ := store.HashPassword("pw")
	u, err := s.PutUser(ctx, store.User{Name: "alice", Role: store.RoleAdmin}, h)
	must(t, err, "put")
	got, err := s.GetUser(ctx, "alice")
	must(t, err, "get")
	if !reflect.DeepEqual(got, u) {
		t.Fatalf("get %+v want %+v", got, u)
	}
	again, err := s.PutUser(ctx, store.User{Name: "alice", Role: store.RoleAdmin}, h)
	must(t, err, "put same")
	if !again.UpdatedAt.Equal(u.UpdatedAt) {
		t.Fatal("identical PutUser changed updatedAt")
	}
	_, err = s.PutUser(ctx, store.User{Name: "alice", Role: store.RoleViewer}, h)
	must(t, err, "put changed")
	got, _ = s.GetUser(ctx, "alice")
	if got.Role != store.RoleViewer || !got.CreatedAt.Equal(u.CreatedAt) {
		t.Fatalf("after role change %+v", got)
	}
	ph, err := s.UserPasswordHash(ctx, "alice")
	must(t, err, "hash")
	if ok, _ := store.VerifyPassword(ph, "pw"); !ok {
		t.Fatal("user password does not verify")
	}
	_, err = s.PutUser(ctx, store.User{Name: "bob", Role: "root"}, h)
	mustIs(t, err, store.ErrInvalid, "bad role")
	_, err = s.GetUser(ctx, "bob")
	mustIs(t, err, store.ErrNotFound, "missing user")

	plain, hash, err := store.NewToken()
	must(t, err, "new token")
	if store.HashToken(plain) != hash {
		t.Fatal("HashToken(plain) != hash")
	}
	_, err = s.CreateToken(ctx, store.Token{ID: "forever", User: "alice", Role: store.RoleOperator}, store.HashToken("forever"))
	mustIs(t, err, store.ErrInvalid, "token without expiry")
	tok, err := s.CreateToken(ctx, store.Token{ID: "ci", User: "alice", Role: store.RoleOperator, ExpiresAt: time.Now().Add(time.Hour)}, hash)
	must(t, err, "create token")
	found, err := s.LookupToken(ctx, store.HashToken(plain))
	must(t, err, "lookup")
	if !reflect.DeepEqual(found, tok) {
		t.Fatalf("lookup %+v want %+v", found, tok)
	}
	_, err = s.LookupToken(ctx, store.HashToken(plain+"x"))
	mustIs(t, err, store.ErrNotFound, "wrong token")
	_, err = s.CreateToken(ctx, store.Token{ID: "ci", Role: store.RoleViewer, ExpiresAt: time.Now().Add(time.Hour)}, store.HashToken("other"))
	mustIs(t, err, store.ErrConflict, "duplicate token id")
	_, err = s.CreateToken(ctx, store.Token{ID: "old", Role: store.RoleViewer, ExpiresAt: time.Now().Add(-time.Minute)},
		store.HashToken("expired"))
	must(t, err, "create expired")
	_, err = s.LookupToken(ctx, store.HashToken("expired"))
	mustIs(t, err, store.ErrNotFound, "expired token")
	list, err := s.ListTokens(ctx)
	must(t, err, "list tokens")
	// An expired token is not listed (issue 16, defect 11).
	if len(list) != 1 || list[0].ID != "ci" {
		t.Fatalf("tokens %+v, want only the unexpired ci", list)
	}
	must(t, s.DeleteToken(ctx, "old"), "delete token")
	mustIs(t, s.DeleteToken(ctx, "old"), store.ErrNotFound, "delete token twice")
	must(t, s.DeleteUser(ctx, "alice"), "delete user")
	_, err = s.LookupToken(ctx, hash)
	mustIs(t, err, store.ErrNotFound, "token of deleted user")
	mustIs(t, s.DeleteUser(ctx, "alice"), store.ErrNotFound, "delete user twice")
	users, _ := s.ListUsers(ctx)
	if len(users) != 0 {
		t.Fatalf("users %+v", users)
	}
}

// Declaration is a sample configuration-file declaration.
func Declaration() store.Declared {
	p1 := store.DeclaredPartner{Partner: SamplePartner("CXCLIENT"), Password: "test123"}
	p2 := store.DeclaredPartner{Partner: SamplePartner("BANK2"), PasswordHash: "$2a$10$abcdefghijklmnopqrstuu9fL2b9jhrN0nYHwV8r3m0xS3QbXMaS2"}
	p2.Files = nil
	return store.Declared{
		Partners: []store.DeclaredPartner{p1, p2},
		Files:    []store.VirtualFile{SampleFile("INBOX"), SampleFile("OUTBOX")},
		Servers:  []store.Server{SampleServer("PESITSRV")},
	}
}

type snapshot struct {
	Partners []store.Partner
	Hashes   []string
	Files    []store.VirtualFile
	Servers  []store.Server
}

func takeSnapshot(t testing.TB, ctx context.Context, s *store.Store) snapshot {
	var sn snapshot
	var err error
	sn.Partners, err = s.ListPartners(ctx)
	must(t, err, "list partners")
	for _, p := range sn.Partners {
		h, err := s.PartnerPasswordHash(ctx, p.ID)
		must(t, err, "hash")
		sn.Hashes = append(sn.Hashes, h)
	}
	sn.Files, err = s.ListFiles(ctx)
	must(t, err, "list files")
	sn.Servers, err = s.ListServers(ctx)
	must(t, err, "list servers")
	return sn
}

// nextChange waits for one change.
func nextChange(t testing.TB, ch <-chan store.Change) store.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("change channel closed")
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change notification within 10s")
	}
	return store.Change{}
}

func testApplyDeclared(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	d := Declaration()
	res, err := s.ApplyDeclared(ctx, d)
	must(t, err, "first apply")
	if res.Created != 5 || res.Updated != 0 {
		t.Fatalf("first apply %+v, want 5 created", res)
	}
	first := takeSnapshot(t, ctx, s)
	if ok, _ := store.VerifyPassword(first.Hashes[1], "test123"); !ok || first.Partners[1].ID != "CXCLIENT" {
		t.Fatal("declared plaintext password was not hashed and stored")
	}

	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := s.Subscribe(subCtx)
	res, err = s.ApplyDeclared(ctx, Declaration())
	must(t, err, "second apply")
	if res.Changes() != 0 {
		t.Fatalf("second apply reported %+v, want 0 changes", res)
	}
	second := takeSnapshot(t, ctx, s)
	if !reflect.DeepEqual(first, second) {
		t.Fatalf("second apply changed rows:\nbefore %+v\nafter  %+v", first, second)
	}
	// No notification from the second apply: the first one to arrive is the
	// sentinel made after it.
	_, err = s.CreateServer(ctx, SampleServer("SENTINEL"))
	must(t, err, "sentinel")
	if c := nextChange(t, changes); c != (store.Change{Kind: store.KindServer, ID: "SENTINEL", Op: store.OpCreate}) {
		t.Fatalf("second apply notified %+v", c)
	}

	// A real change is applied, counted and notified.
	d = Declaration()
	d.Files[0].MaxSize = 42
	d.Partners[0].Password = "rotated"
	res, err = s.ApplyDeclared(ctx, d)
	must(t, err, "third apply")
	if res.Created != 0 || res.Updated != 2 {
		t.Fatalf("third apply %+v, want 2 updated", res)
	}
	got := map[store.Change]bool{nextChange(t, changes): true, nextChange(t, changes): true}
	if !got[store.Change{Kind: store.KindFile, ID: "INBOX", Op: store.OpUpdate}] ||
		!got[store.Change{Kind: store.KindPartner, ID: "CXCLIENT", Op: store.OpUpdate}] {
		t.Fatalf("third apply notified %v", got)
	}
	h, _ := s.PartnerPasswordHash(ctx, "CXCLIENT")
	if ok, _ := store.VerifyPassword(h, "rotated"); !ok {
		t.Fatal("rotated password not stored")
	}
	d.Servers = append(d.Servers, SampleServer("PESITSRV"))
	_, err = s.ApplyDeclared(ctx, d)
	mustIs(t, err, store.ErrInvalid, "duplicate declaration")
}

// testApplyDeclaredHashToPassword: a partner declared with passwordHash,
// then with password (the same one), gets the node's own argon2id hash. It
// used to keep the declared hash because that verified the password.
func testApplyDeclaredHashToPassword(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	bc, err := bcrypt.GenerateFromPassword([]byte("secret1"), bcrypt.MinCost)
	must(t, err, "bcrypt")
	d := store.Declared{Partners: []store.DeclaredPartner{{Partner: SamplePartner("CXCLIENT"), PasswordHash: string(bc)}}}
	_, err = s.ApplyDeclared(ctx, d)
	must(t, err, "apply with passwordHash")
	h, _ := s.PartnerPasswordHash(ctx, "CXCLIENT")
	if h != string(bc) {
		t.Fatalf("declared hash not stored: %q", h)
	}
	d.Partners[0].PasswordHash, d.Partners[0].Password = "", "secret1"
	res, err := s.ApplyDeclared(ctx, d)
	must(t, err, "apply with password")
	h, _ = s.PartnerPasswordHash(ctx, "CXCLIENT")
	if !strings.HasPrefix(h, "$argon2id$") {
		t.Fatalf("after switching to password the stored hash is still %q", h)
	}
	if ok, _ := store.VerifyPassword(h, "secret1"); !ok {
		t.Fatal("new hash does not verify the password")
	}
	if res.Updated != 1 {
		t.Fatalf("switch reported %+v, want 1 updated", res)
	}
	// Declaring the same password again changes nothing.
	res, err = s.ApplyDeclared(ctx, d)
	must(t, err, "apply again")
	if h2, _ := s.PartnerPasswordHash(ctx, "CXCLIENT"); res.Changes() != 0 || h2 != h {
		t.Fatalf("second apply with password: %+v, hash changed %v", res, h2 != h)
	}
}

// testApplyDeclaredConcurrent: three nodes starting at once apply the same
// declaration; all succeed and the rows are created exactly once.
func testApplyDeclaredConcurrent(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	cfg := newConfig(t)
	stores := []*store.Store{Open(t, cfg)}
	for range 2 {
		if stores[0].Driver() == store.DriverPostgres {
			stores = append(stores, Open(t, cfg))
		} else {
			stores = append(stores, stores[0])
		}
	}
	results := make([]store.ApplyResult, len(stores))
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = s.ApplyDeclared(ctx, Declaration())
		}()
	}
	wg.Wait()
	var created, updated int
	for i := range stores {
		must(t, errs[i], fmt.Sprintf("node %d apply", i))
		created += results[i].Created
		updated += results[i].Updated
	}
	if created != 5 || updated != 0 {
		t.Fatalf("concurrent applies created %d and updated %d rows, want 5 and 0 (%+v)", created, updated, results)
	}
	sn := takeSnapshot(t, ctx, stores[0])
	if len(sn.Partners) != 2 || len(sn.Files) != 2 || len(sn.Servers) != 1 {
		t.Fatalf("rows after concurrent apply: %+v", sn)
	}
}

func testSubscribe(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	cfg := newConfig(t)
	s := Open(t, cfg)
	subCtx, cancel := context.WithCancel(ctx)
	ch := s.Subscribe(subCtx)
	var writer = s
	if s.Driver() == store.DriverPostgres {
		// Another Store on the same database stands for another process.
		writer = Open(t, cfg)
	}
	hash, _ := store.HashPassword("x")
	_, err := writer.CreatePartner(ctx, SamplePartner("P1"), hash)
	must(t, err, "create partner")
	_, err = writer.CreateFile(ctx, SampleFile("F1"))
	must(t, err, "create file")
	_, err = writer.UpdatePartner(ctx, store.Partner{ID: "P1", Access: store.AccessRead})
	must(t, err, "update partner")
	must(t, writer.DeleteFile(ctx, "F1"), "delete file")
	_, err = writer.CreateServer(ctx, SampleServer("S1"))
	must(t, err, "create server")
	_, err = writer.UpdatePartner(ctx, store.Partner{ID: "NOPE", Access: store.AccessRead})
	mustIs(t, err, store.ErrNotFound, "failed update")
	want := []store.Change{
		{Kind: store.KindPartner, ID: "P1", Op: store.OpCreate},
		{Kind: store.KindFile, ID: "F1", Op: store.OpCreate},
		{Kind: store.KindPartner, ID: "P1", Op: store.OpUpdate},
		{Kind: store.KindFile, ID: "F1", Op: store.OpDelete},
		{Kind: store.KindServer, ID: "S1", Op: store.OpCreate},
	}
	for i, w := range want {
		if c := nextChange(t, ch); c != w {
			t.Fatalf("change %d = %+v, want %+v", i, c, w)
		}
	}
	cancel()
	select {
	case c, ok := <-ch:
		if ok {
			t.Fatalf("unexpected change after cancel: %+v (the failed update must not notify)", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed after ctx ended")
	}
	// Close ends live subscriptions too.
	ch2 := s.Subscribe(ctx)
	s.Close()
	select {
	case _, ok := <-ch2:
		if ok {
			t.Fatal("change after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed by Close")
	}
}

// nextEvent waits for one event.
func nextEvent(t testing.TB, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("event channel closed")
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return store.Event{}
}

// testWatch: a change committed through a Store has advanced its Seq when
// the call returns (the node's views rely on it to never serve a
// definition behind a local commit), and its event carries that Seq. On
// PostgreSQL the event is delivered once: the Store's own NOTIFY is
// skipped, and a change of another Store comes with Seq 0.
func testWatch(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	cfg := newConfig(t)
	s := Open(t, cfg)
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.Watch(subCtx)
	base := s.Seq()
	_, err := s.CreateFile(ctx, SampleFile("F1"))
	must(t, err, "create file")
	if got := s.Seq(); got != base+1 {
		t.Fatalf("Seq after create = %d, want %d", got, base+1)
	}
	f := SampleFile("F1")
	f.MaxSize = 42
	_, err = s.UpdateFile(ctx, f)
	must(t, err, "update file")
	_, err = s.UpdateFile(ctx, f)
	must(t, err, "same update again")
	if got := s.Seq(); got != base+2 {
		t.Fatalf("Seq after an update and a no-op = %d, want %d", got, base+2)
	}
	want := []store.Event{
		{Change: store.Change{Kind: store.KindFile, ID: "F1", Op: store.OpCreate}, Seq: base + 1},
		{Change: store.Change{Kind: store.KindFile, ID: "F1", Op: store.OpUpdate}, Seq: base + 2},
	}
	if s.Driver() == store.DriverPostgres {
		// Another Store stands for another process. Its NOTIFY follows
		// this Store's two in commit order, so an echo of them would
		// arrive before it.
		other := Open(t, cfg)
		_, err = other.CreateFile(ctx, SampleFile("F2"))
		must(t, err, "create file through another store")
		if got := s.Seq(); got != base+2 {
			t.Fatalf("another store's change moved Seq to %d", got)
		}
		want = append(want, store.Event{Change: store.Change{Kind: store.KindFile, ID: "F2", Op: store.OpCreate}})
	}
	for i, w := range want {
		if e := nextEvent(t, events); e != w {
			t.Fatalf("event %d = %+v, want %+v", i, e, w)
		}
	}
}

// testReadYourWrites: a read made right after a write returned sees it,
// from every goroutine at once (on SQLite the read goes to the read pool,
// the write to the writer's connection).
func testReadYourWrites(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	hash, _ := store.HashPassword("x")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("RYW%d", g)
			if _, err := s.CreatePartner(ctx, SamplePartner(id), hash); err != nil {
				errs <- err
				return
			}
			for i := range 50 {
				p := SamplePartner(id)
				p.Description = fmt.Sprintf("v%d", i)
				if _, err := s.UpdatePartner(ctx, p); err != nil {
					errs <- err
					return
				}
				got, err := s.GetPartner(ctx, id)
				if err != nil {
					errs <- err
					return
				}
				if got.Description != p.Description {
					errs <- fmt.Errorf("partner %s read %q right after writing %q", id, got.Description, p.Description)
					return
				}
			}
			if err := s.DeletePartner(ctx, id); err != nil {
				errs <- err
				return
			}
			if _, err := s.GetPartner(ctx, id); !errors.Is(err, store.ErrNotFound) {
				errs <- fmt.Errorf("partner %s read after its deletion: %v", id, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testMetrics(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	cfg := newConfig(t)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	s := Open(t, cfg)
	_, err := s.GetPartner(ctx, "NOPE")
	mustIs(t, err, store.ErrNotFound, "get")
	_, _ = s.ListPartners(ctx)
	_, _ = s.ListPartners(ctx)
	// A write of a transfer's former owner is counted apart from a conflict.
	must(t, s.ClaimLeadership(ctx, 1, "a"), "claim")
	tr, err := s.CreateTransfer(ctx, 1, SampleTransfer("P", 1))
	must(t, err, "create")
	must(t, s.ClaimLeadership(ctx, 2, "b"), "claim")
	_, err = s.TakeOverTransfer(ctx, 2, "b", tr.ID, 1)
	must(t, err, "take over")
	mustIs(t, s.RecordSyncPoint(ctx, 1, tr.ID, store.SyncPoint{Number: 1}), store.ErrNotOwner, "old owner")
	mfs, err := reg.Gather()
	must(t, err, "gather")
	counts := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "vectis_store_operation_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			counts[label(m, "operation")] = m.GetHistogram().GetSampleCount()
		}
	}
	if counts["get_partner"] != 1 || counts["list_partners"] != 2 || counts["migrate"] != 1 {
		t.Fatalf("operation counts %v", counts)
	}
	errs := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "vectis_store_operation_errors_total" {
			for _, m := range mf.GetMetric() {
				errs[label(m, "operation")+"/"+label(m, "class")] = m.GetCounter().GetValue()
			}
		}
	}
	if len(errs) != 2 || errs["get_partner/not_found"] != 1 || errs["record_sync_point/not_owner"] != 1 {
		t.Fatalf("error counts %v", errs)
	}
	// A second store on the same registry shares the collectors.
	Open(t, cfg)
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// testExpireInterrupted: interrupted and restartable transfers left alone
// for longer than the expiry fail with a diagnostic and come back with
// their partial file; fresh ones, live ones and final ones are left alone
// (issue 16, defect 8).
func testExpireInterrupted(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	must(t, s.ClaimLeadership(ctx, 3, "n"), "claim")
	mk := func(pesitID int64, status store.TransferStatus) store.Transfer {
		tr := SampleTransfer("P", pesitID)
		tr.TempPath = fmt.Sprintf("/data/in/.t%d.part", pesitID)
		tr, err := s.CreateTransfer(ctx, 3, tr)
		must(t, err, "create")
		if status != store.StatusInProgress {
			must(t, s.FinishTransfer(ctx, 3, tr.ID, store.TransferResult{Status: status, Bytes: 10}), "set "+string(status))
		}
		return tr
	}
	oldInterrupted := mk(1, store.StatusInterrupted)
	oldRestartable := mk(2, store.StatusRestartable)
	oldLive := mk(3, store.StatusInProgress)
	oldDone := mk(4, store.StatusCompleted)
	time.Sleep(500 * time.Millisecond)
	fresh := mk(5, store.StatusInterrupted)
	// The cutoff falls halfway between the old transfers and the fresh one,
	// computed just before each call, so that a slow machine does not
	// expire the fresh one too.
	lastOld, err := s.GetTransfer(ctx, oldDone.ID)
	must(t, err, "get")
	freshRec, err := s.GetTransfer(ctx, fresh.ID)
	must(t, err, "get")
	mid := lastOld.UpdatedAt.Add(freshRec.UpdatedAt.Sub(lastOld.UpdatedAt) / 2)

	parts, err := s.PartialFiles(ctx)
	must(t, err, "partial files")
	if len(parts) != 4 {
		t.Fatalf("partial files %+v, want the 4 unfinished transfers", parts)
	}
	_, err = s.ExpireInterrupted(ctx, 2, "n", time.Since(mid))
	mustIs(t, err, store.ErrStaleEpoch, "expire with an old epoch")
	_, err = s.ExpireInterrupted(ctx, 3, "n", 0)
	mustIs(t, err, store.ErrInvalid, "zero expiry")

	out, err := s.ExpireInterrupted(ctx, 3, "n", time.Since(mid))
	must(t, err, "expire")
	got := map[string]string{}
	for _, tr := range out {
		got[tr.ID] = tr.TempPath
	}
	if len(out) != 2 || got[oldInterrupted.ID] != oldInterrupted.TempPath || got[oldRestartable.ID] != oldRestartable.TempPath {
		t.Fatalf("expired %+v, want the old interrupted and restartable ones with their partial files", out)
	}
	for _, id := range []string{oldInterrupted.ID, oldRestartable.ID} {
		tr, err := s.GetTransfer(ctx, id)
		must(t, err, "get expired")
		if tr.Status != store.StatusFailed || !strings.Contains(tr.Diagnostic, "expired") || tr.FinishedAt.IsZero() {
			t.Fatalf("expired transfer %+v, want failed with an expiry diagnostic", tr)
		}
	}
	for id, want := range map[string]store.TransferStatus{oldLive.ID: store.StatusInProgress, oldDone.ID: store.StatusCompleted, fresh.ID: store.StatusInterrupted} {
		tr, err := s.GetTransfer(ctx, id)
		must(t, err, "get kept")
		if tr.Status != want {
			t.Fatalf("transfer %s is %s, want %s untouched", id, tr.Status, want)
		}
	}
	// The expired ones are final now: the retention purge removes them.
	again, err := s.ExpireInterrupted(ctx, 3, "n", time.Since(mid))
	must(t, err, "expire again")
	if len(again) != 0 {
		t.Fatalf("second expiry %+v, want nothing", again)
	}
}

// testCancelResting: a transfer no session carries can be cancelled
// (interrupted, restartable, in_progress with its owner gone); one whose
// owner is alive or that is final cannot (issue 16, defect 8).
func testCancelResting(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	must(t, s.ClaimLeadership(ctx, 2, "old"), "claim 2")
	orphan, err := s.CreateTransfer(ctx, 2, SampleTransfer("P", 1))
	must(t, err, "create orphan")
	interrupted, err := s.CreateTransfer(ctx, 2, SampleTransfer("P", 2))
	must(t, err, "create interrupted")
	must(t, s.FinishTransfer(ctx, 2, interrupted.ID, store.TransferResult{Status: store.StatusInterrupted}), "interrupt")
	done, err := s.CreateTransfer(ctx, 2, SampleTransfer("P", 3))
	must(t, err, "create done")
	must(t, s.FinishTransfer(ctx, 2, done.ID, store.TransferResult{Status: store.StatusCompleted}), "complete")
	must(t, s.ClaimLeadership(ctx, 3, "new"), "claim 3")

	alive := func(store.Transfer) bool { return false }
	gone := func(store.Transfer) bool { return true }
	_, err = s.CancelResting(ctx, 3, "new", orphan.ID, alive)
	mustIs(t, err, store.ErrConflict, "cancel in_progress with a live owner")
	_, err = s.CancelResting(ctx, 3, "new", done.ID, gone)
	mustIs(t, err, store.ErrConflict, "cancel a completed transfer")
	_, err = s.CancelResting(ctx, 2, "old", interrupted.ID, gone)
	mustIs(t, err, store.ErrStaleEpoch, "cancel with an old epoch")
	_, err = s.CancelResting(ctx, 3, "new", "no-such-id", gone)
	mustIs(t, err, store.ErrNotFound, "cancel a missing transfer")

	for _, id := range []string{orphan.ID, interrupted.ID} {
		tr, err := s.CancelResting(ctx, 3, "new", id, gone)
		must(t, err, "cancel resting")
		if tr.Status != store.StatusCancelled || tr.Epoch != 3 {
			t.Fatalf("cancel returned %+v", tr)
		}
		got, err := s.GetTransfer(ctx, id)
		must(t, err, "get cancelled")
		if got.Status != store.StatusCancelled || got.FinishedAt.IsZero() || got.Diagnostic == "" {
			t.Fatalf("cancelled transfer %+v", got)
		}
	}
	// The old owner's late write is refused: the cancel took ownership.
	err = s.FinishTransfer(ctx, 2, orphan.ID, store.TransferResult{Status: store.StatusCompleted})
	mustIs(t, err, store.ErrNotOwner, "late finish of the old owner")
	// A restart does not resurrect it.
	_, err = s.FindRestartable(ctx, store.RestartKey{PartnerID: interrupted.PartnerID, Direction: interrupted.Direction,
		PesitID: interrupted.PesitID, FileID: interrupted.FileID})
	mustIs(t, err, store.ErrNotFound, "restart of a cancelled transfer")
}

// testAuditExcludePrefixes: the exclusion filter that keeps credential events from
// viewers (issue 16, defect 11).
func testAuditExcludePrefixes(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	for _, action := range []string{"user.put", "token.create", "api.auth", "api.authorize", "partner.update", "transfer.cancel"} {
		_, err := s.AppendAudit(ctx, store.AuditEvent{Actor: "a", Action: action})
		must(t, err, "append "+action)
	}
	p, err := s.ListAudit(ctx, store.AuditFilter{ExcludeActions: []string{"user.", "token.", "api.auth"}})
	must(t, err, "list")
	var got []string
	for _, e := range p.Items {
		got = append(got, e.Action)
	}
	if !reflect.DeepEqual(got, []string{"transfer.cancel", "partner.update", "api.authorize"}) {
		t.Fatalf("actions %v, want transfer.cancel, partner.update and api.authorize only", got)
	}
	_, err = s.ListAudit(ctx, store.AuditFilter{ExcludeActions: []string{"user%"}})
	mustIs(t, err, store.ErrInvalid, "wildcard in a prefix")
}

// testDotIDs: "." and ".." are not partner or file ids (issue 16, defect 11).
func testDotIDs(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	for _, id := range []string{".", "..", "..."} {
		p := SamplePartner("X")
		p.ID = id
		_, err := s.CreatePartner(ctx, p, "")
		mustIs(t, err, store.ErrInvalid, "partner "+id)
		f := SampleFile("X")
		f.ID = id
		_, err = s.CreateFile(ctx, f)
		mustIs(t, err, store.ErrInvalid, "file "+id)
	}
	f := SampleFile("X")
	f.ID = "a.b"
	_, err := s.CreateFile(ctx, f)
	must(t, err, "a dotted id that is not only dots")
}
