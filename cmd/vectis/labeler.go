package main

import (
	"context"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/node"
)

// withLabeler adds the Kubernetes pod labeller to a cluster node.
func withLabeler(_ context.Context, _ *config.Config, _ *node.Options) error {
	return nil
}
