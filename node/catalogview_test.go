package node

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/pesit/server"
	"github.com/vectis-ft/vectis/store"
)

// viewStores are the back ends the views are tested on. open returns a
// Store; called twice it gives two Stores on the same database, as two
// processes would have (only PostgreSQL carries changes between them).
func viewStores() []struct {
	name string
	db   func(t *testing.T) func(t *testing.T) *store.Store
} {
	opener := func(cfg store.Config) func(t *testing.T) *store.Store {
		return func(t *testing.T) *store.Store {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := store.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(st.Close)
			return st
		}
	}
	return []struct {
		name string
		db   func(t *testing.T) func(t *testing.T) *store.Store
	}{
		{"sqlite", func(t *testing.T) func(t *testing.T) *store.Store {
			return opener(store.Config{Driver: store.DriverSQLite, Path: filepath.Join(t.TempDir(), "vectis.db")})
		}},
		{"postgres", func(t *testing.T) func(t *testing.T) *store.Store {
			return opener(store.Config{Driver: store.DriverPostgres, URL: pgtest.Start(t)})
		}},
	}
}

func viewFile(id, pattern string) store.VirtualFile {
	return store.VirtualFile{ID: id, Direction: store.FileReceive, ReceiveDir: "/data/in", NamePattern: pattern,
		RecordFormat: store.RecordVariable, RecordLength: 4096, DataCode: store.DataBinary}
}

// TestCatalogViewNeverBehindLocalCommit drives a file view by hand, so that
// its events are applied exactly when the test says: after a change is
// committed, and before the view applied it, a lookup must not be served
// from the view (which still holds the old definition), and the directory
// must return the new one. Without the Seq check the view would serve the
// old definition here.
func TestCatalogViewNeverBehindLocalCommit(t *testing.T) {
	for _, tc := range viewStores() {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			st := tc.db(t)(t)
			events := st.Watch(ctx)
			v := newFileView(st, slog.New(slog.DiscardHandler))
			d := directory{st: st, files: v}
			for _, id := range []string{"INBOX", "OTHER"} {
				if _, err := st.CreateFile(ctx, viewFile(id, "${file}-v1")); err != nil {
					t.Fatal(err)
				}
			}
			if !v.reloadAll(ctx) {
				t.Fatal("load failed")
			}
			if f, ok := v.get("INBOX"); !ok || f.NamePattern != "${file}-v1" {
				t.Fatalf("after the load: %+v, %v", f, ok)
			}
			// Events of the creations, already covered by the load.
			for range 2 {
				if !v.apply(ctx, <-events) {
					t.Fatal("apply failed")
				}
			}

			if _, err := st.UpdateFile(ctx, viewFile("INBOX", "${file}-v2")); err != nil {
				t.Fatal(err)
			}
			if f, ok := v.get("INBOX"); ok {
				t.Fatalf("view served %q after a newer commit, before applying it", f.NamePattern)
			}
			if f, ok := v.get("OTHER"); ok {
				t.Fatalf("view served OTHER (%q) while behind the store", f.NamePattern)
			}
			vf, err := d.VirtualFile(ctx, "INBOX")
			if err != nil || vf.NamePattern != "${file}-v2" {
				t.Fatalf("directory after the update: %+v, %v", vf, err)
			}
			if !v.apply(ctx, <-events) {
				t.Fatal("apply failed")
			}
			if f, ok := v.get("INBOX"); !ok || f.NamePattern != "${file}-v2" {
				t.Fatalf("view after applying the update: %+v, %v (never invalidated?)", f, ok)
			}

			if err := st.DeleteFile(ctx, "INBOX"); err != nil {
				t.Fatal(err)
			}
			if _, ok := v.get("OTHER"); ok {
				t.Fatal("view served while behind a deletion")
			}
			if _, err := d.VirtualFile(ctx, "INBOX"); !errors.Is(err, server.ErrNotFound) {
				t.Fatalf("directory after the deletion: %v, want server.ErrNotFound", err)
			}
			if !v.apply(ctx, <-events) {
				t.Fatal("apply failed")
			}
			if f, ok := v.get("INBOX"); ok {
				t.Fatalf("view holds a deleted file: %+v", f)
			}
			if _, ok := v.get("OTHER"); !ok {
				t.Fatal("view not current after applying the deletion")
			}
		})
	}
}

