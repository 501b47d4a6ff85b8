// Package client is the PeSIT E requester: it connects to a PeSIT server over
// TCP or TLS, pushes files (CREATE/WRITE), pulls files (SELECT/READ) and sends
// messages (MSG), with sync points, restart from the last acknowledged sync
// point and retries on a new connection.
//
// A Session is one PeSIT connection, used by one goroutine at a time. Push and
// Pull wrap Dial, Send/Receive and Release in a retry loop that resumes an
// interrupted transfer from the restart state kept in a small JSON file, so
// that even a new process can resume.
package client
