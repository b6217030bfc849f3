// SPDX-License-Identifier: GPL-2.0

//! Property-based fuzzing of every input parser of the tools: trace lines, device trees, RAM
//! images and `machine.json` for `uat-dump`. The rule: every input gets a result or an error
//! naming its line, field or byte offset; no panic (proptest fails the case on one), and work
//! bounded by the input's size.
//!
//! Case counts are multiples of `UAT_CASES` (see [`many`]), the seed is `UAT_SEED`: see
//! `tests/support/config.rs`.

mod common;

use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use uat_sim::dump::{self, Image};
use uat_sim::machine::{dt_info, DEFAULT_DTB};
use uat_sim::trace;
use uat_sim::workload;
use uat_tests::config::config;

/// The parsers are cheap: `times` times `UAT_CASES` cases (400,000 a suite at `make test`'s 4000
/// for the text parsers, 100,000 images).
fn many(times: u32) -> proptest::test_runner::Config {
    let c = config(4000);
    proptest::test_runner::Config {
        cases: c.cases.saturating_mul(times),
        ..c
    }
}

/// Byte-level mutations of a seed input: replace, insert, delete, truncate, splice.
fn mutate(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    prop::collection::vec((0..5u8, 0..len, any::<u8>(), any::<u32>()), 1..8).prop_map(
        move |edits| {
            let mut v = seed.clone();
            for (kind, at, byte, word) in edits {
                let at = at.min(v.len());
                match kind {
                    0 if at < v.len() => v[at] = byte,
                    1 => v.insert(at, byte),
                    2 if at < v.len() => {
                        v.remove(at);
                    }
                    3 => v.truncate(at),
                    _ if at + 4 <= v.len() => v[at..at + 4].copy_from_slice(&word.to_be_bytes()),
                    _ => {}
                }
            }
            v
        },
    )
}

/// Trace text: valid lines of a random workload, then mutated.
fn trace_text() -> impl Strategy<Value = Vec<u8>> {
    any::<u64>().prop_flat_map(|seed| {
        let g = workload::random(seed, 6);
        let text: String = g
            .ops
            .iter()
            .map(|(o, _)| trace::to_line(o) + "\n")
            .collect();
        mutate(text.into_bytes())
    })
}

