// SPDX-License-Identifier: GPL-2.0

//! Time: the host twin of the parts of `rust/kernel/time.rs` the driver uses.

use core::marker::PhantomData;

pub mod delay;

/// A span of time with nanosecond resolution (the kernel's `Delta`); may be negative.
#[derive(Copy, Clone, PartialEq, PartialOrd, Eq, Ord, Debug)]
pub struct Delta {
    nanos: i64,
}

impl Delta {
    /// A span of `nanos` nanoseconds.
    #[inline]
    pub const fn from_nanos(nanos: i64) -> Self {
        Self { nanos }
    }

    /// A span of `micros` microseconds, saturating.
    #[inline]
    pub const fn from_micros(micros: i64) -> Self {
        Self {
            nanos: micros.saturating_mul(1_000),
        }
    }

    /// A span of `millis` milliseconds, saturating.
    #[inline]
    pub const fn from_millis(millis: i64) -> Self {
        Self {
            nanos: millis.saturating_mul(1_000_000),
        }
    }

    /// A span of `secs` seconds, saturating.
    #[inline]
    pub const fn from_secs(secs: i64) -> Self {
        Self {
            nanos: secs.saturating_mul(1_000_000_000),
        }
    }

    /// Whether the span is zero.
    #[inline]
    pub const fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// Whether the span is negative.
    #[inline]
    pub const fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// The span in nanoseconds.
    #[inline]
    pub const fn as_nanos(self) -> i64 {
        self.nanos
    }

    /// The span in whole milliseconds, rounded down.
    #[inline]
    pub const fn as_millis(self) -> i64 {
        self.nanos / 1_000_000
    }
}

/// The monotonic clock (`CLOCK_MONOTONIC`).
pub struct Monotonic;

/// A point in time of clock `C`.
pub struct Instant<C> {
    at: std::time::Instant,
    _c: PhantomData<C>,
}

impl Instant<Monotonic> {
    /// The current time.
    #[inline]
    pub fn now() -> Self {
        Self {
            at: std::time::Instant::now(),
            _c: PhantomData,
        }
    }

    /// The time passed since `self`.
    #[inline]
    pub fn elapsed(&self) -> Delta {
        Delta::from_nanos(i64::try_from(self.at.elapsed().as_nanos()).unwrap_or(i64::MAX))
    }
}
