// SPDX-License-Identifier: GPL-2.0

//! The kernel VM's VA allocator: where firmware-visible objects go in the driver's part of the
//! upper half.
//!
//! First fit over a sorted list of allocated ranges: the kernel VM holds a few hundred objects
//! at most, allocated at init and on context creation, so simplicity wins over asymptotics.

use crate::geometry::{VaRange, UAT_PGMSK};
use kernel::prelude::*;

/// Allocated ranges of one VA range.
pub struct KernelVaAlloc {
    range: VaRange,
    /// `(start, size)`, sorted, disjoint.
    used: KVec<(u64, u64)>,
}

impl KernelVaAlloc {
    /// An allocator over `range` (page aligned).
    pub fn new(range: VaRange) -> KernelVaAlloc {
        KernelVaAlloc {
            range,
            used: KVec::new(),
        }
    }

    /// Allocates `size` bytes (a non-zero page multiple: `EINVAL` otherwise), the lowest
    /// address that fits; `ENOSPC` when none does.
    pub fn alloc(&mut self, size: u64) -> Result<u64> {
        if size == 0 || size & UAT_PGMSK != 0 {
            return Err(EINVAL);
        }
        let mut start = self.range.start;
        let mut at = 0;
        for (i, &(s, len)) in self.used.iter().enumerate() {
            if s - start >= size {
                break;
            }
            start = s + len;
            at = i + 1;
        }
        let last = start.checked_add(size - 1).ok_or(ENOSPC)?;
        if last > self.range.last {
            return Err(ENOSPC);
        }
        self.used.reserve(1, GFP_KERNEL)?;
        self.used.insert_within_capacity(at, (start, size))?;
        Ok(start)
    }

    /// Frees the allocation starting at `start` (`ENOENT` if there is none); returns its size.
    pub fn free(&mut self, start: u64) -> Result<u64> {
        let i = self
            .used
            .binary_search_by_key(&start, |&(s, _)| s)
            .map_err(|_| ENOENT)?;
        let (_, size) = self.used.remove(i)?;
        Ok(size)
    }
}
