// SPDX-License-Identifier: GPL-2.0

//! Synchronisation primitives: the host twin of the parts of `rust/kernel/sync.rs` the driver
//! uses.

mod arc;
pub mod aref;
pub mod barrier;
pub mod lock;

pub use arc::Arc;
pub use lock::{new_mutex, LockClassKey, Mutex, MutexGuard};
