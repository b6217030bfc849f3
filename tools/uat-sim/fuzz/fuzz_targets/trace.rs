// SPDX-License-Identifier: GPL-2.0
#![no_main]

use libfuzzer_sys::fuzz_target;
use uat_sim::trace;

fuzz_target!(|data: &[u8]| {
    if let Ok(ops) = trace::parse_bytes(data) {
        let text: String = ops.iter().map(|o| trace::to_line(o) + "\n").collect();
        assert_eq!(trace::parse(&text).unwrap(), ops);
    }
});
