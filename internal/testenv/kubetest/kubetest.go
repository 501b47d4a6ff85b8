// Package kubetest runs a real Kubernetes control plane on loopback for
// tests: etcd (from etcdtest), kube-apiserver with RBAC, a generated CA,
// serving certificate, admin client certificate and service-account signing
// key, and optionally kube-controller-manager. No kubelet runs: pods are
// API objects that nobody starts, which is all that label and RBAC tests
// need. Binaries come from `make tools` through testenv.Tool.
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
)

// serviceIP is the first address of the service range, the "kubernetes"
// Service's ClusterIP; the serving certificate carries it.
const (
	serviceCIDR = "10.0.0.0/24"
	serviceIP   = "10.0.0.1"
	// Issuer of service-account tokens.
	Issuer = "https://kubernetes.default.svc.cluster.local"
)

// Options configures a control plane.
type Options struct {
	// ControllerManager also runs kube-controller-manager with the
	// controllers a Deployment-and-Service workload needs: deployments,
	// replicasets, endpointslices, service accounts and their tokens,
	// namespaces and garbage collection.
	ControllerManager bool
	// StartTimeout bounds the wait for /readyz (default 90 s: the first
	// start on a busy machine is slow).
	StartTimeout time.Duration
}

// ControlPlane is a running control plane, stopped at test cleanup.
type ControlPlane struct {
	Etcd *etcdtest.Cluster
	// URL of the API server, https://127.0.0.1:<port>.
	URL string
	// CAPEM is the CA that signed the serving certificate.
	CAPEM []byte

	dir       string
	pki       *pki
	apiserver *testenv.Process
	kcm       *testenv.Process
	timeout   time.Duration
}

// Start runs etcd and kube-apiserver (and kube-controller-manager if
// asked) and waits until the API server is ready. It fails the test on
// error.
func Start(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	apiBin := testenv.Tool(t, "kube-apiserver")
	var kcmBin string
	if opts.ControllerManager {
		kcmBin = testenv.Tool(t, "kube-controller-manager")
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 90 * time.Second
	}
	cp := &ControlPlane{dir: t.TempDir(), timeout: opts.StartTimeout}
	var err error
	if cp.pki, err = newPKI(cp.dir); err != nil {
		t.Fatalf("kubetest: certificates: %v", err)
	}
	cp.CAPEM = cp.pki.caPEM
	cp.Etcd = etcdtest.Start(t, etcdtest.Options{Size: 1})

	port := testenv.FreePorts(t, 1)[0]
	cp.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	cp.apiserver = &testenv.Process{
		Name: "kube-apiserver",
		Bin:  apiBin,
		Log:  filepath.Join(cp.dir, "kube-apiserver.log"),
		Args: []string{
			"--etcd-servers=" + strings.Join(cp.Etcd.Endpoints(), ","),
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", port),
			"--cert-dir=" + filepath.Join(cp.dir, "apiserver-certs"),
			"--tls-cert-file=" + cp.pki.servingCert,
			"--tls-private-key-file=" + cp.pki.servKey,
			"--client-ca-file=" + cp.pki.caCert,
			"--authorization-mode=RBAC",
			"--service-account-issuer=" + Issuer,
			"--service-account-key-file=" + cp.pki.saPub,
			"--service-account-signing-key-file=" + cp.pki.saKey,
			"--service-cluster-ip-range=" + serviceCIDR,
			// The ServiceAccount admission plugin rejects pods until the
			// controller manager has created the namespace's "default"
			// account, and mounts token volumes that no kubelet reads.
			"--disable-admission-plugins=ServiceAccount",
			"--profiling=false",
			"--v=1",
		},
	}
	t.Cleanup(func() {
		// The state dies with the test: no graceful drain to wait for.
		if cp.kcm != nil {
			_ = cp.kcm.Stop(syscall.SIGKILL, stopGrace)
		}
		_ = cp.apiserver.Stop(syscall.SIGKILL, stopGrace)
		if t.Failed() {
			cp.apiserver.LogTailTo(t, 6<<10)
			if cp.kcm != nil {
				cp.kcm.LogTailTo(t, 6<<10)
			}
		}
	})
	if err := cp.StartAPIServer(); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	if opts.ControllerManager {
		if err := cp.startControllerManager(t, kcmBin); err != nil {
			t.Fatalf("kubetest: %v", err)
		}
	}
	return cp
}

