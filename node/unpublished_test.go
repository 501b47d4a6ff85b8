package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/pesit/client"
	"github.com/vectis-ft/vectis/store"
)

// storeConfigs are the two stores a crash test runs on: the node's own
// SQLite file, and a real PostgreSQL.
func storeConfigs(t *testing.T) map[string]func(cfg *config.Config) {
	return map[string]func(cfg *config.Config){
		"SQLite": func(cfg *config.Config) {},
		"Postgres": func(cfg *config.Config) {
			cfg.Store.Driver = "postgres"
			cfg.Store.URL = pgtest.Start(t)
		},
	}
}

// openNodeStore opens the store of a stopped node, as the test's window on
// the records.
func openNodeStore(t *testing.T, cfg config.Config) *store.Store {
	t.Helper()
	sc := store.Config{Driver: cfg.Store.Driver, URL: cfg.Store.URL, Path: cfg.Store.Path}
	if sc.Driver == "" || sc.Driver == store.DriverSQLite {
		sc.Driver, sc.Path = store.DriverSQLite, filepath.Join(cfg.DataDir, "vectis.db")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, sc)
	if err != nil {
		t.Fatalf("open the node's store: %v", err)
	}
	return st
}

// again is cfg for the node's next start, on fresh ports: a port just
// released may be taken meanwhile (it is in the ephemeral range).
func again(t *testing.T, cfg config.Config) config.Config {
	cfg.API.Listen = testenv.FreeAddr(t)
	cfg.PeSIT.Servers = append([]config.Server(nil), cfg.PeSIT.Servers...)
	cfg.PeSIT.Servers[0].Listen = testenv.FreeAddr(t)
	return cfg
}

