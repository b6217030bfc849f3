// SPDX-License-Identifier: GPL-2.0

//! Regression tests of issue 13: malformed traces, device trees and snapshots get an error that
//! names what is wrong, never a panic, an abort, a hang or unbounded memory.

mod common;

use common::{cells, Node};
use uat_sim::machine::{dt_info, DEFAULT_DTB};
use uat_sim::trace::{self, Op};

fn board() -> Node {
    common::read(DEFAULT_DTB)
}

fn dt_err(root: &Node) -> String {
    dt_info(&common::write(root)).unwrap_err()
}

fn err_of(text: &str) -> trace::ParseError {
    trace::parse(text).unwrap_err()
}

#[test]
fn trace_data_with_non_ascii_is_an_error() {
    // "é" is two bytes: the old decoder sliced the string inside it and panicked.
    for data in ["é0", "0é", "aé0b", "€0", "00€"] {
        let line = format!("{{\"op\":\"gpu_write\",\"vm\":1,\"addr\":0,\"data\":\"{data}\"}}");
        let e = err_of(&line);
        assert_eq!(e.line, 1);
        assert!(
            e.what.contains("\"data\"") && e.what.contains("column"),
            "{data}: {e}"
        );
    }
    let ok = trace::parse("{\"op\":\"gpu_write\",\"vm\":1,\"addr\":0,\"data\":\"00fF\"}").unwrap();
    assert_eq!(
        ok,
        [Op::GpuWrite {
            vm: 1,
            addr: 0,
            data: vec![0, 0xff]
        }]
    );
}

#[test]
fn trace_duplicate_keys_are_refused() {
    for (line, key) in [
        (
            "{\"op\":\"vm_create\",\"op\":\"vm_destroy\",\"vm\":1}",
            "op",
        ),
        ("{\"op\":\"vm_create\",\"vm\":1,\"vm\":2}", "vm"),
        (
            "{\"op\":\"bind\",\"vm\":1,\"bo\":1,\"offset\":0,\"range\":1,\"addr\":0,\"addr\":4}",
            "addr",
        ),
    ] {
        let e = err_of(&format!("\n{line}\n"));
        assert_eq!(e.line, 2, "{e}");
        assert!(e.what.contains(&format!("duplicate key \"{key}\"")), "{e}");
    }
}

#[test]
fn trace_byte_order_mark_is_skipped_and_bad_utf8_named() {
    let ops = trace::parse("\u{feff}{\"op\":\"vm_create\",\"vm\":1}\n").unwrap();
    assert_eq!(ops, [Op::VmCreate { vm: 1 }]);
    let ops = trace::parse_bytes(b"\xef\xbb\xbf{\"op\":\"submit\",\"vm\":\"0x2\"}\n").unwrap();
    assert_eq!(ops, [Op::Submit { vm: 2 }]);
    // A BOM anywhere else is not JSON, and says where.
    let e = err_of("{\"op\":\"vm_create\",\"vm\":1}\n\u{feff}{\"op\":\"vm_create\",\"vm\":2}");
    assert_eq!(e.line, 2);
    assert!(e.what.contains("column 1"), "{e}");
    let e = trace::parse_bytes(b"{\"op\":\"vm_create\",\"vm\":1}\n{\"op\":\"vm_cr\xffeate\"}\n")
        .unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.what.contains("not UTF-8 (byte offset 38"), "{e}");
}

#[test]
fn trace_numbers_are_checked() {
    for (line, what) in [
        ("{\"op\":\"vm_create\",\"vm\":-1}", "negative"),
        ("{\"op\":\"vm_create\",\"vm\":1.5}", "column"),
        ("{\"op\":\"vm_create\",\"vm\":\"0x\"}", "not a number"),
        ("{\"op\":\"vm_create\",\"vm\":18446744073709551616}", "column"),
        ("{\"op\":\"gpu_read\",\"vm\":1,\"addr\":0,\"len\":1048577}", "above 1 MiB"),
        (
            "{\"op\":\"bind\",\"vm\":1,\"bo\":1,\"offset\":0,\"range\":1,\"addr\":0,\"flags\":4294967296}",
            "32 bits",
        ),
        ("{\"op\":\"vm_create\",\"vm\":1} x", "trailing"),
        ("[1,2]", "column"),
    ] {
        let e = err_of(line);
        assert!(e.what.contains(what), "{line}: {e}");
    }
}

