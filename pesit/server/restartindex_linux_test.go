package server_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
	"github.com/vectis-ft/vectis/pesit/server/memjournal"
)

// crashingJournal is the in-memory journal as a machine crash leaves a
// store whose sync points were recorded without a flush: every deferred
// record is lost. A real store loses them only with the machine, which a
// test cannot crash. With rekey, FindRestart names the interrupted
// transfer by another id, as if the index on the file were another
// transfer's.
type crashingJournal struct {
	*memjournal.Journal
	deferred atomic.Int64
	rekey    bool
}

func (j *crashingJournal) SyncPointDeferred(context.Context, server.TransferRef, uint32, int64, int64) error {
	j.deferred.Add(1)
	return nil
}

func (j *crashingJournal) FindRestart(ctx context.Context, k server.RestartKey) (server.RestartState, bool, error) {
	rs, ok, err := j.Journal.FindRestart(ctx, k)
	if j.rekey {
		rs.Transfer.ID += "-another"
	}
	return rs, ok, err
}

// TestPushRestartFromFileIndex: the sync points of a push are acknowledged
// after one fsync that makes the data and the file's restart index durable
// together; their journal records are deferred. When those records are lost
// (the machine crashed), the restart resumes from the last point
// acknowledged all the same, found on the temporary file, and the file
// delivered is whole and carries no index. An index that is not the
// transfer's is ignored.
func TestPushRestartFromFileIndex(t *testing.T) {
	for _, tc := range []struct {
		name      string
		rekey     bool
		wantPoint uint64
	}{
		{"same transfer", false, 2},
		{"another transfer's index", true, 0},
	} {
		data := randomData(200_000, 11)
		t.Run(tc.name, func(t *testing.T) {
			var jnl *crashingJournal
			e := newEnvDeps(t, nil, func(d *server.Deps) {
				jnl = &crashingJournal{Journal: d.Journal.(*memjournal.Journal), rekey: tc.rekey}
				d.Journal = jnl
			})
			p := dial(t, e.srv.Addr())
			p.connect()
			if pt := p.openForWrite(createOpts{file: "TESTFILE", pi13: 0x0017}); pt != 0 {
				t.Fatalf("new transfer restart point %d", pt)
			}
			pushArticles(t, p, data[:65536+10240], 0) // SYN 1 and 2 acknowledged, 10 KiB beyond
			p.c.Close()
			testenv.Eventually(t, 5*time.Second, testenv.Awaiting("session end", func() bool { return e.srv.ActiveSessions() == 0 }))
			if n := jnl.deferred.Load(); n != 2 {
				t.Fatalf("%d sync points journaled deferred, want 2", n)
			}
			if recs := e.jnl.Records(); len(recs) != 1 || len(recs[0].Syncs) != 0 {
				t.Fatalf("journal kept sync points it was to lose: %+v", recs)
			}
			left := files(t, e.recvDir)
			if len(left) != 1 || !strings.HasSuffix(left[0], ".part") {
				t.Fatalf("after the interruption: %v", left)
			}

			q := dial(t, e.srv.Addr())
			q.connect()
			q.raw(createFrame(q.srvID, createOpts{file: "TESTFILE", pi13: 0x0017, restart: true}))
			q.expectDiag(fpdu.AckCreate, fpdu.DiagOK)
			q.sendKind(fpdu.ORF)
			q.expectDiag(fpdu.AckORF, fpdu.DiagOK)
			q.sendKind(fpdu.Write)
			pt, _ := q.expectDiag(fpdu.AckWrite, fpdu.DiagOK).Params.Uint(fpdu.PIRestartPoint)
			if pt != tc.wantPoint {
				t.Fatalf("ACK(WRITE) PI 18 = %d, want %d", pt, tc.wantPoint)
			}
			pushArticles(t, q, data[pt*32768:], pt)
			q.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
			q.transEnd(len(data), (len(data)+1023)/1024)
			q.closeFile()
			q.release()
			final := filepath.Join(e.recvDir, "TESTFILE")
			var v [64]byte
			if _, err := unix.Getxattr(final, "user.vectis.rp", v[:]); !errors.Is(err, unix.ENODATA) {
				t.Fatalf("delivered file: restart index %v, want none", err)
			}
			if got, err := os.ReadFile(final); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("restarted file differs (%d bytes, %v)", len(got), err)
			}
		})
	}
}
