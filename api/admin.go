package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"

	"github.com/vectis-ft/vectis/store"
)

// AdminUsers is what EnsureAdmin needs from the store.
type AdminUsers interface {
	ListUsers(ctx context.Context) ([]store.User, error)
	PutUser(ctx context.Context, u store.User, passwordHash string) (store.User, error)
	UserPasswordHash(ctx context.Context, name string) (string, error)
}

// InitialAdmin is the name of the user EnsureAdmin creates.
const InitialAdmin = "admin"

// EnsureAdmin makes sure someone can administer the API. There is no
// built-in default password: when neither the configuration (static) nor the
// store holds an admin, it creates the user "admin" with a random password,
// stores only its hash, and logs the password once, at warn level, for the
// operator to collect and change. It reports whether it created the user.
//
// Two nodes starting together on an empty store may both generate a
// password; the later write wins, and a node whose password was overwritten
// says so instead of logging a password that does not work.
func EnsureAdmin(ctx context.Context, users AdminUsers, static []StaticUser, log *slog.Logger) (bool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, u := range static {
		if u.Role == store.RoleAdmin {
			return false, nil
		}
	}
	us, err := users.ListUsers(ctx)
	if err != nil {
		return false, fmt.Errorf("ensure admin: list users: %w", err)
	}
	for _, u := range us {
		if u.Role == store.RoleAdmin {
			return false, nil
		}
	}
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	password := base64.RawURLEncoding.EncodeToString(b)
	hash, err := store.HashPassword(password)
	if err != nil {
		return false, fmt.Errorf("ensure admin: %w", err)
	}
	if _, err := users.PutUser(ctx, store.User{Name: InitialAdmin, Role: store.RoleAdmin}, hash); err != nil {
		return false, fmt.Errorf("ensure admin: create %s: %w", InitialAdmin, err)
	}
	if stored, err := users.UserPasswordHash(ctx, InitialAdmin); err == nil && stored != hash {
		log.WarnContext(ctx, "another node created the initial admin password at the same time; it is in that node's log",
			"user", InitialAdmin)
		return false, nil
	}
	// The one place a secret is logged, on purpose and once: there is no
	// other channel to hand the first credential to the operator.
	log.WarnContext(ctx, "no admin user was configured: created one with a random password; log in and change it (PUT /api/v1/users/admin), or declare users in vectis.api.users",
		"user", InitialAdmin, "initialAdminPassword", password)
	return true, nil
}
