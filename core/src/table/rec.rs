//! The record header (40 bytes, little-endian, at an 8-byte boundary):
//!
//! | offset | field |
//! | --- | --- |
//! | 0 | `u32`: value length (24 bits), flags (8 bits: [`USED`], [`TOMB`], [`PENDING`], [`EARLY`]) |
//! | 4 | `u32`: next record in the same index bucket |
//! | 8 | `u32`: the record changed before this one (toward the tail) |
//! | 12 | `u32`: the record changed after this one (toward the head) |
//! | 16 | `u64`: hybrid-logical-clock version |
//! | 24 | `u64`: sequence number (48 bits), key length (16 bits) |
//! | 32 | `u64`: expiry deadline in ms (48 bits, 0 = never), origin's index in the zone's origin table (16 bits) |
//!
//! then the key and the value; the block is that rounded up to 8 bytes. A
//! free block starts with its size (the [`USED`] bit clear) and the next
//! free block of its list.

pub const HEADER: usize = 40;

pub const CHAIN: usize = 4;
pub const PREV: usize = 8;
pub const NEXT: usize = 12;
pub const HLC: usize = 16;
pub const SEQ: usize = 24;
pub const EXPIRE: usize = 32;

pub const SEQ_MASK: u64 = (1 << 48) - 1;

pub const USED: u8 = 0x80;
pub const TOMB: u8 = 0x40;
pub const PENDING: u8 = 0x20;
pub const EARLY: u8 = 0x10;

pub const USED_BIT: u32 = (USED as u32) << 24;

/// The block size of a record.
pub const fn size(klen: usize, vlen: usize) -> usize {
    (HEADER + klen + vlen + 7) & !7
}
