package server_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestPullRefusedRestartPointStaysResumable (issue 14, item 1): READ PI 18
// beyond what was sent gets 2/214, the requester deselects and comes back
// with a valid point on a new connection: the restart must still be found.
func TestPullRefusedRestartPointStaysResumable(t *testing.T) {
	e := newEnv(t, nil)
	data := randomData(200_000, 11)
	os.WriteFile(filepath.Join(e.sendDir, "TESTFILE"), data, 0o640)
	p := dial(t, e.srv.Addr())
	p.connect()
	id, recLen := p.selectAndRead("TESTFILE", 0, false, 0)
	first := p.pull(recLen, 3)
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("sync point 3 journaled", func() bool {
		r, _ := e.jnl.Last()
		return len(r.Syncs) > 0 && r.Syncs[len(r.Syncs)-1].Number >= 3
	}))
	p.c.Close()
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("session end", func() bool { return e.srv.ActiveSessions() == 0 }))

	// Restart with a point never sent: refused, then deselected.
	q := dial(t, e.srv.Addr())
	q.connect()
	q.raw(selectFrame(q.srvID, "TESTFILE", uint32(id), true))
	q.expectDiag(fpdu.AckSelect, fpdu.DiagOK)
	q.sendKind(fpdu.ORF)
	q.expectDiag(fpdu.AckORF, fpdu.DiagOK)
	q.sendKind(fpdu.Read, uintParam(fpdu.PIRestartPoint, 91))
	q.expectDiag(fpdu.AckRead, fpdu.DiagRestartPointRefused)
	q.closeFile()
	q.release()
	recs := e.jnl.Records()
	last := recs[len(recs)-1]
	if last.Outcome == nil || last.Outcome.Status != server.StatusInterrupted || last.Outcome.Diagnostic != fpdu.DiagRestartPointRefused {
		t.Fatalf("refused restart recorded as %+v, want interrupted 2/214", last.Outcome)
	}

	// The valid point works, on yet another connection.
	r := dial(t, e.srv.Addr())
	r.connect()
	r.raw(selectFrame(r.srvID, "TESTFILE", uint32(id), true))
	r.expectDiag(fpdu.AckSelect, fpdu.DiagOK)
	r.sendKind(fpdu.ORF)
	r.expectDiag(fpdu.AckORF, fpdu.DiagOK)
	r.sendKind(fpdu.Read, uintParam(fpdu.PIRestartPoint, 3))
	r.expectDiag(fpdu.AckRead, fpdu.DiagOK)
	rest := r.pull(recLen, 0)
	if n := first.syncs[3]; !bytes.Equal(append(first.data[:n:n], rest.data...), data) {
		t.Fatalf("resumed data differs (prefix %d + %d bytes)", n, len(rest.data))
	}
	r.transEnd(len(data), (len(data)+recLen-1)/recLen)
	r.closeFile()
	r.release()
	for _, rec := range e.jnl.Records() {
		if rec.Outcome != nil && rec.Outcome.Diagnostic == fpdu.DiagAbnormalEnd {
			t.Fatalf("a record failed with 2/223: %+v", rec.Outcome)
		}
	}
}

// TestTextPushExactPI42 (issue 14, item 2): a text push whose PI 42 is
// exactly its data (1024 articles of 1 KiB, PI 42 = 1024 KB) is accepted,
// although the stored file holds a "\n" per article more.
func TestTextPushExactPI42(t *testing.T) {
	e := newEnv(t, nil)
	line := bytes.Repeat([]byte("x"), 1024)
	data := bytes.Repeat(line, 1024)
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 0x42, text: true, spaceKB: 1024})
	pushArticles(t, p, data, 0)
	p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	p.transEnd(len(data), 1024)
	p.closeFile()
	p.release()
	got, err := os.ReadFile(filepath.Join(e.recvDir, "TESTFILE"))
	if err != nil || len(got) != len(data)+1024 {
		t.Fatalf("stored %d bytes (%v), want %d", len(got), err, len(data)+1024)
	}
}

// TestTextPushOverPI42 keeps the check honest: one article more than PI 42
// announced is 2/224.
func TestTextPushOverPI42(t *testing.T) {
	e := newEnv(t, nil)
	line := bytes.Repeat([]byte("x"), 1024)
	data := bytes.Repeat(line, 1025)
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 0x43, text: true, spaceKB: 1024})
	pushArticles(t, p, data, 0)
	p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	p.sendKind(fpdu.TransEnd, uintParam(fpdu.PIByteCount, uint64(len(data))), uintParam(fpdu.PIArticleCount, 1025))
	p.expectDiag(fpdu.AckTransEnd, fpdu.DiagFileLargerThanAnnounced)
}

