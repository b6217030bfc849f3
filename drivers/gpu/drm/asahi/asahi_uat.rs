// SPDX-License-Identifier: GPL-2.0

//! Apple AGX GPU: the UAT (GPU MMU) component of the `drm/asahi` driver.
//!
//! This crate root is the in-tree module; the host test build declares the same modules.

mod geometry;
mod page_list;
mod pgtable;
mod pte;
mod selftest;
mod tlb;
