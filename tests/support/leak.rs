// SPDX-License-Identifier: GPL-2.0

//! Leak checks against the simulated page allocator's per-thread counters.

use kernel::sim;

/// Remembers the live page count; [`LeakCheck::assert_clean`] checks it came back.
pub struct LeakCheck {
    live: i64,
}

impl LeakCheck {
    /// Starts a check at the current live page count.
    pub fn start() -> LeakCheck {
        LeakCheck {
            live: sim::page_stats().live,
        }
    }

    /// Pages allocated since the start and still live.
    pub fn live_since(&self) -> i64 {
        sim::page_stats().live - self.live
    }

    /// Panics if any page allocated since the start is still live.
    #[track_caller]
    pub fn assert_clean(&self) {
        assert_eq!(self.live_since(), 0, "pages leaked");
    }
}
