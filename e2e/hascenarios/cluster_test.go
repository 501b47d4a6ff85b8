//go:build e2e

package hascenarios

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
	"github.com/vectis-ft/vectis/internal/testenv/faultproxy"
	"github.com/vectis-ft/vectis/internal/testenv/kubetest"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
)

// env is what every scenario shares: the vectis binary and one Kubernetes
// control plane (each scenario gets its own namespace).
type env struct {
	bin   string
	cp    *kubetest.ControlPlane
	admin kubernetes.Interface
}

// vectisBinary is the binary under test (make e2e builds it).
func vectisBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("VECTIS_E2E_BINARY")
	if bin == "" {
		if root, ok := testenv.RepoRoot(); ok {
			if _, err := os.Stat(filepath.Join(root, "bin", "vectis")); err == nil {
				bin = filepath.Join(root, "bin", "vectis")
			}
		}
	}
	if bin == "" {
		testenv.Missing(t, "VECTIS_E2E_BINARY is not set and bin/vectis does not exist (run `make e2e`, or `make build` first)")
	}
	return bin
}

// cluster is one scenario's world: a 3-member etcd, a PostgreSQL
// database, three pods in a namespace of their own, three vectis processes
// and the invariant monitor.
type cluster struct {
	t       testing.TB
	env     *env
	ns      string
	name    string // Vectis cluster name
	dir     string
	ttl     time.Duration // election TTL of the nodes
	etcd    *etcdtest.Cluster
	proxies [][]*faultproxy.Proxy // [node][etcd member]: every node reaches etcd through its own proxies
	pgURL   string
	recvDir string
	nodes   []*vnode
	mon     *monitor
	// allowWaking: a node resumed from SIGSTOP needs a few milliseconds
	// of CPU to close the port that it could not close while stopped; the
	// scenario checks that window itself (it must not serve in it), and
	// the listener invariant covers every other round.
	allowWaking bool
	// livenessProxies[i] stands in front of node i's liveness listener
	// (TestFastFailover/ResetProxy only).
	livenessProxies []*faultproxy.Proxy
}

