package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/vectis-ft/vectis/pesit/client"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// Exit codes of `vectis send` and `vectis receive`, for scripts.
const (
	exitOK         = 0
	exitUsage      = 2 // bad flags or arguments
	exitConnection = 3 // connection refused, lost or TLS failure; RCONNECT
	exitTransfer   = 4 // transfer refused or failed with a PeSIT diagnostic (ACK-, IDT, ABORT)
	exitLocalIO    = 5 // local file could not be read or written
)

const exitCodesHelp = `Exit codes:
  0  transfer complete
  2  usage error (flags, arguments, password source)
  3  connection failed: refused, TLS failure, lost after the retries, or
     refused by the server (RCONNECT, e.g. 3/304 unknown partner or bad password)
  4  transfer refused or failed with a PeSIT diagnostic (e.g. 2/205 file does not exist)
  5  local I/O error (source unreadable, destination not writable)
  1  anything else (e.g. interrupted)`

// clientFlags are the options shared by send and receive.
type clientFlags struct {
	addr          string
	serverID      string
	partner       string
	passwordFile  string
	vfile         string
	fileType      uint16
	syncInterval  uint16
	syncWindow    uint8
	entitySize    int
	priority      uint8
	tls           bool
	tlsCA         string
	tlsCert       string
	tlsKey        string
	tlsServerName string
	preConnection bool
	retries       int
	backoff       time.Duration
	stateDir      string
	output        string
	timeout       time.Duration
	verbose       bool
	strict        bool
}

func (f *clientFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "addr", "", "server address host:port (required)")
	fl.StringVar(&f.serverID, "server-id", "", "server PeSIT id, PI 4 (required)")
	fl.StringVar(&f.partner, "partner", "", "our partner id at the server, PI 3 (required)")
	fl.StringVar(&f.passwordFile, "password-file", "", "file holding the partner password, PI 5 (default: $VECTIS_PASSWORD)")
	fl.StringVar(&f.vfile, "file", "", "virtual file id, PI 12")
	fl.Uint16Var(&f.fileType, "file-type", 0, "file type, PI 11")
	fl.Uint16Var(&f.syncInterval, "sync-interval", 1024, "proposed sync point interval in KiB, PI 7 (0: no sync points)")
	fl.Uint8Var(&f.syncWindow, "sync-window", 4, "proposed sync acknowledgement window, PI 7")
	fl.IntVar(&f.entitySize, "entity-size", client.DefaultEntitySize, "proposed maximum entity size in bytes, PI 25")
	fl.Uint8Var(&f.priority, "priority", 0, "transfer priority, PI 17 (0 urgent, 1, 2)")
	fl.BoolVar(&f.tls, "tls", false, "connect with TLS (1.2 or 1.3)")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "PEM CA bundle to verify the server (default: system roots)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM client certificate")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM client key")
	fl.StringVar(&f.tlsServerName, "tls-server-name", "", "name to verify in the server certificate (default: host of --addr)")
	fl.BoolVar(&f.preConnection, "pre-connection", false, "send the EBCDIC pre-connection message before CONNECT")
	fl.BoolVar(&f.strict, "strict", false, "fail on a server anomaly that is otherwise tolerated and reported, such as a miscounted PI 28 (docs/interop.md)")
	fl.IntVar(&f.retries, "retries", 0, "retry a failed transfer N times, resuming from the last acknowledged sync point")
	fl.DurationVar(&f.backoff, "retry-backoff", time.Second, "wait before the first retry (doubles each time, at most 30s)")
	fl.StringVar(&f.stateDir, "state-dir", "", "directory for restart state (default: a hidden file beside the local file)")
	fl.StringVar(&f.output, "output", "text", "result format: text or json")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "peer inactivity timeout")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log the PeSIT session to stderr")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitCodeError{code: exitUsage, err: err}
	})
}

