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
    let all: u32 = std::env::var("UAT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let cases = (all / divisor).max(min);
    let seed = std::env::var("UAT_SEED")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0x5eed);
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
