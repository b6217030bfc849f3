// SPDX-License-Identifier: GPL-2.0

//! The `kernel` crate, on the host.
//!
//! The driver sources under `drivers/gpu/drm/asahi/` are written against the in-tree kernel
//! crate of Linux 7.3 with this project's patch series (`patches/`). This crate offers the same API with the same ownership and safety
//! contracts, so the very same files compile and run on the host. Physical memory is simulated
//! ([`sim`]): a RAM region at Apple's DRAM base with a hole that is not RAM, a `struct page`
//! array, a page allocator with per-thread accounting and fault injection.
//!
//! Only [`sim`] is host-specific; driver code must never use it.

pub mod alloc;
pub mod drm;
pub mod error;
pub mod init;
pub mod io;
pub mod maple_tree;
pub mod page;
pub mod prelude;
pub mod print;
pub mod sim;
pub mod sync;
pub mod time;

pub use error::{Error, Result};
