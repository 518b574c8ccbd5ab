//! The sync engine of one node, run by exactly one process (worker 0, or
//! the single process): it owns the outgoing connection to every other node
//! and pushes this node's local changes to them.
//!
//! When changes leave (a "poll"): a local write wakes the engine through
//! an eventfd (only when the zone's change queue was empty). If every peer
//! has acknowledged everything sent, the poll happens at once: a quiet node
//! delivers a change in about a round trip. Otherwise the changes wait,
//! coalesced per key, until the acknowledgements come back or
//! `zone_sync_interval` has passed since the last poll, whichever is first:
//! the interval is an upper bound, not a delay. A poll streams the whole
//! queue through the bounded per-peer buffers, refilling them as the
//! sockets and acknowledgements allow. An idle node runs nothing but a 1 s
//! housekeeping tick.
//!
//! Each peer at its own pace: a poll takes changes from a zone's queue
//! once and copies them into the bounded buffer of every peer that has
//! room. A peer without room holds the queue until its oldest frame not
//! yet acknowledged is [`BEHIND_AFTER_MS`] old; after that it is passed
//! over (the others get the changes) and marked behind: it is sent every
//! record of its zones again (a resync pass, at its own pace), and again
//! after that pass if it was passed over during it.
//!
//! Ownership is one way: the engine owns its peers and the DNS lookup;
//! their nginx events come here ([`peer_event`]), the engine calls the
//! object, and acts on what it reports.

use core::{mem, ptr};
use std::sync::atomic::{AtomicI32, Ordering};

use nginx_sys::{
    ngx_connection_t, ngx_cycle_t, ngx_event_t, ngx_log_t, ngx_stream_core_srv_conf_t,
    NGX_LOG_ALERT, NGX_LOG_ERR, NGX_LOG_NOTICE,
};
use ngx::{ngx_log_debug, ngx_log_error};
use zone_sync_core::session::SessionConfig;
use zone_sync_core::wire;

use super::conf::SrvConf;
use super::members::{self, NodeAddr};
use super::peer::{Outcome, Peer};
use super::resolve::Resolve;
use crate::kinds::{Record, SyncZone};
use crate::ngx_ext::current_msec;

/// Housekeeping period (expiry, safety-net drain).
const TICK_MS: u64 = 1000;

/// Buffer refills in one go while the sockets take everything.
const DRAIN_ROUNDS: usize = 16;

/// How old a peer's oldest unacknowledged frame may get while the peer
/// holds a zone's queue for lack of room; then it is passed over and
/// resynced.
pub const BEHIND_AFTER_MS: u64 = 1000;

/// A node connecting to us brings our retries forward at most this often.
pub const SHORTCUT_MIN_MS: u64 = 1000;

/// A record copied out of a zone, between the zone's lock and the peers'
/// frames.
pub struct Staged {
    flags: u8,
    hlc: u64,
    origin: u64,
    ttl_ms: u32,
    key_len: usize,
    data: Vec<u8>,
}

impl Staged {
    fn from(r: &Record<'_>) -> Self {
        let mut data = Vec::with_capacity(r.key.len() + r.value.len());
        data.extend_from_slice(r.key);
        data.extend_from_slice(r.value);
        Staged {
            flags: r.flags,
            hlc: r.hlc,
            origin: r.origin,
            ttl_ms: r.ttl_ms,
            key_len: r.key.len(),
            data,
        }
    }

    pub fn as_record(&self) -> Record<'_> {
        let (key, value) = self.data.split_at(self.key_len);
        Record {
            flags: self.flags,
            hlc: self.hlc,
            origin: self.origin,
            ttl_ms: self.ttl_ms,
            key,
            value,
        }
    }
}

/// What the engine's peers need from it: configuration, zones, log.
pub struct Ctx {
    pub log: *mut ngx_log_t,
    conf: *const SrvConf,
    /// Synced zones; indices are the zone indices of every session.
    pub zones: Vec<&'static dyn SyncZone>,
}

