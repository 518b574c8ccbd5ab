//! Cluster membership: which addresses are nodes to sync with. One
//! configuration serves every node, so the member list includes this node
//! itself: an address this node listens on (exactly, or through a wildcard
//! `listen PORT` on one of its interface addresses) is skipped. The HELLO
//! exchange catches what this misses (NAT, a name for a local address).

use core::mem;

use nginx_sys::{ngx_cycle_t, ngx_listening_t, ngx_sockaddr_t, sockaddr, socklen_t};

use crate::ngx_ext::array_slice;

/// A node address, owned (the resolver's and the configuration's memory
/// is not ours to keep).
#[derive(Clone)]
pub struct NodeAddr {
    pub sockaddr: ngx_sockaddr_t,
    pub socklen: socklen_t,
    /// "127.0.0.1:9000", "[::1]:9000", "unix:/path".
    pub name: Vec<u8>,
}

impl NodeAddr {
    /// # Safety
    /// `sa` points to `len` bytes of a socket address.
    pub unsafe fn new(sa: *const sockaddr, len: socklen_t, name: &[u8]) -> Self {
        let mut s: ngx_sockaddr_t = mem::zeroed();
        let n = (len as usize).min(mem::size_of::<ngx_sockaddr_t>());
        core::ptr::copy_nonoverlapping(
            sa.cast::<u8>(),
            (&mut s as *mut ngx_sockaddr_t).cast::<u8>(),
            n,
        );
        NodeAddr {
            sockaddr: s,
            socklen: n as socklen_t,
            name: name.to_vec(),
        }
    }

    pub fn same(&self, other: &NodeAddr) -> bool {
        // SAFETY: both are valid socket addresses of their lengths.
        unsafe {
            nginx_sys::ngx_cmp_sockaddr(
                (&self.sockaddr as *const ngx_sockaddr_t).cast_mut().cast(),
                self.socklen,
                (&other.sockaddr as *const ngx_sockaddr_t).cast_mut().cast(),
                other.socklen,
                1,
            ) == 0
        }
    }

    fn family(&self) -> i32 {
        // SAFETY: every variant starts with the family.
        unsafe { i32::from(self.sockaddr.sockaddr.sa_family) }
    }

    fn port(&self) -> u16 {
        // SAFETY: reading the variant the family names.
        unsafe {
            match self.family() {
                libc::AF_INET => u16::from_be(self.sockaddr.sockaddr_in.sin_port),
                libc::AF_INET6 => u16::from_be(self.sockaddr.sockaddr_in6.sin6_port),
                _ => 0,
            }
        }
    }

    /// The address without the port, as text: the default TLS name of a
    /// resolved node.
    pub fn host(&self) -> Vec<u8> {
        let name = &self.name;
        if self.family() == libc::AF_UNIX {
            return name.clone();
        }
        match name.iter().rposition(|&c| c == b':') {
            Some(i) => name[..i]
                .iter()
                .copied()
                .filter(|&c| c != b'[' && c != b']')
                .collect(),
            None => name.clone(),
        }
    }

    /// The socket path of a unix address.
    pub fn unix_path(&self) -> Option<std::ffi::OsString> {
        if self.family() != libc::AF_UNIX {
            return None;
        }
        // SAFETY: a unix address: sun_path is NUL-terminated within it.
        let path =
            unsafe { core::ffi::CStr::from_ptr(self.sockaddr.sockaddr_un.sun_path.as_ptr()) };
        Some(std::os::unix::ffi::OsStringExt::from_vec(
            path.to_bytes().to_vec(),
        ))
    }

    /// The IP address bytes, for comparisons with interface addresses.
    fn ip(&self) -> Option<std::net::IpAddr> {
        // SAFETY: reading the variant the family names.
        unsafe {
            match self.family() {
                libc::AF_INET => Some(std::net::IpAddr::from(
                    u32::from_be(self.sockaddr.sockaddr_in.sin_addr.s_addr).to_be_bytes(),
                )),
                libc::AF_INET6 => Some(std::net::IpAddr::from(
                    self.sockaddr.sockaddr_in6.sin6_addr.__in6_u.__u6_addr8,
                )),
                _ => None,
            }
        }
    }
}

/// Whether `node` is this node: one of the cycle's listening sockets.
///
/// # Safety
/// `cycle` is the running cycle.
pub unsafe fn is_self(cycle: *const ngx_cycle_t, node: &NodeAddr) -> bool {
    let listening: &[ngx_listening_t] = array_slice(&(*cycle).listening);
    let locals = interface_addresses();
    for ls in listening {
        let l = NodeAddr::new(ls.sockaddr, ls.socklen, b"");
        if l.family() != node.family() {
            continue;
        }
        if l.same(node) {
            return true;
        }
        if l.port() == node.port()
            && nginx_sys::ngx_inet_wildcard(ls.sockaddr) != 0
            && node
                .ip()
                .is_some_and(|ip| ip.is_loopback() || locals.contains(&ip))
        {
            return true;
        }
    }
    false
}

/// This host's interface addresses.
fn interface_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs() hands us a list we walk and free.
    unsafe {
        let mut ifa: *mut libc::ifaddrs = core::ptr::null_mut();
        if libc::getifaddrs(&mut ifa) != 0 {
            return out;
        }
        let mut p = ifa;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*a.cast::<libc::sockaddr_in>();
                        out.push(std::net::IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*a.cast::<libc::sockaddr_in6>();
                        out.push(std::net::IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(ifa);
    }
    out
}
