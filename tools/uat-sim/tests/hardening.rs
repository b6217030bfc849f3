// SPDX-License-Identifier: GPL-2.0

//! Regression tests of issue 13: malformed traces, device trees and snapshots get an error that
//! names what is wrong, never a panic, an abort, a hang or unbounded memory.

use uat_sim::trace::{self, Op};

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
