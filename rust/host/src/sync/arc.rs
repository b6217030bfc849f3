// SPDX-License-Identifier: GPL-2.0

//! A reference-counted pointer: the host twin of `rust/kernel/sync/arc.rs` (Linux 7.3), over
//! `std::sync::Arc`, reduced to construction (allocations through the fault injector), `Clone`
//! and `Deref`. The pointee is pinned, as in the kernel. `pin_init` / `try_pin_init` are
//! inherent here; in the kernel they come from the prelude's `InPlaceInit`.

use crate::alloc::{AllocError, Flags};
use crate::error::{Error, Result};
use core::ops::Deref;
use pin_init::PinInit;

/// A reference-counted pointer to an instance of `T`, which is never moved.
pub struct Arc<T: ?Sized>(std::sync::Arc<T>);

impl<T> Arc<T> {
    /// Constructs a new reference counted instance of `T`.
    pub fn new(contents: T, flags: Flags) -> Result<Self, AllocError> {
        let _ = flags;
        crate::sim::kmalloc_hook()?;
        Ok(Arc(std::sync::Arc::new(contents)))
    }

    /// Pin-initializes a `T` in a new `Arc`, the initializer's error as the error.
    pub fn try_pin_init<E>(init: impl PinInit<T, E>, flags: Flags) -> Result<Self, E>
    where
        E: From<AllocError>,
    {
        Self::init_with(init, flags, |e| e)
    }

    /// Pin-initializes a `T` in a new `Arc`.
    pub fn pin_init<E>(init: impl PinInit<T, E>, flags: Flags) -> Result<Self>
    where
        Error: From<E>,
    {
        Self::init_with(init, flags, Error::from)
    }

    /// Pin-initializes a `T` in a new `Arc`, the initializer's error mapped by `err`.
    fn init_with<E, F>(
        init: impl PinInit<T, E>,
        _flags: Flags,
        err: impl FnOnce(E) -> F,
    ) -> Result<Self, F>
    where
        F: From<AllocError>,
    {
        crate::sim::kmalloc_hook()?;
        let mut uninit = std::sync::Arc::<T>::new_uninit();
        let slot = std::sync::Arc::get_mut(&mut uninit)
            .ok_or(AllocError)?
            .as_mut_ptr();
        // SAFETY: `slot` is valid for writes and never moves: the `Arc` keeps it in place.
        unsafe { init.__pinned_init(slot) }.map_err(err)?;
        // SAFETY: Initialized just above.
        Ok(Arc(unsafe { uninit.assume_init() }))
    }
}

impl<T: ?Sized> Clone for Arc<T> {
    fn clone(&self) -> Self {
        Arc(self.0.clone())
    }
}

impl<T: ?Sized> Deref for Arc<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