// TestCatalogViewsFollowChanges runs the views as the node does: every
// change made through the store is seen by the next lookup, and is then
// served from the view itself, which needs it to have reloaded the entry.
// On PostgreSQL a change made through another Store (another node's API)
// reaches the view through LISTEN/NOTIFY.
func TestCatalogViewsFollowChanges(t *testing.T) {
	for _, tc := range viewStores() {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			open := tc.db(t)
			st := open(t)
			log := slog.New(slog.DiscardHandler)
			d := directory{st: st, partners: newPartnerView(st, log), files: newFileView(st, log)}
			hash, err := store.HashPassword("secret")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.CreatePartner(ctx, store.Partner{ID: "CX", Enabled: true, Access: store.AccessBoth}, hash); err != nil {
				t.Fatal(err)
			}
			if _, err := st.CreateFile(ctx, viewFile("INBOX", "${file}-v1")); err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); d.partners.run(runCtx) }()
			go func() { defer wg.Done(); d.files.run(runCtx) }()
			defer func() { stop(); wg.Wait() }()

			// eventually waits until the view serves what want accepts.
			eventually := func(what string, served func() bool) {
				t.Helper()
				deadline := time.Now().Add(10 * time.Second)
				for !served() {
					if time.Now().After(deadline) {
						t.Fatalf("%s: not served from the view within 10s", what)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			pattern := func(want string) func() bool {
				return func() bool { f, ok := d.files.get("INBOX"); return ok && f.NamePattern == want }
			}
			eventually("initial load", pattern("${file}-v1"))

			for i, want := range []string{"${file}-v2", "${file}-v3", "${file}-v4"} {
				if _, err := st.UpdateFile(ctx, viewFile("INBOX", want)); err != nil {
					t.Fatal(err)
				}
				vf, err := d.VirtualFile(ctx, "INBOX")
				if err != nil || vf.NamePattern != want {
					t.Fatalf("update %d: next lookup %q, %v; want %q", i, vf.NamePattern, err, want)
				}
				eventually("update", pattern(want))
			}

			if _, err := st.UpdatePartner(ctx, store.Partner{ID: "CX", Enabled: false, Access: store.AccessBoth}); err != nil {
				t.Fatal(err)
			}
			if p, err := d.Partner(ctx, "CX"); err != nil || p.Enabled {
				t.Fatalf("next lookup after disabling the partner: enabled %v, %v", p.Enabled, err)
			}
			eventually("disabled partner", func() bool { e, ok := d.partners.get("CX"); return ok && !e.p.Enabled })

			if err := st.DeleteFile(ctx, "INBOX"); err != nil {
				t.Fatal(err)
			}
			if _, err := d.VirtualFile(ctx, "INBOX"); !errors.Is(err, server.ErrNotFound) {
				t.Fatalf("next lookup after the deletion: %v, want server.ErrNotFound", err)
			}
			if _, err := st.CreateFile(ctx, viewFile("LATER", "${file}")); err != nil {
				t.Fatal(err)
			}
			eventually("deletion", func() bool {
				_, later := d.files.get("LATER")
				_, inbox := d.files.get("INBOX")
				return later && !inbox
			})

			if st.Driver() != store.DriverPostgres {
				return
			}
			other := open(t)
			if _, err := other.UpdateFile(ctx, viewFile("LATER", "${file}-remote")); err != nil {
				t.Fatal(err)
			}
			eventually("another node's update", func() bool { f, ok := d.files.get("LATER"); return ok && f.NamePattern == "${file}-remote" })
			if err := other.DeleteFile(ctx, "LATER"); err != nil {
				t.Fatal(err)
			}
			eventually("another node's deletion", func() bool {
				_, later := d.files.get("LATER")
				_, cx := d.partners.get("CX") // served at all: the view is current
				return !later && cx
			})
		})
	}
}
