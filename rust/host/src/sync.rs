// SPDX-License-Identifier: GPL-2.0

//! Synchronisation primitives: the host twin of the parts of `rust/kernel/sync.rs` the driver
//! uses.

pub mod aref;
pub mod barrier;
