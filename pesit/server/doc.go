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
// A session's code is in three groups of files. The connection (session.go,
// transfer.go, dataphase.go, message.go, and the admission of partners)
// reads and writes the FPDUs, selects files and keeps what a transfer's two
// directions share: its journal record, outcome and interruption. The
// receiver (create.go, receive.go, sink.go) owns a received file from
// CREATE to DESELECT; the sender (select.go, send.go, sendtail.go) a sent
// one from SELECT to DESELECT. The connection reaches them through the
// side interface; they reach each other never (TestFileGroups).
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
//   - The receive path keeps the session goroutine on the socket (sink.go):
//     data goes through two buffers to a writer goroutine that writes and
//     hashes it; at a SYN the writer fsyncs, then a second goroutine
//     journals the point and sends ACK(SYN) (points that queued up behind
//     a slow journal are recorded in one write, as the last of them), so
//     the fsync of one point overlaps the journal commit of the one before
//     while the session receives what the window allows. ACK(SYN) still
//     follows the data's fsync and then the journal's commit; a failure
//     of either sends IDT from that goroutine (2/219, 2/213, 2/215).
//   - One fsync per sync point (restartindex.go): when the journal can
//     record a point without its own flush (DeferredJournal), the writer
//     puts the point on the .part file as its restart index (an extended
//     attribute) before the fsync that makes the data durable, and the
//     journal's record follows unflushed. A restart takes the later of
//     the journal's point and the index of the same transfer. Without
//     extended attributes, the journal's commit is durable, as above.
//   - A restart whose file was published already (the node stopped
//     between the rename and the journal's record of the end) is not
//     refused with 2/204: the data resent from the sync point is compared
//     with the published file, which is never written, and ACK(TRANS.END)
//     says done (same bytes and size) or 2/204 (other data). See
//     publishedBefore and verifySink.
//   - A listener moves to a new address or TLS material without ending a
//     session (Relisten): the new address is bound before the old one is
//     released, an unchanged one keeps its socket.
//   - Data errors during a transfer end it with IDT: PI 19 = 4 (restart may
//     follow) for 2/213, 2/215, 2/219, PI 19 = 12 otherwise (2/220, 2/222,
//     2/224); protocol errors end the session with ABORT.
//   - ${transferId} in a name pattern is PI 13, the requester's id.
//   - Binary files (PI 16 = 2) and fixed-format files are stored and sent
//     as they are, articles concatenated.
//   - Text files: a variable-format file (PI 31 = 0x80) with data code
//     ASCII (PI 16 = 0) or EBCDIC (1) is one article per line without its
//     end of line, like pesit/client. Received: each article is written
//     followed by "\n" (EBCDIC translated from code page 037 to Latin-1).
//     Sent: the file is split on "\n", a "\r" before it is dropped, and a
//     last line without "\n" is a line too. So an LF file comes back
//     byte-identical; CRLF comes back as LF and a missing final "\n" is
//     added. PI 27 counts article bytes (no end of line), PI 28 lines; sync
//     point offsets are file offsets.
//   - Empty lines are zero-length articles, and an empty DTF does not exist
//     (nor do we send byte 5 = 1): an empty line always travels in a
//     multi-article DTF (N >= 2) with the line before or after it. To a
//     partner not configured for multi-article DTFs only these groups are
//     multi-article (receivers must accept them, digest §6); other lines go
//     one per DTF. PI 32 leaves room for [empty, line, empty] in one DTF,
//     so text is never segmented. The one file this cannot carry, a single
//     empty line, ends with IDT 2/299.
//   - A pull restarts from any sync point the interrupted transfer sent
//     (acknowledged or not, any window): sync points go before the article
//     that would exceed the interval, never before an empty line, so their
//     places follow from the file, the interval and PI 32. The journal
//     keeps the last point sent; an earlier one is found by replaying the
//     placement over the file, checked against the journaled one (a
//     different interval or article length gets 2/214). The journal
//     write of a point sent, and the SHA-256 of the file (read back from
//     the page cache), are done by a goroutine beside the sender
//     (sendtail.go), waited for before the transfer ends; a crash of the
//     node can leave the journal a point or so behind what was sent, and
//     a restart asking for a later point gets 2/214, after which
//     pesit/client asks for an earlier point it holds.
package server