func usageError(format string, args ...any) error {
	return &exitCodeError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// config validates the flags and builds the client configuration. The
// password comes from --password-file or VECTIS_PASSWORD, never from a flag,
// so that it does not show in the process list or shell history.
func (f *clientFlags) config(stderr io.Writer) (client.Config, error) {
	var cfg client.Config
	switch {
	case f.addr == "":
		return cfg, usageError("--addr is required")
	case f.serverID == "":
		return cfg, usageError("--server-id is required")
	case f.partner == "":
		return cfg, usageError("--partner is required")
	case f.output != "text" && f.output != "json":
		return cfg, usageError("--output must be text or json")
	}
	password := os.Getenv("VECTIS_PASSWORD")
	if f.passwordFile != "" {
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return cfg, usageError("read --password-file: %v", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	cfg = client.Config{
		Addr:           f.addr,
		RequesterID:    f.partner,
		ServerID:       f.serverID,
		Password:       password,
		PreConnection:  f.preConnection,
		Strict:         f.strict,
		SyncIntervalKB: f.syncInterval,
		SyncWindow:     f.syncWindow,
		Timeout:        f.timeout,
	}
	if f.tls || f.tlsCA != "" || f.tlsCert != "" {
		tc, err := client.LoadTLS(client.TLSFiles{CA: f.tlsCA, Cert: f.tlsCert, Key: f.tlsKey, ServerName: f.tlsServerName})
		if err != nil {
			return cfg, usageError("%v", err)
		}
		cfg.TLS = tc
	}
	if f.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg, nil
}

func (f *clientFlags) retry(stderr io.Writer) client.Retry {
	return client.Retry{
		Retries: f.retries,
		Backoff: f.backoff,
		OnRetry: func(attempt int, err error, wait time.Duration) {
			fmt.Fprintf(stderr, "vectis: attempt %d failed: %v; retrying in %s\n", attempt, err, wait)
		},
	}
}

// exitFor maps a transfer error to the documented exit codes.
func exitFor(err error) error {
	if err == nil {
		return nil
	}
	var (
		ec *exitCodeError
		le *client.LocalError
		ce *client.ConnectionError
		re *client.RejectedError
		te *client.TransferError
		ae *client.AbortError
		pe *client.ProtocolError
		rl *client.RefusedLocallyError
		rr *client.RestartRefusedError
	)
	code := 1
	switch {
	case errors.As(err, &ec):
		return err
	case errors.Is(err, context.Canceled):
		code = 1
	case errors.As(err, &le):
		code = exitLocalIO
	case errors.As(err, &re):
		code = exitConnection
	case errors.As(err, &te), errors.As(err, &ae), errors.As(err, &pe), errors.As(err, &rl), errors.As(err, &rr):
		code = exitTransfer
	case errors.As(err, &ce):
		code = exitConnection
	}
	return &exitCodeError{code: code, err: err}
}

// report is the result printed by send and receive.
type report struct {
	Status       string `json:"status"`
	Direction    string `json:"direction"`
	Local        string `json:"local"`
	VirtualFile  string `json:"virtual_file"`
	TransferID   uint32 `json:"transfer_id,omitempty"`
	Bytes        int64  `json:"bytes"`
	DataBytes    int64  `json:"data_bytes"`
	Articles     int64  `json:"articles"`
	Restarted    bool   `json:"restarted"`
	RestartPoint uint32 `json:"restart_point"`
	// AbandonedTransferID is the interrupted transfer given up by
	// --start-over for this fresh one.
	AbandonedTransferID uint32  `json:"abandoned_transfer_id,omitempty"`
	Attempts            int     `json:"attempts"`
	DurationMS          int64   `json:"duration_ms"`
	MBps                float64 `json:"mb_per_s"`
	Error               string  `json:"error,omitempty"`
	Diagnostic          string  `json:"diagnostic,omitempty"`
	ExitCode            int     `json:"exit_code"`
	// Anomalies are the server's tolerated deviations (docs/interop.md).
	Anomalies []client.Anomaly `json:"anomalies,omitempty"`
}

// finish prints the outcome and returns the command's error.
func (f *clientFlags) finish(w io.Writer, r report, res client.Result, err error) error {
	r.TransferID, r.Bytes, r.DataBytes, r.Articles = res.TransferID, res.FileBytes, res.DataBytes, res.Articles
	r.Restarted, r.RestartPoint, r.Attempts = res.Restarted, res.RestartPoint, res.Attempts
	r.AbandonedTransferID = res.Abandoned
	r.Anomalies = res.Anomalies
	r.DurationMS = res.Duration.Milliseconds()
	if s := res.Duration.Seconds(); s > 0 {
		r.MBps = float64(res.FileBytes) / 1e6 / s
	}
	err = exitFor(err)
	r.Status = "ok"
	if err != nil {
		r.Status = "error"
		r.Error = err.Error()
		r.ExitCode = exitCode(err)
		var d fpdu.Diagnostic
		if errors.As(err, &d) {
			r.Diagnostic = d.String()
		}
	}
	if f.output == "json" {
		enc := json.NewEncoder(w)
		if jerr := enc.Encode(r); jerr != nil && err == nil {
			return jerr
		}
		if err != nil {
			// Already reported in the JSON; keep the exit code.
			return &exitCodeError{code: exitCode(err), err: silentError{err}}
		}
		return nil
	}
	if err != nil {
		return err
	}
	arrow := "->"
	from, to := r.Local, r.VirtualFile
	if r.Direction == "receive" {
		from, to = r.VirtualFile, r.Local
	}
	fmt.Fprintf(w, "%s %s %s %s: %d bytes, %d articles in %s (%.1f MB/s), transfer id %d",
		r.Direction, from, arrow, to, r.Bytes, r.Articles, res.Duration.Round(time.Millisecond), r.MBps, r.TransferID)
	if r.Restarted {
		fmt.Fprintf(w, ", resumed from sync point %d", r.RestartPoint)
	}
	if r.AbandonedTransferID != 0 {
		fmt.Fprintf(w, ", started over (interrupted transfer %d abandoned)", r.AbandonedTransferID)
	}
	if r.Attempts > 1 {
		fmt.Fprintf(w, ", %d attempts", r.Attempts)
	}
	fmt.Fprintln(w)
	return nil
}

// silentError is an error already reported on stdout.
type silentError struct{ error }

// progressBar draws a progress line on stderr when it is a terminal and the
// output is text; otherwise it returns nil.
func (f *clientFlags) progressBar(stderr io.Writer) (func(client.Progress), func()) {
	file, ok := stderr.(*os.File)
	if !ok || f.output != "text" || f.verbose || !term.IsTerminal(int(file.Fd())) {
		return nil, func() {}
	}
	start := time.Now()
	drawn := false
	draw := func(p client.Progress) {
		drawn = true
		el := time.Since(start).Seconds()
		rate := 0.0
		if el > 0 {
			rate = float64(p.Bytes) / 1e6 / el
		}
		if p.Total > 0 {
			pct := min(float64(p.Bytes)/float64(p.Total), 1)
			const width = 30
			n := int(pct * width)
			fmt.Fprintf(file, "\r[%s%s] %5.1f%% %8.1f MB/s ", strings.Repeat("=", n), strings.Repeat(" ", width-n), pct*100, rate)
			return
		}
		fmt.Fprintf(file, "\r%12d bytes %8.1f MB/s ", p.Bytes, rate)
	}
	return draw, func() {
		if drawn {
			fmt.Fprint(file, "\r\033[K")
		}
	}
}
