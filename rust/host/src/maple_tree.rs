// SPDX-License-Identifier: GPL-2.0

//! `kernel::maple_tree` on the host: what the driver uses (`MapleTreeAlloc::alloc_range`,
//! `erase`) and `insert_range`, with which tests lay out ranges, with the kernel's semantics, over
//! a `BTreeMap` behind a mutex (the kernel's tree has its own spinlock). A store that passed its
//! checks may fail for memory, as in the kernel (the fault injector).
//!
//! Ranges are inclusive and do not overlap; [`MapleTreeAlloc::alloc_range`] takes the lowest gap
//! that fits, as `mtree_alloc_range()` does. The kernel bounds `T` by `ForeignOwnable`; the host
//! has no foreign side and leaves the bound out (as [`crate::sync::aref`] does).

use crate::alloc::Flags;
use crate::error::{code::*, Error};
use core::ops::{Bound, Deref, RangeBounds};
use pin_init::PinInit;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A maple tree: values stored at ranges of `usize` indices.
///
/// # Invariants
///
/// `entries` maps the first index of each range to its last index and its value; the ranges are
/// disjoint.
pub struct MapleTree<T> {
    entries: Mutex<BTreeMap<usize, (usize, T)>>,
}

/// A maple tree that can also find free ranges ([`MapleTreeAlloc::alloc_range`]).
pub struct MapleTreeAlloc<T> {
    tree: MapleTree<T>,
}

impl<T> Deref for MapleTreeAlloc<T> {
    type Target = MapleTree<T>;

    #[inline]
    fn deref(&self) -> &MapleTree<T> {
        &self.tree
    }
}

