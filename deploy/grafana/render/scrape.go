//go:build ignore

// scrape runs a standalone Vectis node in this process (embedded SQLite, a
// temporary directory, loopback ports), drives a short scripted load through
// its PeSIT server with the real client (pushes, pulls, concurrent pushes,
// CONNECTs refused with 3/304 and a SELECT refused with 2/205), scrapes its
// /metrics every 200 ms over HTTP, and writes one CSV row per scrape to
// stdout, after one "# phase,<seconds>,<what>" line per step of the script.
// plot.py turns the CSV into docs/img/metrics-short-run.png.
//
//	go run deploy/grafana/render/scrape.go > /tmp/vectis-metrics.csv
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/node"
	"github.com/vectis-ft/vectis/pesit/client"
)

const scrapeEvery = 200 * time.Millisecond

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func run() error {
	dir, err := os.MkdirTemp("", "vectis-render-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	apiAddr, err := freeAddr()
	if err != nil {
		return err
	}
	pesitAddr, err := freeAddr()
	if err != nil {
		return err
	}
	cfg := config.Default()
	cfg.Node.Name = "render"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.API.Listen = apiAddr
	cfg.API.Users = []config.User{{Name: "admin", Password: "admin-pw", Role: "admin"}}
	cfg.PeSIT.Timers.Drain = 2 * time.Second
	cfg.PeSIT.Servers = []config.Server{{ID: "PESITSRV", Listen: pesitAddr, MaxSessions: 50}}
	cfg.PeSIT.Partners = []config.Partner{{ID: "CXCLIENT", Password: "test123", Access: "both"}}
	cfg.PeSIT.Files = []config.VirtualFile{
		{ID: "INBOX", Direction: "receive", ReceiveDir: filepath.Join(dir, "in"), NamePattern: "${file}-${uuid}"},
		{ID: "OUTBOX", Direction: "send", SendDir: filepath.Join(dir, "out")},
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodeCtx, stopNode := context.WithCancel(ctx)
	nodeDone := make(chan error, 1)
	go func() { nodeDone <- node.Run(nodeCtx, &cfg, node.Options{Version: "render", LogOutput: io.Discard}) }()
	defer func() { stopNode(); <-nodeDone }()

	api := "http://" + apiAddr
	if err := waitReady(ctx, api); err != nil {
		return err
	}
	src := filepath.Join(dir, "src.bin")
	if err := writeRandom(src, 16<<20); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o750); err != nil {
		return err
	}
	if err := writeRandom(filepath.Join(dir, "out", "OUTBOX"), 16<<20); err != nil {
		return err
	}

	// The scraper runs for the whole script, and a little after it.
	start := time.Now()
	rows := make(chan string, 1024)
	scrapeCtx, stopScrape := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { scrapeLoop(scrapeCtx, api, start, rows) })
	var out []string
	collected := make(chan struct{})
	go func() {
		for r := range rows {
			out = append(out, r)
		}
		close(collected)
	}()

	cc := client.Config{Addr: pesitAddr, RequesterID: "CXCLIENT", ServerID: "PESITSRV", Password: "test123",
		SyncIntervalKB: 1024, SyncWindow: 4, Timeout: 30 * time.Second}
	push := func() error {
		_, err := client.Push(ctx, cc, client.SendRequest{Source: src, VirtualFile: "INBOX", NoRestart: true}, client.Retry{})
		return err
	}
	var pulls atomic.Int32
	pull := func() error {
		// One destination per pull: concurrent pulls into one file would
		// share its temporary name.
		dest := filepath.Join(dir, fmt.Sprintf("pulled-%d.bin", pulls.Add(1)))
		_, err := client.Pull(ctx, cc, client.ReceiveRequest{VirtualFile: "OUTBOX", Dest: dest, NoRestart: true}, client.Retry{})
		_ = os.Remove(dest)
		return err
	}
	refused := func() error {
		bad := cc
		bad.Password = "wrong"
		_, err := client.Dial(ctx, bad)
		var rej *client.RejectedError
		if !errors.As(err, &rej) {
			return fmt.Errorf("bad password: %v, want RCONNECT", err)
		}
		return nil
	}
	missing := func() error {
		_, err := client.Pull(ctx, cc, client.ReceiveRequest{VirtualFile: "NOFILE", Dest: filepath.Join(dir, "none.bin"), NoRestart: true}, client.Retry{})
		var te *client.TransferError
		if !errors.As(err, &te) {
			return fmt.Errorf("pull of an unknown file: %v, want a refusal", err)
		}
		return nil
	}
	concurrent := func(n int, f func() error) error {
		errs := make([]error, n)
		var cw sync.WaitGroup
		for i := range n {
			cw.Go(func() { errs[i] = f() })
		}
		cw.Wait()
		return errors.Join(errs...)
	}
	pause := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	script := []struct {
		what string
		do   func() error
	}{
		{"idle", func() error { return pause(time.Second) }},
		{"5 pushes, one at a time", func() error {
			for range 5 {
				if err := push(); err != nil {
					return err
				}
				if err := pause(150 * time.Millisecond); err != nil {
					return err
				}
			}
			return nil
		}},
		{"3 refused CONNECTs", func() error {
			for range 3 {
				if err := refused(); err != nil {
					return err
				}
				if err := pause(200 * time.Millisecond); err != nil {
					return err
				}
			}
			return nil
		}},
		{"3 pulls", func() error {
			for range 3 {
				if err := pull(); err != nil {
					return err
				}
			}
			return pause(500 * time.Millisecond)
		}},
		{"8 concurrent pushes, twice", func() error {
			if err := concurrent(8, push); err != nil {
				return err
			}
			if err := pause(300 * time.Millisecond); err != nil {
				return err
			}
			return concurrent(8, push)
		}},
		{"a refused SELECT", missing},
		{"2 x (4 concurrent pulls, then 4 pushes)", func() error {
			return concurrent(2, func() error {
				if err := concurrent(4, pull); err != nil {
					return err
				}
				return concurrent(4, push)
			})
		}},
		{"idle", func() error { return pause(1500 * time.Millisecond) }},
	}
	var phases []string
	for _, s := range script {
		fmt.Fprintf(os.Stderr, "%6.2fs %s\n", time.Since(start).Seconds(), s.what)
		phases = append(phases, fmt.Sprintf("# phase,%.3f,%s", time.Since(start).Seconds(), s.what))
		if err := s.do(); err != nil {
			stopScrape()
			wg.Wait()
			close(rows)
			<-collected
			return fmt.Errorf("%s: %w", s.what, err)
		}
		// Received files are not the point; keep the disk clean.
		_ = os.RemoveAll(filepath.Join(dir, "in"))
		_ = os.MkdirAll(filepath.Join(dir, "in"), 0o750)
	}
	stopScrape()
	wg.Wait()
	close(rows)
	<-collected
	for _, p := range phases {
		fmt.Println(p)
	}
	fmt.Println(csvHeader)
	for _, r := range out {
		fmt.Println(r)
	}
	return nil
}

