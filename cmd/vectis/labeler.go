package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/k8s"
	"github.com/vectis-ft/vectis/node"
)

// withLabeler adds the Kubernetes pod labeller, and the watch of the own
// pod's deletion, to a cluster node whose Kubernetes access is enabled. The
// labeller counts its own failures in vectis_k8s_label_errors_total; the
// node registers it with its metrics.
func withLabeler(_ context.Context, cfg *config.Config, opts *node.Options) error {
	if !cfg.Cluster.Enabled || !cfg.Cluster.Kubernetes.Enabled {
		return nil
	}
	rc, err := k8s.NewInClusterOrConfig(cfg.Cluster.Kubernetes.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes client configuration: %w", err)
	}
	mc, err := k8s.NewMetadataClient(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	pod := k8s.PodIdentity{Name: cfg.Cluster.PodName, Namespace: cfg.Cluster.Namespace}
	var endpoints *k8s.ServiceEndpoints
	if svc := cfg.Cluster.Kubernetes.LeaderService; svc != "" {
		if endpoints, err = k8s.NewServiceEndpoints(rc, pod.Namespace, svc); err != nil {
			return fmt.Errorf("leader service endpoints: %w", err)
		}
	}
	l, err := k8s.NewLabeler(k8s.LabelerConfig{
		Client:    mc,
		Pod:       pod,
		Selector:  cfg.Cluster.PodSelector,
		LabelKey:  cfg.Cluster.LabelKey,
		Endpoints: endpoints,
	})
	if err != nil {
		return fmt.Errorf("pod labeller: %w", err)
	}
	opts.Labeler = podLabeler{l}
	opts.Collectors = append(opts.Collectors, l)
	// The pod's deletion, seen from the API server, starts the handover
	// a few hundred milliseconds before the kubelet's SIGTERM would.
	opts.StopNotice = func(ctx context.Context, log *slog.Logger) error {
		return k8s.AwaitDeletion(ctx, mc, pod, log)
	}
	return nil
}

// podLabeler adapts k8s.Labeler to the HA loop.
type podLabeler struct{ l *k8s.Labeler }

func (p podLabeler) Label(ctx context.Context, confirm func(context.Context) error) error {
	_, err := p.l.Reconcile(ctx, confirm)
	return err
}

func (p podLabeler) Unlabel(ctx context.Context) error { return p.l.Unlabel(ctx) }

// Watch keeps the labeller's copies of the release's pods and of the
// leader Service's EndpointSlices, for the life of the process: a new
// leader's first pass and its waits read them instead of listing.
func (p podLabeler) Watch(ctx context.Context) error { return p.l.Watch(ctx) }

// UseLogger gives the labeller the node's logger.
func (p podLabeler) UseLogger(log *slog.Logger) { p.l.UseLogger(log) }

func (p podLabeler) Release(ctx context.Context) error {
	return p.l.Release(ctx, k8s.DefaultReleaseGrace)
}

// Run keeps the label right while leading, on watch events and a timer.
func (p podLabeler) Run(ctx context.Context, confirm func(context.Context) error) error {
	return p.l.Run(ctx, confirm)
}
