// Package api is the Vectis admin REST API: partners, virtual files, PeSIT
// server definitions, transfers and the audit log over the shared store;
// /api/cluster/status; health, readiness and Prometheus metrics; and the
// security around them (basic auth and bearer tokens, roles, login
// throttling, body limits, input validation).
//
// Every pod serves it, leader or standby. Configuration writes go to the
// store, whose change notifications reach the leader's PeSIT servers; only
// the actions on live sessions and listeners (start, stop, cancel) need the
// leader and answer 409 with the leader's name on a standby.
//
// The collaborators it needs from the rest of the node are small interfaces
// defined here (ClusterView, Leadership, ServerControl, TransferCanceller,
// Readiness); Standalone implements the cluster ones for a node without HA.
package api
