// Package tlsfiles is the one loader of PEM files into a crypto/tls
// configuration, shared by the PeSIT server, the PeSIT client, the API and
// the etcd client, so that they check the same things in the same way.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Side says which end of a connection the configuration is for: it decides
// what the CA bundle verifies.
type Side int

const (
	// Server: the CA bundle verifies client certificates (ClientCAs).
	Server Side = iota
	// Client: the CA bundle verifies the server certificate (RootCAs).
	Client
)

// Files names the PEM files of one end. Every field is optional: without
// Cert no certificate is presented, without CA the system roots (client) or
// no client CA (server) apply.
type Files struct {
	Cert, Key string // certificate chain and its private key
	CA        string // CA bundle, see Side
}

// Load reads f into a TLS 1.2+ configuration for side. Errors name the file
// at fault; callers add what the files were for.
func Load(side Side, f Files) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.Cert != "" {
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("load key pair %s: %w", f.Cert, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s: no PEM certificate found", f.CA)
		}
		if side == Server {
			cfg.ClientCAs = pool
		} else {
			cfg.RootCAs = pool
		}
	}
	return cfg, nil
}
