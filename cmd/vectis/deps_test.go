package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTypedKubernetesClient: the binary reaches Kubernetes through the
// metadata client only. The typed clientset and the k8s.io/api types it
// pulls in were half of the binary (64 MB stripped against 35.5 MB); any
// import that brings them back fails here, before `make size` does.
func TestNoTypedKubernetesClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	var linked []string
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "k8s.io/client-go/kubernetes" || strings.HasPrefix(pkg, "k8s.io/client-go/kubernetes/typed/") ||
			strings.HasPrefix(pkg, "k8s.io/api/") {
			linked = append(linked, pkg)
		}
	}
	if len(linked) > 0 {
		t.Fatalf("cmd/vectis links %d typed Kubernetes packages, e.g. %v", len(linked), linked[:min(5, len(linked))])
	}
}
