// SPDX-License-Identifier: GPL-2.0

//! The kernel VM's VA allocator: where firmware-visible objects go in the driver's part of the
//! upper half.
//!
//! A [`MapleTreeAlloc`]: each allocation is a range of the tree (lowest fit, as the maple tree
//! finds gaps) holding its size. The tree has its own lock, so the allocator is shared as it is.

use crate::geometry::{VaRange, UAT_PGMSK};
use kernel::maple_tree::{AllocErrorKind, MapleTreeAlloc};
use kernel::prelude::*;

/// Allocated ranges of one VA range.
///
/// # Invariants
///
/// Every range of `tree` lies inside `range`, holds its size in bytes, and starts and ends on
/// page boundaries.
#[pin_data]
pub struct KernelVaAlloc {
    range: VaRange,
    #[pin]
    tree: MapleTreeAlloc<KBox<u64>>,
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
        let tag = KBox::new(size, GFP_KERNEL)?;
        // INVARIANT: The tree places the `size` bytes inside `range`; the range starts page
        // aligned and every allocation is a page multiple, so every gap starts on a page.
        match self.tree.alloc_range(len, tag, start..=last, GFP_KERNEL) {
            Ok(va) => Ok(va as u64),
            Err(e) => Err(match e.cause {
                AllocErrorKind::AllocError(_) => ENOMEM,
                // `InvalidRequest`: larger than the whole range.
                AllocErrorKind::Busy | AllocErrorKind::InvalidRequest => ENOSPC,
            }),
        }
    }

    /// Frees the allocation that holds `va` (`ENOENT` if there is none); returns its size.
    pub fn free(&self, va: u64) -> Result<u64> {
        let index = usize::try_from(va).map_err(|_| ENOENT)?;
        let size = self.tree.erase(index).ok_or(ENOENT)?;
        Ok(KBox::into_inner(size))
    }
}
