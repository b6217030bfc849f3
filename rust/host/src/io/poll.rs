// SPDX-License-Identifier: GPL-2.0

//! Polling: the host twin of `rust/kernel/io/poll.rs`.

use crate::error::{code::ETIMEDOUT, Result};
use crate::time::{delay::fsleep, Delta, Instant, Monotonic};

/// Calls `op` until `cond` holds for its result or `timeout_delta` has passed, sleeping
/// `sleep_delta` between calls (not at all if it is zero). Returns the last result, `op`'s
/// error, or `ETIMEDOUT`.
pub fn read_poll_timeout<Op, Cond, T>(
    mut op: Op,
    mut cond: Cond,
    sleep_delta: Delta,
    timeout_delta: Delta,
) -> Result<T>
where
    Op: FnMut() -> Result<T>,
    Cond: FnMut(&T) -> bool,
{
    let start: Instant<Monotonic> = Instant::now();
    loop {
        let val = op()?;
        if cond(&val) {
            return Ok(val);
        }
        if start.elapsed() > timeout_delta {
            return Err(ETIMEDOUT);
        }
        if !sleep_delta.is_zero() {
            fsleep(sleep_delta);
        }
        core::hint::spin_loop();
    }
}
