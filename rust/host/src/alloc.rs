// SPDX-License-Identifier: GPL-2.0

//! Allocation flags, `AllocError`, and the kernel's fallible `KVec` / `KBox`.
//!
//! The containers have the Linux 7.3 kernel API (every allocating call takes [`Flags`] and can fail)
//! and nothing more, so driver code that builds here builds in-tree. Every allocation they make
//! passes through [`crate::sim`]'s fault injector, like page allocations do.

use crate::error::Error;
use core::ops::{Deref, DerefMut};
use core::pin::Pin;
use pin_init::PinInit;

/// Indicates an allocation error.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct AllocError;

/// Flags to be used when allocating memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Flags(u32);

impl Flags {
    /// Check whether `flags` is contained in `self`.
    pub fn contains(self, flags: Flags) -> bool {
        (self & flags) == flags
    }
}

impl core::ops::BitOr for Flags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self::Output {
        Self(self.0 | rhs.0)
    }
}

impl core::ops::BitAnd for Flags {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self::Output {
        Self(self.0 & rhs.0)
    }
}

impl core::ops::Not for Flags {
    type Output = Self;
    fn not(self) -> Self::Output {
        Self(!self.0)
    }
}

/// Allocation flags (the values are the host's own; only their combinations matter).
pub mod flags {
    use super::Flags;

    /// Zeroes out the allocated memory.
    pub const __GFP_ZERO: Flags = Flags(1 << 0);
    /// Allow the allocation to be in high memory.
    pub const __GFP_HIGHMEM: Flags = Flags(1 << 1);
    /// Suppresses allocation failure reports.
    pub const __GFP_NOWARN: Flags = Flags(1 << 2);
    /// Users can not sleep and need the allocation to succeed.
    pub const GFP_ATOMIC: Flags = Flags(1 << 3);
    /// Typical for kernel-internal allocations.
    pub const GFP_KERNEL: Flags = Flags(1 << 4);
    /// The same as [`GFP_KERNEL`], except the allocation is accounted to kmemcg.
    pub const GFP_KERNEL_ACCOUNT: Flags = Flags(1 << 5);
    /// For kernel allocations that should not stall for direct reclaim.
    pub const GFP_NOWAIT: Flags = Flags(1 << 6);
}

/// A growable array whose every allocation is fallible (`rust/kernel/alloc/kvec.rs`).
pub struct KVec<T>(Vec<T>);

/// The kernel's `KVVec` (backed by `kvmalloc`, so that large arrays need not be physically
/// contiguous): on the host, where there is no such distinction, the same as [`KVec`].
pub type KVVec<T> = KVec<T>;

impl<T> KVec<T> {
    /// Creates a new, empty vector; it does not allocate.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Creates a vector with room for at least `capacity` elements.
    pub fn with_capacity(capacity: usize, flags: Flags) -> Result<Self, AllocError> {
        let mut v = Self::new();
        v.reserve(capacity, flags)?;
        Ok(v)
    }

    /// Number of elements the vector can hold without reallocating.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Number of elements in the vector.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the vector holds no element.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The elements as a slice.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    /// The elements as a mutable slice.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.0
    }

    /// A pointer to the first element (dangling when nothing was allocated).
    pub fn as_ptr(&self) -> *const T {
        self.0.as_ptr()
    }

    /// A mutable pointer to the first element.
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.0.as_mut_ptr()
    }

    /// Forces the length of the vector to `new_len`.
    ///
    /// # Safety
    ///
    /// `new_len` must be at most the capacity, and the elements up to `new_len` must be
    /// initialized. Elements past `new_len` are not dropped.
    pub unsafe fn set_len(&mut self, new_len: usize) {
        // SAFETY: Forwarded to the caller.
        unsafe { self.0.set_len(new_len) }
    }

    /// Ensures room for `additional` more elements.
    pub fn reserve(&mut self, additional: usize, _flags: Flags) -> Result<(), AllocError> {
        if self.0.capacity() - self.0.len() >= additional {
            return Ok(());
        }
        crate::sim::kmalloc_hook()?;
        self.0.try_reserve(additional).map_err(|_| AllocError)
    }

    /// Appends an element, allocating if the vector is full.
    pub fn push(&mut self, v: T, flags: Flags) -> Result<(), AllocError> {
        self.reserve(1, flags)?;
        self.0.push(v);
        Ok(())
    }

    /// Appends an element if there is room for it; hands it back otherwise (never allocates).
    pub fn push_within_capacity(&mut self, v: T) -> Result<(), kvec::PushError<T>> {
        if self.len() < self.capacity() {
            self.0.push(v);
            Ok(())
        } else {
            Err(kvec::PushError(v))
        }
    }

    /// Inserts `element` at `index`, shifting the tail; fails instead of allocating.
    #[inline]
    pub fn insert_within_capacity(
        &mut self,
        index: usize,
        element: T,
    ) -> Result<(), kvec::InsertError<T>> {
        if index > self.len() {
            return Err(kvec::InsertError::IndexOutOfBounds(element));
        }
        if self.len() >= self.capacity() {
            return Err(kvec::InsertError::OutOfCapacity(element));
        }
        self.0.insert(index, element);
        Ok(())
    }

    /// Removes the element at `i`, shifting the tail.
    #[inline]
    pub fn remove(&mut self, i: usize) -> Result<T, kvec::RemoveError> {
        if i >= self.len() {
            return Err(kvec::RemoveError);
        }
        Ok(self.0.remove(i))
    }

    /// Removes the last element.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }

    /// Shortens the vector to `len` elements, dropping the rest.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len)
    }

    /// Removes every element.
    #[inline]
    pub fn clear(&mut self) {
        self.0.clear()
    }

    /// Keeps only the elements for which `f` returns true.
    #[inline]
    pub fn retain(&mut self, mut f: impl FnMut(&mut T) -> bool) {
        self.0.retain_mut(|x| f(x))
    }
}