// AdminConfig is a rest.Config with cluster-admin rights (a client
// certificate in system:masters).
func (cp *ControlPlane) AdminConfig() *rest.Config {
	return &rest.Config{
		Host: cp.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   cp.CAPEM,
			CertData: cp.pki.adminCertPEM,
			KeyData:  cp.pki.adminKeyPEM,
		},
		QPS:   100,
		Burst: 200,
	}
}

// AdminClient is a clientset for AdminConfig.
func (cp *ControlPlane) AdminClient(t testing.TB) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatalf("kubetest: admin client: %v", err)
	}
	return cs
}

// stopGrace is how long a stopping control-plane program may take before
// it is killed. kube-apiserver drains long-running watches on SIGTERM and
// can take longer than a test wants to wait; what is left is a crash.
const stopGrace = 5 * time.Second

// StopAPIServer stops kube-apiserver (SIGTERM, SIGKILL after 5 s);
// StartAPIServer brings it back on the same address, state kept in etcd.
func (cp *ControlPlane) StopAPIServer() error {
	if err := cp.apiserver.Stop(syscall.SIGTERM, stopGrace); err != nil && !errors.Is(err, testenv.ErrKilled) {
		return err
	}
	return nil
}

// StartAPIServer starts kube-apiserver (again) and waits for /readyz.
func (cp *ControlPlane) StartAPIServer() error {
	if err := cp.apiserver.Start(nil); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cp.timeout)
	defer cancel()
	return cp.waitReady(ctx)
}

// Kubeconfig writes an admin kubeconfig file and returns its path, for
// programs (kube-controller-manager, helm, kubectl) that want one.
func (cp *ControlPlane) Kubeconfig() (string, error) {
	path := filepath.Join(cp.dir, "admin.kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: kubetest
  context:
    cluster: kubetest
    user: admin
current-context: kubetest
`, cp.URL, cp.pki.caCert, cp.pki.adminCert, cp.pki.adminKey)
	if err := writeFile(path, []byte(cfg)); err != nil {
		return "", err
	}
	return path, nil
}

func (cp *ControlPlane) waitReady(ctx context.Context) error {
	rt, err := rest.TransportFor(cp.AdminConfig())
	if err != nil {
		return fmt.Errorf("kube-apiserver transport: %w", err)
	}
	hc := &http.Client{Transport: rt, Timeout: 2 * time.Second}
	return cp.apiserver.WaitReady(ctx, 200*time.Millisecond, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cp.URL+"/readyz", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
}

func (cp *ControlPlane) startControllerManager(t testing.TB, bin string) error {
	kubeconfig, err := cp.Kubeconfig()
	if err != nil {
		return err
	}
	cp.kcm = &testenv.Process{
		Name: "kube-controller-manager",
		Bin:  bin,
		Log:  filepath.Join(cp.dir, "kube-controller-manager.log"),
		Args: []string{
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			"--controllers=deployment-controller,replicaset-controller,endpointslice-controller," +
				"serviceaccount-controller,serviceaccount-token-controller,namespace-controller," +
				"garbage-collector-controller,root-ca-certificate-publisher-controller",
			"--service-account-private-key-file=" + cp.pki.saKey,
			"--root-ca-file=" + cp.pki.caCert,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", testenv.FreePorts(t, 1)[0]),
			"--cert-dir=" + filepath.Join(cp.dir, "kcm-certs"),
			"--profiling=false",
			"--v=1",
		},
	}
	return cp.kcm.Start(nil)
}
