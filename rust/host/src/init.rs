// SPDX-License-Identifier: GPL-2.0

//! The part of `kernel::init` that the prelude brings into every driver file.
//!
//! The kernel prelude exports the `Init` trait, which is implemented for every type and has a
//! `chain` method: in the kernel, `iter.chain(..)` is ambiguous between it and
//! `Iterator::chain`. Offering the same trait here makes the host build refuse what the kernel
//! build would.

use core::convert::Infallible;

/// An initializer (host stand-in: only the method that matters for name resolution).
pub trait Init<T, E = Infallible>: Sized {
    /// Runs `f` on the value after initialization.
    fn chain<F>(self, f: F) -> Self
    where
        F: FnOnce(&mut T) -> Result<(), E>,
    {
        let _ = f;
        self
    }
}

impl<T> Init<T> for T {}