/// The errors of [`KVec`]'s non-allocating operations (`rust/kernel/alloc/kvec/errors.rs`).
pub mod kvec {
    use crate::error::{code::EINVAL, Error};

    /// [`super::KVec::push_within_capacity`] found the vector full; the element is handed back.
    pub struct PushError<T>(pub T);

    impl<T> core::fmt::Debug for PushError<T> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "Not enough capacity")
        }
    }

    impl<T> From<PushError<T>> for Error {
        #[inline]
        fn from(_: PushError<T>) -> Error {
            // Not ENOMEM: the system is not out of memory, the vector is full (as in 7.3).
            EINVAL
        }
    }

    /// [`super::KVec::insert_within_capacity`] failed; the element is handed back.
    #[derive(Debug)]
    pub enum InsertError<T> {
        /// The index is past the end.
        IndexOutOfBounds(T),
        /// The vector is full.
        OutOfCapacity(T),
    }

    impl<T> From<InsertError<T>> for Error {
        #[inline]
        fn from(_: InsertError<T>) -> Error {
            EINVAL
        }
    }

    /// [`super::KVec::remove`] was given an index past the end.
    #[derive(Debug)]
    pub struct RemoveError;

    impl From<RemoveError> for Error {
        #[inline]
        fn from(_: RemoveError) -> Error {
            EINVAL
        }
    }
}

impl<T: Clone> KVec<T> {
    /// Appends clones of every element of `other`.
    pub fn extend_from_slice(&mut self, other: &[T], flags: Flags) -> Result<(), AllocError> {
        self.reserve(other.len(), flags)?;
        self.0.extend_from_slice(other);
        Ok(())
    }

    /// Appends `n` clones of `value`.
    pub fn extend_with(&mut self, n: usize, value: T, flags: Flags) -> Result<(), AllocError> {
        self.reserve(n, flags)?;
        self.0.extend(core::iter::repeat_n(value, n));
        Ok(())
    }

    /// Creates a vector of `n` clones of `value`.
    pub fn from_elem(value: T, n: usize, flags: Flags) -> Result<Self, AllocError> {
        let mut v = Self::with_capacity(n, flags)?;
        v.extend_with(n, value, flags)?;
        Ok(v)
    }
}

impl<T> Default for KVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for KVec<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> Deref for KVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T> DerefMut for KVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<'a, T> IntoIterator for &'a KVec<T> {
    type Item = &'a T;
    type IntoIter = core::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut KVec<T> {
    type Item = &'a mut T;
    type IntoIter = core::slice::IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

impl<T> IntoIterator for KVec<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A heap allocation with a single owner whose allocation is fallible
/// (`rust/kernel/alloc/kbox.rs`).
pub struct KBox<T: ?Sized>(Box<T>);

impl<T> KBox<T> {
    /// Allocates memory and moves `x` into it.
    pub fn new(x: T, _flags: Flags) -> Result<Self, AllocError> {
        crate::sim::kmalloc_hook()?;
        Ok(Self(Box::new(x)))
    }

    /// Moves the value out of the box.
    pub fn into_inner(b: Self) -> T {
        *b.0
    }

    /// Pin-initializes a `T` in a new box (inherent here; in the kernel it comes from the
    /// prelude's `InPlaceInit`).
    pub fn pin_init<E>(init: impl PinInit<T, E>, _flags: Flags) -> Result<Pin<Self>, Error>
    where
        Error: From<E>,
    {
        crate::sim::kmalloc_hook()?;
        let mut uninit = Box::<T>::new_uninit();
        // SAFETY: `uninit` is valid for writes and never moves: the box keeps it in place, and
        // it is pinned below.
        unsafe { init.__pinned_init(uninit.as_mut_ptr()) }.map_err(Error::from)?;
        // SAFETY: Initialized just above; the value is never moved out of the pinned box.
        Ok(unsafe { Pin::new_unchecked(Self(uninit.assume_init())) })
    }
}

impl<T: ?Sized> Deref for KBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized> DerefMut for KBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}
