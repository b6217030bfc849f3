// SPDX-License-Identifier: GPL-2.0

//! `make bench`: map and unmap cost per page, side by side with a naive per-page walk of the
//! same work and with the floor (storing the same number of precomputed descriptors into
//! preallocated memory), all measured in one run so that the ratios are meaningful on a shared
//! machine. Each figure is the median of several rounds; each round times a batch of operations
//! large enough to dwarf the clock's resolution.

use asahi::pgtable::PageTable;
use asahi::pte::{Prot, PteTemplate};
use asahi::selftest::{user_cfg as cfg, RecordingTlb};
use asahi::tlb::Gather;
use kernel::sim;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const PG: u64 = 1 << 14;
const PA: u64 = 0x10_0000_0000;
const BASE: u64 = 0x1_0000_0000;
const ROUNDS: usize = 15;
/// Pages touched per timed batch.
const BATCH_PAGES: u64 = 1 << 17;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// VA of the i-th operation of a batch of `n`-page operations (each at its own address).
fn op_va(i: u64, n: u64) -> u64 {
    BASE + i * n * PG
}

struct Costs {
    map: f64,
    unmap: f64,
}

/// Times `ops` maps then `ops` unmaps of `n` pages; `warm` preallocates the tables (untimed).
/// With `naive`, each operation is done page by page through the single-page API.
fn measure(n: u64, warm: bool, naive: bool) -> Costs {
    let ops = (BATCH_PAGES / n).max(1);
    let tlb = RecordingTlb::default();
    let mut maps = Vec::new();
    let mut unmaps = Vec::new();
    let mut pt = PageTable::new(cfg()).unwrap();
    for _ in 0..ROUNDS {
        if warm {
            pt.prealloc(BASE, ops * n * PG).unwrap();
        }
        let t = Instant::now();
        for i in 0..ops {
            let va = op_va(i, n);
            if naive {
                for p in 0..n {
                    pt.map(va + p * PG, PA + p * PG, PG, Prot::GPU_SHARED_RW)
                        .unwrap();
                }
            } else {
                pt.map(va, PA, n * PG, Prot::GPU_SHARED_RW).unwrap();
            }
        }
        maps.push(t.elapsed().as_nanos() as f64 / (ops * n) as f64);
        let t = Instant::now();
        for i in 0..ops {
            let va = op_va(i, n);
            let mut gather = Gather::new();
            if naive {
                for p in 0..n {
                    black_box(pt.unmap(va + p * PG, PG, &mut gather).unwrap());
                }
            } else {
                black_box(pt.unmap(va, n * PG, &mut gather).unwrap());
            }
            gather.flush(&tlb, 1);
        }
        unmaps.push(t.elapsed().as_nanos() as f64 / (ops * n) as f64);
    }
    Costs {
        map: median(maps),
        unmap: median(unmaps),
    }
}

/// The floor: store `n` precomputed descriptors (then `n` zeroes) into preallocated memory.
fn floor(n: u64) -> Costs {
    let ops = (BATCH_PAGES / n).max(1);
    let tmpl = PteTemplate::new(Prot::GPU_SHARED_RW, true);
    let ptes: Vec<u64> = (0..n).map(|p| tmpl.pte(PA + p * PG)).collect();
    let table: Vec<AtomicU64> = (0..ops * n).map(|_| AtomicU64::new(0)).collect();
    let mut maps = Vec::new();
    let mut unmaps = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..ops as usize {
            let dst = &table[i * n as usize..(i + 1) * n as usize];
            for (d, &v) in dst.iter().zip(black_box(&ptes)) {
                d.store(v, Ordering::Relaxed);
            }
        }
        maps.push(t.elapsed().as_nanos() as f64 / (ops * n) as f64);
        let t = Instant::now();
        for i in 0..ops as usize {
            for d in &table[i * n as usize..(i + 1) * n as usize] {
                d.store(0, Ordering::Relaxed);
            }
        }
        unmaps.push(t.elapsed().as_nanos() as f64 / (ops * n) as f64);
        black_box(&table);
    }
    Costs {
        map: median(maps),
        unmap: median(unmaps),
    }
}