/// `(first, last)` of `range`, `None` if it is empty.
fn to_maple_range(range: impl RangeBounds<usize>) -> Option<(usize, usize)> {
    let first = match range.start_bound() {
        Bound::Included(start) => *start,
        Bound::Excluded(start) => start.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let last = match range.end_bound() {
        Bound::Included(end) => *end,
        Bound::Excluded(end) => end.checked_sub(1)?,
        Bound::Unbounded => usize::MAX,
    };
    (first <= last).then_some((first, last))
}

impl<T> MapleTree<T> {
    fn empty() -> Self {
        MapleTree {
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, (usize, T)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `value` over `range`; `Occupied` if any index of it is taken, `InvalidRequest` if
    /// it is empty.
    pub fn insert_range<R>(&self, range: R, value: T, gfp: Flags) -> Result<(), InsertError<T>>
    where
        R: RangeBounds<usize>,
    {
        let _ = gfp;
        let Some((first, last)) = to_maple_range(range) else {
            return Err(InsertError {
                value,
                cause: InsertErrorKind::InvalidRequest,
            });
        };
        let mut entries = self.entries();
        let before = entries.range(..=last).next_back();
        if before.is_some_and(|(_, &(l, _))| l >= first) {
            return Err(InsertError {
                value,
                cause: InsertErrorKind::Occupied,
            });
        }
        // Only a store that passed the checks needs a node, which the fault injector can refuse.
        if crate::sim::kmalloc_hook().is_err() {
            return Err(InsertError {
                value,
                cause: InsertErrorKind::AllocError(crate::alloc::AllocError),
            });
        }
        entries.insert(first, (last, value));
        Ok(())
    }

    /// Removes the range that holds `index`, and returns its value.
    pub fn erase(&self, index: usize) -> Option<T> {
        let mut entries = self.entries();
        let (&first, &(last, _)) = entries.range(..=index).next_back()?;
        if last < index {
            return None;
        }
        entries.remove(&first).map(|(_, v)| v)
    }
}

impl<T> MapleTreeAlloc<T> {
    /// Creates a new, empty allocation tree.
    pub fn new() -> impl PinInit<Self> {
        MapleTreeAlloc {
            tree: MapleTree::empty(),
        }
    }

    /// Stores `value` over the lowest `size` free indices inside `range` and returns the first
    /// of them; `Busy` if no gap is large enough, `InvalidRequest` if `size` is zero or larger
    /// than `range` (as `mas_empty_area()`).
    pub fn alloc_range<R>(
        &self,
        size: usize,
        value: T,
        range: R,
        gfp: Flags,
    ) -> Result<usize, AllocError<T>>
    where
        R: RangeBounds<usize>,
    {
        let _ = gfp;
        let Some((min, max)) =
            to_maple_range(range).filter(|&(min, max)| size != 0 && max - min >= size - 1)
        else {
            return Err(AllocError {
                value,
                cause: AllocErrorKind::InvalidRequest,
            });
        };
        let mut entries = self.entries();
        // The candidate start: after the range that holds `min`, if any.
        let mut start = match entries.range(..=min).next_back() {
            Some((_, &(last, _))) if last >= min => last.checked_add(1),
            _ => Some(min),
        };
        for (&first, &(last, _)) in entries.range(min..) {
            let Some(s) = start else { break };
            if first > s && first - s >= size {
                break;
            }
            start = last.checked_add(1);
        }
        let fits = start.and_then(|s| Some((s, s.checked_add(size - 1)?)));
        match fits {
            Some((s, last)) if last <= max => {
                // As for `insert_range`: the store of a range that fits may fail for memory.
                if crate::sim::kmalloc_hook().is_err() {
                    return Err(AllocError {
                        value,
                        cause: AllocErrorKind::AllocError(crate::alloc::AllocError),
                    });
                }
                entries.insert(s, (last, value));
                Ok(s)
            }
            _ => Err(AllocError {
                value,
                cause: AllocErrorKind::Busy,
            }),
        }
    }
}

/// Error type for failure to insert a new value.
pub struct InsertError<T> {
    /// The value that could not be inserted.
    pub value: T,
    /// The reason for the failure to insert.
    pub cause: InsertErrorKind,
}

/// The reason for the failure to insert.
#[derive(PartialEq, Eq, Copy, Clone, Debug)]
pub enum InsertErrorKind {
    /// There is already a value in the requested range.
    Occupied,
    /// Failure to allocate memory.
    AllocError(crate::alloc::AllocError),
    /// The insertion request was invalid.
    InvalidRequest,
}

impl From<InsertErrorKind> for Error {
    #[inline]
    fn from(kind: InsertErrorKind) -> Error {
        match kind {
            InsertErrorKind::Occupied => EEXIST,
            InsertErrorKind::AllocError(crate::alloc::AllocError) => ENOMEM,
            InsertErrorKind::InvalidRequest => EINVAL,
        }
    }
}

impl<T> From<InsertError<T>> for Error {
    #[inline]
    fn from(insert_err: InsertError<T>) -> Error {
        Error::from(insert_err.cause)
    }
}

/// Error type for failure to allocate a range.
pub struct AllocError<T> {
    /// The value that could not be inserted.
    pub value: T,
    /// The reason for the failure to insert.
    pub cause: AllocErrorKind,
}

/// The reason for the failure to allocate.
#[derive(PartialEq, Eq, Copy, Clone, Debug)]
pub enum AllocErrorKind {
    /// There is not enough space for the requested allocation.
    Busy,
    /// Failure to allocate memory.
    AllocError(crate::alloc::AllocError),
    /// The insertion request was invalid.
    InvalidRequest,
}

impl From<AllocErrorKind> for Error {
    #[inline]
    fn from(kind: AllocErrorKind) -> Error {
        match kind {
            AllocErrorKind::Busy => EBUSY,
            AllocErrorKind::AllocError(crate::alloc::AllocError) => ENOMEM,
            AllocErrorKind::InvalidRequest => EINVAL,
        }
    }
}

impl<T> From<AllocError<T>> for Error {
    #[inline]
    fn from(insert_err: AllocError<T>) -> Error {
        Error::from(insert_err.cause)
    }
}