// newCluster prepares a scenario (index idx picks its addresses) and
// starts the three nodes together.
func (e *env) newCluster(t testing.TB, idx int, electionTTL time.Duration, opts ...nodeOption) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := &cluster{t: t, env: e, ns: fmt.Sprintf("ha-s%d", idx), name: fmt.Sprintf("ha-s%d", idx), dir: t.TempDir(), ttl: electionTTL}
	if d := os.Getenv("VECTIS_E2E_ARTIFACTS"); d != "" {
		// Keep the node logs and configurations of the scenario.
		c.dir = filepath.Join(d, "hascenarios", strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.RemoveAll(c.dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c.recvDir = filepath.Join(c.dir, "shared-in")

	c.etcd = etcdtest.Start(t, etcdtest.Options{Size: 3})
	c.pgURL = pgtest.Start(t)

	// Pods named like the nodes, and a kubeconfig with a token of a
	// ServiceAccount bound only to the chart's Role.
	e.cp.EnsureNamespace(ctx, t, c.ns)
	sa := e.cp.ServiceAccountConfig(ctx, t, c.ns, "vectis", kubetest.PodLabelerRules)
	kubeconfig := filepath.Join(c.dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, sa, c.ns); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		name := fmt.Sprintf("vectis-%d", i)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "vectis-server"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "vectis", Image: "vectis:e2e"}}},
		}
		if _, err := e.admin.CoreV1().Pods(c.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s: %v", name, err)
		}
	}

	for range 3 {
		var row []*faultproxy.Proxy
		for _, m := range c.etcd.Members() {
			u, err := url.Parse(m.ClientURL)
			if err != nil {
				t.Fatal(err)
			}
			row = append(row, faultproxy.New(t, u.Host))
		}
		c.proxies = append(c.proxies, row)
	}

	for i := range 3 {
		ip, err := freeIP(idx, i)
		if err != nil {
			t.Fatal(err)
		}
		n := &vnode{
			name: fmt.Sprintf("vectis-%d", i), ip: ip, bin: e.bin,
			cfgPath: filepath.Join(c.dir, fmt.Sprintf("vectis-%d.yaml", i)),
			logPath: filepath.Join(c.dir, fmt.Sprintf("vectis-%d.log", i)),
		}
		n.env = nodeEnv(n.name, c.ns)
		for _, o := range opts {
			o(n)
		}
		if err := os.WriteFile(n.cfgPath, []byte(c.nodeConfig(n, i, kubeconfig)), 0o600); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	c.mon = startMonitor(c.nodes, e.admin, c.ns)
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.kill()
		}
		c.mon.stop()
		if t.Failed() {
			t.Logf("node logs and configurations in %s (set VECTIS_E2E_ARTIFACTS to keep them)", c.dir)
			for _, n := range c.nodes {
				t.Logf("---- %s (%s) log tail, repeated lines folded ----\n%s", n.name, n.ip, n.tail(60))
			}
		}
	})
	for _, n := range c.nodes {
		if err := n.start(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// nodeOption adjusts a node before its configuration is written.
type nodeOption func(n *vnode)

// nodeEnv is the environment of a node process: the test's, without
// VECTIS_* and OTEL_* (which would configure the node), with the
// downward-API variables of its pod.
func nodeEnv(pod, ns string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VECTIS_") || strings.HasPrefix(kv, "OTEL_") || strings.HasPrefix(kv, "KUBECONFIG=") ||
			strings.HasPrefix(kv, "POD_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "POD_NAME="+pod, "POD_NAMESPACE="+ns, "OTEL_SDK_DISABLED=true")
}

func (c *cluster) nodeConfig(n *vnode, i int, kubeconfig string) string {
	var eps []string
	for _, p := range c.proxies[i] {
		eps = append(eps, strconv.Quote(p.URL()))
	}
	return fmt.Sprintf(`vectis:
  node:
    name: %[1]s
    address: %[2]s
    bindAddress: %[2]s
  dataDir: %[3]s
  fileRoot: %[21]s
  cluster:
    enabled: true
    name: %[4]s
    ttl: %[5]s
    labelKey: %[6]s
    podSelector: %[7]s
    etcd:
      endpoints: [%[8]s]
    kubernetes:
      enabled: true
      kubeconfig: %[9]s%[22]s
  store:
    driver: postgres
    url: %[10]q
  api:
    listen: ":%[11]d"
    users:
      - {name: %[12]s, password: %[13]q, role: admin}
  telemetry:
    logFormat: text
    logLevel: %[20]s
  pesit:
    timers:
      connect: 10s
      inactivity: 30s
      drain: 2s
    servers:
      - {id: %[14]s, listen: ":%[15]d", maxSessions: 200}
    partners:
      - {id: %[16]s, password: %[17]q, access: both}
    files:
      - id: %[18]s
        direction: receive
        receiveDir: %[19]s
        namePattern: "${partner}/${file}-${transferId}"
`, n.name, n.ip, filepath.Join(c.dir, "data-"+n.name), c.name, c.ttl, labelKey, podSelector,
		strings.Join(eps, ", "), kubeconfig, c.pgURL, apiPort, apiUser, apiPassword,
		serverID, pesitPort, partnerID, partnerPass, fileID, c.recvDir, nodeLogLevel(), c.dir, n.extraCluster)
}

// nodeLogLevel is the nodes' log level: VECTIS_HA_LOG_LEVEL (debug shows
// every lease renewal failure), default info.
func nodeLogLevel() string {
	if l := os.Getenv("VECTIS_HA_LOG_LEVEL"); l != "" {
		return l
	}
	return "info"
}

// freeIP is node i's loopback address in scenario idx: 127.86.idx.10+i,
// checked free on both ports (other suites use other 127/8 ranges).
func freeIP(idx, i int) (string, error) {
	for try := 0; try < 20; try++ {
		ip := fmt.Sprintf("127.86.%d.%d", idx, 10+i+try*10)
		ok := true
		for _, port := range []int{pesitPort, apiPort} {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return ip, nil
		}
	}
	return "", fmt.Errorf("no free loopback address for node %d of scenario %d", i, idx)
}

// writeKubeconfig writes cfg (server, CA and token) as a kubeconfig file.
func writeKubeconfig(path string, cfg *rest.Config, ns string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["ha"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["vectis"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["ha"] = &clientcmdapi.Context{Cluster: "ha", AuthInfo: "vectis", Namespace: ns}
	kc.CurrentContext = "ha"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// waitStableLeader waits until exactly one node accepts on its PeSIT port
// for a few rounds, its pod alone carries the label (when wantLabel), and
// returns it.
func (c *cluster) waitStableLeader(ctx context.Context, since time.Time, wantLabel bool) (int, time.Time, error) {
	var first time.Time
	for {
		i, at, err := c.mon.waitServing(ctx, since, -1)
		if err != nil {
			return -1, time.Time{}, fmt.Errorf("no node serves PeSIT: %w", err)
		}
		if first.IsZero() {
			first = at
		}
		// Stable: the same single node accepts for 5 rounds.
		stable := true
		n := 0
		for _, r := range c.mon.roundsSince(at) {
			acc := r.acceptingNodes()
			if len(acc) != 1 || acc[0] != i {
				stable = false
				break
			}
			n++
		}
		if !stable || n < 5 {
			since = at.Add(time.Nanosecond)
			if stable {
				since = at // not enough rounds yet: look again from the same point
				sleepCtx(ctx, 5*probeInterval)
			}
			continue
		}
		if wantLabel {
			for {
				l := c.mon.labelled()
				if len(l) == 1 && l[0] == c.nodes[i].name {
					break
				}
				if ctx.Err() != nil {
					return -1, time.Time{}, fmt.Errorf("leader %s serves but labelled pods are %v: %w", c.nodes[i].name, l, ctx.Err())
				}
				sleepCtx(ctx, 20*time.Millisecond)
			}
		}
		return i, first, nil
	}
}

// assertInvariants fails the test unless no two nodes ever accepted at
// once and no two pods were ever labelled at once, and records the
// overlaps in the row.
func (c *cluster) assertInvariants(r func(f func(*row))) {
	c.t.Helper()
	c.mon.stop()
	l, awake, b, desc := c.mon.overlaps()
	r(func(row *row) { row.listenOverlap, row.labelOverlap = l, b })
	switch {
	case c.allowWaking && awake > 0:
		c.t.Errorf("two nodes accepted PeSIT connections at once for up to %v, not counting a node waking from SIGSTOP (%s)", awake, desc)
	case !c.allowWaking && l > 0:
		c.t.Errorf("two nodes accepted PeSIT connections at once for up to %v (%s)", l, desc)
	}
	if b > 0 {
		c.t.Errorf("two pods carried %s=true at once for up to %v (%s)", labelKey, b, desc)
	}
}

// pg opens a connection to the scenario's database.
func (c *cluster) pg(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, c.pgURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return conn, nil
}

// fencedLeader is the leader recorded in PostgreSQL.
func (c *cluster) fencedLeader(ctx context.Context) (epoch int64, member string, since time.Time, err error) {
	conn, err := c.pg(ctx)
	if err != nil {
		return 0, "", time.Time{}, err
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `SELECT epoch, member, since FROM cluster_leader WHERE id = 1`).Scan(&epoch, &member, &since)
	return epoch, member, since, err
}
