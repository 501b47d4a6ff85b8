package server_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestSessionLimits: the server-wide limit gives 3/303, a partner's 3/309.
func TestSessionLimits(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.MaxSessions = 2 })
	e.dir.AddPartner(server.Partner{ID: "ONEONLY", Enabled: true, Access: server.AccessBoth, MaxSessions: 1,
		VerifyPassword: func(s string) bool { return s == "pw" }})
	a := dial(t, e.srv.Addr())
	if f := a.connectWith(serverID, "ONEONLY", "pw", 2, 2); f.Kind != fpdu.AConnect {
		t.Fatalf("first: %v", f.Kind)
	}
	b := dial(t, e.srv.Addr())
	checkRefused(t, b, b.connectWith(serverID, "ONEONLY", "pw", 2, 2), fpdu.DiagTooManyForPartner)
	c := dial(t, e.srv.Addr())
	c.connect()
	d := dial(t, e.srv.Addr())
	checkRefused(t, d, d.connectWith(serverID, partnerID, password, 2, 2), fpdu.DiagTooManyConnections)
	a.release()
	c.release()
	// The slots are free again.
	f := dial(t, e.srv.Addr())
	if g := f.connectWith(serverID, "ONEONLY", "pw", 2, 2); g.Kind != fpdu.AConnect {
		t.Fatalf("after release: %v", g.Kind)
	}
	f.release()
}

// TestPreConnection: the EBCDIC pre-connection message, framed and bare,
// is checked and answered ACK0 or NAK0.
func TestPreConnection(t *testing.T) {
	e := newEnv(t, nil)
	for _, framed := range []bool{true, false} {
		p := dial(t, e.srv.Addr())
		msg, err := fpdu.AppendPreConnection(nil, partnerID, password, framed)
		if err != nil {
			t.Fatal(err)
		}
		p.raw(msg)
		want := []byte{0xC1, 0xC3, 0xD2, 0xF0}
		if framed {
			want = append([]byte{0, 4}, want...)
		}
		got := make([]byte, len(want))
		if _, err := ioReadFull(p, got); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("framed=%v: reply % x (%v), want % x", framed, got, err, want)
		}
		p.raw(cxConnect)
		p.srvID = p.expect(fpdu.AConnect).SrcID
		p.release()
	}
	p := dial(t, e.srv.Addr())
	msg, _ := fpdu.AppendPreConnection(nil, partnerID, "wrong", true)
	p.raw(msg)
	got := make([]byte, 6)
	if _, err := ioReadFull(p, got); err != nil || !bytes.Equal(got, []byte{0, 4, 0xD5, 0xC1, 0xD2, 0xF0}) {
		t.Fatalf("bad password: reply % x (%v), want NAK0", got, err)
	}
}

// TestObservability: metrics, spans and logs of a CX push, and the password
// appears nowhere, even with FPDU debug logging.
func TestObservability(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.DebugFPDU = true })
	p := dial(t, e.srv.Addr())
	p.raw(cxConnect)
	p.srvID = p.expect(fpdu.AConnect).SrcID
	data := randomData(70_000, 9)
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 0x24C9})
	pushArticles(t, p, data, 0)
	p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	p.transEnd(len(data), (len(data)+1023)/1024)
	p.closeFile()
	p.release()
	bad := dial(t, e.srv.Addr())
	checkRefused(t, bad, bad.connectWith(serverID, partnerID, "nottheone", 2, 2), fpdu.DiagNotAuthorised)
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("sessions end", func() bool { return e.srv.ActiveSessions() == 0 }))

	metrics := gather(t, e)
	for name, want := range map[string]float64{
		`vectis_pesit_connections_total{result="accepted",server="PESITSRV"}`:               1,
		`vectis_pesit_connections_total{result="refused",server="PESITSRV"}`:                1,
		`vectis_pesit_transfers_total{direction="receive",result="done",server="PESITSRV"}`: 1,
		`vectis_pesit_transfer_bytes_total{direction="receive"}`:                            float64(len(data)),
		`vectis_pesit_sync_points_total`:                                                    2,
		`vectis_pesit_diagnostics_total{code="3/304"}`:                                      1,
		`vectis_pesit_sessions_active{server="PESITSRV"}`:                                   0,
		`vectis_pesit_transfer_duration_seconds_count{direction="receive"}`:                 1,
	} {
		if got, ok := metrics[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}

	var sessions, transfers int
	for _, s := range e.spans.Ended() {
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.String(), password) {
				t.Errorf("span %s attribute %s holds the password", s.Name(), a.Key)
			}
		}
		attrs := map[string]string{}
		for _, a := range s.Attributes() {
			attrs[string(a.Key)] = a.Value.String()
		}
		switch s.Name() {
		case "pesit.session":
			sessions++
			if attrs["pesit.server_id"] != serverID || attrs["net.peer.address"] == "" {
				t.Errorf("session span attributes %v", attrs)
			}
		case "pesit.transfer":
			transfers++
			if attrs["pesit.virtual_file"] != "TESTFILE" || attrs["pesit.direction"] != "receive" ||
				attrs["pesit.transfer_id"] != "9417" || attrs["pesit.sync_points"] != "2" || attrs["pesit.bytes"] != "70000" {
				t.Errorf("transfer span attributes %v", attrs)
			}
		default:
			t.Errorf("unexpected span %q", s.Name())
		}
	}
	if sessions != 2 || transfers != 1 {
		t.Errorf("%d session spans, %d transfer spans", sessions, transfers)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "CONNECT") {
		t.Error("FPDU debug log missing")
	}
	for _, secret := range []string{password, "nottheone"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain the password %q", secret)
		}
	}
}

func gather(t *testing.T, e *env) map[string]float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			if labels := labelString(m.GetLabel()); labels != "" {
				name += "{" + labels + "}"
			}
			switch {
			case m.Counter != nil:
				out[name] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[name] = m.Gauge.GetValue()
			case m.Histogram != nil:
				cn := mf.GetName() + "_count"
				if labels := labelString(m.GetLabel()); labels != "" {
					cn += "{" + labels + "}"
				}
				out[cn] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

func labelString(ls []*dto.LabelPair) string {
	var parts []string
	for _, l := range ls {
		parts = append(parts, l.GetName()+`="`+l.GetValue()+`"`)
	}
	return strings.Join(parts, ",")
}