/// An nginx event of a peer, dispatched through the engine.
#[derive(Clone, Copy, Debug)]
pub enum PeerEvent {
    Timer,
    Read,
    Write,
    Handshake,
}

pub struct Engine {
    ctx: Ctx,
    // Boxed: a peer's events and log point at the peer, so it must not move.
    #[allow(clippy::vec_box)]
    peers: Vec<Box<Peer>>,
    /// The DNS name behind the member list, with `resolve`.
    resolve: Option<Box<Resolve>>,
    wake_conn: *mut ngx_connection_t,
    drain_ev: ngx_event_t,
    tick_ev: ngx_event_t,
    last_drain: u64,
    /// A poll stopped for lack of buffer room and goes on with the acks.
    streaming: bool,
    staged: Vec<Staged>,
    /// The last `Status::reconnect` seen (see [`Engine::on_wake`]).
    reconnect_seen: u64,
    /// When a node connecting to us last brought our retries forward.
    last_shortcut: u64,
}

/// This process's engine (worker 0 only).
static mut ENGINE: *mut Engine = ptr::null_mut();

/// The engine, for the top of an event handler: the only place an
/// `&mut Engine` is made, one at a time (one thread, one handler at a
/// time, and nothing the engine calls runs a handler synchronously).
unsafe fn engine<'a>() -> Option<&'a mut Engine> {
    let e = ENGINE;
    if e.is_null() {
        None
    } else {
        Some(&mut *e)
    }
}

/// The eventfd local writers signal; created by the master per cycle.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// Creates the wake-up eventfd for a new cycle (master, init_module); the
/// previous cycle's workers keep theirs.
pub fn create_wake_fd() {
    // SAFETY: plain syscalls.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    let old = WAKE_FD.swap(fd, Ordering::Relaxed);
    if old >= 0 {
        // SAFETY: our own descriptor, no longer used by this process.
        unsafe { libc::close(old) };
    }
}

/// Tells the engine a local change is queued: the hook zones call through
/// `crate::kinds::wake`. Cheap and safe in any process; a lost wake-up
/// only delays the change to the next tick.
pub fn wake() {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to an eventfd; EAGAIN (counter full) is
        // fine, the engine is already due.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// Starts the engine in this process.
///
/// # Safety
/// Called once from init_process of worker 0 with the running cycle and
/// the zone_sync server's configuration.
pub unsafe fn start(
    cycle: *mut ngx_cycle_t,
    conf: &SrvConf,
    core: *mut ngx_stream_core_srv_conf_t,
) {
    let log = (*cycle).log;
    let zones: Vec<&'static dyn SyncZone> = crate::registry::zones(cycle)
        .into_iter()
        .filter(|z| z.synced())
        .collect();

    let engine = Box::into_raw(Box::new(Engine {
        ctx: Ctx { log, conf, zones },
        peers: Vec::new(),
        resolve: None,
        wake_conn: ptr::null_mut(),
        drain_ev: mem::zeroed(),
        tick_ev: mem::zeroed(),
        last_drain: 0,
        streaming: false,
        staged: Vec::new(),
        reconnect_seen: super::status::get().reconnect.load(Ordering::Relaxed),
        last_shortcut: 0,
    }));
    ENGINE = engine;
    let e = &mut *engine;
    log_settings(log, conf, e.ctx.zones.len());

    for ev in [ptr::addr_of_mut!(e.drain_ev), ptr::addr_of_mut!(e.tick_ev)] {
        // Unused by the handlers, but nginx's debug log reads an fd
        // through it (ngx_event_ident).
        (*ev).data = engine.cast();
        (*ev).log = log;
        (*ev).set_cancelable(1);
    }
    e.drain_ev.handler = Some(on_drain_timer);
    e.tick_ev.handler = Some(on_tick);
    nginx_sys::ngx_add_timer(&mut e.tick_ev, TICK_MS as _);

    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let c = nginx_sys::ngx_get_connection(fd, log);
        if c.is_null() {
            ngx_log_error!(
                NGX_LOG_ALERT,
                log,
                "zone_sync: no connection for the wake-up descriptor"
            );
        } else {
            (*(*c).read).handler = Some(on_wake);
            (*(*c).read).log = log;
            // Not a client connection: graceful shutdown must not wait for it.
            (*c).set_idle(1);
            if nginx_sys::ngx_handle_read_event((*c).read, 0) != nginx_sys::NGX_OK as isize {
                ngx_log_error!(
                    NGX_LOG_ALERT,
                    log,
                    "zone_sync: cannot watch the wake-up descriptor"
                );
            }
            e.wake_conn = c;
        }
    }

    for server in conf.servers() {
        let url = &server.url;
        if server.resolve {
            let mut r = Resolve::new(
                crate::ngx_ext::str_bytes(&url.host),
                url.port,
                (*core).resolver,
                (*core).resolver_timeout,
                log,
            );
            r.start(0);
            e.resolve = Some(r);
            continue;
        }
        if url.addrs.is_null() {
            continue;
        }
        for addr in core::slice::from_raw_parts(url.addrs, url.naddrs) {
            let node = NodeAddr::new(
                addr.sockaddr,
                addr.socklen,
                crate::ngx_ext::str_bytes(&addr.name),
            );
            if members::is_self(cycle, &node) {
                ngx_log_debug!(
                    log,
                    "zone_sync: node {} is this node",
                    String::from_utf8_lossy(&node.name)
                );
                continue;
            }
            let ssl_name = if conf.ssl_name.len > 0 {
                conf.ssl_name
            } else {
                url.host
            };
            let p = Peer::new(node, crate::ngx_ext::str_bytes(&ssl_name).to_vec(), log);
            e.peers.push(p);
        }
    }
    for i in 0..e.peers.len() {
        let out = e.peers[i].start(&e.ctx);
        e.act(i, out);
    }
}

