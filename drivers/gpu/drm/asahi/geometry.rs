// SPDX-License-Identifier: GPL-2.0

//! The shape of the UAT translation tables: granule, levels, and the two VA halves.
//!
//! G13 and G14 (M1, M2) translate 39-bit input addresses per half through three levels of 16 KiB
//! tables of 2048 descriptors; only 8 entries of the top level are reachable. G15 and later widen
//! the input to 42 bits and use 64 top-level entries. Everything else in the driver asks this
//! module for shifts and indices, so that difference is one parameter.

use kernel::prelude::*;

/// log2 of the UAT granule (16 KiB, the same as the CPU page size the driver requires).
pub const UAT_PGBIT: u32 = 14;
/// The UAT granule in bytes.
pub const UAT_PGSZ: u64 = 1 << UAT_PGBIT;
/// Mask of the offset inside a page.
pub const UAT_PGMSK: u64 = UAT_PGSZ - 1;
/// Descriptors in one table (a table is exactly one page).
pub const PTES_PER_TABLE: usize = (UAT_PGSZ / 8) as usize;
/// Index bits resolved by a full table.
const BITS_PER_LEVEL: u32 = 11;

/// A table level: 1 is the top (TTB) level, 3 holds the page descriptors.
pub type Level = u32;
/// The top table level.
pub const TOP_LEVEL: Level = 1;
/// The level of page (leaf) descriptors.
pub const LEAF_LEVEL: Level = 3;

/// Input address geometry of one GPU generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input address bits per half.
    ias: u32,
}

impl Geometry {
    /// G13 (M1 family) and G14 (M2 family): 39-bit halves, 8 reachable top-level entries.
    pub const G13: Geometry = Geometry { ias: 39 };
    /// G14 has the same geometry as G13.
    pub const G14: Geometry = Geometry::G13;
    /// G15 and later: the TTBR0/TTBR1 split moves to bit 42, 64 top-level entries.
    pub const G15: Geometry = Geometry { ias: 42 };

    /// Input address bits per half.
    pub const fn ias(&self) -> u32 {
        self.ias
    }

    /// VA shift of the entries of a table at `level` (36, 25, 14).
    pub const fn shift(&self, level: Level) -> u32 {
        UAT_PGBIT + BITS_PER_LEVEL * (LEAF_LEVEL - level)
    }

    /// Number of reachable entries in a table at `level`.
    pub const fn entries(&self, level: Level) -> usize {
        if level == TOP_LEVEL {
            1 << (self.ias - self.shift(TOP_LEVEL))
        } else {
            PTES_PER_TABLE
        }
    }

    /// Index of `va` in the table at `level` (the half's sign bits are ignored).
    pub const fn index(&self, va: u64, level: Level) -> usize {
        ((va >> self.shift(level)) as usize) & (self.entries(level) - 1)
    }

    /// The entries of the table at `level` that `range` touches, in order, each with its index
    /// and the part of `range` it covers.
    pub fn entries_in(&self, range: VaRange, level: Level) -> EntriesIn {
        EntriesIn {
            geometry: *self,
            level,
            span_mask: (1u64 << self.shift(level)) - 1,
            next: Some(range.start),
            last: range.last,
        }
    }

    /// The lower (user, TTB0) half: `0 ..= 2^ias - 1`.
    pub const fn lower_half(&self) -> VaRange {
        VaRange {
            start: 0,
            last: (1 << self.ias) - 1,
        }
    }

    /// The upper (kernel, TTB1) half: the sign-extended `-(2^ias) ..= u64::MAX`.
    pub const fn upper_half(&self) -> VaRange {
        VaRange {
            start: !((1 << self.ias) - 1),
            last: u64::MAX,
        }
    }
}

/// Iterator returned by [`Geometry::entries_in`].
pub struct EntriesIn {
    geometry: Geometry,
    level: Level,
    span_mask: u64,
    next: Option<u64>,
    last: u64,
}

impl Iterator for EntriesIn {
    type Item = (usize, VaRange);

    fn next(&mut self) -> Option<(usize, VaRange)> {
        let start = self.next?;
        let sub = VaRange {
            start,
            last: (start | self.span_mask).min(self.last),
        };
        self.next = (sub.last != self.last).then(|| sub.last + 1);
        Some((self.geometry.index(start, self.level), sub))
    }
}

/// An inclusive range of GPU virtual addresses (inclusive so that the top of the upper half,
/// `u64::MAX`, can be named).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaRange {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub last: u64,
}

impl VaRange {
    /// The page-aligned range `start .. start + size`; `EINVAL` when unaligned, empty or
    /// wrapping past the top of the address space.
    pub fn from_start_size(start: u64, size: u64) -> Result<VaRange> {
        if size == 0 || start & UAT_PGMSK != 0 || size & UAT_PGMSK != 0 {
            return Err(EINVAL);
        }
        let last = start.checked_add(size - 1).ok_or(EINVAL)?;
        Ok(VaRange { start, last })
    }

    /// Number of bytes in the range (saturating at `u64::MAX` for a whole 64-bit space).
    pub fn size(&self) -> u64 {
        (self.last - self.start).saturating_add(1)
    }

    /// Number of pages in the range.
    pub fn pages(&self) -> u64 {
        ((self.last - self.start) >> UAT_PGBIT) + 1
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains_range(&self, other: &VaRange) -> bool {
        other.start >= self.start && other.last <= self.last
    }

    /// Whether `va` lies inside the range.
    pub fn contains(&self, va: u64) -> bool {
        va >= self.start && va <= self.last
    }

    /// The smallest range that holds both ranges.
    #[inline]
    pub fn hull(&self, other: &VaRange) -> VaRange {
        VaRange {
            start: self.start.min(other.start),
            last: self.last.max(other.last),
        }
    }
}
