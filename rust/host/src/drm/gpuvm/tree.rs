// SPDX-License-Identifier: GPL-2.0

//! The host twin of a `drm_gpuvm`'s `rb` member: the interval tree of `drm_gpuva`s and their
//! address-ordered list.
//!
//! An ordered map keyed by (start, insertion number) stands for both: the kernel's interval tree
//! puts an equal start to the right of the nodes already there, and the list follows the tree's
//! order. Overlap is the interval tree's, on inclusive ends `last = addr + range - 1` computed in
//! wrapping `u64` as C does, so zero-length requests and nodes behave as in C (a zero-length
//! query at `a` finds a node holding both `a - 1` and `a`).

use super::{DriverGpuVm, GpuVa};
use crate::prelude::*;
use core::ptr::NonNull;
use std::collections::BTreeMap;

/// Position of a node: its start address and insertion number.
pub(super) type Key = (u64, u64);

/// One node: its range and the VA, `None` for the kernel-reserved node.
pub(super) struct Node<T: DriverGpuVm> {
    pub(super) range: u64,
    pub(super) va: Option<NonNull<GpuVa<T>>>,
}

/// The interval tree (see the module documentation).
pub(super) struct Tree<T: DriverGpuVm> {
    map: BTreeMap<Key, Node<T>>,
    seq: u64,
}

/// `GPUVA_LAST()`.
fn last(addr: u64, range: u64) -> u64 {
    addr.wrapping_add(range).wrapping_sub(1)
}

/// The interval tree's overlap test of node `(addr, range)` with `[start, last]`.
fn overlaps(addr: u64, range: u64, start: u64, l: u64) -> bool {
    addr <= l && last(addr, range) >= start
}

impl<T: DriverGpuVm> Tree<T> {
    pub(super) fn new() -> Self {
        Self {
            map: BTreeMap::new(),
            seq: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn get(&self, key: Key) -> Option<&Node<T>> {
        self.map.get(&key)
    }

    /// `drm_gpuva_find_first()`: the first node, in tree order, overlapping
    /// `[addr, addr + range - 1]`.
    pub(super) fn find_first(&self, addr: u64, range: u64) -> Option<Key> {
        let l = last(addr, range);
        let hit = |(k, n): (&Key, &Node<T>)| overlaps(k.0, n.range, addr, l).then_some(*k);
        if addr > 0 {
            // A zero-length node at 0 ends at `u64::MAX`: it overlaps everything.
            if let Some(k) = self.map.range((0, 0)..(1, 0)).find_map(hit) {
                return Some(k);
            }
            // Nodes of non-zero length never overlap one another, so at most the nearest one
            // starting below `addr` can reach it; zero-length nodes before it cannot.
            for (k, n) in self.map.range(..(addr, 0)).rev() {
                if n.range != 0 {
                    if overlaps(k.0, n.range, addr, l) {
                        return Some(*k);
                    }
                    break;
                }
            }
        }
        if l < addr {
            return None;
        }
        self.map.range((addr, 0)..=(l, u64::MAX)).find_map(hit)
    }

    /// `__drm_gpuva_next()`: the next node in address order.
    pub(super) fn next(&self, key: Key) -> Option<Key> {
        self.map
            .range((core::ops::Bound::Excluded(key), core::ops::Bound::Unbounded))
            .next()
            .map(|(k, _)| *k)
    }

    /// `__drm_gpuva_insert()`: `EEXIST` over an overlapping node.
    pub(super) fn insert(
        &mut self,
        addr: u64,
        range: u64,
        va: Option<NonNull<GpuVa<T>>>,
    ) -> Result<Key> {
        if self.find_first(addr, range).is_some() {
            return Err(EEXIST);
        }
        let key = (addr, self.seq);
        self.seq += 1;
        self.map.insert(key, Node { range, va });
        Ok(key)
    }

    /// `__drm_gpuva_remove()`.
    pub(super) fn remove(&mut self, key: Key) {
        self.map.remove(&key);
    }

    /// Every node in address order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &Node<T>)> {
        self.map.iter()
    }
}
