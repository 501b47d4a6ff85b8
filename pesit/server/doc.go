// Package server is the PeSIT E responder: it owns the listeners (plain TCP
// and TLS), the sessions they accept, partner authentication, the mapping of
// virtual files to paths, the durable receive path (temporary file, fsync at
// every sync point, atomic rename), the send path with sync points and
// windows, restart, resynchronisation and interruption.
//
// It knows nothing of SQL, etcd or Kubernetes: what it needs from the rest of
// Vectis is expressed by two small interfaces in deps.go, Directory (partners
// and virtual files) and Journal (transfer records and restart state),
// implemented by the composition root over the store; memjournal holds
// in-memory versions for tests.
//
// Every FPDU received and sent goes through a pesit/fsm responder machine,
// which decides what is valid where (3/311, 3/318), keeps the ab flag and
// the sync window, and drops FPDUs that crossed our IDT or RESYN. The
// session adds what the machine does not know: identities, files, data.
//
// Choices worth knowing:
//   - PI 12 names the virtual file; it must be 1..76 printable ASCII
//     characters without '/', '\\', ':' or "..", else 2/226. The target
//     name comes from the virtual file's NamePattern and cannot leave its
//     directory (os.Root).
//   - A received file is written to ".<name>.part" beside its final name,
//     fsynced before every ACK(SYN) and before the rename; without
//     Overwrite a hard link publishes it so an existing file is never
//     replaced. An interrupted receive keeps the .part file, truncated to
//     the last durable sync point, for a restart.
//   - Data errors during a transfer end it with IDT: PI 19 = 4 (restart may
//     follow) for 2/213, 2/215, 2/219, PI 19 = 12 otherwise (2/220, 2/222,
//     2/224); protocol errors end the session with ABORT.
//   - ${transferId} in a name pattern is PI 13, the requester's id.
//   - Articles are stored as they come (binary): no line-ending or EBCDIC
//     conversion for PI 16 = 0/1.
package server