#[test]
fn dt_written_back_is_the_same_board() {
    // The helpers are faithful: the example board read and written again boots the same.
    let again = common::write(&board());
    assert_eq!(dt_info(&again).unwrap(), dt_info(DEFAULT_DTB).unwrap());
    assert_eq!(common::read(&again), board());
}

#[test]
fn dt_empty_cell_counts_are_errors() {
    for prop in ["#address-cells", "#size-cells"] {
        let mut b = board();
        b.at("reserved-memory").set(prop, &[]);
        let e = dt_err(&b);
        assert!(
            e.contains(&format!("/reserved-memory: {prop} must be one cell")),
            "{e}"
        );
        let mut b = board();
        b.set(prop, &[0, 0]);
        let e = dt_err(&b);
        assert!(e.contains(&format!("/: {prop} is 2 bytes")), "{e}");
        let mut b = board();
        b.at("reserved-memory").set(prop, &cells(&[3]));
        let e = dt_err(&b);
        assert!(e.contains("not supported"), "{e}");
    }
}

#[test]
fn dt_compatible_with_multibyte_or_invalid_utf8_is_an_error() {
    for compat in [
        "apple,agx-g13\u{e9}".as_bytes(),
        "apple,agx-g1\u{20ac}".as_bytes(),
        "apple,agx-g1\u{1f600}g".as_bytes(),
        b"apple,agx-g13\xff\xfe",
        b"apple,agx-g1\xc3",
    ] {
        let mut b = board();
        let mut v = compat.to_vec();
        v.push(0);
        b.at("soc/gpu").set("compatible", &v);
        let e = dt_err(&b);
        assert!(e.contains("/soc/gpu@206400000: unsupported GPU"), "{e}");
    }
    // The fallbacks still work, with or without more after the suffix.
    let mut b = board();
    b.at("soc/gpu")
        .set("compatible", b"apple,agx-g14d\0apple,agx-g14s\0");
    assert_eq!(dt_info(&common::write(&b)).unwrap().generation, "G14");
}

/// A DTB whose root holds `depth - 1` nested nodes.
fn nested(depth: usize) -> Vec<u8> {
    let mut st = Vec::new();
    for _ in 0..depth {
        st.extend(1u32.to_be_bytes());
        st.extend(b"n\0\0\0");
    }
    for _ in 0..depth {
        st.extend(2u32.to_be_bytes());
    }
    common::assemble(st, b"")
}

#[test]
fn dt_deep_nesting_is_refused_without_recursion() {
    // A million levels (8 MB): the old reader overflowed the stack searching and dropping it.
    let e = dt_info(&nested(1_000_000)).unwrap_err();
    assert!(e.contains("nested deeper than 64 levels"), "{e}");
    assert!(e.contains("at byte 0x"), "{e}");
    // Right at the limit it parses (and simply has no GPU).
    let at_limit = nested(uat_sim::fdt::MAX_DEPTH);
    let t = uat_sim::fdt::parse(&at_limit).unwrap();
    assert_eq!(t.len(), uat_sim::fdt::MAX_DEPTH);
    assert_eq!(
        dt_info(&nested(uat_sim::fdt::MAX_DEPTH)).unwrap_err(),
        "no apple,agx GPU node"
    );
}

#[test]
fn dt_memory_banks_must_be_non_empty_and_not_wrap() {
    let mut b = board();
    b.at("memory").set("reg", &[]);
    let e = dt_err(&b);
    assert!(e.contains("/memory@800000000: reg has 0 cells"), "{e}");
    let mut b = board();
    b.at("memory")
        .set("reg", &cells(&[0xffff_ffff, 0xffff_0000, 0, 0x10_0000]));
    let e = dt_err(&b);
    assert!(e.contains("wraps past 2^64"), "{e}");
    let mut b = board();
    b.at("memory").set("reg", &cells(&[8, 0, 0, 0]));
    let e = dt_err(&b);
    assert!(e.contains("is empty"), "{e}");
    // A reserved region likewise.
    let mut b = board();
    b.at("reserved-memory/uat-pagetables")
        .set("reg", &cells(&[0xffff_ffff, 0xffff_c000, 0, 0x8000]));
    let e = dt_err(&b);
    assert!(
        e.contains("memory region pagetables") && e.contains("wraps"),
        "{e}"
    );
}
