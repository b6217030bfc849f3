// SPDX-License-Identifier: GPL-2.0

//! Proptest configuration shared by the suites: case count and seed from the environment, so
//! that CI runs long and any failure is replayed exactly.

use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm, RngSeed};

/// `PROPTEST_CASES` (default `default_cases`) cases from the fixed seed `UAT_SEED` (default
/// 0x5eed), printed so a failure can be replayed.
pub fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
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

/// [`config`] for suites whose cases are `divisor` times as expensive: `PROPTEST_CASES /
/// divisor` cases, at least `min`.
pub fn config_scaled(divisor: u32, min: u32) -> Config {
    let mut c = config(4000);
    c.cases = (c.cases / divisor).max(min);
    c
}
