//go:build e2e

// Package e2e is the end-to-end suite of Vectis: the chart installed on a
// Kubernetes control plane, pods that really run `vectis serve`, partners
// that connect through the PeSIT Service, and the leader killed in every
// way a cluster kills it. One suite, two backends behind Cluster: a local
// control plane (always runnable, used by CI) and kind (where Docker is).
//
//	make e2e              # both backends; kind skips (not passes) without Docker
//	make bench-failover   # BenchmarkFailover: 20 leader kills, p50/p99
//
// Environment: VECTIS_E2E_BINARY (the vectis under test, set by make),
// VECTIS_E2E_ARTIFACTS (keep pod logs, rendered manifests, volumes there),
// VECTIS_E2E_BACKEND=local|kind (run one backend only),
// VECTIS_E2E_FAILOVER_KILLS (benchmark series length, default 20), and
// the VECTIS_E2E_* variables that deploy/kind/e2e-kind.sh sets for kind.
//
// The local backend: kube-apiserver and kube-controller-manager (kubetest),
// the chart rendered by `helm template` and server-side applied, a process
// kubelet (kubelet_test.go) that runs each Pod as a `vectis serve` process
// on a loopback address of its own with the Pod's environment, volumes and
// ServiceAccount token, and a service proxy (proxy_test.go) that routes
// the PeSIT Service to its ready EndpointSlice endpoints like kube-proxy.
package e2e

import (
	"context"
	"time"
)

// Pod is one Vectis pod as the suite sees it.
type Pod struct {
	Name        string
	UID         string
	IP          string
	Labels      map[string]string
	Ready       bool
	Terminating bool
	Created     time.Time
	// Node, ContainerID (runtime://id) and Restarts of the vectis
	// container, as the kubelet reports them.
	Node        string
	ContainerID string
	Restarts    int32
}

// Cluster is what a scenario needs from a backend. Addresses it returns are
// reachable from the test process.
type Cluster interface {
	// Backend names the backend in test output ("local", "kind").
	Backend() string
	// ClusterName is the Vectis cluster name (the etcd key prefix).
	ClusterName() string
	// Replicas is the Deployment's replica count.
	Replicas() int
	// Install installs the chart; it returns when the manifests are applied.
	Install(ctx context.Context) error
	// Pods lists the release's pods, terminating ones included.
	Pods(ctx context.Context) ([]Pod, error)
	// DeletePod deletes a pod; grace nil uses the pod's own grace period.
	DeletePod(ctx context.Context, name string, grace *int64) error
	// RolloutRestart patches the Deployment's template annotation, as
	// `kubectl rollout restart` does.
	RolloutRestart(ctx context.Context) error
	// PodAPI is the base URL of a pod's admin API.
	PodAPI(ctx context.Context, p Pod) (string, error)
	// PodPeSIT is host:port of a pod's own PeSIT port (not the Service).
	PodPeSIT(ctx context.Context, p Pod) (string, error)
	// PodPeSITTLS is host:port of a pod's own PeSIT over TLS port (the e2e
	// values turn TLS on).
	PodPeSITTLS(ctx context.Context, p Pod) (string, error)
	// ServiceAddr is host:port of the PeSIT Service.
	ServiceAddr() string
	// Etcdctl runs etcdctl against Vectis' etcd and returns its standard
	// output, also when ctx ends it (for commands that watch).
	Etcdctl(ctx context.Context, args ...string) (string, error)
	// PodLog is the log of a pod's process so far (empty when unknown).
	PodLog(name string) string
	// APIAuth is a user and password of the admin API (viewer at least).
	APIAuth() (user, password string)
	// Dump writes diagnostics to the test log (called on failure).
	Dump(logf func(string, ...any))
}

// Fixed by charts/vectis/ci/e2e-values.yaml.
const (
	labelKey       = "vectis-leader"
	serverID       = "PESITSRV"
	partnerID      = "CXCLIENT"
	partnerPass    = "test123"
	apiUser        = "admin"
	apiPassword    = "e2e-admin"
	clusterNameE2E = "vectis-e2e"
	releaseName    = "vectis"
)
