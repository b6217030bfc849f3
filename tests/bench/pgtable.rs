// SPDX-License-Identifier: GPL-2.0

//! `make bench`: map and unmap cost per page of our page table, side by side with the
//! `aarch64-paging` crate (the peer) and with the floor (storing the same number of precomputed
//! descriptors into preallocated memory), all measured in one run so that the ratios are
//! meaningful on a shared machine; then a replacing VM_BIND against a plain one, and the
//! page-table memory of a large mapping. Each figure is the median of several rounds; each round
//! times a batch of operations large enough to dwarf the clock's resolution. The rounds of the
//! sides of one comparison alternate in blocks, so that a slow spell of the machine falls on
//! all of them (see [`compare`]), and each ratio is taken round by round (see
//! [`Rounds::ratio`]).

use aarch64_paging::descriptor::{El1Attributes, PhysicalAddress};
use aarch64_paging::idmap::IdTranslation;
use aarch64_paging::paging::{Constraints, El1And0, MemoryRegion, VaRange};
use aarch64_paging::Mapping;
use asahi::desc_run::holds_only_pages;
use asahi::geometry::PTES_PER_TABLE;
use asahi::pgtable::PageTable;
use asahi::pte::{LeafCheck, Prot, PteTemplate};
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
/// Blocks the rounds of a comparison are run in (see [`compare`]).
const BLOCKS: usize = 3;
/// Pages touched per timed batch.
const BATCH_PAGES: u64 = 1 << 17;

