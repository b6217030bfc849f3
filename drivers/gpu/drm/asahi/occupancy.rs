// SPDX-License-Identifier: GPL-2.0

//! What a leaf table holds, known without reading it: how many pages it maps, and the span of
//! entries they lie in.
//!
//! The page table keeps one [`Occupancy`] per leaf table, beside its second-level table. With
//! it an operation skips what it knows to be empty: a table whose count is zero, and the entries
//! of a table outside its span. And an unmap whose range covers a table's span removes every page
//! of the table: the count says how many, and the table is unlinked as it is, unread, as one the
//! range covers whole (its descriptors point at data pages, which are never followed).
//!
//! The span only grows as pages are mapped, and shrinks when an unmap clears one of its ends, so
//! it stays a bound, not an exact description: a table emptied in the middle keeps the span of
//! its remaining ends.

use crate::geometry::PTES_PER_TABLE;
use core::sync::atomic::{AtomicU64, Ordering};

const COUNT_SHIFT: u32 = 0;
const FIRST_SHIFT: u32 = 16;
const LAST_SHIFT: u32 = 32;
const FIELD: u64 = 0xffff;

// Counts (at most `PTES_PER_TABLE`) and indices fit a field, and the last index of
// `Held::anywhere` is past every entry.
const _: () = assert!(PTES_PER_TABLE <= FIELD as usize);

/// What a leaf table holds: a value read from its [`Occupancy`], or to store there.
///
/// # Invariants
///
/// `first <= last` when `pages` is not zero; all three are below 2^16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pages: usize,
    first: usize,
    last: usize,
}

impl Held {
    /// An empty table.
    pub const EMPTY: Held = Held {
        pages: 0,
        first: 0,
        last: 0,
    };

    /// `pages` pages anywhere in the table (a count redone by reading the whole table): no range
    /// of a table covers this span.
    pub const fn anywhere(pages: usize) -> Held {
        if pages == 0 {
            return Held::EMPTY;
        }
        // INVARIANT: `pages` counts the entries of one table, below 2^16.
        Held {
            pages,
            first: 0,
            last: FIELD as usize,
        }
    }

    /// Number of pages the table maps.
    #[inline(always)]
    pub fn pages(self) -> usize {
        self.pages
    }

    /// The first and last index of the entries that may hold pages; `None` when the table is
    /// empty.
    #[inline(always)]
    pub fn span(self) -> Option<(usize, usize)> {
        (self.pages != 0).then_some((self.first, self.last))
    }

    /// The part of the entries `first..=last` that may hold pages; `None` when none may.
    #[inline(always)]
    pub fn clip(self, first: usize, last: usize) -> Option<(usize, usize)> {
        let (a, b) = (first.max(self.first), last.min(self.last));
        (self.pages != 0 && a <= b).then_some((a, b))
    }

    /// Whether the entries `first..=last` hold every page of the table (and it has some).
    #[inline(always)]
    pub fn within(self, first: usize, last: usize) -> bool {
        self.pages != 0 && first <= self.first && self.last <= last
    }

    /// With `n` more pages, mapped in the entries `first..=last` (of a table), which held none.
    #[inline(always)]
    pub fn added(self, first: usize, last: usize, n: usize) -> Held {
        debug_assert!(first <= last && last < PTES_PER_TABLE && self.pages + n <= PTES_PER_TABLE);
        // INVARIANT: The new pages lie in `first..=last`, the others in the old span; a table
        // has fewer than 2^16 entries.
        if self.pages == 0 {
            Held {
                pages: n,
                first,
                last,
            }
        } else {
            Held {
                pages: self.pages + n,
                first: self.first.min(first),
                last: self.last.max(last),
            }
        }
    }

    /// With the entries `first..=last` cleared, `n` pages among them. A span end they cover
    /// moves past them.
    #[inline(always)]
    pub fn removed(self, first: usize, last: usize, n: usize) -> Held {
        let pages = self.pages.saturating_sub(n);
        if pages == 0 {
            return Held::EMPTY;
        }
        let covers = |i: usize| first <= i && i <= last;
        // Both ends covered: the range holds the whole span, so every page (callers then remove
        // them all).
        debug_assert!(!(covers(self.first) && covers(self.last)));
        // INVARIANT: What is left lies in the span, outside `first..=last`. Should both ends be
        // covered anyway, the span is kept as it is.
        let (lo, hi) = match (covers(self.first), covers(self.last)) {
            (true, false) => (last + 1, self.last),
            // `first > self.first`, so `first >= 1`.
            (false, true) => (self.first, first - 1),
            _ => (self.first, self.last),
        };
        Held {
            pages,
            first: lo,
            last: hi,
        }
    }
}

/// The occupancy of one leaf table ([`Held`]), in one word: the count of pages it maps (bits
/// 0..16), the first (bits 16..32) and the last (bits 32..48) index of the span of entries
/// holding them.
///
/// Updated only by operations that hold the page table exclusively: a plain load and store
/// suffice. It is an atomic only so that walks can update it through a shared borrow.
///
/// # Invariants
///
/// The leaf table it describes maps exactly the [`Held::pages`] of its value, and every valid
/// descriptor of that table has its index in the value's [`Held::span`].
#[repr(transparent)]
pub struct Occupancy(AtomicU64);

impl Occupancy {
    /// The occupancy of an empty table.
    pub const fn new() -> Occupancy {
        // INVARIANT: A new table maps nothing.
        Occupancy(AtomicU64::new(0))
    }

    /// What the table holds.
    #[inline(always)]
    pub fn get(&self) -> Held {
        let w = self.0.load(Ordering::Relaxed);
        // INVARIANT: Only `set` stores anything but zero, from a `Held`.
        Held {
            pages: ((w >> COUNT_SHIFT) & FIELD) as usize,
            first: ((w >> FIRST_SHIFT) & FIELD) as usize,
            last: ((w >> LAST_SHIFT) & FIELD) as usize,
        }
    }

    /// Records what the table now holds.
    #[inline(always)]
    pub fn set(&self, o: Held) {
        // INVARIANT: The caller changed the table to hold `o`; the fields fit (`Held`).
        let w = ((o.pages as u64) << COUNT_SHIFT)
            | ((o.first as u64) << FIRST_SHIFT)
            | ((o.last as u64) << LAST_SHIFT);
        self.0.store(w, Ordering::Relaxed);
    }

    /// Number of pages the table maps.
    #[inline(always)]
    pub fn pages(&self) -> usize {
        self.get().pages
    }

    /// Records that the table maps nothing any more.
    #[inline(always)]
    pub fn clear(&self) {
        self.set(Held::EMPTY);
    }
}

impl Default for Occupancy {
    fn default() -> Self {
        Self::new()
    }
}
