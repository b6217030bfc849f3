// SPDX-License-Identifier: GPL-2.0

//! Where the pages of a map come from: one physically contiguous range, one page repeated, or a
//! scatter list; and how each writes a run of leaf descriptors for its pages.

use crate::desc_run::fill;
use crate::geometry::{UAT_PGBIT, UAT_PGSZ};
use crate::pgtable::PhysRange;
use crate::pte::PteTemplate;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::io::PhysAddr;
use kernel::prelude::*;

/// Produces the physical page for each successive page of a mapping.
pub(crate) trait PageSource {
    fn next_page(&mut self) -> Option<PhysAddr>;

    /// Whether at least `pages` more pages will come.
    fn covers(&self, _pages: u64) -> bool {
        true
    }

    /// Writes the descriptors of the next `run.len()` pages, made from `tmpl`, into `run`;
    /// `EIO` if the pages run out.
    #[inline(always)]
    fn write_run(&mut self, run: &[AtomicU64], tmpl: PteTemplate) -> Result {
        for e in run {
            let pa = self.next_page().ok_or(EIO)?;
            e.store(tmpl.pte(pa).to_le(), Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Writes the descriptors of the contiguous pages from `pa` into `run`: the loop kept in
/// registers (the descriptors are atomics, which the compiler assumes may alias the source).
///
/// The descriptors of contiguous pages differ only in their address field, by a page each: the
/// callers have checked that the last page is page aligned and within the OAS, so adding
/// `UAT_PGSZ` to one descriptor gives the next (no carry leaves the address field). Unrolled by
/// four, as [`fill`].
#[inline(always)]
fn write_contiguous(run: &[AtomicU64], tmpl: PteTemplate, pa: PhysAddr) {
    let mut d = tmpl.pte(pa);
    debug_assert!(
        run.is_empty() || {
            let last = pa + ((run.len() as u64 - 1) << UAT_PGBIT);
            tmpl.pte(last) == d + (last - pa)
        }
    );
    let mut quads = run.chunks_exact(4);
    for q in &mut quads {
        q[0].store(d.to_le(), Ordering::Relaxed);
        q[1].store((d + UAT_PGSZ).to_le(), Ordering::Relaxed);
        q[2].store((d + 2 * UAT_PGSZ).to_le(), Ordering::Relaxed);
        q[3].store((d + 3 * UAT_PGSZ).to_le(), Ordering::Relaxed);
        d += 4 * UAT_PGSZ;
    }
    for e in quads.remainder() {
        e.store(d.to_le(), Ordering::Relaxed);
        d += UAT_PGSZ;
    }
}

/// Physically contiguous memory.
pub(crate) struct Contiguous(pub(crate) PhysAddr);

impl PageSource for Contiguous {
    #[inline(always)]
    fn next_page(&mut self) -> Option<PhysAddr> {
        let pa = self.0;
        self.0 += UAT_PGSZ;
        Some(pa)
    }

    #[inline(always)]
    fn write_run(&mut self, run: &[AtomicU64], tmpl: PteTemplate) -> Result {
        write_contiguous(run, tmpl, self.0);
        self.0 += (run.len() as u64) << UAT_PGBIT;
        Ok(())
    }
}

/// The same page again and again (sparse / null backing).
pub(crate) struct Repeat(pub(crate) PhysAddr);

impl PageSource for Repeat {
    #[inline(always)]
    fn next_page(&mut self) -> Option<PhysAddr> {
        Some(self.0)
    }

    #[inline(always)]
    fn write_run(&mut self, run: &[AtomicU64], tmpl: PteTemplate) -> Result {
        fill(run, tmpl.pte(self.0).to_le());
        Ok(())
    }
}

/// A scatter list, from an offset into its first entry.
pub(crate) struct Scatter<'a> {
    pub(crate) ranges: &'a [PhysRange],
    pub(crate) off: u64,
}

impl PageSource for Scatter<'_> {
    fn covers(&self, pages: u64) -> bool {
        let mut left = pages.saturating_mul(UAT_PGSZ).saturating_add(self.off);
        for r in self.ranges {
            if left <= r.len {
                return true;
            }
            left -= r.len;
        }
        left == 0
    }

    #[inline(always)]
    fn next_page(&mut self) -> Option<PhysAddr> {
        let r = self.ranges.first()?;
        let pa = r.addr + self.off;
        self.off += UAT_PGSZ;
        if self.off == r.len {
            self.ranges = &self.ranges[1..];
            self.off = 0;
        }
        Some(pa)
    }

    /// The entries of a scattered buffer are often single pages (the page allocator hands out
    /// no particular order, so neighbours rarely merge): those take one store each, and only
    /// longer entries the contiguous loop. The position in the list is kept in registers and
    /// written back once.
    #[inline(always)]
    fn write_run(&mut self, run: &[AtomicU64], tmpl: PteTemplate) -> Result {
        let (mut ranges, mut off) = (self.ranges, self.off);
        let mut i = 0;
        let result = loop {
            if i >= run.len() {
                break Ok(());
            }
            let Some((r, rest)) = ranges.split_first() else {
                break Err(EIO);
            };
            let pa = r.addr + off;
            // Entries are page aligned and non-empty (`check_sg`); taking at least one page
            // keeps this finite regardless.
            let avail = (r.len.saturating_sub(off) >> UAT_PGBIT) as usize;
            if avail <= 1 {
                run[i].store(tmpl.pte(pa).to_le(), Ordering::Relaxed);
                i += 1;
                (ranges, off) = (rest, 0);
                continue;
            }
            let k = avail.min(run.len() - i);
            write_contiguous(&run[i..i + k], tmpl, pa);
            i += k;
            off += (k as u64) << UAT_PGBIT;
            if off >= r.len {
                (ranges, off) = (rest, 0);
            }
        };
        (self.ranges, self.off) = (ranges, off);
        result
    }
}
