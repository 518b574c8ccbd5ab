//! The cluster-wide rate limiter: nginx's `limit_req` directives with a
//! `sync_` prefix (`sync_limit_req_zone ... [sync]`, `sync_limit_req`,
//! `sync_limit_req_status`, `sync_limit_req_log_level`,
//! `sync_limit_req_dry_run`, `$sync_limit_req_status`). Without `sync` a
//! zone behaves exactly like nginx's own; with it, every node counts the
//! requests admitted by every node (see docs/RATE_LIMIT.md and the
//! arithmetic in `zone_sync_core::rate`).
//!
//! Files: `module` (directives, configuration, module table), `handler`
//! (the preaccess handler, delays, the variable), `zone` (the zone's
//! lifecycle and its [`crate::kinds::SyncZone`] view), `store` (keys in
//! shared memory), `counters` (each zone's request outcomes, for the API).

pub mod counters;
pub mod handler;
pub mod module;
pub mod store;
pub mod zone;
