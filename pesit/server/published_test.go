package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestRestartOfPublishedFile: the node stopped after publishing a pushed
// file and before journaling its end (the record stays interrupted at its
// last sync point, the temporary file is gone, the final one is there). The
// requester's restart is accepted, not refused with 2/204: the data resent
// from the sync point is compared with the published file. The same data
// ends the transfer done, with the file's SHA-256 recorded; other data gets
// ACK(TRANS.END) 2/204. A restart announcing (PI 42) less than the
// published file holds is another file: ACK(CREATE) 2/204. The published
// file is never changed.
func TestRestartOfPublishedFile(t *testing.T) {
	for _, tc := range []struct {
		name      string
		same      bool
		announced uint32 // PI 42 of the restart, KB
	}{{"same data", true, 0}, {"other data", false, 0}, {"announced smaller", true, 100}} {
		same := tc.same
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			data := randomData(200_000, 7)
			final := filepath.Join(e.recvDir, "TESTFILE")
			p := dial(t, e.srv.Addr())
			p.connect()
			p.openForWrite(createOpts{file: "TESTFILE", pi13: 0x0024CB})
			pushArticles(t, p, data[:65536+10240], 0) // SYN 1 and 2 acknowledged
			p.c.Close()
			testenv.Eventually(t, 5*time.Second, testenv.Awaiting("session end", func() bool { return e.srv.ActiveSessions() == 0 }))
			// What the crash left: the file published whole, no .part.
			left := files(t, e.recvDir)
			if len(left) != 1 {
				t.Fatalf("after the interruption: %v", left)
			}
			if err := os.Remove(filepath.Join(e.recvDir, left[0])); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(final, data, 0o640); err != nil {
				t.Fatal(err)
			}

			q := dial(t, e.srv.Addr())
			q.connect()
			q.raw(createFrame(q.srvID, createOpts{file: "TESTFILE", pi13: 0x0024CB, restart: true, spaceKB: tc.announced}))
			if tc.announced != 0 {
				q.expectDiag(fpdu.AckCreate, fpdu.DiagFileExists)
				q.release()
				if got, err := os.ReadFile(final); err != nil || !bytes.Equal(got, data) {
					t.Fatal("the published file changed")
				}
				return
			}
			q.expectDiag(fpdu.AckCreate, fpdu.DiagOK)
			q.sendKind(fpdu.ORF)
			q.expectDiag(fpdu.AckORF, fpdu.DiagOK)
			q.sendKind(fpdu.Write)
			if pt, _ := q.expectDiag(fpdu.AckWrite, fpdu.DiagOK).Params.Uint(fpdu.PIRestartPoint); pt != 2 {
				t.Fatalf("ACK(WRITE) PI 18 = %d, want 2", pt)
			}
			resent := bytes.Clone(data[65536:])
			if !same {
				resent[len(resent)-1] ^= 0xFF
			}
			pushArticles(t, q, resent, 2)
			q.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
			articles := (len(data) + 1023) / 1024
			if same {
				q.transEnd(len(data), articles)
			} else {
				q.sendKind(fpdu.TransEnd, uintParam(fpdu.PIByteCount, uint64(len(data))), uintParam(fpdu.PIArticleCount, uint64(articles)))
				q.expectDiag(fpdu.AckTransEnd, fpdu.DiagFileExists)
			}
			q.closeFile()
			q.release()

			got, err := os.ReadFile(final)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("the published file changed (%d bytes, %v)", len(got), err)
			}
			if left := files(t, e.recvDir); len(left) != 1 {
				t.Fatalf("after the restart: %v", left)
			}
			rec, _ := e.jnl.Last()
			sum := sha256.Sum256(data)
			if same && (rec.Outcome.Status != server.StatusDone || rec.Outcome.SHA256 != hex.EncodeToString(sum[:])) {
				t.Fatalf("record of the restart: %+v", rec.Outcome)
			}
			if !same && rec.Outcome.Status != server.StatusFailed {
				t.Fatalf("record of a restart with other data: %+v", rec.Outcome)
			}
		})
	}
}
