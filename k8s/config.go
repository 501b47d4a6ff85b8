// Package k8s owns Vectis' use of the Kubernetes API: the client
// configuration (in-cluster or kubeconfig), the pod identity from the
// downward API, and the leader label that the Service selects on.
package k8s

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Downward-API environment variables that name the pod. Both are required
// when the cluster is enabled.
const (
	EnvPodName      = "POD_NAME"
	EnvPodNamespace = "POD_NAMESPACE"
)

// PodIdentity names the pod this process runs in.
type PodIdentity struct {
	Name      string
	Namespace string
}

// PodIdentityFromEnv reads POD_NAME and POD_NAMESPACE.
func PodIdentityFromEnv() (PodIdentity, error) {
	id := PodIdentity{Name: os.Getenv(EnvPodName), Namespace: os.Getenv(EnvPodNamespace)}
	return id, id.Validate()
}

// Validate reports a missing name or namespace.
func (id PodIdentity) Validate() error {
	var missing []error
	if id.Name == "" {
		missing = append(missing, fmt.Errorf("%s is not set (expose metadata.name through the downward API)", EnvPodName))
	}
	if id.Namespace == "" {
		missing = append(missing, fmt.Errorf("%s is not set (expose metadata.namespace through the downward API)", EnvPodNamespace))
	}
	if len(missing) > 0 {
		return fmt.Errorf("k8s: pod identity: %w", errors.Join(missing...))
	}
	return nil
}

// NewInClusterOrConfig returns the in-cluster configuration when running
// in a pod with a service account, otherwise the one from kubeconfig (a
// path; empty means $KUBECONFIG or ~/.kube/config).
func NewInClusterOrConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err == nil {
			return cfg, nil
		}
		if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("k8s: in-cluster config: %w", err)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("k8s: not in a cluster and no usable kubeconfig: %w", err)
	}
	return cfg, nil
}

// Client-side rate of the pods' metadata client when the configuration
// sets none. client-go's default (5 requests a second, burst 10) is spent
// by a stepped-down leader's Release, which reads its own pod every 50 ms,
// and a handover's list and patches would then wait 200 ms each.
const (
	metadataQPS   = 20
	metadataBurst = 40
)

// NewMetadataClient returns the client a Labeler needs: pods' metadata
// only (list, watch, get, patch).
func NewMetadataClient(cfg *rest.Config) (metadata.Interface, error) {
	cfg = withRate(cfg, metadataQPS, metadataBurst)
	c, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("k8s: metadata client: %w", err)
	}
	return c, nil
}

// withRate returns cfg with qps and burst as its client-side rate limit,
// unless cfg sets a rate or a limiter of its own.
func withRate(cfg *rest.Config, qps float32, burst int) *rest.Config {
	if cfg.QPS != 0 || cfg.RateLimiter != nil {
		return cfg
	}
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = qps, burst
	return c
}
