package node

import (
	"testing"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/election"
)

// TestConfirmWindowBoundsAgree: package config validates cluster.confirmWindow
// without importing the election client; node hands the value to election,
// which would refuse at startup what config accepted if the bounds drifted.
func TestConfirmWindowBoundsAgree(t *testing.T) {
	if config.DefaultConfirmWindow != election.DefaultConfirmWindow {
		t.Errorf("config.DefaultConfirmWindow %v, election.DefaultConfirmWindow %v", config.DefaultConfirmWindow, election.DefaultConfirmWindow)
	}
	if config.MinConfirmWindow != election.MinConfirmWindow {
		t.Errorf("config.MinConfirmWindow %v, election.MinConfirmWindow %v", config.MinConfirmWindow, election.MinConfirmWindow)
	}
}
