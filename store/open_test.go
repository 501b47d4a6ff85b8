package store_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/vectis-ft/vectis/store"
)

func TestOpenUnreachablePostgres(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = store.Open(ctx, store.Config{URL: "postgres://vectis:hunter2@" + addr + "/vectis?sslmode=disable",
		ConnectTimeout: time.Second})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("open against a closed port: %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

func TestOpenBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []store.Config{
		{Driver: "mysql", Path: "x"},
		{Driver: store.DriverSQLite},
		{Driver: store.DriverPostgres},
		{Driver: store.DriverPostgres, URL: "postgres://u:hunter2@[::1/x"},
	} {
		_, err := store.Open(ctx, cfg)
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Open(%+v) = %v, want ErrInvalid", cfg, err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}

func TestPasswords(t *testing.T) {
	h, err := store.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := store.HashPassword("correct horse")
	if h == h2 || !strings.HasPrefix(h, "$argon2id$v=19$") {
		t.Fatalf("hashes must be salted argon2id PHC strings: %s %s", h, h2)
	}
	for _, tc := range []struct {
		hash, pw string
		ok       bool
	}{{h, "correct horse", true}, {h, "correct horsE", false}, {h, "", false}, {"", "", false}} {
		ok, err := store.VerifyPassword(tc.hash, tc.pw)
		if err != nil || ok != tc.ok {
			t.Errorf("VerifyPassword(%q, %q) = %v, %v; want %v", tc.hash, tc.pw, ok, err, tc.ok)
		}
	}
	bc, _ := bcrypt.GenerateFromPassword([]byte("test123"), bcrypt.MinCost)
	if ok, err := store.VerifyPassword(string(bc), "test123"); !ok || err != nil {
		t.Fatalf("bcrypt hash from a config file: %v %v", ok, err)
	}
	if ok, _ := store.VerifyPassword(string(bc), "test124"); ok {
		t.Fatal("bcrypt mismatch verified")
	}
	for _, bad := range []string{"plain", "$argon2id$v=19$m=0,t=1,p=1$AAAA$AAAA", "$argon2id$v=18$m=1,t=1,p=1$AAAA$AAAA",
		"$argon2id$v=19$m=19456,t=2,p=1$!!$AAAA", "$2a$10$short"} {
		if ok, err := store.VerifyPassword(bad, "x"); ok || !errors.Is(err, store.ErrMalformedHash) {
			t.Errorf("VerifyPassword(%q) = %v, %v; want ErrMalformedHash", bad, ok, err)
		}
	}
}

// TestSQLiteFilesPrivate: the database holds password hashes and the audit
// log, so its files are the owner's only, also when an earlier version
// created them 0644 (issue 16, defect 13).
func TestSQLiteFilesPrivate(t *testing.T) {
	dir := t.TempDir()
	check := func(path string) {
		t.Helper()
		ctx := context.Background()
		s, err := store.Open(ctx, store.Config{Driver: store.DriverSQLite, Path: path})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendAudit(ctx, store.AuditEvent{Actor: "a", Action: "x"}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if perm := fi.Mode().Perm(); perm&0o077 != 0 {
				t.Errorf("%s has mode %v, want no group or other access", filepath.Base(p), perm)
			}
		}
		s.Close()
	}
	check(filepath.Join(dir, "new.db"))
	old := filepath.Join(dir, "old.db")
	if err := os.WriteFile(old, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(old, 0o644); err != nil {
		t.Fatal(err)
	}
	check(old)
}