// TestPushRestartOtherCreationDate (issue 14, item 5): a restart CREATE
// whose PI 51 differs from the interrupted transfer's is another file: it
// is refused with 2/226 and the partial file is kept for the right one.
func TestPushRestartOtherCreationDate(t *testing.T) {
	e := newEnv(t, nil)
	data := randomData(100_000, 9)
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 0x51, created: "260119012505"})
	pushArticles(t, p, data[:65536+1024], 0)
	p.c.Close()
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("session end", func() bool { return e.srv.ActiveSessions() == 0 }))

	q := dial(t, e.srv.Addr())
	q.connect()
	q.raw(createFrame(q.srvID, createOpts{file: "TESTFILE", pi13: 0x51, restart: true, created: "260120080000"}))
	q.expectDiag(fpdu.AckCreate, fpdu.DiagTransferRefused)
	// The same file, same PI 51, still resumes at point 2.
	q.raw(createFrame(q.srvID, createOpts{file: "TESTFILE", pi13: 0x51, restart: true, created: "260119012505"}))
	q.expectDiag(fpdu.AckCreate, fpdu.DiagOK)
	q.sendKind(fpdu.ORF)
	q.expectDiag(fpdu.AckORF, fpdu.DiagOK)
	q.sendKind(fpdu.Write)
	if pt, _ := q.expectDiag(fpdu.AckWrite, fpdu.DiagOK).Params.Uint(fpdu.PIRestartPoint); pt != 2 {
		t.Fatalf("ACK(WRITE) PI 18 = %d, want 2", pt)
	}
	pushArticles(t, q, data[65536:], 2)
	q.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	q.transEnd(len(data), (len(data)+1023)/1024)
	q.closeFile()
	q.release()
	got, err := os.ReadFile(filepath.Join(e.recvDir, "TESTFILE"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("restarted file differs (%d bytes, %v)", len(got), err)
	}
}

// anomalyCount reads vectis_pesit_peer_anomalies_total{kind}.
func anomalyCount(t *testing.T, e *env, kind server.Anomaly) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "vectis_pesit_peer_anomalies_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == string(kind) {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no vectis_pesit_peer_anomalies_total{kind=%q}", kind)
	return 0
}

// strictPartner replaces the test partner by one with Strict set.
func strictPartner(e *env) {
	e.dir.AddPartner(server.Partner{ID: partnerID, Enabled: true, Access: server.AccessBoth, Strict: true,
		VerifyPassword: func(s string) bool { return s == password }})
}

// TestArticleCountAnomaly: TRANS.END PI 28 off while PI 27 and the data
// agree is accepted in both directions, counted and kept on the record;
// a strict partner gets 3/319.
func TestArticleCountAnomaly(t *testing.T) {
	for _, dir := range []string{"push", "pull"} {
		for _, strict := range []bool{false, true} {
			t.Run(dir, func(t *testing.T) {
				e := newEnv(t, nil)
				if strict {
					strictPartner(e)
				}
				data := randomData(100_000, 13)
				p := dial(t, e.srv.Addr())
				p.connect()
				articles := (len(data) + 1023) / 1024
				if dir == "push" {
					p.openForWrite(createOpts{file: "TESTFILE", pi13: 0x28})
					pushArticles(t, p, data, 0)
					p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
				} else {
					os.WriteFile(filepath.Join(e.sendDir, "TESTFILE"), data, 0o640)
					_, recLen := p.selectAndRead("TESTFILE", 0, false, 0)
					got := p.pull(recLen, 0)
					if !bytes.Equal(got.data, data) {
						t.Fatal("pulled data differs")
					}
					articles = got.articles
				}
				// A peer counting DTFs plus segments: 5 more.
				p.sendKind(fpdu.TransEnd, uintParam(fpdu.PIByteCount, uint64(len(data))), uintParam(fpdu.PIArticleCount, uint64(articles+5)))
				if strict {
					p.expectDiag(fpdu.Abort, fpdu.DiagCountMismatch)
					return
				}
				p.expectDiag(fpdu.AckTransEnd, fpdu.DiagOK)
				p.closeFile()
				p.release()
				rec, _ := e.jnl.Last()
				if rec.Outcome == nil || rec.Outcome.Status != server.StatusDone ||
					len(rec.Outcome.Anomalies) != 1 || rec.Outcome.Anomalies[0] != server.AnomalyArticleCount {
					t.Fatalf("outcome %+v, want done with the article_count anomaly", rec.Outcome)
				}
				if n := anomalyCount(t, e, server.AnomalyArticleCount); n != 1 {
					t.Fatalf("article_count anomalies = %v, want 1", n)
				}
			})
		}
	}
}

// TestEntityExceededAnomaly: a DTF larger than the negotiated PI 25 (CX
// exceeds it by a segment) is accepted up to the frame limit and counted;
// a strict partner is aborted with 3/318.
func TestEntityExceededAnomaly(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(map[bool]string{false: "liberal", true: "strict"}[strict], func(t *testing.T) {
			e := newEnv(t, nil)
			if strict {
				strictPartner(e)
			}
			data := randomData(6000, 14)
			p := dial(t, e.srv.Addr())
			p.connect()
			p.openForWrite(createOpts{file: "TESTFILE", pi13: 0x25, entity: 4096, recLen: 8192})
			p.send(&fpdu.FPDU{Kind: fpdu.DTF, DstID: p.srvID, Data: data})
			if strict {
				p.expectDiag(fpdu.Abort, fpdu.DiagBadParameter)
				return
			}
			p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
			p.transEnd(len(data), 1)
			p.closeFile()
			p.release()
			got, err := os.ReadFile(filepath.Join(e.recvDir, "TESTFILE"))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("stored file differs (%v)", err)
			}
			if n := anomalyCount(t, e, server.AnomalyEntityExceeded); n != 1 {
				t.Fatalf("entity_exceeded anomalies = %v, want 1", n)
			}
		})
	}
}
