// Package ha owns the high-availability decision loop of a Vectis node, in
// one readable place: join the cluster, campaign, and on winning label the
// pod while fencing the store with the leadership epoch and starting the
// PeSIT servers;
// on losing leadership for any reason, stop serving first, then do what the
// step-down table says, unlabel, and campaign again.
//
// # States
//
// A standby is in StateCandidate nearly all the time: it registered its
// member key, and its campaign waits in etcd's queue behind the leader key
// (and the keys of members that joined before it). It serves the admin API
// and metrics and never listens for PeSIT. StateFollower is brief: before
// the node joins etcd, while it retries after losing its session (every
// RetryInterval), and between a step-down and the next campaign. The leader
// is in StateLeader from the moment its PeSIT listeners accept. In
// StateSteppingDown the listeners are closed already and the node resigns,
// drains or aborts its sessions as its Reason's Mode says.
//
// # Step-down modes
//
// Every step-down has a typed Reason, logged, traced (vectis.stepdown) and
// counted (vectis_cluster_stepdowns_total{reason}). The table (ModeOf) says
// whether the node resigns at once and whether its sessions may drain:
//
//	reason             resign  drain  wait
//	shutdown           yes     yes    drain timeout   SIGTERM, rollout
//	demoted            yes     yes    drain timeout   asked by another part of the node
//	stale_epoch        yes     yes    drain timeout   the store recorded a newer term
//	lease_lost         no      no     none            etcd expired or revoked the lease
//	deadline_exceeded  no      no     none            own deadline passed without renewal
//	key_deleted        no      no     none            leader key deleted behind its back
//	quorum_lost        no      no     none            session lost otherwise
//	fencing_failed     yes     no     none            the new term's fencing write failed
//	start_failed       yes     no     none            PeSIT did not start
//
// A node that resigns hands over within one etcd round trip and then lets
// its sessions finish. That is safe because fencing is per transfer: a
// leader-only write (the leader row, declared configuration, retention, a
// new transfer, a takeover) carries the leader epoch and fails once a newer
// term is recorded, while a transfer's sync points and outcome carry the
// epoch of the term that owns the transfer. A draining node may finish what
// it owns; a restart on the new leader takes the transfer over (a
// compare-and-set in SQL) and from then on the old session's writes are
// refused (it ends the transfer and leaves its file to the new owner). At
// the end of the wait, a transfer still in its data phase is interrupted
// with IDT, PI 19 = 4, and recorded interrupted at its last acknowledged
// sync point for the partner to restart on the new leader; what is left
// after 2 s more gets ABORT 3/316 (pesit/server.Server.Shutdown). A node
// that may be cut off from etcd drains nothing: its sessions are aborted at
// once, so it stops writing.
//
// # Safety
//
// A leader stops serving on its own deadline (the last lease renewal etcd
// answered plus the TTL minus a margin), before etcd could expire its lease
// and let another member win; election.Leadership enforces the deadline. And
// every leader-only write carries the epoch, so a leader that was paused past
// its deadline cannot write after it resumes: the store rejects the stale
// epoch and the loop steps down (Demote with ReasonStaleEpoch).
//
// # Fast failover
//
// With Config.FastFailover, a standby follows the leader's liveness stream
// (package liveness) and revokes the lease of a leader whose process is
// gone; the next member wins through the normal campaign. A leader that
// advertises a liveness listener confirms its key every ConfirmWindow/5 and
// refuses partners once ConfirmWindow has passed without a confirmation,
// and a new leader that finds a revocation waits a window before serving:
// a forged refusal (a firewall's RST) replaces a live leader at worst, never
// runs two. The argument, case by case, is in docs/ha.md.
//
// # Failover timing
//
// The vectis.failover span and vectis_cluster_failover_seconds start when
// the old leader stopped serving as best the new leader can know: its
// resignation, or, when its lease ended (the leader key went in the same
// revision as its member key), its last renewal, expiry - TTL. The gap to
// the observation is vectis.failover.detection_seconds.
package ha
