// Package ha owns the high-availability decision loop of a Vectis node, in
// one readable place: join the cluster, campaign, and on winning fence the
// store with the leadership epoch, start the PeSIT servers and label the pod;
// on losing leadership for any reason, stop serving first, then unlabel and
// campaign again.
//
// The states are follower (watching a leader), candidate (campaigning),
// leader (serving) and stepping-down (stopping work before anything else).
// Every transition is logged, counted and traced.
//
// Safety rests on two rules. A leader stops serving on its own deadline (the
// last lease renewal etcd answered plus the TTL minus a margin), before etcd
// could expire its lease and let another member win; election.Leadership
// enforces the deadline. And every leader-only write carries the epoch, so a
// leader that was paused past its deadline cannot write after it resumes: the
// store rejects the stale epoch and the loop steps down (Demote).
package ha
