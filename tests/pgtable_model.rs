// SPDX-License-Identifier: GPL-2.0

//! Random sequences of map / map-scatter / map-repeat / unmap / reprot / prealloc, checked after
//! every step against the interval-map model: results, walk, translations, table count, leaks.

use asahi::pgtable::PageTable;
use proptest::prelude::*;
use uat_tests::config::config;
use uat_tests::leak::LeakCheck;
use uat_tests::model::VaModel;
use uat_tests::ops::{apply, cfg, check, expect, op, touched, Op};

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let leak = LeakCheck::start();
    let mut pt = PageTable::new(cfg()).unwrap();
    let mut model = VaModel::new();
    let mut preallocated = false;
    for (i, op) in ops.iter().enumerate() {
        let (want, next) = expect(&model, op);
        let got = apply(&mut pt, op);
        prop_assert_eq!(got, want, "step {} {:?}", i, op);
        model = next;
        preallocated |= matches!(op, Op::Prealloc { .. });
        check(&pt, &model, Some(touched(op)), i as u64 + 1);
        prop_assert_eq!(
            leak.live_since(),
            1 + pt.table_pages() as i64,
            "table accounting"
        );
        if !preallocated {
            // Exactly the tables the mappings need: empty ones are freed by unmap.
            prop_assert_eq!(pt.table_pages(), model.tables_needed(36, 25), "step {}", i);
        }
    }
    drop(pt);
    prop_assert_eq!(leak.live_since(), 0, "pages leaked");
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn random_sequences_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}
