// Package server is the PeSIT E responder: it owns the listeners (plain TCP
// and TLS), the sessions they accept, partner authentication, the mapping of
// virtual files to paths, the durable receive path (temporary file, fsync at
// every sync point, atomic rename), the send path with sync points and
// windows, restart and interruption.
//
// It knows nothing of SQL, etcd or Kubernetes: what it needs from the rest of
// Vectis is expressed by the small interfaces in deps.go (Directory, Journal),
// implemented by the composition root over the store.
package server