fn check_trace(bytes: &[u8]) -> Result<(), TestCaseError> {
    let lines = bytes.split(|&b| b == b'\n').count();
    match trace::parse_bytes(bytes) {
        Ok(ops) => {
            // What was accepted means what its canonical form means.
            let text: String = ops.iter().map(|o| trace::to_line(o) + "\n").collect();
            prop_assert_eq!(trace::parse(&text).unwrap(), ops);
        }
        Err(e) => {
            prop_assert!(e.line >= 1 && e.line <= lines, "{e}");
            prop_assert!(!e.what.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(many(100))]

    #[test]
    fn trace_lines_mutated(bytes in trace_text()) {
        check_trace(&bytes)?;
    }

    #[test]
    fn trace_lines_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_trace(&bytes)?;
    }

    #[test]
    fn trace_lines_json_shaped(
        parts in prop::collection::vec(prop::sample::select(vec![
            "{", "}", "[", "]", ",", ":", "\"op\"", "\"vm\"", "\"bo\"", "\"data\"", "\"flags\"",
            "\"bind\"", "\"gpu_write\"", "\"vm_create\"", "\"0x10\"", "1", "-1", "1e3", "\"é\"",
            "\"READ\"", "null", "\n", "\u{feff}", " ", "\"addr\"", "\"range\"", "\"len\"",
        ]), 0..40)
    ) {
        check_trace(parts.concat().as_bytes())?;
    }

    #[test]
    fn device_trees_mutated(dtb in mutate(DEFAULT_DTB.to_vec())) {
        // Any outcome but a panic; an error says what (and the parse is linear: no recursion).
        if let Err(e) = dt_info(&dtb) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn device_trees_generated_read_back(root in node(3)) {
        // The reader gives back exactly the tree the (independent) writer wrote.
        let dtb = common::write(&root);
        prop_assert_eq!(common::read(&dtb), root);
        let _ = dt_info(&dtb);
    }

    #[test]
    fn machine_json_mutated(text in mutate(
        br#"{"ram_base":"0x800000000","ttbat":"0x87c000000","oas":40,"gpu":"G13"}"#.to_vec()
    )) {
        match dump::parse_description(&text) {
            Ok(_) => {}
            // serde_json names the line and column of what it refuses.
            Err(e) => prop_assert!(e.contains("line ") || e.contains("EOF"), "{e}"),
        }
    }
}

/// Generated device-tree nodes, `depth` levels deep at most.
fn node(depth: u32) -> impl Strategy<Value = common::Node> {
    let name = "[a-z][a-z0-9,-]{0,8}(@[0-9a-f]{1,4})?";
    let props = prop::collection::vec(
        (
            prop::sample::select(vec![
                "compatible",
                "reg",
                "#address-cells",
                "#size-cells",
                "phandle",
                "memory-region",
                "memory-region-names",
                "device_type",
                "x",
            ]),
            prop::collection::vec(any::<u8>(), 0..12),
        ),
        0..4,
    )
    .prop_map(|p| {
        let mut seen = Vec::new();
        p.into_iter()
            .filter(|(n, _)| {
                let fresh = !seen.contains(n);
                seen.push(*n);
                fresh
            })
            .map(|(n, v)| (n.to_string(), v))
            .collect::<Vec<_>>()
    });
    let leaf = (name, props.clone()).prop_map(|(name, props)| common::Node {
        name,
        props,
        children: Vec::new(),
    });
    leaf.prop_recursive(depth, 24, 4, move |inner| {
        (name, props.clone(), prop::collection::vec(inner, 0..4)).prop_map(
            |(name, props, children)| common::Node {
                name,
                props,
                children,
            },
        )
    })
    .prop_map(|mut root| {
        root.name = String::new();
        root
    })
}

const PG: u64 = 1 << 14;
const BASE: u64 = 0x10000;
static CASE: AtomicU64 = AtomicU64::new(0);

/// A descriptor that is likely to mean something in a small image at `BASE`.
fn descriptor(pages: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0u64),
        4 => (0..pages + 2, 0..4u64, any::<u16>()).prop_map(|(p, kind, attrs)| {
            (BASE + p * PG) | kind | (((attrs as u64) & 0x3ff) << 2) | ((attrs as u64 >> 10) << 53)
        }),
        1 => any::<u64>(),
    ]
}

proptest! {
    #![proptest_config(many(25))]

    #[test]
    fn uat_dump_random_images(
        pages in 1..6u64,
        words in prop::collection::vec((0..6 * 2048usize, descriptor(6)), 0..300),
        ttbat in prop_oneof![Just(BASE), (0..8 * PG).prop_map(|o| BASE + o - 2 * PG)],
        oas in prop_oneof![Just(40u32), 0..70u32],
        ttb in prop::option::of(0..8 * PG),
        json in any::<bool>(),
    ) {
        let mut img = vec![0u8; (pages * PG) as usize];
        for (i, w) in words {
            if (i + 1) * 8 <= img.len() {
                img[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
            }
        }
        let path = std::env::temp_dir().join(format!(
            "uat-fuzz-{}-{}.img",
            std::process::id(),
            CASE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, &img).unwrap();
        let image = Image::open(&path, BASE).unwrap();
        let r = match ttb {
            Some(t) => dump::dump_table(&image, BASE + t, false, oas, 39).map(|h| vec![h]),
            None => dump::dump(&image, ttbat, oas, 39),
        };
        let _ = std::fs::remove_file(&path);
        match r {
            Err(e) => prop_assert!(e.contains("OAS") || e.contains("TTBAT"), "{e}"),
            Ok(halves) => {
                prop_assert!(dump::OAS_BITS.contains(&oas));
                // Bounded by the image: each table page is walked once, so runs and flags
                // together are at most its descriptors, plus one per TTBAT half.
                let items: usize = halves.iter().map(|h| h.runs.len() + h.corrupt.len()).sum();
                prop_assert!(items as u64 <= pages * 2048 + 128, "{items}");
                let mut out = Vec::new();
                if json {
                    dump::write_json(&halves, &mut out).unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                    prop_assert_eq!(v.as_array().unwrap().len(), halves.len());
                } else {
                    dump::write_text(&halves, &mut out).unwrap();
                }
                prop_assert!(out.len() as u64 <= 200 * (items as u64 + halves.len() as u64) + 8);
            }
        }
    }
}
