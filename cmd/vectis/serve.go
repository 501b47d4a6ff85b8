package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/node"
)

func newServeCommand() *cobra.Command {
	var (
		file string
		sets []string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a Vectis node: PeSIT servers (on the leader), admin API and metrics",
		Long: `Run a Vectis node.

Configuration comes from the embedded defaults, then --config (YAML with a
root key "vectis"), then VECTIS_* environment variables, then --set.
Without a configuration file the node is standalone: SQLite under ./data,
PeSIT server PESITSRV on :5000, admin API on :8080, no partner, and an admin
password generated on the first start and printed once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(config.Source{File: file, Environ: os.Environ(), Sets: sets})
			if err != nil {
				return &exitCodeError{code: 2, err: err}
			}
			opts := node.Options{Version: version, LogOutput: cmd.ErrOrStderr()}
			if err := withLabeler(cmd.Context(), cfg, &opts); err != nil {
				return err
			}
			return node.Run(cmd.Context(), cfg, opts)
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "override a configuration key, e.g. --set cluster.enabled=true (repeatable)")
	return cmd
}
