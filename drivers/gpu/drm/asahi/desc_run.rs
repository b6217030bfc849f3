// SPDX-License-Identifier: GPL-2.0

//! Runs of descriptors of one table page: the loops that read them (the checks that decide what
//! an operation will do) and the loop that writes one value into all of them.
//!
//! Map and unmap spend most of their time in these loops, so each is written for the code the
//! compiler makes of it (see each one), and those on the hot paths are inlined into the operation
//! that runs them. The callers ([`crate::pgtable`], and [`crate::page_source`] for a repeated
//! page) decide which part of a table to read or write.

use crate::geometry::PTES_PER_TABLE;
use crate::pte::LeafCheck;
use core::sync::atomic::{AtomicU64, Ordering};

/// The descriptors of one table page, mapped.
pub(crate) type Entries = [AtomicU64; PTES_PER_TABLE];

/// The descriptors `t` as plain words, for the read-only scans that decide what an operation
/// will do: the compiler vectorizes these, which it never does with atomic loads.
///
/// Sound because no CPU writes descriptors while anyone reads them: every write goes through a
/// `&mut PageTable`, which excludes every other access to its tables, and the GPU only reads
/// them (the driver sets AF itself; there is no hardware update of descriptors). Only used on
/// tables below the top level, which no one else (bootloader, firmware) shares.
#[inline(always)]
pub(crate) fn plain(t: &[AtomicU64]) -> &[u64] {
    // SAFETY: `AtomicU64` has the size and alignment of `u64`; the words are initialized and,
    // as said above, no write races with these reads.
    unsafe { core::slice::from_raw_parts(t.as_ptr().cast::<u64>(), t.len()) }
}

/// Whether every descriptor of `t` is zero.
#[inline(always)]
pub(crate) fn all_zero(t: &[AtomicU64]) -> bool {
    plain(t).iter().fold(0, |acc, &e| acc | e) == 0
}

/// Whether every descriptor of `t` (leaf descriptors) is a page descriptor: none is invalid
/// (zero) or corrupt. The first test of every unmap's check, public for `make bench`, whose
/// checked floor reads a run through it before clearing it.
///
/// One OR of all the descriptors, each with its type bits flipped: every entry has type `0b11`
/// (so none is zero) and none has a forbidden bit exactly when that OR has neither a type bit
/// nor a forbidden bit. Eight accumulators, so that the compiler keeps four vector registers
/// going.
///
/// # Safety
///
/// No one may write the descriptors of `t` during the call: they are read as plain words (see
/// `plain`), as every read-only scan of [`crate::pgtable`] does under `&PageTable`.
#[inline(always)]
pub unsafe fn holds_only_pages(t: &[AtomicU64], check: LeafCheck) -> bool {
    let mut eights = plain(t).chunks_exact(8);
    let mut acc = [0u64; 8];
    for q in &mut eights {
        for (a, &e) in acc.iter_mut().zip(q) {
            *a |= e ^ LeafCheck::FLIP;
        }
    }
    let flipped = eights
        .remainder()
        .iter()
        .fold(acc.iter().fold(0, |o, &a| o | a), |o, &e| {
            o | (e ^ LeafCheck::FLIP)
        });
    check.all_pages(u64::from_le(flipped))
}

/// The non-zero descriptors among `t`, and whether any of them is not a page descriptor.
///
/// Branch-free, with no comparison per entry (the compiler vectorizes it where it can): the
/// stray bits of every entry are OR-ed together, and the non-zero entries are counted against
/// those of type `0b11`; they differ exactly when a non-zero entry has another type.
///
/// A run that holds pages only (what an unmap usually finds) is recognized first, by
/// [`holds_only_pages`]. Anything else takes the counting scan, which gives the same answer for
/// it.
#[inline(always)]
pub(crate) fn scan_leaves(t: &[AtomicU64], check: LeafCheck) -> (usize, bool) {
    // SAFETY: Callers scan tables of a `PageTable` they borrow, and every descriptor write
    // needs `&mut PageTable`: no one writes `t` meanwhile (see `plain`).
    if unsafe { holds_only_pages(t, check) } {
        return (t.len(), false);
    }
    count_leaves(t, check)
}

/// The counting scan of [`scan_leaves`], without its first test.
#[inline(always)]
pub(crate) fn count_leaves(t: &[AtomicU64], check: LeafCheck) -> (usize, bool) {
    let forbidden = check.forbidden();
    let (mut nonzero, mut typed, mut stray) = (0u64, 0u64, 0u64);
    for &e in plain(t) {
        let e = u64::from_le(e);
        nonzero += (e | e.wrapping_neg()) >> 63;
        typed += e & (e >> 1) & 1;
        stray |= e & forbidden;
    }
    (nonzero as usize, stray != 0 || nonzero != typed)
}

/// Stores `v` into every descriptor of `t`, each whole (the GPU may be walking them).
///
/// Unrolled by four: the stores are the whole work, and the loop's own instructions (one
/// increment, compare and branch per store otherwise) would slow it down.
#[inline(always)]
pub(crate) fn fill(t: &[AtomicU64], v: u64) {
    let mut quads = t.chunks_exact(4);
    for q in &mut quads {
        q[0].store(v, Ordering::Relaxed);
        q[1].store(v, Ordering::Relaxed);
        q[2].store(v, Ordering::Relaxed);
        q[3].store(v, Ordering::Relaxed);
    }
    quads
        .remainder()
        .iter()
        .for_each(|e| e.store(v, Ordering::Relaxed));
}

/// Whether every descriptor of the table `t` outside `first ..= last` (the part the caller
/// just cleared, or found invalid) is zero. The nearest ones are looked at first: when a table is
/// emptied in order, its remaining entries are found at once. The two neighbours come first, on
/// their own: a table that keeps entries usually has one there, and the lines beyond need not be
/// read at all.
pub(crate) fn is_empty_around(t: &Entries, first: usize, last: usize) -> bool {
    let t = plain(t);
    let next = t.get(last + 1).copied().unwrap_or(0);
    let prev = first.checked_sub(1).map_or(0, |i| t[i]);
    if next | prev != 0 {
        return false;
    }
    let zero = |c: &[u64]| c.iter().fold(0, |acc, &e| acc | e) == 0;
    t[last + 1..].chunks(64).all(zero) && t[..first].rchunks(64).all(zero)
}
