package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func runClientCmd(t *testing.T, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestClientCommandExitCodes(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "f.bin")
	if err := os.WriteFile(src, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := closedAddr(t)
	base := []string{"--addr", addr, "--server-id", "SRV", "--partner", "P"}
	cases := []struct {
		name string
		cmd  func() *cobra.Command
		args []string
		code int
	}{
		{"send without file", newSendCommand, base, exitUsage},
		{"send unknown flag", newSendCommand, append([]string{"--password", "x", src}, base...), exitUsage},
		{"send without addr", newSendCommand, []string{"--server-id", "S", "--partner", "P", src}, exitUsage},
		{"send bad data code", newSendCommand, append([]string{"--data-code", "utf8", src}, base...), exitUsage},
		{"send missing source", newSendCommand, append([]string{filepath.Join(dir, "nope")}, base...), exitLocalIO},
		{"send connection refused", newSendCommand, append([]string{src}, base...), exitConnection},
		{"receive connection refused", newReceiveCommand, append([]string{"VF", filepath.Join(dir, "out")}, base...), exitConnection},
		{"receive too many args", newReceiveCommand, append([]string{"a", "b", "c"}, base...), exitUsage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := runClientCmd(t, c.cmd(), c.args...)
			if got := exitCode(err); err == nil || got != c.code {
				t.Fatalf("exit code %d (err %v), want %d", got, err, c.code)
			}
		})
	}
}

func TestClientCommandJSONError(t *testing.T) {
	addr := closedAddr(t)
	out, err := runClientCmd(t, newReceiveCommand(), "--output", "json", "--addr", addr,
		"--server-id", "S", "--partner", "P", "VF", filepath.Join(t.TempDir(), "x"))
	if exitCode(err) != exitConnection {
		t.Fatalf("exit code %d, want %d (%v)", exitCode(err), exitConnection, err)
	}
	var r report
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		t.Fatalf("output %q is not JSON: %v", out, jerr)
	}
	if r.Status != "error" || r.ExitCode != exitConnection || r.Error == "" {
		t.Fatalf("report %+v", r)
	}
}
