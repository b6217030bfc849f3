// SPDX-License-Identifier: GPL-2.0

//! Sleeping delays: the host twin of `rust/kernel/delay.rs`.

/// Sleeps for at least `ms` milliseconds.
pub fn msleep(ms: u32) {
    std::thread::sleep(std::time::Duration::from_millis(ms.into()));
}
