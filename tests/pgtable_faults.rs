// SPDX-License-Identifier: GPL-2.0

//! Allocation failure at every possible point of every operation of random sequences: the
//! failing operation returns ENOMEM, the tables are exactly as before, and no page leaks.

use asahi::pgtable::PageTable;
use kernel::error::code::ENOMEM;
use kernel::sim;
use proptest::prelude::*;
use uat_tests::config::config;
use uat_tests::leak::LeakCheck;
use uat_tests::model::VaModel;
use uat_tests::ops::{apply, cfg, check, expect, op, walk, Op};

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let leak = LeakCheck::start();
    let mut pt = PageTable::new(cfg()).unwrap();
    let mut model = VaModel::new();
    for op in ops {
        let (want, next) = expect(&model, op);
        // Fail the k-th allocation of the operation, for k = 0, 1, ... until it makes fewer.
        for k in 0.. {
            let before_walk = walk(&pt);
            let before_live = leak.live_since();
            let before_tables = pt.table_pages();
            let attempts = sim::alloc_attempts();
            sim::fail_nth_alloc(k);
            let got = apply(&mut pt, op);
            let made = sim::alloc_attempts() - attempts;
            sim::clear_faults();
            if made > k {
                prop_assert_eq!(got, Err(ENOMEM), "{:?} with allocation {} failing", op, k);
                prop_assert_eq!(walk(&pt), before_walk);
                prop_assert_eq!(leak.live_since(), before_live);
                prop_assert_eq!(pt.table_pages(), before_tables);
                check(&pt, &model, None, k);
            } else {
                prop_assert_eq!(got, want, "{:?}", op);
                break;
            }
        }
        model = next;
        check(&pt, &model, None, 7);
    }
    drop(pt);
    prop_assert_eq!(leak.live_since(), 0, "pages leaked");
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn enomem_at_every_point_changes_nothing(ops in prop::collection::vec(op(), 1..16)) {
        run(&ops)?;
    }
}

#[test]
fn random_failures_never_leak() {
    // Probabilistic injection over a long fixed sequence, as a second, coarser net.
    let leak = LeakCheck::start();
    let mut pt = PageTable::new(cfg()).unwrap();
    sim::fail_with_probability(0.2, 0x1234);
    let mut failures = 0;
    for i in 0..2000u64 {
        let page = (i * 2477) % 8000;
        let pages = 1 + (i * 7919) % 2100;
        let op = if i % 3 == 2 {
            Op::Unmap { page, pages }
        } else {
            Op::Map {
                page,
                pages,
                pa_page: i % 64,
                prot: asahi::pte::Prot::GPU_SHARED_RW,
            }
        };
        if apply(&mut pt, &op) == Err(ENOMEM) {
            failures += 1;
        }
    }
    sim::clear_faults();
    assert!(failures > 50, "only {failures} injected failures");
    drop(pt);
    leak.assert_clean();
}
