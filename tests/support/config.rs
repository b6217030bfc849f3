// SPDX-License-Identifier: GPL-2.0

//! Proptest configuration shared by the suites: case count and seed from the environment, so
//! that CI runs long and any failure is replayed exactly.

use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm, RngSeed};

/// `UAT_CASES` (default `default_cases`) cases from the fixed seed `UAT_SEED` (default
/// 0x5eed), printed so a failure can be replayed.
///
/// (Not `PROPTEST_CASES`: proptest applies that variable over any configuration, which would
/// undo the scaling of [`config_scaled`]. Setting it still overrides every suite.)
pub fn config(default_cases: u32) -> Config {
    config_scaled_from(default_cases, 1, 1)
}

/// [`config`] for suites whose cases are `divisor` times as expensive: `UAT_CASES /
/// divisor` cases, at least `min`.
pub fn config_scaled(divisor: u32, min: u32) -> Config {
    config_scaled_from(4000, divisor, min)
}

fn config_scaled_from(default_cases: u32, divisor: u32, min: u32) -> Config {
    // A value that does not parse is refused, not replaced by the default: a replay with a
    // mistyped seed would pass for the wrong reason.
    let all: u32 = std::env::var("UAT_CASES").map_or(default_cases, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("UAT_CASES={v:?}: not a case count"))
    });
    let cases = (all / divisor).max(min);
    let seed = std::env::var("UAT_SEED").map_or(0x5eed, |v| {
        u64::from_str_radix(v.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("UAT_SEED={v:?}: not a hexadecimal seed"))
    });
    eprintln!("proptest: {cases} cases, UAT_SEED={seed:#x}");
    Config {
        cases,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        max_shrink_iters: 4096,
        ..Config::default()
    }
}
