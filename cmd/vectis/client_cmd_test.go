package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/client"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
	"github.com/vectis-ft/vectis/pesit/server/memjournal"
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

func TestClientCommandExitCodes(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "f.bin")
	if err := os.WriteFile(src, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
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
		{"receive transfer id over 24 bits", newReceiveCommand, append([]string{"--transfer-id", "16777216", "VF", filepath.Join(dir, "out")}, base...), exitUsage},
		// A valid --transfer-id is accepted: the failure is the connection.
		{"receive with transfer id", newReceiveCommand, append([]string{"--transfer-id", "4660", "VF", filepath.Join(dir, "out")}, base...), exitConnection},
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
	addr := testenv.FreeAddr(t)
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

// startPeSITServer runs a real pesit/server on loopback with partner
// "ACME" (password "s3cret") and the virtual file "DATA" in both directions.
func startPeSITServer(t *testing.T) (addr, in, out string) {
	t.Helper()
	root := t.TempDir()
	in, out = filepath.Join(root, "in"), filepath.Join(root, "out")
	for _, d := range []string{in, out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := &memjournal.Directory{}
	dir.AddPartner(server.Partner{ID: "ACME", Enabled: true, Access: server.AccessBoth, VerifyPassword: memjournal.Password("s3cret")})
	dir.AddFile(server.VirtualFile{ID: "DATA", Direction: server.DirectionBoth, ReceiveDir: in, SendDir: out,
		Overwrite: true, RecordFormat: server.RecordVariable, DataCode: 2})
	srv, err := server.New(server.Config{ID: "BANKSRV", Addr: "127.0.0.1:0", SyncIntervalKB: 64, SyncWindow: 2},
		server.Deps{Directory: dir, Journal: &memjournal.Journal{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv.Addr().String(), in, out
}

// TestClientCommandsAgainstServer pushes and pulls with the commands
// against a real server: password from a file and from VECTIS_PASSWORD,
// JSON results, and the exit codes of a refused connection and of a
// refused transfer.
func TestClientCommandsAgainstServer(t *testing.T) {
	addr, in, out := startPeSITServer(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "payments.dat")
	data := bytes.Repeat([]byte("0123456789\x00\xff"), 100000)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--addr", addr, "--server-id", "BANKSRV", "--partner", "ACME", "--output", "json",
		"--state-dir", filepath.Join(dir, "state")}

	stdout, err := runClientCmd(t, newSendCommand(), append(base, "--password-file", pw, "--file", "DATA", src)...)
	if err != nil {
		t.Fatalf("send: %v\n%s", err, stdout)
	}
	var r report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || r.Status != "ok" || r.Bytes != int64(len(data)) {
		t.Fatalf("send report %q (%v)", stdout, err)
	}
	got, err := os.ReadFile(filepath.Join(in, "DATA"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("server received %d bytes (%v), want the %d sent", len(got), err, len(data))
	}

	if err := os.Rename(filepath.Join(in, "DATA"), filepath.Join(out, "DATA")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VECTIS_PASSWORD", "s3cret")
	dst := filepath.Join(dir, "back.dat")
	stdout, err = runClientCmd(t, newReceiveCommand(), append(base, "DATA", dst)...)
	if err != nil {
		t.Fatalf("receive: %v\n%s", err, stdout)
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("received %d bytes (%v), want %d", len(got), err, len(data))
	}

	// A file the server does not have: 2/205, exit code 4.
	stdout, err = runClientCmd(t, newReceiveCommand(), append(base, "NOPE", filepath.Join(dir, "nope"))...)
	if exitCode(err) != exitTransfer || json.Unmarshal([]byte(stdout), &r) != nil || r.Diagnostic == "" {
		t.Fatalf("receive of an unknown file: exit %d (%v), report %q", exitCode(err), err, stdout)
	}
	// A wrong password: RCONNECT 3/304, exit code 3.
	t.Setenv("VECTIS_PASSWORD", "wrong")
	stdout, err = runClientCmd(t, newReceiveCommand(), append(base, "DATA", filepath.Join(dir, "x"))...)
	if exitCode(err) != exitConnection || json.Unmarshal([]byte(stdout), &r) != nil || r.Diagnostic != "3/304" {
		t.Fatalf("wrong password: exit %d (%v), report %q", exitCode(err), err, stdout)
	}
}

// TestSendTransferIDAndRefusedRestart: --transfer-id is the PI 13 of the
// push and of its report; a refused restart (client.RestartRefusedError,
// issue 16 defect 7) exits 4 like any refused transfer, with its
// diagnostic in the report, and --start-over is a flag of send.
func TestSendTransferIDAndRefusedRestart(t *testing.T) {
	addr, _, _ := startPeSITServer(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "f.dat")
	if err := os.WriteFile(src, bytes.Repeat([]byte("x"), 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VECTIS_PASSWORD", "s3cret")
	stdout, err := runClientCmd(t, newSendCommand(), "--addr", addr, "--server-id", "BANKSRV", "--partner", "ACME",
		"--output", "json", "--state-dir", filepath.Join(dir, "state"), "--file", "DATA", "--transfer-id", "4660", src)
	var r report
	if err != nil || json.Unmarshal([]byte(stdout), &r) != nil || r.TransferID != 4660 || r.AbandonedTransferID != 0 {
		t.Fatalf("send --transfer-id 4660: %v, report %q", err, stdout)
	}
	refused := &client.RestartRefusedError{TransferID: 4660, Diagnostic: fpdu.DiagFileExists}
	var buf bytes.Buffer
	f := clientFlags{output: "json"}
	err = f.finish(&buf, report{Direction: "send"}, client.Result{TransferID: 4660}, refused)
	if exitCode(err) != exitTransfer || json.Unmarshal(buf.Bytes(), &r) != nil || r.Diagnostic != "2/204" || r.TransferID != 4660 {
		t.Fatalf("refused restart: exit %d, report %q", exitCode(err), buf.String())
	}
	if newSendCommand().Flags().Lookup("start-over") == nil {
		t.Fatal("send has no --start-over")
	}
}
