// SPDX-License-Identifier: GPL-2.0

//! The kernel VM's VA allocator: where firmware-visible objects go in the driver's part of the
//! upper half.
//!
//! A [`MapleTreeAlloc`]: each allocation is a range of the tree (the lowest that fits, as the
//! maple tree finds gaps). The tree has its own lock, so the allocator is shared as it is; its
//! calls may sleep (the tree allocates its nodes), so they are made in process context.

use crate::geometry::{VaRange, UAT_PGMSK};
use kernel::maple_tree::{AllocErrorKind, MapleTreeAlloc};
use kernel::prelude::*;

/// Allocated ranges of one VA range.
///
/// # Invariants
///
/// Every range of `tree` lies inside `range` and spans whole pages.
#[pin_data]
pub struct KernelVaAlloc {
    range: VaRange,
    #[pin]
    tree: MapleTreeAlloc<()>,
}

impl KernelVaAlloc {
    /// An allocator over `range` (page aligned).
    pub fn new(range: VaRange) -> impl PinInit<Self> {
        // INVARIANT: The tree starts empty.
        pin_init!(KernelVaAlloc {
            range,
            tree <- MapleTreeAlloc::new(),
        })
    }

    /// Allocates `size` bytes (a non-zero page multiple: `EINVAL` otherwise), the lowest
    /// address that fits; `ENOSPC` when none does.
    pub fn alloc(&self, size: u64) -> Result<u64> {
        if size == 0 || size & UAT_PGMSK != 0 {
            return Err(EINVAL);
        }
        let len = usize::try_from(size).map_err(|_| ENOSPC)?;
        let start = usize::try_from(self.range.start)?;
        let last = usize::try_from(self.range.last)?;
        // INVARIANT: The tree places the `size` bytes inside `range`; the range starts on a page
        // and every allocation spans whole pages, so every gap starts on a page.
        match self.tree.alloc_range(len, (), start..=last, GFP_KERNEL) {
            Ok(va) => Ok(va as u64),
            Err(e) => Err(match e.cause {
                AllocErrorKind::AllocError(_) => ENOMEM,
                // `InvalidRequest`: larger than the whole range.
                AllocErrorKind::Busy | AllocErrorKind::InvalidRequest => ENOSPC,
            }),
        }
    }

    /// Frees the allocation at `va`, an address [`KernelVaAlloc::alloc`] returned (`ENOENT` if
    /// no allocation holds it; the tree would free one that merely holds it, so callers pass the
    /// start).
    pub fn free(&self, va: u64) -> Result {
        let index = usize::try_from(va).map_err(|_| ENOENT)?;
        self.tree.erase(index).ok_or(ENOENT)
    }
}
