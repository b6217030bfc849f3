// SPDX-License-Identifier: GPL-2.0

//! Regression tests of issue 13: malformed traces, device trees and snapshots get an error that
//! names what is wrong, never a panic, an abort, a hang or unbounded memory.

mod common;

use common::{cells, Node};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uat_sim::machine::{dt_info, Machine, DEFAULT_DTB};
use uat_sim::{replay, workload};

/// The example board's regions are at fixed addresses: one machine at a time per process.
static ONE_MACHINE: Mutex<()> = Mutex::new(());

const PG: u64 = 1 << 14;
use uat_sim::trace::{self, GemBindOp, Op};

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
    assert_eq!(
        ops,
        [Op::VmCreate {
            vm: 1,
            kernel: None
        }]
    );
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

#[test]
fn stdout_closed_early_is_not_a_panic() {
    // `uat-sim | head -c 1`: the report's first byte is read, then the pipe closes.
    let dir = std::env::temp_dir().join(format!("uat-hard-pipe-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_uat-sim"))
        .arg("--out")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    // Nothing lost: every result was still written.
    let results = std::fs::read_to_string(dir.join("results.jsonl")).unwrap();
    let g = workload::builtin(0x5eed);
    assert_eq!(results.lines().count(), g.ops.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn running_statistics_equal_a_full_recount() {
    let _one = ONE_MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    for seed in 0..6u64 {
        let mut g = workload::random(0xc0de + seed, 300);
        // Destroys (refused while busy, then done) and new VMs too.
        for vm in 1..=2 {
            g.vm_destroy(vm);
            g.complete(vm);
            g.complete(vm);
            g.vm_destroy(vm);
            g.vm_create(vm + 10);
        }
        let mut m = Machine::boot(DEFAULT_DTB).unwrap();
        let (mut peak_pages, mut peak_tables) = (0, m.tables());
        for (i, (op, _)) in g.ops.iter().enumerate() {
            m.execute(op);
            let (pages, tables) = (m.pages_mapped(), m.tables());
            peak_pages = peak_pages.max(pages);
            peak_tables = peak_tables.max(tables);
            assert_eq!(
                (m.stats.pages_mapped, m.stats.tables),
                (pages, tables),
                "seed {seed} op {i} {op:?}"
            );
        }
        assert_eq!(
            (m.stats.peak_pages_mapped, m.stats.peak_tables),
            (peak_pages, peak_tables)
        );
    }
}

fn time_ops(ops: &[Op]) -> Duration {
    let mut m = Machine::boot(DEFAULT_DTB).unwrap();
    let t = Instant::now();
    let report = replay(&mut m, ops, None, |_, _| {}, None, false).unwrap();
    assert!(report.results.is_empty());
    t.elapsed()
}

#[test]
fn thousands_of_vms_and_many_mappings_replay_in_linear_time() {
    let _one = ONE_MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    // 8,000 VMs: each op used to rescan every VM (cubic with the driver's lookups).
    let mut ops: Vec<Op> = (0..8000)
        .map(|vm| Op::VmCreate { vm, kernel: None })
        .collect();
    ops.extend((0..8000).map(|vm| Op::VmDestroy { vm }));
    let t = time_ops(&ops);
    assert!(t < Duration::from_secs(20), "8000 VMs: {t:?}");
    // 60,000 one-page binds in one VM (and their unbinds): each used to rescan every mapping.
    let n = 60_000u64;
    let mut ops = vec![
        Op::VmCreate {
            vm: 1,
            kernel: None,
        },
        Op::GemCreate {
            bo: 1,
            size: PG,
            flags: 0,
            vm_id: None,
        },
    ];
    let op = |i: u64, flags, handle| Op::Bind {
        vm: 1,
        ops: vec![GemBindOp {
            flags,
            handle,
            offset: 0,
            range: PG,
            addr: 0x100_0000 + 2 * i * PG,
        }],
    };
    ops.extend((0..n).map(|i| op(i, asahi::gpuvm::bind_flags::READ, Some(1))));
    ops.extend((0..n).map(|i| op(i, asahi::gpuvm::bind_flags::UNBIND, None)));
    let t = time_ops(&ops);
    assert!(t < Duration::from_secs(20), "{n} binds: {t:?}");
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("uat-hard-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn put(img: &mut [u8], off: u64, v: u64) {
    img[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
}

/// Runs uat-dump; (exit code, stdout, stderr).
fn uat_dump(args: &[&str]) -> (i32, String, String) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_uat-dump"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{args:?}: {:?}",
        t.elapsed()
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BASE: u64 = 0x10000;

#[test]
fn uat_dump_shared_lower_table_is_walked_once() {
    // 48 KiB: the TTBAT, an L1 table whose 8 entries all point at one table, whose 2048
    // entries point at itself (as an L2 to an L3, and as leaves). Every slot uses the L1 table.
    let dir = temp_dir("shared");
    let mut img = vec![0u8; 0xc000];
    let (l1, shared) = (BASE + 0x4000, BASE + 0x8000);
    for slot in 0..64 {
        put(&mut img, 16 * slot, l1 | 1 | (slot << 48));
        put(&mut img, 16 * slot + 8, l1 | 1 | (slot << 48));
    }
    for i in 0..8 {
        put(&mut img, l1 - BASE + 8 * i, shared | 3);
    }
    for i in 0..2048 {
        put(&mut img, shared - BASE + 8 * i, shared | 3 | (1 << 10));
    }
    let path = dir.join("ram.img");
    std::fs::write(&path, &img).unwrap();
    let p = path.to_str().unwrap();
    for json in [false, true] {
        let mut args = vec!["--image", p, "--base", "0x10000", "--ttbat", "0x10000"];
        if json {
            args.push("--json");
        }
        let (code, out, err) = uat_dump(&args);
        assert_eq!(code, 0, "{err}");
        // Bounded by the image: one walk of each table, not 128 * 8 * 2048 * 2048 pages.
        assert!(out.len() < 64 * img.len(), "{} bytes", out.len());
        if json {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let halves = v.as_array().unwrap();
            assert_eq!(halves.len(), 128);
            let first = &halves[0];
            assert!(first["same_as"].is_null());
            assert_eq!(first["runs"].as_array().unwrap().len(), 0);
            let corrupt = first["corrupt"].as_array().unwrap();
            // L1[1..8] and the shared table's 2048 entries (as an L2) are reached again.
            assert_eq!(corrupt.len(), 7 + 2048);
            assert!(corrupt
                .iter()
                .all(|c| c["why"] == "table already reached (shared or a loop)"));
            assert!(halves[1..]
                .iter()
                .all(|h| h["same_as"]["slot"] == 0 && h["same_as"]["half"] == "ttb0"));
        } else {
            assert!(
                out.contains(
                    "slot 63 ttb1 (ASID 63) table 0x14000: the same tables as slot 0 ttb0"
                ),
                "{out}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn uat_dump_refuses_what_it_cannot_read() {
    let dir = temp_dir("refuse");
    let img_path = dir.join("ram.img");
    let p = img_path.to_str().unwrap().to_string();
    let args = |ttbat: &'static str| -> Vec<String> {
        ["--image", &p, "--base", "0x10000", "--ttbat", ttbat]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let run = |a: &[String]| uat_dump(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // Empty.
    std::fs::write(&img_path, b"").unwrap();
    let (code, out, err) = run(&args("0x10000"));
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("empty image"), "{err}");
    // Truncated before the end of the TTBAT, and a TTBAT outside the image.
    std::fs::write(&img_path, vec![0u8; 0x200]).unwrap();
    for ttbat in ["0x10000", "0x8000", "0xffffffffffffffff"] {
        let (code, _, err) = run(&args(ttbat));
        assert_eq!(code, 1, "{ttbat}");
        assert!(
            err.contains("is not inside the image (0x10000..0x10200)"),
            "{err}"
        );
    }
    // A directory.
    let (code, _, err) = uat_dump(&[
        "--image",
        dir.to_str().unwrap(),
        "--base",
        "0",
        "--ttbat",
        "0",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not a regular file") || err.contains("Is a directory"),
        "{err}"
    );
    // --oas 64 (the address mask would be zero) and 0.
    std::fs::write(&img_path, vec![0u8; 0x4000]).unwrap();
    for oas in ["64", "0", "4294967296"] {
        let mut a = args("0x10000");
        a.extend(["--oas".to_string(), oas.to_string()]);
        let (code, _, err) = run(&a);
        assert_eq!(code, 1, "{oas}: {err}");
        assert!(err.contains("not supported (32..=48)"), "{err}");
    }
    // A snapshot whose description has a malformed or missing field.
    std::fs::write(&img_path, vec![0u8; 0x4000]).unwrap();
    for (desc, what) in [
        (
            r#"{"ram_base":"0x10000","ttbat":"0xzz"}"#,
            "\"0xzz\" is not a number at line 1 column 36",
        ),
        (
            r#"{"ram_base":"0x10000","ttbat":1.5}"#,
            "floating point `1.5`",
        ),
        (r#"{"ram_base":"0x10000"}"#, "missing field `ttbat`"),
        (
            r#"{"ram_base":"0x10000","ttbat":0,"ttbat":0}"#,
            "duplicate field `ttbat`",
        ),
        (
            r#"{"ram_base":"0x10000","ttbat":"0x10000","oas":-3}"#,
            "-3 is negative",
        ),
        ("[]", "invalid length 0"),
        ("", "EOF while parsing"),
    ] {
        std::fs::write(dir.join("machine.json"), desc).unwrap();
        let (code, _, err) = uat_dump(&[dir.to_str().unwrap()]);
        assert_eq!(code, 1, "{desc}");
        assert!(
            err.contains("machine.json: ") && err.contains(what),
            "{desc}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn uat_dump_flags_loops_and_pages_outside_ram() {
    let dir = temp_dir("loops");
    let mut img = vec![0u8; 0x14000];
    let (l1, l2, l3) = (BASE + 0x4000, BASE + 0x8000, BASE + 0xc000);
    put(&mut img, 16, l1 | 1 | (1 << 48)); // slot 1 ttb0
    put(&mut img, l1 - BASE, l2 | 3); // L1[0] -> L2
    put(&mut img, l2 - BASE, l3 | 3); // L2[0] -> L3
    put(&mut img, l2 - BASE + 8, l1 | 3); // L2[1] -> L1: a loop
    let gpu_rw = (2 << 6) | (1 << 54) | (1 << 10) | (1 << 55) | 3;
    put(&mut img, l3 - BASE, (BASE + 0x10000) | gpu_rw); // a page in the image
    put(&mut img, l3 - BASE + 8, 0x80_0000_0000 | gpu_rw); // a page outside it
    put(&mut img, l3 - BASE + 16, 0x80_0000_0000 | gpu_rw | (1 << 2)); // device: MMIO
    let path = dir.join("ram.img");
    std::fs::write(&path, &img).unwrap();
    let p = path.to_str().unwrap();
    let (code, out, err) = uat_dump(&[
        "--image", p, "--base", "0x10000", "--ttbat", "0x10000", "--oas", "42",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("slot 1 ttb0 (ASID 1) table 0x14000: 2 runs, 2 pages"),
        "{out}"
    );
    assert!(
        out.contains("  0x0000000000000000-0x0000000000004000 -> 0x0000020000 "),
        "{out}"
    );
    assert!(
        out.contains("  0x0000000000008000-0x000000000000c000 -> 0x8000000000 "),
        "{out}"
    );
    assert!(out.contains("CORRUPT L2 descriptor 0x0000000000014003 at VA 0x0000000002000000 (table 0x18000), not followed: table already reached (shared or a loop)"), "{out}");
    assert!(out.contains("CORRUPT L3 descriptor 0x00c0008000000483 at VA 0x0000000000004000 (table 0x1c000), not followed: page outside the image"), "{out}");
    // --ttb alone (no --ttbat) decodes the same table.
    let (code, out2, err) = uat_dump(&[
        "--image", p, "--base", "0x10000", "--ttb", "0x14000", "--oas", "42",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out2.contains("slot 0 ttb0 (ASID 0) table 0x14000: 2 runs, 2 pages"),
        "{out2}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
