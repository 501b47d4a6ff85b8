package store

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// argon2id parameters: OWASP's minimum (19 MiB, 2 passes, 1 lane). PeSIT
// authenticates once per session, so the cost is paid per connection.
const (
	argonMemory  = 19 * 1024
	argonTime    = 2
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// HashPassword returns an argon2id hash in PHC string form
// ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
func HashPassword(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// isCurrentHash reports whether hash is what HashPassword makes now
// (argon2id with the current parameters). A declared plaintext password
// keeps its stored hash only then: a hash declared earlier as passwordHash
// (bcrypt, other argon2id parameters) verifies the same password but is
// not what the declaration now asks for.
func isCurrentHash(hash string) bool {
	return strings.HasPrefix(hash, fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$", argon2.Version, argonMemory, argonTime, argonThreads))
}

// ErrMalformedHash: a stored hash is neither argon2id (PHC form) nor bcrypt.
var ErrMalformedHash = errors.New("store: malformed password hash")

// VerifyPassword reports whether password matches hash, which is an argon2id
// PHC string or a bcrypt hash ($2a$/$2b$/$2y$, e.g. from a config file).
// The comparison is constant-time. An empty hash never matches.
func VerifyPassword(hash, password string) (bool, error) {
	switch {
	case hash == "":
		return false, nil
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("%w: %v", ErrMalformedHash, err)
		}
		return true, nil
	case strings.HasPrefix(hash, "$argon2id$"):
		parts := strings.Split(hash, "$") // "", argon2id, v=19, m=..,t=..,p=.., salt, key
		if len(parts) != 6 {
			return false, ErrMalformedHash
		}
		var version int
		if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
			return false, ErrMalformedHash
		}
		var m, t uint32
		var p uint8
		if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 ||
			m > 1<<22 || t > 64 {
			return false, ErrMalformedHash
		}
		salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
		key, err2 := base64.RawStdEncoding.DecodeString(parts[5])
		if err1 != nil || err2 != nil || len(key) == 0 || len(key) > 128 {
			return false, ErrMalformedHash
		}
		got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(key)))
		return subtle.ConstantTimeCompare(got, key) == 1, nil
	}
	return false, ErrMalformedHash
}

// NewToken returns a fresh random API token (shown once to the user) and the
// hash to store (HashToken of it).
func NewToken() (plaintext, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("new token: %w", err)
	}
	plaintext = "vt_" + base64.RawURLEncoding.EncodeToString(b)
	return plaintext, HashToken(plaintext), nil
}

// HashToken is the stored form of an API token: hex SHA-256. Tokens are
// high-entropy, so a fast hash is enough and lookup by hash is exact.
func HashToken(plaintext string) string {
	sum := sha256.Sum256([]byte(plaintext))
	return hex.EncodeToString(sum[:])
}