fn main() {
    // The real allocator does not poison freed pages; do not charge that to the table code.
    sim::set_poison_on_free(false);
    println!(
        "UAT page-table benchmark: ns per page, median of {ROUNDS} rounds of {BATCH_PAGES} pages"
    );
    println!(
        "{:<6} {:>6} {:<5} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "op", "pages", "tables", "ours", "naive", "floor", "ours/floor", "naive/ours"
    );
    for n in [1u64, 256, 65536] {
        let fl = floor(n);
        for warm in [true, false] {
            let ours = measure(n, warm, false);
            let naive = measure(n, warm, true);
            let tables = if warm { "warm" } else { "cold" };
            for (op, o, nv, f) in [
                ("map", ours.map, naive.map, fl.map),
                ("unmap", ours.unmap, naive.unmap, fl.unmap),
            ] {
                println!(
                    "{:<6} {:>6} {:<6} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>10.2}",
                    op,
                    n,
                    tables,
                    o,
                    nv,
                    f,
                    o / f,
                    nv / o
                );
            }
        }
    }
    println!(
        "warm: tables preallocated before the timed maps; cold: maps allocate (zeroed) tables."
    );
    println!("unmap always frees the tables it empties (after the gathered TLB flush, included).");
    bind_scaling();
}

/// Binding the last page of an imported buffer whose scatter list has `n` single-page entries:
/// our bind (binary search for the entry) against handing the whole list to `map_sg` with an
/// offset (what a linear lookup costs), ns per bind replacing the same page.
fn bind_scaling() {
    use agx_soc::{firmware::FwKnobs, Soc};
    use asahi::gpuvm::{bind_flags::*, BindOp};
    use asahi::pgtable::PhysRange;
    println!();
    println!(
        "bind of the last page of an n-entry imported buffer over itself, ns per bind (median of {ROUNDS})"
    );
    println!(
        "{:>7} {:>10} {:>12} {:>14}",
        "entries", "ours", "linear", "linear/ours"
    );
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    const REPS: u64 = 2000;
    for n in [1u64, 4096, 262_144] {
        let sg: Vec<PhysRange> = (0..n)
            .map(|i| PhysRange {
                addr: 0x80_0000_0000 + 2 * i * PG,
                len: PG,
            })
            .collect();
        let h = g.gem_import(&sg).unwrap();
        let op = BindOp {
            flags: READ,
            handle: h,
            offset: (n - 1) * PG,
            range: PG,
            addr: 0x4000,
        };
        let unbind = BindOp {
            flags: UNBIND,
            handle: 0,
            offset: 0,
            range: PG,
            addr: 0x4000,
        };
        g.bind(vm, &op).unwrap();
        let mut ours = Vec::new();
        let mut linear = Vec::new();
        for _ in 0..ROUNDS {
            let t = Instant::now();
            for _ in 0..REPS {
                g.bind(vm, &op).unwrap();
            }
            g.bind(vm, &unbind).unwrap();
            ours.push(t.elapsed().as_nanos() as f64 / REPS as f64);
            let t = Instant::now();
            for _ in 0..REPS {
                let uat = g.uat_mut();
                uat.vm_clear(vm, 0x4000, PG).unwrap();
                uat.vm_map_sg(vm, 0x4000, PG, &sg, (n - 1) * PG, Prot::GPU_SHARED_RO)
                    .unwrap();
            }
            g.uat_mut().vm_unmap(vm, 0x4000, PG).unwrap();
            linear.push(t.elapsed().as_nanos() as f64 / REPS as f64);
        }
        let (o, l) = (median(ours), median(linear));
        println!("{:>7} {:>10.0} {:>12.0} {:>14.1}", n, o, l, l / o);
        g.gem_close(h).unwrap();
    }
}
