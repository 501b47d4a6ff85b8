package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/election"
)

func newClusterCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect the cluster through etcd",
	}
	cmd.AddCommand(newClusterStatusCommand())
	return cmd
}

func newClusterStatusCommand() *cobra.Command {
	var (
		file   string
		sets   []string
		output string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the leader and the members, read from etcd (no admin API needed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(config.Source{File: file, Environ: os.Environ(), Sets: sets})
			if err != nil {
				return &exitCodeError{code: 2, err: err}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			cli, err := clientv3.New(clientv3.Config{
				Endpoints: cfg.Cluster.Etcd.Endpoints, DialTimeout: 5 * time.Second, Context: ctx,
				Username: cfg.Cluster.Etcd.Username, Password: cfg.Cluster.Etcd.Password,
			})
			if err != nil {
				return &exitCodeError{code: 3, err: fmt.Errorf("etcd: %w", err)}
			}
			defer cli.Close()
			view := election.NewView(cli, cfg.Cluster.Name)
			leader, err := view.Leader(ctx)
			if err != nil && !errors.Is(err, election.ErrNoLeader) {
				return &exitCodeError{code: 3, err: fmt.Errorf("read leader: %w", err)}
			}
			members, err := view.Members(ctx)
			if err != nil {
				return &exitCodeError{code: 3, err: fmt.Errorf("read members: %w", err)}
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				return json.NewEncoder(out).Encode(map[string]any{
					"clusterName": cfg.Cluster.Name, "leader": leader, "members": members, "memberCount": len(members),
				})
			}
			fmt.Fprintf(out, "cluster %s: ", cfg.Cluster.Name)
			if leader.Name == "" {
				fmt.Fprintln(out, "no leader")
			} else {
				fmt.Fprintf(out, "leader %s (epoch %d)\n", leader.Name, leader.Epoch)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MEMBER\tADDRESS\tLEADER\tSTARTED")
			for _, m := range members {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", m.Name, m.Address, m.Name == leader.Name, m.StartedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "override a configuration key (repeatable)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}
