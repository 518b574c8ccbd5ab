//! keyval zones (`keyval_zone`, `keyval`) for http and stream: NGINX Plus
//! syntax, stored in nginx shared memory, synced by the engine when
//! declared with `sync`.

pub mod http;
pub mod index;
pub mod state;
pub mod store;
pub mod stream;
mod var;
pub mod zone;
