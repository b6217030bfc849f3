// SPDX-License-Identifier: GPL-2.0

//! Delays: the host twin of `rust/kernel/time/delay.rs`.

use super::Delta;

/// Sleeps for at least `delta` (nothing for a zero or negative one).
#[inline]
pub fn fsleep(delta: Delta) {
    if let Ok(nanos) = u64::try_from(delta.as_nanos()) {
        std::thread::sleep(std::time::Duration::from_nanos(nanos));
    }
}
