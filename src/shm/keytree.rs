//! An nginx rbtree of records keyed by their bytes, living in a slab zone:
//! ordered by (hash, key), so lookups are O(log n) and a snapshot or a
//! sweep can resume "after the last key" without keeping a pointer. Used
//! by every store; each store says where a record's key is ([`Keyed`]).

use core::ptr;

use nginx_sys::{ngx_rbtree_node_t, ngx_rbtree_t};

/// A record type embedding an `ngx_rbtree_node_t`.
pub trait Keyed {
    /// The key bytes of the record whose tree node is `rb`.
    ///
    /// # Safety
    /// `rb` is the tree node of a live record of this type.
    unsafe fn key_of<'a>(rb: *const ngx_rbtree_node_t) -> &'a [u8];
}

/// The tree's hash of a key (FNV-1a: cheap, and equal hashes fall back to
/// comparing the bytes).
pub fn hash(key: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &b in key {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize
}

/// The tree's insertion callback (`ngx_rbtree_init`), ordering by (hash,
/// key); `node.key` must hold the hash.
///
/// # Safety
/// Called by `ngx_rbtree_insert` on a tree of `K` records.
pub unsafe extern "C" fn insert_value<K: Keyed>(
    mut temp: *mut ngx_rbtree_node_t,
    node: *mut ngx_rbtree_node_t,
    sentinel: *mut ngx_rbtree_node_t,
) {
    let key = K::key_of(node);
    loop {
        let p =
            if (*node).key < (*temp).key || ((*node).key == (*temp).key && key < K::key_of(temp)) {
                ptr::addr_of_mut!((*temp).left)
            } else {
                ptr::addr_of_mut!((*temp).right)
            };
        if *p == sentinel {
            *p = node;
            break;
        }
        temp = *p;
    }
    (*node).parent = temp;
    (*node).left = sentinel;
    (*node).right = sentinel;
    nginx_sys::ngx_rbt_red(node);
}

/// The tree node of `key`, or null.
///
/// # Safety
/// `tree` is a tree of `K` records, read under the zone's lock.
pub unsafe fn find<K: Keyed>(tree: *const ngx_rbtree_t, key: &[u8]) -> *mut ngx_rbtree_node_t {
    let h = hash(key);
    let sentinel = (*tree).sentinel;
    let mut n = (*tree).root;
    while n != sentinel {
        if h != (*n).key {
            n = if h < (*n).key { (*n).left } else { (*n).right };
            continue;
        }
        match key.cmp(K::key_of(n)) {
            core::cmp::Ordering::Less => n = (*n).left,
            core::cmp::Ordering::Greater => n = (*n).right,
            core::cmp::Ordering::Equal => return n,
        }
    }
    ptr::null_mut()
}

/// The first node strictly after (h, key) in tree order, or null; with
/// `key` None, the first node whose hash is greater than `h`.
///
/// # Safety
/// As for [`find`].
pub unsafe fn first_after<K: Keyed>(
    tree: *const ngx_rbtree_t,
    h: usize,
    key: Option<&[u8]>,
) -> *mut ngx_rbtree_node_t {
    let sentinel = (*tree).sentinel;
    let mut n = (*tree).root;
    let mut best = ptr::null_mut();
    while n != sentinel {
        let greater = (*n).key > h || ((*n).key == h && key.is_some_and(|k| K::key_of(n) > k));
        if greater {
            best = n;
            n = (*n).left;
        } else {
            n = (*n).right;
        }
    }
    best
}

/// The first node of the tree in order, or null when it is empty.
///
/// # Safety
/// As for [`find`].
pub unsafe fn first(tree: *const ngx_rbtree_t) -> *mut ngx_rbtree_node_t {
    let sentinel = (*tree).sentinel;
    if (*tree).root == sentinel {
        return ptr::null_mut();
    }
    nginx_sys::ngx_rbtree_min((*tree).root, sentinel)
}
