package main

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/vectis-ft/vectis/pesit/client"
)

func newSendCommand() *cobra.Command {
	var (
		f             clientFlags
		format        string
		articleLength int
		dataCode      string
		multi         int
		segment       bool
		transferID    uint32
		startOver     bool
	)
	cmd := &cobra.Command{
		Use:          "send FILE",
		SilenceUsage: true,
		Short:        "Push a file to a PeSIT server (CREATE/WRITE)",
		Long: `Push FILE to a PeSIT E server as the virtual file --file (default: the
base name of FILE), with sync points, restart and retries.

The password comes from --password-file or the VECTIS_PASSWORD environment
variable; there is deliberately no --password flag.

With --retries N a failed transfer is resumed on a new connection from the
last sync point the server acknowledged. The restart state is kept in
--state-dir or in a hidden file beside FILE, so a later "vectis send" of the
same file to the same server resumes too, under the transfer id of the
interrupted attempt (--transfer-id, if given, must be that one).

When the server refuses the restart (for example 2/204: it may hold the
whole file already) or the restart state is of another --transfer-id, the
push fails (exit 4) and the state is kept: sending the file again as a new
transfer is an explicit decision, --start-over, reported in the result.

` + exitCodesHelp,
		Example: `  VECTIS_PASSWORD=... vectis send --addr pesit.example:1761 --server-id BANKSRV \
      --partner ACME --file PAYMENTS --retries 3 payments.dat`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError("send takes exactly one FILE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			req := client.SendRequest{
				Source:        args[0],
				VirtualFile:   f.vfile,
				FileType:      f.fileType,
				TransferID:    transferID,
				ArticleLength: articleLength,
				MultiArticle:  multi,
				Segment:       segment,
				EntitySize:    f.entitySize,
				Priority:      f.priority,
				StateDir:      f.stateDir,
				StartOver:     startOver,
			}
			switch format {
			case "fixed":
				req.Format = client.FormatFixed
			case "variable":
				req.Format = client.FormatVariable
			default:
				return usageError("--article-format must be fixed or variable")
			}
			if req.DataCode, err = parseDataCode(dataCode); err != nil {
				return err
			}
			if transferID > 0xFFFFFF {
				return usageError("--transfer-id must fit 24 bits")
			}
			if req.VirtualFile == "" {
				req.VirtualFile = filepath.Base(args[0])
			}
			if fi, err := os.Stat(args[0]); err != nil || !fi.Mode().IsRegular() {
				if err == nil {
					err = errors.New("not a regular file")
				}
				return f.finish(cmd.OutOrStdout(), report{Direction: "send", Local: args[0], VirtualFile: req.VirtualFile},
					client.Result{}, &client.LocalError{Op: "open", Path: args[0], Err: err})
			}
			progress, clear := f.progressBar(cmd.ErrOrStderr())
			req.Progress = progress
			res, err := client.Push(cmd.Context(), cfg, req, f.retry(cmd.ErrOrStderr()))
			clear()
			return f.finish(cmd.OutOrStdout(), report{Direction: "send", Local: args[0], VirtualFile: req.VirtualFile}, res, err)
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&format, "article-format", "variable", "article format, PI 31: fixed or variable (variable with --data-code ascii|ebcdic sends one line per article)")
	fl.IntVar(&articleLength, "article-length", 0, "article length, PI 32: exact (fixed) or maximum (variable); 0 = 32768, lowered to the sync interval")
	fl.StringVar(&dataCode, "data-code", "binary", "data code, PI 16: binary, ascii or ebcdic (variable-format ebcdic text is translated to code page 037)")
	fl.IntVar(&multi, "multi-article", 0, "pack up to N articles per DTF (only for servers that agreed to it)")
	fl.BoolVar(&segment, "segment", false, "segment articles longer than the entity size (DTFDA/DTFMA/DTFFA)")
	fl.Uint32Var(&transferID, "transfer-id", 0, "transfer id, PI 13 (default: random; a restart keeps the interrupted attempt's)")
	fl.BoolVar(&startOver, "start-over", false, "if the interrupted transfer cannot be resumed, send the file again as a new transfer (reported as abandoned_transfer_id)")
	return cmd
}

func parseDataCode(s string) (client.DataCode, error) {
	switch s {
	case "binary":
		return client.DataBinary, nil
	case "ascii":
		return client.DataASCII, nil
	case "ebcdic":
		return client.DataEBCDIC, nil
	}
	return 0, usageError("--data-code must be binary, ascii or ebcdic, not %q", s)
}