/// Timed rounds of the page-table table: `ROUNDS`, or `UAT_BENCH_ROUNDS` (more, for profiling),
/// rounded up to whole blocks by [`compare`]; each block adds an untimed round per side.
fn rounds() -> usize {
    std::env::var("UAT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// VA of the i-th operation of a batch of `n`-page operations (each at its own address).
fn op_va(i: u64, n: u64) -> u64 {
    BASE + i * n * PG
}

/// Operations in a batch of `n`-page operations.
fn batch_ops(n: u64) -> u64 {
    (BATCH_PAGES / n).max(1)
}

#[derive(Clone, Copy)]
struct Costs {
    map: f64,
    unmap: f64,
}

/// One side of a comparison, holding what persists between its rounds (tables, memory).
trait Side {
    /// Times one batch of maps then one of unmaps; ns per page of each.
    fn round(&mut self) -> Costs;
}

/// Times the sides in `BLOCKS` blocks, side after side within a block: each side runs an
/// untimed round (to bring its own tables back into the caches, as its previous round left them
/// for the next in a run of rounds), then its share of the timed rounds. These machines have
/// slow spells (every figure 1.5–2× higher, for a fraction of a second or longer), long enough
/// to cover all the rounds of one side and none of the next when each side runs its rounds in
/// one go; blocks of a few rounds spread a spell over all the sides. Returns each side's timed
/// rounds, in the order of `sides`.
fn compare(sides: &mut [&mut dyn Side]) -> Vec<Rounds> {
    let per_block = rounds().div_ceil(BLOCKS);
    let mut all = vec![Vec::new(); sides.len()];
    for _ in 0..BLOCKS {
        for (side, costs) in sides.iter_mut().zip(&mut all) {
            black_box(side.round());
            for _ in 0..per_block {
                costs.push(side.round());
            }
        }
    }
    all.into_iter().map(Rounds).collect()
}

/// The map figure of a round.
fn map(c: &Costs) -> f64 {
    c.map
}

/// The unmap figure of a round.
fn unmap(c: &Costs) -> f64 {
    c.unmap
}

/// One side's timed rounds, in the order [`compare`] ran them.
struct Rounds(Vec<Costs>);

impl Rounds {
    /// The median of `figure` over the rounds.
    fn median(&self, figure: fn(&Costs) -> f64) -> f64 {
        median(self.0.iter().map(figure).collect())
    }

    /// The median of `figure`'s ratios to `other`'s, round by round: the rounds at the same
    /// place of the same block, which ran a few milliseconds apart. A slow spell that covers a
    /// block of one side and not the other's skews the ratios of that block alone, where it would
    /// tip the ratio of the two medians if it covered most of one side's rounds.
    fn ratio(&self, other: &Rounds, figure: fn(&Costs) -> f64) -> f64 {
        median(
            self.0
                .iter()
                .zip(&other.0)
                .map(|(a, b)| figure(a) / figure(b))
                .collect(),
        )
    }
}

/// Ours: `ops` maps then `ops` unmaps of `n` pages a round; `warm` preallocates the tables
/// (untimed).
struct Ours {
    n: u64,
    warm: bool,
    pt: PageTable,
    tlb: RecordingTlb,
}

impl Ours {
    fn new(n: u64, warm: bool) -> Self {
        Ours {
            n,
            warm,
            pt: PageTable::new(cfg()).unwrap(),
            tlb: RecordingTlb::default(),
        }
    }
}

impl Side for Ours {
    fn round(&mut self) -> Costs {
        let ops = batch_ops(self.n);
        if self.warm {
            self.pt.prealloc(BASE, ops * self.n * PG).unwrap();
        }
        let map = time_maps(&mut self.pt, self.n);
        let unmap = time_unmaps(&mut self.pt, &self.tlb, self.n);
        assert_eq!(self.pt.table_pages(), 0);
        Costs { map, unmap }
    }
}

/// Times a batch of our `n`-page maps: ns per page. Out of line, like [`time_unmaps`], so that
/// the timed loop is compiled the same whatever the harness around it.
#[inline(never)]
fn time_maps(pt: &mut PageTable, n: u64) -> f64 {
    let ops = batch_ops(n);
    let t = Instant::now();
    for i in 0..ops {
        pt.map(op_va(i, n), PA, n * PG, Prot::GPU_SHARED_RW)
            .unwrap();
    }
    t.elapsed().as_nanos() as f64 / (ops * n) as f64
}

/// Times a batch of our `n`-page unmaps, each with its TLB flush: ns per page. Out of line (see
/// [`time_maps`]).
#[inline(never)]
fn time_unmaps(pt: &mut PageTable, tlb: &RecordingTlb, n: u64) -> f64 {
    let ops = batch_ops(n);
    let t = Instant::now();
    for i in 0..ops {
        let mut gather = Gather::new();
        black_box(pt.unmap(op_va(i, n), n * PG, &mut gather).unwrap());
        gather.flush(tlb, 1);
    }
    t.elapsed().as_nanos() as f64 / (ops * n) as f64
}

/// The peer's page size (its only granule).
const PEER_PG: usize = 4096;

fn peer_region(i: u64, n: u64) -> MemoryRegion {
    let start = 0x4000_0000 + (i * n) as usize * PEER_PG;
    MemoryRegion::new(start, start + n as usize * PEER_PG)
}

/// The same batches through `aarch64-paging`: `n` 4 KiB pages an operation, block mappings off,
/// the table inactive (no TLB maintenance, no break-before-make checks), tables from the global
/// allocator. Unmap is `map_range` with an invalid attribute set (it frees the subtables a chunk
/// covers wholly, without reading them), then one `compact_subtables` a batch to free the tables
/// the partial unmaps emptied. `warm` maps and unmaps the batch beforehand (untimed, without
/// compacting), leaving its tables in place.
struct Peer {
    n: u64,
    warm: bool,
    map: Mapping<IdTranslation<El1Attributes>, El1And0>,
}

impl Peer {
    const ATTRS: El1Attributes = El1Attributes::VALID
        .union(El1Attributes::ATTRIBUTE_INDEX_0)
        .union(El1Attributes::INNER_SHAREABLE)
        .union(El1Attributes::ACCESSED)
        .union(El1Attributes::NON_GLOBAL);
    const UNMAPPED: El1Attributes = El1Attributes::empty();
    const C: Constraints = Constraints::NO_BLOCK_MAPPINGS;

    fn new(n: u64, warm: bool) -> Self {
        let map = Mapping::with_asid_and_va_range(
            IdTranslation::<El1Attributes>::new(),
            1,
            1,
            El1And0,
            VaRange::Lower,
        );
        Peer { n, warm, map }
    }
}

impl Side for Peer {
    fn round(&mut self) -> Costs {
        let (n, map) = (self.n, &mut self.map);
        let ops = batch_ops(n);
        if self.warm {
            let all =
                MemoryRegion::new(peer_region(0, n).start().0, peer_region(ops - 1, n).end().0);
            map.map_range(&all, PhysicalAddress(PA as usize), Self::ATTRS, Self::C)
                .unwrap();
            map.map_range(&all, PhysicalAddress(0), Self::UNMAPPED, Self::C)
                .unwrap();
        }
        let t = Instant::now();
        for i in 0..ops {
            map.map_range(
                &peer_region(i, n),
                PhysicalAddress(PA as usize),
                Self::ATTRS,
                Self::C,
            )
            .unwrap();
        }
        let mapped = t.elapsed().as_nanos() as f64 / (ops * n) as f64;
        let t = Instant::now();
        for i in 0..ops {
            map.map_range(
                &peer_region(i, n),
                PhysicalAddress(0),
                Self::UNMAPPED,
                Self::C,
            )
            .unwrap();
        }
        map.compact_subtables();
        let unmapped = t.elapsed().as_nanos() as f64 / (ops * n) as f64;
        black_box(&map);
        Costs {
            map: mapped,
            unmap: unmapped,
        }
    }
}

/// The floor: store `n` precomputed descriptors (then `n` zeroes) into preallocated memory.
struct Floor {
    n: usize,
    ptes: Vec<u64>,
    table: Vec<AtomicU64>,
}

impl Floor {
    fn new(n: u64) -> Self {
        let tmpl = PteTemplate::new(Prot::GPU_SHARED_RW, true);
        Floor {
            n: n as usize,
            ptes: (0..n).map(|p| tmpl.pte(PA + p * PG)).collect(),
            table: (0..batch_ops(n) * n).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Side for Floor {
    fn round(&mut self) -> Costs {
        let n = self.n;
        let ops = self.table.len() / n;
        let t = Instant::now();
        for i in 0..ops {
            let dst = &self.table[i * n..(i + 1) * n];
            for (d, &v) in dst.iter().zip(black_box(&self.ptes)) {
                d.store(v, Ordering::Relaxed);
            }
        }
        let map = t.elapsed().as_nanos() as f64 / self.table.len() as f64;
        let t = Instant::now();
        for i in 0..ops {
            for d in &self.table[i * n..(i + 1) * n] {
                d.store(0, Ordering::Relaxed);
            }
        }
        let unmap = t.elapsed().as_nanos() as f64 / self.table.len() as f64;
        black_box(&self.table);
        Costs { map, unmap }
    }
}

/// The checked floor of an unmap: per operation, read the `n` descriptors through the first test
/// of our corruption check ([`holds_only_pages`], the same code), then store `n` zeroes, in the
/// memory and order of [`Floor`]. What the guarantee that an unmap checks its whole run before
/// writing anything costs at the least: no argument checks, no table lookup, no counts, no TLB
/// flush, no table freed. Its rounds time the unmap only (`map` is the untimed refill, 0).
struct Checked {
    n: usize,
    check: LeafCheck,
    tmpl: PteTemplate,
    table: Vec<AtomicU64>,
}

impl Checked {
    fn new(n: u64) -> Self {
        Checked {
            n: n as usize,
            check: LeafCheck::new(cfg().oas),
            tmpl: PteTemplate::new(Prot::GPU_SHARED_RW, true),
            table: (0..batch_ops(n) * n).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Side for Checked {
    fn round(&mut self) -> Costs {
        let n = self.n;
        for (p, d) in self.table.iter().enumerate() {
            d.store(self.tmpl.pte(PA + (p % n) as u64 * PG), Ordering::Relaxed);
        }
        let t = Instant::now();
        for i in 0..self.table.len() / n {
            let run = black_box(&self.table[i * n..(i + 1) * n]);
            // SAFETY: `round` holds `&mut self`: nothing else accesses `self.table`.
            assert!(unsafe { holds_only_pages(run, self.check) });
            for d in run {
                d.store(0, Ordering::Relaxed);
            }
        }
        let unmap = t.elapsed().as_nanos() as f64 / self.table.len() as f64;
        black_box(&self.table);
        Costs { map: 0.0, unmap }
    }
}

/// The machine the figures come from, on one line: the ratios depend on its cores and caches
/// (the store-bound floor most), so runs on different machines are not comparable.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    // A field of the first CPU's block.
    let field = |name: &str| {
        cpuinfo
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
    };
    let f = |name: &str| field(name).unwrap_or_else(|| "?".into());
    let mut caches = Vec::new();
    for i in 0.. {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            break;
        };
        if kind.trim() != "Instruction" {
            caches.push(format!("L{} {}", level.trim(), size.trim()));
        }
    }
    // x86 names the model; arm64 gives the implementer and part numbers.
    let cpu = match field("model name") {
        Some(model) => format!(
            "{model} (family {} model {} stepping {})",
            f("cpu family"),
            f("model"),
            f("stepping")
        ),
        None => format!(
            "CPU implementer {} part {} variant {} revision {}",
            f("CPU implementer"),
            f("CPU part"),
            f("CPU variant"),
            f("CPU revision")
        ),
    };
    format!(
        "{cpu}, {} CPUs; data and unified caches of CPU 0: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if caches.is_empty() {
            "?".into()
        } else {
            caches.join(", ")
        }
    )
}

/// A row of the checked-floor table: medians (ns per page) and round-by-round ratios.
struct CheckedRow {
    n: u64,
    tables: &'static str,
    ours: f64,
    checked: f64,
    ours_checked: f64,
    checked_floor: f64,
}

fn main() {
    // The real allocator does not poison freed pages; do not charge that to the table code.
    sim::set_poison_on_free(false);
    // UAT_BENCH_QUICK=1: the page-table tables only (ours, peer, floor; the checked floor).
    let quick = std::env::var_os("UAT_BENCH_QUICK").is_some();
    // UAT_BENCH_OURS_ONLY=1: skip the peer (for profiling ours; its column then repeats ours).
    let ours_only = std::env::var_os("UAT_BENCH_OURS_ONLY").is_some();
    println!(
        "UAT page-table benchmark: ns per page, median of {} rounds of {BATCH_PAGES} pages,",
        rounds().div_ceil(BLOCKS) * BLOCKS
    );
    let peer = if ours_only {
        " (no peer)"
    } else {
        " and the peer"
    };
    println!(
        "in {BLOCKS} blocks that alternate ours, the floor, the checked floor{peer}; a ratio is"
    );
    println!("the median of the ratios of the rounds at the same place of the same block");
    println!("machine: {}", machine());
    println!(
        "{:<6} {:>6} {:<5} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "op", "pages", "tables", "ours", "peer", "floor", "ours/floor", "peer/ours"
    );
    // UAT_BENCH_PAGES=n: only that size (for profiling).
    let only: Option<u64> = std::env::var("UAT_BENCH_PAGES")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut unmaps = Vec::new();
    for n in [1u64, 256, 65536] {
        if only.is_some_and(|o| o != n) {
            continue;
        }
        for warm in [true, false] {
            let (mut ours, mut peer) = (Ours::new(n, warm), Peer::new(n, warm));
            let (mut fl, mut checked) = (Floor::new(n), Checked::new(n));
            let mut sides: Vec<&mut dyn Side> = vec![&mut ours, &mut fl, &mut checked];
            if !ours_only {
                sides.push(&mut peer);
            }
            // In the order of `sides`; without the peer, its column repeats ours.
            let timed = compare(&mut sides);
            let (o, f, c) = (&timed[0], &timed[1], &timed[2]);
            let p = timed.get(3).unwrap_or(o);
            let tables = if warm { "warm" } else { "cold" };
            unmaps.push(CheckedRow {
                n,
                tables,
                ours: o.median(unmap),
                checked: c.median(unmap),
                ours_checked: o.ratio(c, unmap),
                checked_floor: c.ratio(f, unmap),
            });
            for (op, figure) in [("map", map as fn(&Costs) -> f64), ("unmap", unmap)] {
                println!(
                    "{:<6} {:>6} {:<6} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>9.2}",
                    op,
                    n,
                    tables,
                    o.median(figure),
                    p.median(figure),
                    f.median(figure),
                    o.ratio(f, figure),
                    p.ratio(o, figure)
                );
            }
        }
    }
    println!("warm: tables exist before the timed maps; cold: maps allocate (zeroed) tables.");
    println!("ours: 16 KiB granule, 2048-entry tables, 3 levels (root L1); map validates the whole range");
    println!(
        "  first (EEXIST/EIO; only the entries inside a leaf table's occupancy span are read)"
    );
    println!(
        "  and preallocates; unmap reads the part of its run inside a leaf table's span (EIO)"
    );
    println!("  unless it holds every page of the table: then the occupancy count gives the pages");
    println!("  and the table is unlinked unread; it frees every table it empties after the");
    println!("  gathered TLB flush (recording TLB), included.");
    println!("peer: aarch64-paging 0.12.3, 4 KiB granule (512-entry tables: 4x the tables of ours");
    println!("  for the same page count), root at L1 (3 levels, as ours), block mappings off,");
    println!("  inactive table (no TLB maintenance,");
    println!("  no BBM check), global allocator; unmap = map_range with invalid attributes (frees");
    println!(
        "  wholly covered subtables unread, reports no corruption) + compact_subtables once a"
    );
    println!("  batch. peer/ours > 1: we are faster.");
    println!("floor: a loop storing n precomputed descriptors (map) or zeroes (unmap).");
    println!();
    println!("unmap against the checked floor: per operation, the run read through the first test");
    println!("of our corruption check (the same code), then the zeroes of the floor stored; what");
    println!("checking a run before clearing it costs at the least (ns per page).");
    println!("checked+op: that, plus a single-page unmap of ours (an operation's fixed cost)");
    println!("spread over the run, for runs inside one leaf table (what the checked floor models)");
    println!(
        "{:>6} {:<6} {:>9} {:>9} {:>13} {:>14} {:>10}",
        "pages", "tables", "ours", "checked", "ours/checked", "checked/floor", "checked+op"
    );
    for row in &unmaps {
        let single = unmaps
            .iter()
            .find(|u| u.n == 1 && u.tables == row.tables)
            .map(|u| u.ours);
        let composed = match single {
            Some(op) if row.n > 1 && row.n < PTES_PER_TABLE as u64 => {
                format!("{:.2}", row.checked + op / row.n as f64)
            }
            _ => "-".to_string(),
        };
        println!(
            "{:>6} {:<6} {:>9.2} {:>9.2} {:>13.2} {:>14.2} {:>10}",
            row.n, row.tables, row.ours, row.checked, row.ours_checked, row.checked_floor, composed
        );
    }
    if !quick {
        replacing_bind();
        table_memory();
        bind_scaling();
    }
}

/// A VM_BIND of 256 pages over an existing mapping of the same range (GPUVM replace) against the
/// same bind over nothing, through the whole stack on the simulated SoC (the VM holds no slot:
/// no TLB maintenance either way; the tables exist), and how many walks of the range each makes.
fn replacing_bind() {
    use agx_soc::{firmware::FwKnobs, Soc};
    use asahi::gpuvm::{bind_flags::*, BindOp};
    const N: u64 = 256;
    const REPS: usize = 200;
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    let h = g.gem_create(2 * N * PG).unwrap();
    let addr = 0x10_0000_0000;
    let op = |offset| BindOp {
        flags: READ | WRITE,
        handle: h,
        offset,
        range: N * PG,
        addr,
    };
    let unbind = BindOp {
        flags: UNBIND,
        handle: 0,
        offset: 0,
        range: N * PG,
        addr,
    };
    // A page next to the range keeps its tables, so that both binds find them in place.
    g.bind(
        vm,
        &BindOp {
            range: PG,
            addr: addr + N * PG,
            ..op(0)
        },
    )
    .unwrap();
    let walks = |g: &agx_soc::SimGpuvm| g.uat().vm_table(vm).unwrap().walks();
    let mut plain = Vec::new();
    let mut replace = Vec::new();
    let mut plain_walks = 0;
    let mut replace_walks = 0;
    for _ in 0..ROUNDS {
        let mut tp = 0;
        let mut tr = 0;
        for r in 0..REPS {
            let w = walks(&g);
            let t = Instant::now();
            g.bind(vm, &op(0)).unwrap();
            tp += t.elapsed().as_nanos();
            plain_walks = walks(&g) - w;
            let w = walks(&g);
            let t = Instant::now();
            g.bind(vm, &op((r as u64 % 2) * N * PG)).unwrap();
            tr += t.elapsed().as_nanos();
            replace_walks = walks(&g) - w;
            g.bind(vm, &unbind).unwrap();
        }
        plain.push(tp as f64 / REPS as f64);
        replace.push(tr as f64 / REPS as f64);
    }
    let (p, r) = (median(plain), median(replace));
    println!();
    println!("VM_BIND of {N} pages (ns per bind, median of {ROUNDS} rounds of {REPS})");
    println!("{:<28} {:>9} {:>6} {:>7}", "bind", "ns", "walks", "÷ plain");
    println!(
        "{:<28} {:>9.0} {:>6} {:>7.2}",
        "plain (over nothing)", p, plain_walks, 1.0
    );
    println!(
        "{:<28} {:>9.0} {:>6} {:>7.2}",
        "replacing (over a mapping)",
        r,
        replace_walks,
        r / p
    );
}

/// Page-table pages of a 65536-page mapping, counted by the page allocator.
fn table_memory() {
    const N: u64 = 65536;
    let before = sim::page_stats().live;
    let mut pt = PageTable::new(cfg()).unwrap();
    let root = sim::page_stats().live - before;
    pt.map(BASE, PA, N * PG, Prot::GPU_SHARED_RW).unwrap();
    let mapped = sim::page_stats().live - before;
    let tables = pt.table_pages();
    let mut gather = Gather::new();
    pt.unmap(BASE, N * PG, &mut gather).unwrap();
    gather.flush(&RecordingTlb::default(), 1);
    let unmapped = sim::page_stats().live - before;
    println!();
    println!(
        "page-table pages (16 KiB) for {N} pages mapped at {BASE:#x}, counted by the allocator:"
    );
    println!("  empty: {root} (the root)");
    println!("  mapped: {mapped} (root + {tables} leaf/mid tables)");
    println!("  after the full unmap: {unmapped}");
    println!("  peer for the same page count (4 KiB tables): 128 leaf + 1 mid + root (+1 L1)");
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
