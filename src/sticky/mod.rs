//! Sticky sessions for http upstreams, with NGINX Plus's syntax:
//! `sticky learn ... [sync]` (sessions learned from responses, kept in a
//! zone that `zone_sync` replicates: wire kind 3) and `sticky cookie`
//! (stateless). The directive is `sync_sticky`, and also `sticky` where
//! the nginx built against has none (before 1.29.6).
//!
//! Files: `module` (directive, configuration, header filter), `balancer`
//! (the wrapped balancing method, learning, the cookie), `zone` (the
//! session zone, a kind of zone on the shared-memory table:
//! [`crate::shm::zone::ZoneKind`]).

pub mod balancer;
pub mod module;
pub mod zone;
