// SPDX-License-Identifier: GPL-2.0

//! The simulator: golden traces, random traces against the workload model, malformed traces,
//! snapshots decoded by uat-dump against the model, and the default workload end to end.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Mutex;
use uat_sim::dump::{dump, Image};
use uat_sim::machine::{Machine, DEFAULT_DTB};
use uat_sim::trace::{self, Op};
use uat_sim::workload::{self, Expect, ModelPage};
use uat_sim::{replay, snapshot};

/// The example board's regions are at fixed addresses: one machine at a time per process.
static ONE_MACHINE: Mutex<()> = Mutex::new(());

const PG: u64 = 1 << 14;

fn traces_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces")
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("uat-sim-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn golden_traces() {
    let _one = ONE_MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut n = 0;
    for entry in std::fs::read_dir(traces_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        let ops = trace::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let want = std::fs::read_to_string(path.with_extension("expected")).unwrap();
        let mut m = Machine::boot(DEFAULT_DTB).unwrap();
        let report = replay(&mut m, &ops, None, |_, _| {}, None, true).unwrap();
        let got: Vec<String> = report.results.iter().map(|r| r.to_string()).collect();
        let want: Vec<&str> = want.lines().collect();
        assert_eq!(got, want, "{}", path.display());
        // As `uat-sim --out` writes it at the end.
        let mut maps = format!("after {} ops:\n", ops.len()).into_bytes();
        uat_sim::maps::write_maps(&m, &mut maps).unwrap();
        let want = std::fs::read_to_string(path.with_extension("maps")).unwrap();
        assert_eq!(String::from_utf8(maps).unwrap(), want, "{}", path.display());
        n += 1;
    }
    assert!(n >= 1);
}

