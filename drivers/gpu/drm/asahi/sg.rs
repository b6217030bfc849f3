// SPDX-License-Identifier: GPL-2.0

//! A buffer's scatter list with the buffer offset at which each entry starts.
//!
//! Binding part of a buffer must cost time in the size of that part, not of the buffer: a Mesa
//! client binds single pages of huge buffers (sparse resources, imported ones with one entry per
//! page). [`SgList::from_offset`] finds the entry holding an offset by binary search and hands
//! the page-table code the list from there, so that a bind only ever looks at the entries it
//! maps.

use crate::geometry::UAT_PGMSK;
use crate::pgtable::PhysRange;
use kernel::io::PhysAddr;
use kernel::prelude::*;

/// The pages of a buffer, in buffer order.
///
/// Backed by `kvmalloc` ([`KVVec`]): the list of a large imported buffer runs to megabytes. It
/// is charged to the memory cgroup of the task that builds it (the client that first binds the
/// buffer, in its ioctl), as the buffer's pages are: a client sizes it.
///
/// # Invariants
///
/// `ranges` and `starts` have the same length. Every entry is UAT-page aligned, non-empty and
/// does not wrap past the end of the physical address space; no entry continues the one before
/// it (they would be one). `starts[i]` is the sum of the lengths of the entries before
/// `ranges[i]` (so `starts` is strictly increasing from 0), and `size` the sum of all.
pub struct SgList {
    ranges: KVVec<PhysRange>,
    starts: KVVec<u64>,
    size: u64,
}

impl SgList {
    /// An empty list.
    pub const fn new() -> SgList {
        // INVARIANT: No entry, size 0.
        SgList {
            ranges: KVVec::new(),
            starts: KVVec::new(),
            size: 0,
        }
    }

    /// An empty list with room for `entries` entries without reallocating (`ENOMEM`).
    pub fn with_capacity(entries: usize) -> Result<SgList> {
        // INVARIANT: No entry, size 0.
        Ok(SgList {
            ranges: KVVec::with_capacity(entries, GFP_KERNEL_ACCOUNT)?,
            starts: KVVec::with_capacity(entries, GFP_KERNEL_ACCOUNT)?,
            size: 0,
        })
    }

    /// Appends `r` to the list, merged into the last entry when it continues it.
    ///
    /// `EINVAL`, and the list is unchanged, if `r` is empty, not page aligned or wraps past the
    /// end of the physical address space, or if the list would exceed `u64::MAX` bytes. `ENOMEM`,
    /// the list unchanged too, if a new entry cannot be allocated.
    pub fn push(&mut self, r: PhysRange) -> Result {
        if r.len == 0 || (r.addr | r.len) & UAT_PGMSK != 0 || r.addr.checked_add(r.len).is_none() {
            return Err(EINVAL);
        }
        let size = self.size.checked_add(r.len).ok_or(EINVAL)?;
        match self.ranges.last_mut() {
            Some(last) if last.addr + last.len == r.addr => {
                // INVARIANT: The last entry grows by `r`, and ends where `r` does, without
                // wrapping. (`last` does not wrap: no overflow above.)
                last.len += r.len;
            }
            _ => {
                // Room in both first, so that neither grows without the other.
                self.ranges.reserve(1, GFP_KERNEL_ACCOUNT)?;
                self.starts.reserve(1, GFP_KERNEL_ACCOUNT)?;
                // INVARIANT: A new entry, not continuing the last one, which starts at the old
                // size; both vectors grow by one.
                self.ranges.push_within_capacity(r).map_err(|_| ENOMEM)?;
                self.starts
                    .push_within_capacity(self.size)
                    .map_err(|_| ENOMEM)?;
            }
        }
        self.size = size;
        Ok(())
    }

    /// The list of the entries, each physically contiguous.
    pub fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    /// The size of the buffer, in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The entry holding byte `offset` of the buffer and the offset into it; `None` past the
    /// end. A binary search.
    pub fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        if offset >= self.size {
            return None;
        }
        // The last entry starting at or before `offset`: there is one, as `starts[0]` is 0.
        let idx = self.starts.partition_point(|&s| s <= offset) - 1;
        Some((idx, offset - self.starts[idx]))
    }

    /// The physical address of byte `offset` of the buffer.
    pub fn phys_at(&self, offset: u64) -> Option<PhysAddr> {
        let (i, off) = self.locate(offset)?;
        Some(self.ranges[i].addr + off)
    }

    /// The entries from the one holding byte `offset` on, and the offset into that first one:
    /// what [`crate::pgtable::PageTable::map_sg`] takes to map the buffer from `offset`, having
    /// nothing to skip but the start of one entry.
    pub fn from_offset(&self, offset: u64) -> Option<(&[PhysRange], u64)> {
        let (i, off) = self.locate(offset)?;
        Some((&self.ranges[i..], off))
    }

    /// The offset in the buffer of the byte at `pa`, if it is one of the buffer's: a linear
    /// search, for debugging output.
    pub fn offset_of(&self, pa: PhysAddr) -> Option<u64> {
        self.ranges
            .iter()
            .zip(self.starts.iter())
            .find(|(r, _)| pa >= r.addr && pa - r.addr < r.len)
            .map(|(r, &start)| start + (pa - r.addr))
    }
}

impl Default for SgList {
    fn default() -> Self {
        Self::new()
    }
}
