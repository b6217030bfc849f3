// SPDX-License-Identifier: GPL-2.0

//! Memory-mapped IO and physical addresses: the host twin of `rust/kernel/io.rs`.

pub mod mem;
pub mod poll;

/// A physical memory address (`phys_addr_t`).
pub type PhysAddr = u64;