/// The effective settings, at debug level (the tests read the defaults
/// from this line).
unsafe fn log_settings(log: *mut ngx_log_t, conf: &SrvConf, zones: usize) {
    let s = |v: &nginx_sys::ngx_str_t| {
        String::from_utf8_lossy(crate::ngx_ext::str_bytes(v)).into_owned()
    };
    let onoff = |f: nginx_sys::ngx_flag_t| if f == 1 { "on" } else { "off" };
    let mut protocols = String::new();
    for (bit, name) in [
        (nginx_sys::NGX_SSL_SSLv2, "SSLv2"),
        (nginx_sys::NGX_SSL_SSLv3, "SSLv3"),
        (nginx_sys::NGX_SSL_TLSv1, "TLSv1"),
        (nginx_sys::NGX_SSL_TLSv1_1, "TLSv1.1"),
        (nginx_sys::NGX_SSL_TLSv1_2, "TLSv1.2"),
        (nginx_sys::NGX_SSL_TLSv1_3, "TLSv1.3"),
    ] {
        if conf.ssl_protocols & bit as usize != 0 {
            protocols.push_str(if protocols.is_empty() { "" } else { " " });
            protocols.push_str(name);
        }
    }
    ngx::ngx_log_debug!(
        log,
        "zone_sync: settings: buffers {} {}, connect_retry_interval {}ms, connect_timeout {}ms, \
         interval {}ms, recv_buffer_size {}, timeout {}ms, ssl {}, ssl_protocols \"{}\", \
         ssl_ciphers \"{}\", ssl_verify {}, ssl_verify_depth {}, ssl_server_name {}, \
         ssl_name \"{}\", zones {}, node id {:016x}",
        conf.bufs.num,
        conf.bufs.size,
        conf.connect_retry_interval,
        conf.connect_timeout,
        conf.interval,
        conf.recv_buffer_size,
        conf.timeout,
        onoff(conf.ssl_enable),
        protocols,
        s(&conf.ssl_ciphers),
        onoff(conf.ssl_verify),
        conf.ssl_verify_depth,
        onoff(conf.ssl_server_name),
        s(&conf.ssl_name),
        zones,
        crate::node_id()
    );
}

