// SPDX-License-Identifier: GPL-2.0

//! The driver's built-in self-test cases, run on the host under leak checking.

use asahi::selftest::{Env, CARVEOUT_SIZE, CASES};
use asahi::selftest_bind::CASES as BIND_CASES;
use asahi::selftest_uat::CASES as UAT_CASES;
use kernel::{print, sim};
use uat_tests::leak::LeakCheck;

/// The self-tests' environment: MMIO for "not RAM", a reserved region for the carve-out.
fn env() -> Env {
    Env {
        non_ram: sim::MMIO_ADDR,
        carveout: sim::reserve_region(CARVEOUT_SIZE).unwrap(),
    }
}

#[test]
fn every_selftest_case_passes_without_leaks() {
    let env = env();
    let mut failed = Vec::new();
    for case in CASES.iter().chain(UAT_CASES).chain(BIND_CASES) {
        let leak = LeakCheck::start();
        if let Err(what) = (case.run)(&env) {
            failed.push(format!("{}: {}", case.name, what));
        }
        if leak.live_since() != 0 {
            failed.push(format!("{}: leaked {} pages", case.name, leak.live_since()));
        }
    }
    assert!(failed.is_empty(), "failed: {failed:#?}");
    assert!(CASES.len() >= 14 && UAT_CASES.len() >= 5 && BIND_CASES.len() >= 3);
}

#[test]
fn corrupt_descriptors_are_reported() {
    let env = env();
    let case = CASES
        .iter()
        .find(|c| c.name == "corrupt_descriptor_reported")
        .unwrap();
    print::take_log();
    (case.run)(&env).unwrap();
    let log = print::take_log();
    assert!(
        log.iter().any(|l| l.starts_with("err:")
            && l.contains("corrupt L3 descriptor 0x")
            && l.contains("not followed")),
        "{log:#?}"
    );
}

#[test]
fn borrowed_pages_refuse_the_hole_and_mmio() {
    for pa in [
        sim::MMIO_ADDR,
        sim::HOLE.0,
        sim::HOLE.0 + sim::HOLE.1 - 1,
        0x900_0000,
        0,
    ] {
        // SAFETY: MMIO, the hole and other addresses without memory: refused.
        assert!(
            unsafe { kernel::page::Page::borrow_phys(pa) }.is_none(),
            "{pa:#x}"
        );
    }
}
