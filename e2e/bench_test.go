//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

// BenchmarkFailover kills the leader (pod delete, grace period 0: SIGKILL)
// VECTIS_E2E_FAILOVER_KILLS times (default 20) on the local control plane
// and reports, per kill:
//   - detection: kill -> a standby saw the leader go (start of the new
//     leader's vectis.failover span; its "no leader"/"leader observed" log
//     line as a cross-check),
//   - failover: kill -> first successful CONNECT through the PeSIT Service,
//   - span: the vectis.failover span's own duration (OTLP receiver).
//
// One iteration is the whole series: run it with -benchtime 1x (make
// bench-failover). It stops early, with what it has, after 10 minutes.
func BenchmarkFailover(b *testing.B) {
	kills := 20
	if v := os.Getenv("VECTIS_E2E_FAILOVER_KILLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("VECTIS_E2E_FAILOVER_KILLS=%q: want a positive number", v)
		}
		kills = n
	}
	const budget = 10 * time.Minute
	lc := startLocal(b)
	ctx := context.Background()
	if err := lc.Install(ctx); err != nil {
		b.Fatalf("install: %v", err)
	}
	waitSteady(ctx, b, lc, 3*time.Minute)
	mon := startMonitor(lc, 20*time.Millisecond)
	defer mon.stop()
	mon.take()

	var detection, detectionLog, failover, spans []time.Duration
	badSpans := 0
	start := time.Now()
	b.ResetTimer()
	for i := 0; i < kills; i++ {
		if time.Since(start) > budget {
			b.Errorf("time budget %v spent after %d of %d kills", budget, i, kills)
			break
		}
		st := waitSteady(ctx, b, lc, 90*time.Second)
		old := st.Leader.Name
		var survivors []string
		for _, p := range st.Pods {
			if p.Name != old {
				survivors = append(survivors, p.Name)
			}
		}
		zero := int64(0)
		kill := time.Now()
		if err := lc.DeletePod(ctx, old, &zero); err != nil {
			b.Fatalf("kill %d: delete leader %s: %v", i+1, old, err)
		}
		fo, err := timeToConnect(ctx, lc, kill, &st.Leader, time.Minute)
		if err != nil {
			b.Fatalf("kill %d: %v", i+1, err)
		}
		failover = append(failover, fo)
		after := waitReplaced(ctx, b, lc, old, 90*time.Second)
		// The new leader's failover span. It must name the killed leader as
		// the previous one and start after the kill (at the detection).
		span, err := lc.otlp.WaitFor(func(sp otlptest.Span) bool {
			return sp.Name == "vectis.failover" && sp.Attributes["vectis.new_leader"] == after.Leader.Name && !sp.End.Before(kill)
		}, 10*time.Second)
		switch {
		case err != nil:
			b.Errorf("kill %d: no vectis.failover span from %s: %v; spans since the kill: %s",
				i+1, after.Leader.Name, err, spanSummary(lc.otlp.Spans(), kill))
		case span.Attributes["vectis.previous_leader"] != old || span.Start.Before(kill):
			badSpans++
			b.Errorf("kill %d: vectis.failover span of %s is wrong: previous_leader %q (killed: %s), starts %v after the kill (failover_seconds %s)",
				i+1, after.Leader.Name, span.Attributes["vectis.previous_leader"], old, span.Start.Sub(kill), span.Attributes["vectis.failover_seconds"])
		default:
			detection = append(detection, span.Start.Sub(kill))
			spans = append(spans, span.End.Sub(span.Start))
		}
		if ev, ok := firstLog(lc, survivors, kill, "no leader", "leader observed"); ok {
			detectionLog = append(detectionLog, ev.Time.Sub(kill))
		}
		b.Logf("kill %d: %s -> %s, CONNECT after %v", i+1, old, after.Leader.Name, fo.Round(time.Millisecond))
	}
	b.StopTimer()
	o := mon.take()
	if o.Label > 0 || o.Listen > 0 {
		b.Errorf("invariants broken during the series: %s", o)
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\n== BenchmarkFailover: %d leader kills (pod delete, grace 0) ==\n", len(failover))
	fmt.Fprintln(tw, "measure\tn\tp50\tp99\tmax\t")
	line := func(name string, ds []time.Duration) {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t\n", name, len(ds), ms(percentile(ds, .5)), ms(percentile(ds, .99)), ms(percentile(ds, 1)))
	}
	line("detection (kill -> failover span start)", detection)
	line("detection (kill -> standby log line)", detectionLog)
	line("failover (kill -> CONNECT via Service)", failover)
	line("vectis.failover span duration", spans)
	tw.Flush()
	fmt.Printf("failover spans missing or wrong (previous leader, start before the kill): %d of %d\n", len(failover)-len(spans), len(failover))
	fmt.Printf("invariants over the series: %s\n", o)

	b.ReportMetric(float64(len(failover)), "kills")
	b.ReportMetric(msf(percentile(detection, .5)), "detect-p50-ms")
	b.ReportMetric(msf(percentile(detection, .99)), "detect-p99-ms")
	b.ReportMetric(msf(percentile(failover, .5)), "failover-p50-ms")
	b.ReportMetric(msf(percentile(failover, .99)), "failover-p99-ms")
	b.ReportMetric(msf(percentile(spans, .5)), "span-p50-ms")
	b.ReportMetric(msf(percentile(spans, .99)), "span-p99-ms")
	b.ReportMetric(float64(badSpans), "wrong-spans")
	b.ReportMetric(float64(o.Label.Milliseconds()), "label-overlap-ms")
	b.ReportMetric(float64(o.Listen.Milliseconds()), "listener-overlap-ms")
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// spanSummary counts spans by name (failover spans in full) since t.
func spanSummary(spans []otlptest.Span, since time.Time) string {
	counts := map[string]int{}
	var failovers []string
	for _, sp := range spans {
		if sp.End.Before(since) {
			continue
		}
		counts[sp.Name]++
		if sp.Name == "vectis.failover" {
			failovers = append(failovers, fmt.Sprintf("%v", sp.Attributes))
		}
	}
	return fmt.Sprintf("%v; failover spans %v", counts, failovers)
}