/// Stops the engine (exit_process).
pub fn stop() {
    // SAFETY: only this process's own engine; event handlers run on this
    // thread, never concurrently with exit_process.
    unsafe {
        if ENGINE.is_null() {
            return;
        }
        let mut e = Box::from_raw(ENGINE);
        ENGINE = ptr::null_mut();
        if let Some(r) = e.resolve.as_mut() {
            r.stop();
        }
        for p in e.peers.iter_mut() {
            p.shutdown();
        }
        if e.tick_ev.timer_set() != 0 {
            nginx_sys::ngx_del_timer(&mut e.tick_ev);
        }
        if e.drain_ev.timer_set() != 0 {
            nginx_sys::ngx_del_timer(&mut e.drain_ev);
        }
        if !e.wake_conn.is_null() {
            // Closes this process's copy of the descriptor only.
            nginx_sys::ngx_close_connection(e.wake_conn);
        }
    }
}

impl Ctx {
    pub fn conf(&self) -> &SrvConf {
        // SAFETY: the configuration outlives the engine (same cycle).
        unsafe { &*self.conf }
    }

    pub fn session_config(&self) -> SessionConfig {
        let conf = self.conf();
        SessionConfig {
            node_id: crate::node_id(),
            timeout_ms: conf.timeout as u64,
            max_frame: conf.recv_buffer_size,
            zones: self
                .zones
                .iter()
                .map(|z| crate::kinds::zone_info(*z))
                .collect(),
        }
    }

    /// One `zone_sync_buffers` buffer: the largest frame we send.
    pub fn frame_size(&self) -> usize {
        self.conf().bufs.size
    }

    /// What may wait in one connection's outgoing buffer: the buffers of
    /// every zone.
    pub fn send_capacity(&self) -> usize {
        let b = &self.conf().bufs;
        b.num as usize * b.size * self.zones.len().max(1)
    }

    /// Frames sent and not acknowledged on one connection, at most:
    /// sixteen times the buffers of every zone.
    pub fn max_in_flight(&self) -> usize {
        16 * self.conf().bufs.num as usize * self.zones.len().max(1)
    }
}

impl Engine {
    /// A peer's nginx event: the peer handles it, the engine acts on what
    /// it reports.
    fn on_peer_event(&mut self, p: *const Peer, what: PeerEvent) {
        let Some(i) = self.peers.iter().position(|b| ptr::eq(&**b, p)) else {
            return;
        };
        // SAFETY: the peer's own event, from its handler.
        let out = unsafe { self.peers[i].on_event(&self.ctx, what) };
        self.act(i, out);
    }

    /// Acts on what peer `i` reported.
    fn act(&mut self, i: usize, out: Outcome) {
        match out {
            Outcome::Quiet => {}
            Outcome::Closed(why) => {
                ngx_log_debug!(
                    self.ctx.log,
                    "zone_sync: connection to node {} closed: {}",
                    self.peers[i].name,
                    why
                );
                // The others may take what it held back.
                self.resume();
            }
            Outcome::Ready => self.resume(),
            Outcome::Exiting => {
                // Push what is queued before saying goodbye.
                self.drain();
                let out = self.peers[i].begin_close(&self.ctx);
                debug_assert!(!matches!(out, Outcome::Exiting));
            }
        }
        self.update_online();
        self.update_inflight();
    }

    /// A poll: pushes queued local changes to every connected node. The
    /// buffers (`zone_sync_buffers`) bound what waits in this process for
    /// each peer; they are written out and refilled as long as the sockets
    /// take them, a few rounds here, then again as acknowledgements come
    /// in, until the queues are empty.
    pub fn drain(&mut self) {
        let now = current_msec();
        self.last_drain = now;
        let mut waiting = false;
        let mut hold = None;
        for _ in 0..DRAIN_ROUNDS {
            let sent;
            (sent, waiting) = self.fill(now, &mut hold);
            for p in self.peers.iter_mut() {
                if p.is_established() {
                    // A failed write closes the peer; the counters below
                    // take it into account.
                    let _ = p.write_out(&self.ctx);
                }
            }
            if sent == 0 || !waiting {
                break;
            }
        }
        // Still more than the buffers hold: go on when peers acknowledge,
        // or pass over a peer that holds the queue too long.
        self.streaming = waiting;
        if let Some(t) = hold {
            if self.drain_ev.timer_set() == 0 {
                // SAFETY: our own timer.
                unsafe {
                    nginx_sys::ngx_add_timer(&mut self.drain_ev, t.saturating_sub(now).max(1) as _)
                };
            }
        }
        self.update_online();
        self.update_inflight();
    }

