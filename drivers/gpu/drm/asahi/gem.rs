// SPDX-License-Identifier: GPL-2.0

//! GEM buffers as the MMU sees them: pinned pages described by a scatter list.
//!
//! A buffer is either allocated here (its pages owned and pinned for its lifetime, in whatever
//! physical order the allocator gives them; neighbours are merged into one scatter entry) or
//! imported with a scatter list someone else pins. Its [`SgList`] finds the entry holding an
//! offset by binary search, so that binding any part of a buffer costs time in the size of the
//! part, not of the buffer.

use crate::geometry::{UAT_PGMSK, UAT_PGSZ};
use crate::pgtable::PhysRange;
use crate::sg::SgList;
use kernel::io::PhysAddr;
use kernel::page::Page;
use kernel::prelude::*;

/// A GEM buffer's pages.
pub struct GemObject {
    sg: SgList,
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
        let mut sg = SgList::new();
        for _ in 0..n {
            let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
            // Neighbours merge into one entry.
            sg.push(PhysRange {
                addr: page.phys(),
                len: UAT_PGSZ,
            })?;
            pages.push(page, GFP_KERNEL)?;
        }
        Ok(GemObject { sg, _pages: pages })
    }

    /// Wraps an imported buffer's scatter list, merging entries that continue each other. Every
    /// entry must be page aligned and non-empty, and the list not empty (`EINVAL`). The exporter
    /// keeps the pages pinned while this object lives.
    pub fn import(ranges: &[PhysRange]) -> Result<GemObject> {
        let mut sg = SgList::new();
        for r in ranges {
            sg.push(*r)?;
        }
        if sg.size() == 0 {
            return Err(EINVAL);
        }
        Ok(GemObject {
            sg,
            _pages: KVec::new(),
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.sg.size()
    }

    /// The scatter list.
    pub fn sg(&self) -> &[PhysRange] {
        self.sg.ranges()
    }

    /// The scatter list, with what finds the entry holding an offset.
    pub fn sg_list(&self) -> &SgList {
        &self.sg
    }

    /// The physical address of byte `offset`.
    pub fn phys_at(&self, offset: u64) -> Option<PhysAddr> {
        self.sg.phys_at(offset)
    }
}
