// SPDX-License-Identifier: GPL-2.0

//! Gathering what an operation unmapped, for one TLB invalidation and a deferred table free.
//!
//! Page-table updates and TLB maintenance are kept apart: an unmap clears descriptors and unlinks
//! tables that became empty, and records both here. Only after the TLB has been invalidated for
//! the gathered range may the unlinked tables be freed: until then the GPU's walk caches may still
//! point into them, and a freed table reused for something else is a security hole.

use crate::geometry::VaRange;
use crate::page_list::PageList;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;

/// The TLB maintenance the page-table code needs, for one address space (ASID).
pub trait TlbInvalidate {
    /// Invalidates the translation of the page at `va` tagged with `asid`.
    fn invalidate_page(&self, asid: u16, va: u64) {
        let start = va & !(PAGE_SIZE as u64 - 1);
        self.invalidate_range(
            asid,
            VaRange {
                start,
                last: start + (PAGE_SIZE as u64 - 1),
            },
        );
    }
    /// Invalidates every translation of `range` (page aligned) tagged with `asid`, and the walk
    /// caches above it.
    fn invalidate_range(&self, asid: u16, range: VaRange);
    /// Invalidates every translation tagged with `asid`.
    fn invalidate_asid(&self, asid: u16);
    /// Invalidates every translation of every ASID.
    fn invalidate_all(&self);
}

/// Table pages unlinked from a page table, waiting for the TLB invalidation.
///
/// Collecting them never allocates (see [`PageList`]), so an unmap cannot fail half-way.
/// Dropping them without [`Gather::flush`] leaks them: freeing a table the GPU may still walk
/// through a stale walk cache is the one failure worse than a leak.
///
/// The list is kept in place and tested for emptiness by its count alone: most operations free
/// no table, and their flush then reads one word instead of moving the list out (a wide copy of
/// fields just written with narrower stores, which stalls store-to-load forwarding).
#[derive(Default)]
pub struct FreedTables(PageList);

impl FreedTables {
    /// An empty set.
    pub const fn new() -> FreedTables {
        FreedTables(PageList::new())
    }

    /// Number of tables waiting.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no table is waiting.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes ownership of unlinked table pages.
    pub(crate) fn from_list(list: PageList) -> FreedTables {
        FreedTables(list)
    }

    /// Moves every table of `other` into `self`.
    pub fn append(&mut self, mut other: FreedTables) {
        if !other.is_empty() {
            self.0.append(core::mem::take(&mut other.0));
        }
    }

    /// Frees every table. Only for after the TLB invalidation that covers them.
    #[inline]
    fn release(&mut self) {
        if !self.is_empty() {
            drop(core::mem::take(&mut self.0));
        }
    }
}

impl Drop for FreedTables {
    fn drop(&mut self) {
        if !self.is_empty() {
            let n = core::mem::take(&mut self.0).leak();
            pr_err!(
                "leaking {} page-table pages ({} KiB) dropped without a TLB flush\n",
                n,
                n * PAGE_SIZE / 1024
            );
        }
    }
}

/// What one operation (or a batch of them) changed in one address space: the VA span to
/// invalidate and the tables to free afterwards.
#[must_use = "the gathered range must be invalidated with `Gather::flush`"]
pub struct Gather {
    range: Option<VaRange>,
    freed: FreedTables,
}

impl Gather {
    /// An empty gather.
    #[inline]
    pub const fn new() -> Gather {
        Gather {
            range: None,
            freed: FreedTables::new(),
        }
    }

    /// Records that `range` lost or changed translations.
    #[inline]
    pub fn add_range(&mut self, range: VaRange) {
        self.range = Some(match self.range {
            None => range,
            Some(r) => r.hull(&range),
        });
    }

    /// Records unlinked tables to free after the flush.
    pub fn add_freed(&mut self, freed: FreedTables) {
        self.freed.append(freed);
    }

    /// The span to invalidate, if anything changed.
    #[inline]
    pub fn range(&self) -> Option<VaRange> {
        self.range
    }

    /// Number of tables waiting to be freed.
    pub fn freed_tables(&self) -> usize {
        self.freed.len()
    }

    /// Whether nothing was gathered.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.range.is_none() && self.freed.is_empty()
    }

    /// Invalidates the gathered span for `asid`, then frees the unlinked tables; the gather is
    /// empty afterwards and can gather again.
    ///
    /// The flushes take the gather by reference, as `iommu_iotlb_sync()` does: moving it into
    /// the call would copy it right after the operation it was lent to wrote it, and the wide
    /// loads of that copy cannot be forwarded from the operation's narrower stores, so they wait
    /// for the store buffer to drain.
    #[inline]
    pub fn flush(&mut self, tlb: &impl TlbInvalidate, asid: u16) {
        if let Some(range) = self.range.take() {
            tlb.invalidate_range(asid, range);
        }
        self.freed.release();
    }

    /// Like [`Gather::flush`], for an address space that several contexts walk (the kernel VM,
    /// whose upper half kernel-visible user contexts share): its leaves are global, so the range
    /// invalidation in `asid` drops them for every context, but other contexts' walk caches are
    /// tagged with their own ASIDs. When tables were freed, everything is invalidated instead.
    pub fn flush_shared(&mut self, tlb: &impl TlbInvalidate, asid: u16) {
        if self.freed.is_empty() {
            self.flush(tlb, asid);
            return;
        }
        tlb.invalidate_all();
        self.range = None;
        self.freed.release();
    }

    /// Frees the unlinked tables of an address space that no TTBAT slot holds, without TLB
    /// maintenance.
    ///
    /// Correct only because binding an address space to a slot always invalidates that slot's
    /// ASID: whatever the TLB cached for this address space under its previous slot was dropped
    /// when the slot was taken from it, and nothing can walk its tables until its next bind.
    pub fn finish_unbound(&mut self) {
        self.range = None;
        self.freed.release();
    }
}

impl Default for Gather {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    //! Host-only checks that every kind of flush leaves the gather empty, so that flushing it
    //! again invalidates and frees nothing.

    use super::*;
    use crate::geometry::UAT_PGSZ;
    use crate::pgtable::PageTable;
    use crate::pte::Prot;
    use crate::selftest::{user_cfg, RecordingTlb};

    /// A gather holding a range and the tables that unmapping a lone page emptied.
    fn filled(pt: &mut PageTable) -> Gather {
        let va = 0x1_0000_0000;
        pt.map(va, 0x8_0000_0000, UAT_PGSZ, Prot::GPU_SHARED_RW)
            .unwrap();
        let mut gather = Gather::new();
        assert_eq!(pt.unmap(va, UAT_PGSZ, &mut gather), Ok(1));
        assert!(gather.range().is_some() && gather.freed_tables() != 0);
        gather
    }

    #[test]
    fn every_flush_leaves_the_gather_empty() {
        let mut pt = PageTable::new(user_cfg()).unwrap();
        for kind in 0..3 {
            let tlb = RecordingTlb::default();
            let mut gather = filled(&mut pt);
            match kind {
                0 => gather.flush(&tlb, 1),
                1 => gather.flush_shared(&tlb, 1),
                _ => gather.finish_unbound(),
            }
            assert!(gather.is_empty(), "flush {kind}");
            let invalidations = tlb.count.get();
            gather.flush(&tlb, 1);
            assert_eq!(tlb.count.get(), invalidations, "flush {kind}");
        }
        assert_eq!(pt.table_pages(), 0);
    }
}