    /// Fills the peers' buffers from the zones' change queues. Returns the
    /// records taken and whether a queue was left non-empty for lack of
    /// room; `hold` gets the earliest time a peer without room is passed
    /// over.
    fn fill(&mut self, now: u64, hold: &mut Option<u64>) -> (usize, bool) {
        let frame = self.ctx.frame_size();
        let mut sent = 0;
        let mut waiting = false;
        for zi in 0..self.ctx.zones.len() {
            let budget = frame.saturating_sub(wire::records_frame_overhead(
                self.ctx.zones[zi].name().len(),
            ));
            // Whether the queue was drained to its end (then every peer
            // that took all of it holds the zone up to the drained
            // position).
            let mut drained_all = false;
            loop {
                // Who takes this zone's changes now, and who holds them: a
                // peer without room is waited for until its oldest frame
                // not acknowledged is BEHIND_AFTER_MS old.
                let mut sharers = 0;
                let mut takers = 0;
                let mut held = false;
                for p in self.peers.iter_mut() {
                    if !(p.is_established() && p.shares(zi)) {
                        continue;
                    }
                    sharers += 1;
                    if p.can_take(&self.ctx) {
                        takers += 1;
                        continue;
                    }
                    let until = p.oldest_unacked().unwrap_or(now) + BEHIND_AFTER_MS;
                    if now < until {
                        held = true;
                        *hold = Some(hold.map_or(until, |h: u64| h.min(until)));
                    }
                }
                if sharers == 0 {
                    // Nobody connected: the snapshot or resume pass of the
                    // next connection carries these changes (it covers
                    // every record changed before it starts), so they
                    // leave the queue rather than being sent again after
                    // that pass. Connections whose pass began earlier
                    // (another engine's: the old worker 0 during a
                    // reload) never saw them: noting where the drop ended
                    // keeps those from acknowledging past it.
                    let z = self.ctx.zones[zi];
                    if z.drain_changes(now, &mut |_| true) > 0 {
                        z.note_dropped(z.drained());
                    }
                    break;
                }
                if held || takers == 0 {
                    // Nobody to take them, or someone to wait for: the
                    // changes stay queued (and coalesce).
                    waiting = true;
                    break;
                }
                self.staged.clear();
                let mut used = 0;
                let mut more = false;
                let log = self.ctx.log;
                let zone = self.ctx.zones[zi];
                let staged = &mut self.staged;
                zone.drain_changes(now, &mut |r| {
                    let len = r.encoded_len();
                    if len > budget {
                        ngx_log_error!(
                            NGX_LOG_ERR,
                            log,
                            "zone_sync: record \"{}\" of {} bytes in zone \"{}\" exceeds a \"zone_sync_buffers\" buffer, not sent",
                            wire::escape(r.key, super::peer::KEY_LOGGED),
                            len,
                            String::from_utf8_lossy(zone.name())
                        );
                        return true;
                    }
                    if used + len > budget {
                        more = true;
                        return false;
                    }
                    used += len;
                    staged.push(Staged::from(r));
                    true
                });
                if self.staged.is_empty() {
                    drained_all = true;
                    break;
                }
                sent += self.staged.len();
                for p in self.peers.iter_mut() {
                    if !(p.is_established() && p.shares(zi)) {
                        continue;
                    }
                    if p.can_take(&self.ctx) {
                        p.send_records(&self.ctx, zi, &self.staged);
                    } else {
                        // Held the queue too long: passed over.
                        p.fall_behind(&self.ctx);
                    }
                }
                if !more {
                    drained_all = true;
                    break;
                }
            }
            if drained_all {
                let drained = self.ctx.zones[zi].drained();
                for p in self.peers.iter_mut() {
                    if p.is_established() && p.shares(zi) {
                        p.mark(&self.ctx, zi, drained);
                    }
                }
            }
        }
        (sent, waiting)
    }

