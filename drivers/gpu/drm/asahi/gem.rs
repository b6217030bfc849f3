// SPDX-License-Identifier: GPL-2.0

//! GEM buffers as the MMU sees them: pinned pages described by a scatter list.
//!
//! A buffer is either allocated here (its pages owned and pinned for its lifetime, in whatever
//! physical order the allocator gives them; neighbours are merged into one scatter entry) or
//! imported with a scatter list someone else pins. Binding any part of a buffer must cost time
//! in the size of the part, not of the buffer: entry start offsets are kept sorted, so the entry
//! holding a given offset is found by binary search.

use crate::geometry::{UAT_PGMSK, UAT_PGSZ};
use crate::pgtable::PhysRange;
use kernel::io::PhysAddr;
use kernel::page::Page;
use kernel::prelude::*;

/// A GEM buffer's pages.
pub struct GemObject {
    size: u64,
    sg: KVec<PhysRange>,
    /// `starts[i]`: the object offset where `sg[i]` begins.
    starts: KVec<u64>,
    /// The pages, when this object allocated them: held (never read) so that they stay
    /// allocated until the object goes.
    _pages: KVec<Page>,
}

impl GemObject {
    /// Allocates a buffer of `size` bytes (a non-zero multiple of the page size; `EINVAL`
    /// otherwise), zeroed. `ENOMEM` frees whatever was allocated.
    pub fn new(size: u64) -> Result<GemObject> {
        if size == 0 || size & UAT_PGMSK != 0 {
            return Err(EINVAL);
        }
        let n = usize::try_from(size / UAT_PGSZ).map_err(|_| EINVAL)?;
        let mut pages = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut sg: KVec<PhysRange> = KVec::new();
        let mut starts = KVec::new();
        for i in 0..n {
            let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
            let pa = page.phys();
            match sg.last_mut() {
                Some(last) if last.addr + last.len == pa => last.len += UAT_PGSZ,
                _ => {
                    sg.push(
                        PhysRange {
                            addr: pa,
                            len: UAT_PGSZ,
                        },
                        GFP_KERNEL,
                    )?;
                    starts.push(i as u64 * UAT_PGSZ, GFP_KERNEL)?;
                }
            }
            pages.push(page, GFP_KERNEL)?;
        }
        Ok(GemObject {
            size,
            sg,
            starts,
            _pages: pages,
        })
    }

    /// Wraps an imported buffer's scatter list (entries page aligned and non-empty: `EINVAL`
    /// otherwise). The exporter keeps the pages pinned while this object lives.
    pub fn import(sg: &[PhysRange]) -> Result<GemObject> {
        let mut own = KVec::with_capacity(sg.len(), GFP_KERNEL)?;
        let mut starts = KVec::with_capacity(sg.len(), GFP_KERNEL)?;
        let mut size = 0u64;
        for r in sg {
            if r.len == 0 || r.len & UAT_PGMSK != 0 || r.addr & UAT_PGMSK != 0 {
                return Err(EINVAL);
            }
            starts.push(size, GFP_KERNEL)?;
            own.push(*r, GFP_KERNEL)?;
            size = size.checked_add(r.len).ok_or(EINVAL)?;
        }
        if size == 0 {
            return Err(EINVAL);
        }
        Ok(GemObject {
            size,
            sg: own,
            starts,
            _pages: KVec::new(),
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The scatter list.
    pub fn sg(&self) -> &[PhysRange] {
        &self.sg
    }

    /// The scatter entry holding byte `offset` and the offset into it; `None` past the end.
    pub fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        if offset >= self.size {
            return None;
        }
        let idx = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        Some((idx, offset - self.starts[idx]))
    }

    /// The physical address of byte `offset`.
    pub fn phys_at(&self, offset: u64) -> Option<PhysAddr> {
        let (i, off) = self.locate(offset)?;
        Some(self.sg[i].addr + off)
    }
}
