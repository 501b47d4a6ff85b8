package main

import (
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/vectis-ft/vectis/pesit/client"
)

func newReceiveCommand() *cobra.Command {
	var f clientFlags
	var transferID uint32
	cmd := &cobra.Command{
		Use:          "receive VFILE [DEST]",
		SilenceUsage: true,
		Short:        "Pull a virtual file from a PeSIT server (SELECT/READ)",
		Long: `Pull the virtual file VFILE from a PeSIT E server into DEST (default: VFILE
in the current directory), with sync points, restart and retries.

The data goes to a hidden temporary file beside DEST, is fsynced at every
sync point before it is acknowledged, and is renamed to DEST only when the
transfer is complete: a partial file never appears under DEST.

The password comes from --password-file or the VECTIS_PASSWORD environment
variable; there is deliberately no --password flag.

` + exitCodesHelp,
		Example: `  VECTIS_PASSWORD=... vectis receive --addr pesit.example:1761 --server-id BANKSRV \
      --partner ACME --retries 3 STATEMENTS statements.dat`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageError("receive takes VFILE and an optional DEST")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if f.vfile != "" && f.vfile != args[0] {
				return usageError("--file %q conflicts with VFILE %q", f.vfile, args[0])
			}
			dest := filepath.Base(args[0])
			if len(args) == 2 {
				dest = args[1]
			}
			req := client.ReceiveRequest{
				VirtualFile: args[0],
				FileType:    f.fileType,
				Dest:        dest,
				EntitySize:  f.entitySize,
				Priority:    f.priority,
				StateDir:    f.stateDir,
				TransferID:  transferID,
			}
			if transferID > 0xFFFFFF {
				return usageError("--transfer-id must fit 24 bits")
			}
			progress, clear := f.progressBar(cmd.ErrOrStderr())
			req.Progress = progress
			res, err := client.Pull(cmd.Context(), cfg, req, f.retry(cmd.ErrOrStderr()))
			clear()
			return f.finish(cmd.OutOrStdout(), report{Direction: "receive", Local: dest, VirtualFile: args[0]}, res, err)
		},
	}
	f.register(cmd)
	cmd.Flags().Uint32Var(&transferID, "transfer-id", 0, "transfer id, PI 13, of SELECT (default 0: the server chooses; some servers want one)")
	return cmd
}
