package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vectis-ft/vectis/store"
)

// newMigrateCommand is `vectis migrate up|status`: schema migrations without
// starting the server (vectis serve also migrates at start-up).
func newMigrateCommand() *cobra.Command {
	var url, path string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply or show database schema migrations",
		Long: `Apply or show the store's schema migrations.

The database is PostgreSQL when a URL is given (--store-url or VECTIS_STORE_URL),
else the embedded SQLite file (--store-path, VECTIS_STORE_PATH, or
$VECTIS_DATADIR/vectis.db, default ./data/vectis.db). Concurrent migrators are
safe: PostgreSQL migrations run under an advisory lock.`,
	}
	cmd.PersistentFlags().StringVar(&url, "store-url", "", "PostgreSQL URL (default $VECTIS_STORE_URL)")
	cmd.PersistentFlags().StringVar(&path, "store-path", "", "SQLite file (default $VECTIS_STORE_PATH or $VECTIS_DATADIR/vectis.db)")
	open := func(ctx context.Context) (*store.Store, error) {
		cfg := migrateStoreConfig(url, path)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return store.Open(ctx, cfg)
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := open(cmd.Context())
			if err != nil {
				return fmt.Errorf("migrate up: %w", err)
			}
			defer s.Close()
			ms, err := s.MigrationStatus(cmd.Context())
			if err != nil {
				return fmt.Errorf("migrate up: %w", err)
			}
			return printMigrations(cmd.OutOrStdout(), s.Driver(), ms)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show which migrations are applied",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := migrateStoreConfig(url, path)
			cfg.SkipMigrate = true
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			s, err := store.Open(ctx, cfg)
			if err != nil {
				return fmt.Errorf("migrate status: %w", err)
			}
			defer s.Close()
			ms, err := s.MigrationStatus(ctx)
			if err != nil {
				return fmt.Errorf("migrate status: %w", err)
			}
			return printMigrations(cmd.OutOrStdout(), s.Driver(), ms)
		},
	})
	return cmd
}

func migrateStoreConfig(url, path string) store.Config {
	if url == "" {
		url = os.Getenv("VECTIS_STORE_URL")
	}
	if url != "" {
		return store.Config{Driver: store.DriverPostgres, URL: url}
	}
	if path == "" {
		path = os.Getenv("VECTIS_STORE_PATH")
	}
	if path == "" {
		dir := os.Getenv("VECTIS_DATADIR")
		if dir == "" {
			dir = "./data"
		}
		path = filepath.Join(dir, "vectis.db")
	}
	return store.Config{Driver: store.DriverSQLite, Path: path}
}

func printMigrations(w io.Writer, driver string, ms []store.Migration) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "DRIVER\tVERSION\tNAME\tSTATUS\tAPPLIED AT\n")
	for _, m := range ms {
		status, at := "pending", ""
		if m.Applied {
			status, at = "applied", m.AppliedAt.Format(time.RFC3339)
		}
		name := m.Name
		if name == "" {
			name = "(unknown to this binary)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", driver, m.Version, name, status, at)
	}
	return tw.Flush()
}