#[test]
fn random_traces_match_the_model() {
    let _one = ONE_MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let seeds: u64 = std::env::var("UAT_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(40, |c| (c / 50).max(8));
    for seed in 0..seeds {
        let g = workload::random(0x5eed + seed, 300);
        let (ops, expect): (Vec<Op>, Vec<Expect>) = g.ops.into_iter().unzip();
        let mut m = Machine::boot(DEFAULT_DTB).unwrap();
        let report = replay(&mut m, &ops, Some(&expect), |_, _| {}, None, true).unwrap();
        if let Some((i, e, got)) = report.mismatches.first() {
            panic!(
                "seed {seed}: op {i} {}: expected {e:?}, got {got}",
                trace::to_line(&ops[*i])
            );
        }
        // The trace's text form replays the same.
        let text: String = ops.iter().map(|o| trace::to_line(o) + "\n").collect();
        assert_eq!(trace::parse(&text).unwrap(), ops);
    }
}

/// The pages of a `maps.txt`, read back independently of how its runs were built: VM name ->
/// VA page -> (label, page of the buffer, GPU access); and the table pages its header gives
/// for each VM.
type MapsPages = BTreeMap<u64, BTreeMap<u64, (String, u64, String)>>;

fn pages_of_maps(text: &str) -> (MapsPages, BTreeMap<u64, usize>) {
    let mut vms = BTreeMap::new();
    let mut tables = BTreeMap::new();
    let mut cur = None;
    let num = |s: &str| {
        u64::from_str_radix(s.trim_start_matches('+').trim_start_matches("0x"), 16).unwrap()
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("vm ") {
            let (name, counts) = rest.split_once(':').unwrap();
            let name: u64 = name.parse().unwrap();
            let n = counts
                .trim_end_matches(" tables")
                .rsplit(' ')
                .next()
                .unwrap();
            tables.insert(name, n.parse().unwrap());
            cur = Some(name);
            vms.insert(name, BTreeMap::new());
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let (va, end) = w[0].split_once('-').unwrap();
        let (va, end) = (num(va) >> 14, num(end) >> 14);
        let gpu = w[4].to_string();
        let (label, offset) = if w[7] == "-" {
            ("-".to_string(), 0)
        } else {
            (format!("{} {}", w[7], w[8]), num(w[9]) >> 14)
        };
        let repeat = line.ends_with("(one page repeated)");
        let pages = vms.get_mut(&cur.unwrap()).unwrap();
        for (i, p) in (va..end).enumerate() {
            let page = if repeat { offset } else { offset + i as u64 };
            assert!(pages
                .insert(p, (label.clone(), page, gpu.clone()))
                .is_none());
        }
    }
    (vms, tables)
}

/// The table pages below the root that mapping `pages` (VA page numbers) needs, and no more:
/// one leaf table per 32 MiB span (2048 pages) holding a page, one second-level table per
/// 64 GiB span.
fn tables_needed<'a>(pages: impl Iterator<Item = &'a u64> + Clone) -> usize {
    let spans = |shift: u32| {
        pages
            .clone()
            .map(|p| p >> shift)
            .collect::<BTreeSet<_>>()
            .len()
    };
    spans(11) + spans(22)
}

#[test]
fn maps_show_the_model_pages() {
    let _one = ONE_MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let seeds: u64 = std::env::var("UAT_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(20, |c| (c / 200).max(4));
    for seed in 0..seeds {
        let g = workload::random(0x3a95 + seed, 300);
        let model: BTreeMap<u64, Vec<workload::ModelPage>> =
            (1..=3).map(|vm| (vm, g.mapped_pages(vm))).collect();
        let (ops, _): (Vec<Op>, Vec<Expect>) = g.ops.into_iter().unzip();
        let mut m = Machine::boot(DEFAULT_DTB).unwrap();
        replay(&mut m, &ops, None, |_, _| {}, None, false).unwrap();
        let mut text = Vec::new();
        uat_sim::maps::write_maps(&m, &mut text).unwrap();
        let (got, tables) = pages_of_maps(&String::from_utf8(text).unwrap());
        assert_eq!(
            got.keys().copied().collect::<Vec<_>>(),
            m.vms.keys().copied().collect::<Vec<_>>()
        );
        for (vm, pages) in got {
            // Exactly the tables the mappings need: every table that empties is freed.
            assert_eq!(
                tables[&vm],
                tables_needed(pages.keys()),
                "seed {seed}, VM {vm}: table pages"
            );
            let access = |r: bool, w: bool| match (r, w) {
                (true, true) => "RW",
                (true, false) => "RO",
                (false, true) => "WO",
                (false, false) => "--",
            };
            let want: BTreeMap<u64, (String, u64, String)> = model[&vm]
                .iter()
                .map(|p| {
                    let v = (
                        format!("bo {}", p.bo),
                        p.page,
                        access(p.read, p.write).to_string(),
                    );
                    (p.va_page, v)
                })
                .collect();
            let (zero, buffers): (BTreeMap<_, _>, BTreeMap<_, _>) =
                pages.into_iter().partition(|(_, v)| v.0 == "-");
            assert_eq!(buffers, want, "seed {seed}, VM {vm}");
            // The kernel-private zero page, read-only, and nothing else of no buffer.
            assert_eq!(zero.len(), 1, "seed {seed}, VM {vm}: {zero:?}");
            assert!(zero.values().all(|v| v.2 == "RO"));
        }
    }
}

#[test]
fn malformed_lines_are_reported_with_their_number() {
    let cases = [
        ("{\"op\":\"vm_create\",\"vm\":1}\n{\"op\":\"bnid\",\"vm\":1}\n", 2, "unknown op"),
        ("# c\n\n{\"op\":\"gem_create\",\"bo\":1}\n", 3, "missing field `size`"),
        ("{\"op\":\"gem_create\",\"bo\":1,\"size\":\"0xzz\"}\n", 1, "not a number"),
        ("{\"op\":\"bind\",\"vm\":1,\"bo\":1,\"offset\":0,\"range\":1,\"addr\":0,\"flags\":[\"RAED\"]}\n", 1, "unknown flag"),
        ("{\"op\":\"vm_create\",\"vm\":1,\"extra\":2}\n", 1, "unknown field `extra`"),
        ("{\"op\":\"gpu_write\",\"vm\":1,\"addr\":0,\"data\":\"abc\"}\n", 1, "even number"),
        ("not json\n", 1, "not JSON"),
        ("{\"op\":\"vm_create\",\"vm\":1,\"kernel_start\":0}\n", 1, "go together"),
        ("{\"op\":\"gem_create\",\"bo\":1,\"size\":1,\"flags\":[\"READ\"]}\n", 1, "unknown flag"),
        ("{\"op\":\"gem_create\",\"bo\":1,\"size\":1,\"vm\":1}\n", 1, "unknown field `vm`"),
        ("{\"op\":\"bind\",\"vm\":1,\"ops\":[],\"bo\":1}\n", 1, "without the single-op"),
        ("{\"op\":\"bind\",\"vm\":1,\"bo\":1,\"range\":1,\"addr\":0}\n", 1, "missing field `offset`"),
        ("{\"op\":\"bind\",\"vm\":1,\"ops\":[{\"range\":1}]}\n", 1, "missing field `addr`"),
        ("{\"op\":\"bind\",\"vm\":1,\"ops\":[{\"range\":1,\"addr\":0,\"bo\":1}]}\n", 1, "unknown field `bo`"),
        ("{\"op\":\"bind\",\"vm\":1,\"ops\":[{\"range\":1,\"addr\":0,\"addr\":1}]}\n", 1, "duplicate key \"addr\""),
        ("{\"op\":\"bind\",\"vm\":1,\"ops\":{}}\n", 1, "column"),
    ];
    for (text, line, what) in cases {
        let e = trace::parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text}");
        assert!(e.what.contains(what), "{e}");
    }
    // The binary stops before touching state: no result file, exit status 1, the line named.
    let dir = temp_dir("malformed");
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"op\":\"vm_create\",\"vm\":1}\n{\"op\":\"vm_create\"}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_uat-sim"))
        .arg(&bad)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trace line 2: column 18: missing field `vm`"),
        "{err}"
    );
    assert!(!dir.join("out").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The single-op forms are one-op binds; the uAPI's field names and defaults; a canonical line
/// parses back to the same operation.
#[test]
fn trace_forms_follow_the_uapi() {
    use asahi::gpuvm::bind_flags::*;
    use uat_sim::trace::GemBindOp;
    let old = "{\"op\":\"bind\",\"vm\":1,\"bo\":7,\"offset\":\"0x4000\",\"range\":\"0x8000\",\
               \"addr\":\"0x1000000\",\"flags\":[\"READ\",\"WRITE\"]}\n\
               {\"op\":\"unbind\",\"vm\":1,\"addr\":\"0x1004000\",\"range\":\"0x4000\"}\n";
    let new = "{\"op\":\"bind\",\"vm\":1,\"ops\":[{\"flags\":6,\"handle\":7,\"offset\":16384,\
               \"range\":\"0x8000\",\"addr\":\"0x1000000\"}]}\n\
               {\"op\":\"bind\",\"vm\":1,\"ops\":[{\"flags\":[\"UNBIND\"],\"range\":16384,\
               \"addr\":\"0x1004000\"}]}\n";
    let op = |flags, handle, offset, range, addr| GemBindOp {
        flags,
        handle,
        offset,
        range,
        addr,
    };
    let want = vec![
        Op::Bind {
            vm: 1,
            ops: vec![op(READ | WRITE, Some(7), 0x4000, 0x8000, 0x100_0000)],
        },
        Op::Bind {
            vm: 1,
            ops: vec![op(UNBIND, None, 0, 0x4000, 0x100_4000)],
        },
    ];
    assert_eq!(trace::parse(old).unwrap(), want);
    assert_eq!(trace::parse(new).unwrap(), want);
    let more = "{\"op\":\"vm_create\",\"vm\":2,\"kernel_start\":\"0x4000\",\"kernel_end\":\"0x40004000\"}\n\
                {\"op\":\"gem_create\",\"bo\":3,\"size\":\"0x4000\",\"flags\":[\"WRITEBACK\",\"VM_PRIVATE\"],\"vm_id\":2}\n\
                {\"op\":\"gem_create\",\"bo\":4,\"size\":\"0x4000\",\"flags\":12}\n";
    let ops = trace::parse(more).unwrap();
    assert_eq!(
        ops,
        [
            Op::VmCreate {
                vm: 2,
                kernel: Some((0x4000, 0x4000_4000))
            },
            Op::GemCreate {
                bo: 3,
                size: PG,
                flags: 3,
                vm_id: Some(2)
            },
            Op::GemCreate {
                bo: 4,
                size: PG,
                flags: 12,
                vm_id: None
            },
        ]
    );
    for o in want.iter().chain(&ops) {
        assert_eq!(
            trace::parse(&trace::to_line(o)).unwrap(),
            std::slice::from_ref(o)
        );
    }
    assert_eq!(
        trace::to_line(&want[1]),
        "{\"op\":\"bind\",\"ops\":[{\"addr\":\"0x1004000\",\"flags\":[\"UNBIND\"],\"offset\":\"0x0\",\
         \"range\":\"0x4000\"}],\"vm\":1}"
    );
}

#[test]
fn snapshots_decode_to_the_model() {
    let _one = ONE_MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    for seed in 0..4u64 {
        let mut g = workload::random(0xd0d0 + seed, 200);
        // End with both VMs running, so that both are in the TTBAT.
        for vm in 1..=2 {
            g.submit(vm);
        }
        let model: BTreeMap<u64, Vec<ModelPage>> =
            (1..=2).map(|vm| (vm, g.mapped_pages(vm))).collect();
        let (ops, expect): (Vec<Op>, Vec<Expect>) = g.ops.into_iter().unzip();
        let mut m = Machine::boot(DEFAULT_DTB).unwrap();
        let report = replay(&mut m, &ops, Some(&expect), |_, _| {}, None, true).unwrap();
        assert!(report.mismatches.is_empty());
        let dir = temp_dir(&format!("snap{seed}"));
        snapshot::save(&m, &dir).unwrap();
        let desc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("machine.json")).unwrap())
                .unwrap();
        assert_eq!(desc["gpu"], "G13");
        let img = Image::open(&dir.join("ram.img"), kernel::sim::RAM_BASE).unwrap();
        let halves = dump(&img, m.dt.ttbs.phys, 40, 39).unwrap();
        for (vm, pages) in &model {
            let id = m.vms[vm];
            // The dummy page, at the start of the VM's kernel range.
            let dummy = m.gpuvm.kernel_range(id).unwrap().start;
            let slot = m.gpuvm.uat().slot_of(id).unwrap();
            let half = halves
                .iter()
                .find(|h| h.slot == slot && h.half == 0)
                .unwrap();
            assert!(half.corrupt.is_empty());
            // The dump, page by page (without the dummy page).
            let mut got = BTreeMap::new();
            for r in &half.runs {
                for i in 0..r.size / PG {
                    if r.va + i * PG != dummy {
                        let perm = uat_sim::dump::describe_attrs(r.attrs);
                        got.insert(r.va / PG + i, (r.pa_of(i), perm[4..6].to_string()));
                    }
                }
            }
            // The model, with the buffers' pages from the snapshot's description.
            let mut want = BTreeMap::new();
            for &ModelPage {
                va_page: va,
                bo,
                page,
                read: r,
                write: w,
            } in pages
            {
                let handle = m
                    .names
                    .iter()
                    .find(|&(_, &n)| n == bo)
                    .map(|(&h, _)| h)
                    .unwrap();
                let obj = desc["objects"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|o| o["handle"] == handle)
                    .unwrap();
                let pa = obj["pages"][page as usize].as_str().unwrap();
                let pa = u64::from_str_radix(pa.trim_start_matches("0x"), 16).unwrap();
                let perm = match (r, w) {
                    (true, true) => "RW",
                    (true, false) => "RO",
                    _ => "WO",
                };
                want.insert(va, (pa, perm.to_string()));
            }
            assert_eq!(got, want, "seed {seed} vm {vm}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn uat_dump_flags_corrupt_descriptors() {
    let dir = temp_dir("corrupt");
    // A 64 KiB image at 0x10000: TTBAT page, a top table with a block descriptor, then a table
    // pointing outside the image.
    let mut img = vec![0u8; 0x10000];
    let put =
        |img: &mut Vec<u8>, off: usize, v: u64| img[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut img, 16 * 3, 0x14000 | 1 | (3 << 48)); // slot 3 ttb0 -> table at 0x14000
    put(&mut img, 0x4000, 0x0000_0001); // L1[0]: block type
    put(&mut img, 0x4008, 0x8_0000_0000 | 3); // L1[1]: table outside the image
    let path = dir.join("ram.img");
    std::fs::write(&path, &img).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_uat-dump"))
        .args(["--image"])
        .arg(&path)
        .args(["--base", "0x10000", "--ttbat", "0x10000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("slot 3 ttb0 (ASID 3)"), "{text}");
    assert!(
        text.contains("CORRUPT L1 descriptor 0x0000000000000001 at VA 0x0000000000000000"),
        "{text}"
    );
    assert!(
        text.contains("CORRUPT L2 descriptor 0x0000000800000000 at VA 0x0000001000000000"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn default_workload_runs_clean() {
    let dir = temp_dir("default");
    let out = Command::new(env!("CARGO_BIN_EXE_uat-sim"))
        .arg("--snapshot")
        .arg(dir.join("snap"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("as expected: all"), "{text}");
    assert!(text.contains("uat-sim: ok"));
    // Evictions happened (80 short-lived contexts on 63 slots) and the summary says so.
    let evictions: u64 = text
        .lines()
        .find(|l| l.contains("evictions"))
        .and_then(|l| l.split(" kept, ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(evictions > 0, "{text}");
    let dump = Command::new(env!("CARGO_BIN_EXE_uat-dump"))
        .arg(dir.join("snap"))
        .arg("--json")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    let halves = v.as_array().unwrap();
    assert!(halves.iter().any(|h| h["slot"] == 0 && h["half"] == "ttb1"));
    assert!(halves.iter().filter(|h| h["slot"] != 0).count() >= 4);
    let _ = std::fs::remove_dir_all(&dir);
}
