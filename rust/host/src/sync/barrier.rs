// SPDX-License-Identifier: GPL-2.0

//! Memory barriers: the host twin of `rust/kernel/sync/barrier.rs`.
//!
//! The host has no devices outside the CPUs' coherence, so every flavour is the matching
//! `core::sync::atomic::fence`; the simulated GPU and firmware are threads.

use core::sync::atomic::{fence, Ordering};

/// A full barrier: no access moves across it.
pub struct Full;
/// A read barrier: no read moves across it.
pub struct Read;
/// A write barrier: no write moves across it.
pub struct Write;

/// What each barrier flavour does.
pub trait MemoryBarrier {
    /// The ordering of the fence that implements it.
    const ORDERING: Ordering;
}

impl MemoryBarrier for Full {
    const ORDERING: Ordering = Ordering::SeqCst;
}
impl MemoryBarrier for Read {
    const ORDERING: Ordering = Ordering::Acquire;
}
impl MemoryBarrier for Write {
    const ORDERING: Ordering = Ordering::Release;
}

/// Memory barrier (`mb()`, `rmb()`, `wmb()`), also against devices.
#[inline]
pub fn mb<T: MemoryBarrier>(_: T) {
    fence(T::ORDERING)
}

/// Memory barrier between CPUs (`smp_mb()`, ...).
#[inline]
pub fn smp_mb<T: MemoryBarrier>(_: T) {
    fence(T::ORDERING)
}

/// Memory barrier between the CPU and bus-mastering devices (`dma_mb()`, ...).
#[inline]
pub fn dma_mb<T: MemoryBarrier>(_: T) {
    fence(T::ORDERING)
}
