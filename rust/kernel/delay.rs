// SPDX-License-Identifier: GPL-2.0

//! Sleeping delays.
//!
//! C header: [`include/linux/delay.h`](srctree/include/linux/delay.h)

use crate::bindings;

/// Sleeps for at least `ms` milliseconds (`msleep`). Must be called from a context that can
/// sleep.
pub fn msleep(ms: u32) {
    // SAFETY: `msleep` has no preconditions beyond a sleepable context, which is the caller's.
    unsafe { bindings::msleep(ms) }
}