    /// Whether every connected peer that is not catching up has
    /// acknowledged everything sent: then a change can leave at once
    /// without defeating coalescing.
    fn link_idle(&self) -> bool {
        self.peers
            .iter()
            .filter(|p| p.is_established())
            .all(|p| p.idle())
    }

    /// A peer acknowledged frames, or its socket took what was waiting:
    /// continue a poll that filled the buffers, or send what queued up while
    /// the link was busy.
    pub fn resume(&mut self) {
        if self.streaming || self.link_idle() {
            if self.drain_ev.timer_set() != 0 {
                // SAFETY: our own timer.
                unsafe { nginx_sys::ngx_del_timer(&mut self.drain_ev) };
            }
            self.drain();
        }
    }

    /// A change is queued: poll now if the link is idle (a quiet node sends
    /// at once) or the last poll is `zone_sync_interval` old; otherwise at
    /// that time, or earlier when the peers acknowledge (a busy node
    /// coalesces what changes meanwhile).
    pub fn schedule_drain(&mut self) {
        let now = current_msec();
        let interval = self.ctx.conf().interval as u64;
        let due = self.last_drain + interval;
        if now >= due || self.link_idle() {
            if self.drain_ev.timer_set() != 0 {
                // SAFETY: our own timer.
                unsafe { nginx_sys::ngx_del_timer(&mut self.drain_ev) };
            }
            self.drain();
        } else if self.drain_ev.timer_set() == 0 {
            // SAFETY: our own timer.
            unsafe { nginx_sys::ngx_add_timer(&mut self.drain_ev, (due - now) as _) };
        }
    }

    /// A node connected to us (any worker may have accepted it): if we
    /// are waiting to retry our own connection to it, retry now, so that it
    /// gets our records without waiting out zone_sync_connect_retry_interval.
    /// Anyone can send a HELLO, so this shortcut is taken at most once per
    /// [`SHORTCUT_MIN_MS`] (a request in between waits for the next tick).
    fn reconnect_if_asked(&mut self) {
        let n = super::status::get().reconnect.load(Ordering::Relaxed);
        if n == self.reconnect_seen {
            return;
        }
        let now = current_msec();
        if self.last_shortcut != 0 && now.saturating_sub(self.last_shortcut) < SHORTCUT_MIN_MS {
            return;
        }
        self.reconnect_seen = n;
        self.last_shortcut = now;
        for i in 0..self.peers.len() {
            let out = self.peers[i].retry_now(&self.ctx);
            self.act(i, out);
        }
    }

    /// Replaces the member list with a fresh DNS answer: new addresses are
    /// connected to, vanished ones disconnected and forgotten.
    fn set_members(&mut self, nodes: Vec<NodeAddr>) {
        let cycle = crate::ngx_ext::cycle();
        // SAFETY: the running cycle.
        let nodes: Vec<NodeAddr> = nodes
            .into_iter()
            .filter(|n| unsafe { !members::is_self(cycle, n) })
            .collect();
        let log = self.ctx.log;
        let mut i = 0;
        while i < self.peers.len() {
            if nodes.iter().any(|n| n.same(&self.peers[i].addr)) {
                i += 1;
                continue;
            }
            let mut p = self.peers.swap_remove(i);
            ngx_log_error!(
                NGX_LOG_NOTICE,
                log,
                "zone_sync: node {} left the cluster (DNS)",
                p.name
            );
            p.shutdown();
        }
        for n in nodes {
            if self.peers.iter().any(|p| p.addr.same(&n)) {
                continue;
            }
            ngx_log_error!(
                NGX_LOG_NOTICE,
                log,
                "zone_sync: node {} joined the cluster (DNS)",
                String::from_utf8_lossy(&n.name)
            );
            let ssl_name = if self.ctx.conf().ssl_name.len > 0 {
                // SAFETY: a configuration string.
                unsafe { crate::ngx_ext::str_bytes(&self.ctx.conf().ssl_name) }.to_vec()
            } else {
                n.host()
            };
            // SAFETY: the engine's log outlives its peers.
            let p = unsafe { Peer::new(n, ssl_name, log) };
            self.peers.push(p);
            let i = self.peers.len() - 1;
            let out = self.peers[i].start(&self.ctx);
            self.act(i, out);
        }
        self.update_online();
        self.update_inflight();
    }