// crashBeforePublish pushes src through a node, stops the node and puts the
// received file and its record back into the state a crash between the
// record and the rename leaves (pesit/server receiveTransEnd): the record
// completed and still naming its temporary file, the file under that
// temporary name, nothing under the final one. It returns the record.
func crashBeforePublish(t *testing.T, n *testNode, src string) store.Transfer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := client.Push(ctx, clientConfig(n.pesit, "CXCLIENT", "test123"), client.SendRequest{Source: src, VirtualFile: "INBOX"}, client.Retry{})
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	n.stop(t)
	st := openNodeStore(t, n.cfg)
	defer st.Close()
	page, err := st.ListTransfers(ctx, store.TransferFilter{})
	if err != nil || len(page.Items) != 1 || page.Items[0].Status != store.StatusCompleted || page.Items[0].PesitID != int64(res.TransferID) {
		t.Fatalf("records after the push: %+v %v", page.Items, err)
	}
	rec := page.Items[0]
	temp := filepath.Join(filepath.Dir(rec.LocalPath), "."+filepath.Base(rec.LocalPath)+".part")
	if err := os.Rename(rec.LocalPath, temp); err != nil {
		t.Fatal(err)
	}
	lead, err := st.Leadership(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec, err = st.UpdateTransfer(ctx, lead.Epoch, rec.ID, func(x *store.Transfer) error {
		x.TempPath = temp // as the session left it: the record was written before the rename
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestSweepPublishesCompletedReceive is the regression test of the crash
// between "record completed" and "publish the file" of a receive: the node
// that restarts (as the next leader does) publishes the file, once, with the
// recorded bytes, and the record stays completed and forgets the temporary
// file. Before the fix the file stayed under its temporary name for ever.
func TestSweepPublishesCompletedReceive(t *testing.T) {
	for name, setStore := range storeConfigs(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := baseConfig(t, dir, "solo")
			setStore(&cfg)
			src, sum := randomFile(t, dir, 300<<10+17)
			rec := crashBeforePublish(t, startNode(t, cfg), src)

			n := startNode(t, again(t, cfg))
			testenv.Eventually(t, 20*time.Second, testenv.Awaiting("the file to be published", func() bool {
				_, err := os.Stat(rec.LocalPath)
				return err == nil
			}))
			inbox := filepath.Dir(rec.LocalPath)
			if got := files(t, inbox); len(got) != 1 || got[0] != filepath.Base(rec.LocalPath) {
				t.Fatalf("inbox holds %v, want only %s", got, filepath.Base(rec.LocalPath))
			}
			if fileSHA(t, rec.LocalPath) != sum {
				t.Fatal("the published file differs from the source")
			}
			testenv.Eventually(t, 5*time.Second, testenv.Awaiting("the sweep to log the recovery", func() bool {
				return strings.Contains(n.log.String(), "published now")
			}))
			if v := value(scrape(t, n.api), "vectis_received_files_recovered_total", nil); v != 1 {
				t.Errorf("vectis_received_files_recovered_total = %v, want 1", v)
			}
			n.stop(t)
			st := openNodeStore(t, cfg)
			defer st.Close()
			got, err := st.GetTransfer(context.Background(), rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != store.StatusCompleted || got.SHA256 != sum || got.TempPath != "" {
				t.Fatalf("record %+v: want completed, sha256 %s, no temporary path", got, sum)
			}
		})
	}
}

// TestSweepLeavesConflictingFile: when another file took the final name
// meanwhile, the sweep changes neither file, and the record says where the
// data received is.
func TestSweepLeavesConflictingFile(t *testing.T) {
	dir := t.TempDir()
	cfg := baseConfig(t, dir, "solo")
	src, sum := randomFile(t, dir, 100<<10)
	rec := crashBeforePublish(t, startNode(t, cfg), src)
	if err := os.WriteFile(rec.LocalPath, []byte("someone else's file"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, again(t, cfg))
	testenv.Eventually(t, 20*time.Second, testenv.Awaiting("the sweep to log the conflict", func() bool {
		return strings.Contains(n.log.String(), "another file holds its name")
	}))
	if v := value(scrape(t, n.api), "vectis_received_files_publish_conflicts_total", nil); v != 1 {
		t.Errorf("vectis_received_files_publish_conflicts_total = %v, want 1", v)
	}
	n.stop(t)
	if b, _ := os.ReadFile(rec.LocalPath); string(b) != "someone else's file" {
		t.Fatalf("the other file was changed: %q", b)
	}
	if fileSHA(t, rec.TempPath) != sum {
		t.Fatal("the data received was changed")
	}
	st := openNodeStore(t, cfg)
	defer st.Close()
	got, err := st.GetTransfer(context.Background(), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusCompleted || !strings.Contains(got.Diagnostic, rec.TempPath) || got.TempPath != "" {
		t.Fatalf("record %+v: want completed, its diagnostic naming %s", got, rec.TempPath)
	}
}

// TestSweepChecksTheRecordedData: a temporary file that no longer holds
// the data recorded (a later transfer to the same name truncated it) is not
// published; the record says why.
func TestSweepChecksTheRecordedData(t *testing.T) {
	dir := t.TempDir()
	cfg := baseConfig(t, dir, "solo")
	src, _ := randomFile(t, dir, 100<<10)
	rec := crashBeforePublish(t, startNode(t, cfg), src)
	if err := os.Truncate(rec.TempPath, 1000); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, again(t, cfg))
	testenv.Eventually(t, 20*time.Second, testenv.Awaiting("the sweep to log the mismatch", func() bool {
		return strings.Contains(n.log.String(), "no longer holds the data recorded")
	}))
	n.stop(t)
	if _, err := os.Lstat(rec.LocalPath); !os.IsNotExist(err) {
		t.Fatalf("a file was published: %v", err)
	}
	if fi, err := os.Stat(rec.TempPath); err != nil || fi.Size() != 1000 {
		t.Fatalf("the temporary file changed: %v", err)
	}
	st := openNodeStore(t, cfg)
	defer st.Close()
	got, err := st.GetTransfer(context.Background(), rec.ID)
	if err != nil || got.Status != store.StatusCompleted || !strings.Contains(got.Diagnostic, "no longer holds") || got.TempPath != "" {
		t.Fatalf("record %+v %v", got, err)
	}
}

// TestSweepFinishesHardLinkPublication: a crash between the hard link to
// the final name and the removal of the temporary one (sink.commit) leaves
// both names on one file; the sweep removes the temporary name.
func TestSweepFinishesHardLinkPublication(t *testing.T) {
	dir := t.TempDir()
	cfg := baseConfig(t, dir, "solo")
	src, sum := randomFile(t, dir, 100<<10)
	rec := crashBeforePublish(t, startNode(t, cfg), src)
	if err := os.Link(rec.TempPath, rec.LocalPath); err != nil {
		t.Fatal(err)
	}
	startNode(t, again(t, cfg))
	testenv.Eventually(t, 20*time.Second, testenv.Awaiting("the temporary name to go", func() bool {
		_, err := os.Lstat(rec.TempPath)
		return os.IsNotExist(err)
	}))
	if fileSHA(t, rec.LocalPath) != sum {
		t.Fatal("the published file changed")
	}
	if got := files(t, filepath.Dir(rec.LocalPath)); len(got) != 1 {
		t.Fatalf("inbox holds %v", got)
	}
}

// TestRestartOfCompletedTransferIsDone covers the two crashes after the
// record of a receive says completed, when the requester never got the
// ACK(TRANS.END) and restarts: (published) the node stopped after the
// rename, (unpublished) before it, and the next node's sweep published the
// file. Either way the restart is answered as a completed transfer (the data
// resent from the last sync point is checked against the published file),
// the file is delivered once, and the completed record stays as it was.
// Before the fix the restart found no restartable record and was refused
// with 2/204, after which a requester starts over and delivers twice.
func TestRestartOfCompletedTransferIsDone(t *testing.T) {
	for name, setStore := range storeConfigs(t) {
		for _, crash := range []string{"published", "unpublished"} {
			t.Run(name+"/"+crash, func(t *testing.T) {
				dir := t.TempDir()
				cfg := baseConfig(t, dir, "solo")
				setStore(&cfg)
				n := startNode(t, cfg)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				src, sum := randomFile(t, dir, 1<<20+4321)
				req := client.SendRequest{Source: src, VirtualFile: "INBOX", StateDir: filepath.Join(dir, "state")}
				proxy := newWithholdingProxy(t, n.pesit)
				first, err := client.Push(ctx, clientConfig(proxy.ln.Addr().String(), "CXCLIENT", "test123"), req, client.Retry{})
				if err == nil {
					t.Fatal("the push succeeded although its ACK(TRANS.END) was withheld")
				}
				n.stop(t)
				st := openNodeStore(t, cfg)
				page, err := st.ListTransfers(ctx, store.TransferFilter{})
				if err != nil || len(page.Items) != 1 || page.Items[0].Status != store.StatusCompleted || page.Items[0].SyncPoint.Number == 0 {
					t.Fatalf("records after the first attempt: %+v %v", page.Items, err)
				}
				rec := page.Items[0]
				if crash == "unpublished" {
					temp := filepath.Join(filepath.Dir(rec.LocalPath), "."+filepath.Base(rec.LocalPath)+".part")
					if err := os.Rename(rec.LocalPath, temp); err != nil {
						t.Fatal(err)
					}
					lead, err := st.Leadership(ctx)
					if err == nil {
						_, err = st.UpdateTransfer(ctx, lead.Epoch, rec.ID, func(x *store.Transfer) error { x.TempPath = temp; return nil })
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				st.Close()

				n = startNode(t, again(t, cfg))
				testenv.Eventually(t, 20*time.Second, testenv.Awaiting("the file under its final name", func() bool {
					_, err := os.Stat(rec.LocalPath)
					return err == nil
				}))
				res, err := client.Push(ctx, clientConfig(n.pesit, "CXCLIENT", "test123"), req, client.Retry{})
				if err != nil {
					t.Fatalf("restart of the completed transfer: %v", err)
				}
				if !res.Restarted || res.TransferID != first.TransferID || res.RestartPoint == 0 {
					t.Errorf("restart %+v, want a restart of %d from a sync point", res, first.TransferID)
				}
				inbox := filepath.Dir(rec.LocalPath)
				if got := files(t, inbox); len(got) != 1 || fileSHA(t, rec.LocalPath) != sum {
					t.Fatalf("inbox holds %v: want the file once, with the source's bytes", got)
				}
				n.stop(t)
				st = openNodeStore(t, cfg)
				defer st.Close()
				orig, err := st.GetTransfer(ctx, rec.ID)
				if err != nil || orig.Status != store.StatusCompleted || orig.SHA256 != sum || orig.RestartCount != rec.RestartCount {
					t.Fatalf("the completed record after the restart: %+v %v", orig, err)
				}
				page, err = st.ListTransfers(ctx, store.TransferFilter{})
				if err != nil || len(page.Items) != 2 || page.Items[0].Status != store.StatusCompleted || page.Items[0].SHA256 != sum {
					t.Fatalf("records %+v %v: want the restart's own record completed with the file's SHA-256", page.Items, err)
				}
			})
		}
	}
}