const csvHeader = "t,transfers_done,transfers_not_done,bytes_receive,bytes_send,sessions_active,conn_accepted,conn_refused,diag_3_304,diag_2_205"

func scrapeLoop(ctx context.Context, api string, start time.Time, rows chan<- string) {
	tick := time.NewTicker(scrapeEvery)
	defer tick.Stop()
	for {
		if fams, err := scrape(ctx, api); err == nil {
			rows <- row(time.Since(start), fams)
		} else if ctx.Err() == nil {
			fmt.Fprintf(os.Stderr, "scrape: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func row(t time.Duration, f map[string]*dto.MetricFamily) string {
	all := sum(f, "vectis_pesit_transfers_total", nil)
	done := sum(f, "vectis_pesit_transfers_total", map[string]string{"result": "done"})
	return fmt.Sprintf("%.3f,%g,%g,%g,%g,%g,%g,%g,%g,%g", t.Seconds(), done, all-done,
		sum(f, "vectis_pesit_transfer_bytes_total", map[string]string{"direction": "receive"}),
		sum(f, "vectis_pesit_transfer_bytes_total", map[string]string{"direction": "send"}),
		sum(f, "vectis_pesit_sessions_active", nil),
		sum(f, "vectis_pesit_connections_total", map[string]string{"result": "accepted"}),
		sum(f, "vectis_pesit_connections_total", map[string]string{"result": "refused"}),
		sum(f, "vectis_pesit_diagnostics_total", map[string]string{"code": "3/304"}),
		sum(f, "vectis_pesit_diagnostics_total", map[string]string{"code": "2/205"}))
}

// sum adds a family's counter or gauge samples whose labels include want;
// an absent family or series is 0, as a fresh counter would be.
func sum(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var s float64
	for _, m := range fams[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if match {
			s += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return s
}

func scrape(ctx context.Context, api string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return fams, nil
}

func waitReady(ctx context.Context, api string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(api + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("node API %s not ready after 20s", api)
}

func writeRandom(p string, n int64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