    /// Publishes how many nodes this node is connected to, and whether
    /// that is every member it knows.
    fn update_online(&self) {
        let n = self.peers.iter().filter(|p| p.is_established()).count();
        let st = super::status::get();
        st.nodes_online.store(n as u64, Ordering::Relaxed);
        st.all_online
            .store(u64::from(n == self.peers.len()), Ordering::Relaxed);
    }

    /// Publishes per zone how many records await acknowledgement (the
    /// slowest peer's count).
    fn update_inflight(&self) {
        let mut worst = vec![0u64; self.ctx.zones.len()];
        let mut acc = vec![0u64; self.ctx.zones.len()];
        for p in &self.peers {
            acc.iter_mut().for_each(|a| *a = 0);
            p.add_inflight(&mut acc);
            for (w, a) in worst.iter_mut().zip(&acc) {
                *w = (*w).max(*a);
            }
        }
        for (z, w) in self.ctx.zones.iter().zip(worst) {
            z.set_inflight(w);
        }
    }
}

/// The nginx event `what` of peer `p`, from its handler.
///
/// # Safety
/// Called from an event handler of `p` (which may have been removed).
pub unsafe fn peer_event(p: *const Peer, what: PeerEvent) {
    if let Some(e) = engine() {
        e.on_peer_event(p, what);
    }
}

/// The DNS lookup's timer or answer, from its handler.
///
/// # Safety
/// Called from the lookup's event or resolver handler; `ctx` is the
/// finished lookup, if any.
pub unsafe fn resolve_event(ctx: *mut nginx_sys::ngx_resolver_ctx_t) {
    let Some(e) = engine() else { return };
    let nodes = e.peers.len();
    let Some(r) = e.resolve.as_mut() else { return };
    let members = if ctx.is_null() {
        r.resolve(nodes);
        None
    } else {
        r.resolved(ctx, nodes)
    };
    if let Some(m) = members {
        e.set_members(m);
    }
}

unsafe extern "C" fn on_wake(ev: *mut ngx_event_t) {
    let c = (*ev).data.cast::<ngx_connection_t>();
    if (*c).close() != 0 {
        // Graceful shutdown: nothing to close, the fd is the cycle's.
        return;
    }
    let mut counter: u64 = 0;
    // Edge-triggered: read the counter back to zero.
    libc::read((*c).fd, (&mut counter as *mut u64).cast(), 8);
    let Some(e) = engine() else { return };
    e.reconnect_if_asked();
    e.schedule_drain();
}

unsafe extern "C" fn on_drain_timer(_ev: *mut ngx_event_t) {
    if let Some(e) = engine() {
        e.drain();
    }
}

unsafe extern "C" fn on_tick(ev: *mut ngx_event_t) {
    let Some(e) = engine() else { return };
    let now = current_msec();
    for z in &e.ctx.zones {
        z.housekeeping(now);
    }
    // A node's connection whose shortcut was rate-limited.
    e.reconnect_if_asked();
    // Safety net for wake-ups lost across a reload; with nothing queued,
    // it moves the peers' positions past the changes received since (a
    // resumed peer is not sent them again).
    e.schedule_drain();
    nginx_sys::ngx_add_timer(ev, TICK_MS as _);
}
