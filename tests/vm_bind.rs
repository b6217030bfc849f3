// SPDX-License-Identifier: GPL-2.0

//! VM_BIND semantics on the simulated SoC: random bind / unbind sequences checked against a
//! page-level model of each VM and a model of memory contents, through GPU reads and writes;
//! every field of a bind fuzzed (no panic, and no change on error); allocation failure at every
//! point of a bind; buffers that outlive their handles; huge imported scatter lists.

use agx_soc::engine::VaMapping;
use agx_soc::firmware::FwKnobs;
use agx_soc::gpu::Fault;
use agx_soc::{SimGpuvm, Soc};
use asahi::gpuvm::{bind_flags::*, gem_flags, BindOp, Handle};
use asahi::pgtable::{Mapping, PhysRange};
use asahi::pte::Prot;
use asahi::tlbi::Tlbi;
use asahi::uat::{kernel_va, user_va};
use kernel::error::code::*;
use kernel::sim;
use proptest::prelude::*;
use std::collections::BTreeMap;
use uat_tests::config::config_scaled;
use uat_tests::leak::LeakCheck;

const PG: u64 = 1 << 14;

fn gpu_read(soc: &Soc, slot: usize, va: u64) -> Result<u64, Fault> {
    let mut b = [0u8; 8];
    soc.gpu.read(slot, va, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn tag_object(g: &SimGpuvm, h: Handle, base: u64) {
    let obj = g.gem(h).unwrap();
    for p in 0..obj.size() / PG {
        sim::write_phys(obj.phys_at(p * PG).unwrap(), &(base + p).to_le_bytes()).unwrap();
    }
}

/// Everything a failed operation must leave as it was.
#[derive(Debug, PartialEq)]
struct State {
    mappings: Vec<VaMapping>,
    ptes: Vec<Mapping>,
    tables: usize,
    objects: usize,
}

fn state(g: &SimGpuvm, vm: u64) -> State {
    let pt = g.uat().vm_table(vm).unwrap();
    // The occupancies (counts and spans), against a full scan of every leaf table.
    pt.check_occupancy().expect("occupancies");
    let mut ptes = Vec::new();
    pt.for_each_mapping_all(|m| ptes.push(*m)).unwrap();
    State {
        mappings: g.mappings(vm).unwrap().to_vec(),
        ptes,
        tables: pt.table_pages(),
        objects: g.live_objects(),
    }
}

/// What the GPU's walker reaches at every page of `mappings`, for a read and for a write, with its
/// TLB emptied first, so that the walk reads the tables as they are.
type GpuView = Vec<(u64, Result<u64, Fault>, Result<u64, Fault>)>;

fn gpu_view(soc: &Soc, slot: usize, mappings: &[VaMapping]) -> GpuView {
    soc.gpu.tlbi(Tlbi::All);
    mappings
        .iter()
        .flat_map(|m| (0..m.range / PG).map(move |i| m.va + i * PG))
        .map(|va| {
            let read = soc.gpu.translate(slot, va, false);
            (va, read, soc.gpu.translate(slot, va, true))
        })
        .collect()
}

#[test]
fn bind_replace_split_and_pinning() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    let a = g.gem_create(8 * PG).unwrap();
    let b = g.gem_create(2 * PG).unwrap();
    tag_object(&g, a, 100);
    tag_object(&g, b, 200);
    let slot = g.submit(vm).unwrap();
    let base = 0x100_0000;
    let bind = |flags, handle, offset, range, addr| BindOp {
        flags,
        handle,
        offset,
        range,
        addr,
    };
    g.bind(vm, &bind(READ | WRITE, a, 0, 8 * PG, base)).unwrap();
    // Replace the middle two pages with b: a is split around it.
    g.bind(vm, &bind(READ, b, 0, 2 * PG, base + 3 * PG))
        .unwrap();
    let m = g.mappings(vm).unwrap();
    assert_eq!(m.len(), 3, "{m:#?}");
    assert_eq!((m[0].va, m[0].range, m[0].offset), (base, 3 * PG, 0));
    assert_eq!((m[1].va, m[1].handle), (base + 3 * PG, b));
    assert_eq!(
        (m[2].va, m[2].range, m[2].offset),
        (base + 5 * PG, 3 * PG, 5 * PG)
    );
    let tags: Vec<u64> = (0..8)
        .map(|i| gpu_read(&soc, slot, base + i * PG).unwrap())
        .collect();
    assert_eq!(tags, [100, 101, 102, 200, 201, 105, 106, 107]);
    assert!(matches!(
        soc.gpu.write(slot, base + 3 * PG, &[1]),
        Err(Fault::Permission { .. })
    ));
    // Unbind a hole through the first piece: split again.
    g.bind(vm, &bind(UNBIND, 0, 0, PG, base + PG)).unwrap();
    assert_eq!(g.mappings(vm).unwrap().len(), 4);
    assert!(matches!(
        gpu_read(&soc, slot, base + PG),
        Err(Fault::Unmapped { .. })
    ));
    // Closing b's handle unmaps b from the client's VMs (Mesa frees a buffer with GEM_CLOSE
    // alone), TLB included (the read below hit it before), and frees it with its last mapping;
    // a's mappings stay.
    g.gem_close(b).unwrap();
    assert_eq!(g.gem_close(b), Err(EINVAL), "as drm_gem_handle_delete()");
    let m = g.mappings(vm).unwrap();
    assert!(m.iter().all(|m| m.handle == a), "{m:#?}");
    assert_eq!(m.len(), 3);
    for i in 3..5 {
        assert!(matches!(
            gpu_read(&soc, slot, base + i * PG),
            Err(Fault::Unmapped { .. })
        ));
    }
    assert_eq!(g.live_objects(), 1);
    assert_eq!(gpu_read(&soc, slot, base + 7 * PG), Ok(107));
    // A closed handle cannot be bound again.
    assert_eq!(g.bind(vm, &bind(READ, b, 0, PG, base + PG)), Err(ENOENT));
    // The dummy page is at the start of the kernel range (Mesa's: the top 32 GiB), read-only,
    // and nothing can be bound over any of the kernel range.
    let kernel = g.kernel_range(vm).unwrap();
    assert_eq!(
        (kernel.start, kernel.last),
        ((1 << 39) - (32 << 30), (1 << 39) - 1)
    );
    let dummy = kernel.start;
    assert_eq!(gpu_read(&soc, slot, dummy), Ok(0));
    assert!(matches!(
        soc.gpu.write(slot, dummy, &[1]),
        Err(Fault::Permission { .. })
    ));
    assert!(matches!(
        gpu_read(&soc, slot, dummy + PG),
        Err(Fault::Unmapped { .. })
    ));
    let c = g.gem_create(PG).unwrap();
    for addr in [dummy, dummy + PG, kernel.last + 1 - PG] {
        assert_eq!(g.bind(vm, &bind(READ, c, 0, PG, addr)), Err(EINVAL));
        assert_eq!(g.bind(vm, &bind(UNBIND, 0, 0, PG, addr)), Err(EINVAL));
    }
    assert_eq!(g.bind(vm, &bind(READ, c, 0, PG, dummy - PG)), Ok(()));
    assert_eq!(
        g.bind(vm, &bind(UNBIND, 0, 0, 2 * PG, dummy - PG)),
        Err(EINVAL)
    );
    // Destroyed with work in flight: the ID is gone at once, the VM (its mappings, the pages
    // its buffers pin) stays until the work completes.
    g.vm_destroy(vm).unwrap();
    assert_eq!(g.vm_destroy(vm), Err(ENOENT));
    assert_eq!(g.bind(vm, &bind(READ, c, 0, PG, base)), Err(ENOENT));
    assert_eq!(g.submit(vm), Err(ENOENT));
    assert_eq!(g.kernel_range(vm), Err(ENOENT));
    // Closing a now leaves its mappings: the VM is no longer the client's.
    g.gem_close(a).unwrap();
    assert_eq!(g.live_objects(), 2, "a stays pinned by the destroyed VM");
    assert_eq!(gpu_read(&soc, slot, base + 7 * PG), Ok(107));
    g.complete(vm).unwrap();
    assert_eq!(g.complete(vm), Err(ENOENT), "the VM is gone");
    assert!(g.mappings(vm).is_err());
    assert_eq!(g.vm_ids().count(), 0);
    assert_eq!(g.live_objects(), 1, "only the open handle c is left");
    drop(g);
    drop(soc);
    leak.assert_clean();
}

#[test]
fn single_page_binds_repeat_one_page() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    let a = g.gem_create(4 * PG).unwrap();
    tag_object(&g, a, 300);
    let slot = g.submit(vm).unwrap();
    let op = BindOp {
        flags: READ | SINGLE_PAGE,
        handle: a,
        offset: 2 * PG,
        range: 1 << 30,
        addr: 1 << 32,
    };
    g.bind(vm, &op).unwrap();
    for off in [0, PG, 12345 * PG, (1 << 30) - PG] {
        assert_eq!(gpu_read(&soc, slot, (1 << 32) + off), Ok(302));
    }
    // Single-page: only that page must be inside the object.
    let bad = BindOp {
        offset: 4 * PG,
        ..op
    };
    assert_eq!(g.bind(vm, &bad), Err(EINVAL));
    // Splitting a single-page mapping keeps the page.
    g.bind(
        vm,
        &BindOp {
            flags: UNBIND,
            handle: 0,
            offset: 0,
            range: PG,
            addr: (1 << 32) + 5 * PG,
        },
    )
    .unwrap();
    let m = g.mappings(vm).unwrap();
    assert_eq!(m.len(), 2);
    assert!(m.iter().all(|m| m.single_page && m.offset == 2 * PG));
    g.complete(vm).unwrap();
    drop(g);
    drop(soc);
    leak.assert_clean();
}

/// Binding the last page of a 4 GiB imported buffer of 262144 single-page entries: the entry is
/// found by binary search, and the mapping is right at the start, the end and across entries.
#[test]
fn huge_scatter_lists() {
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    let n = 262_144u64;
    // Entries two pages apart, so none merge (never accessed, only mapped).
    let sg: Vec<PhysRange> = (0..n)
        .map(|i| PhysRange {
            addr: 0x80_0000_0000 + 2 * i * PG,
            len: PG,
        })
        .collect();
    let h = g.gem_import(&sg).unwrap();
    assert_eq!(g.gem(h).unwrap().size(), 4 << 30);
    let bind = |offset, range, addr| BindOp {
        flags: READ,
        handle: h,
        offset,
        range,
        addr,
    };
    g.bind(vm, &bind((n - 1) * PG, PG, 0x4000)).unwrap();
    g.bind(vm, &bind(0, PG, 0x8000)).unwrap();
    g.bind(vm, &bind(1000 * PG, 3 * PG, 0x10000)).unwrap();
    let pt = g.uat().vm_table(vm).unwrap();
    assert_eq!(pt.translate(0x4000).unwrap().pa, sg[(n - 1) as usize].addr);
    assert_eq!(pt.translate(0x8000).unwrap().pa, sg[0].addr);
    for i in 0..3 {
        assert_eq!(
            pt.translate(0x10000 + i * PG).unwrap().pa,
            sg[1000 + i as usize].addr
        );
    }
    // One page past the end.
    assert_eq!(g.bind(vm, &bind(n * PG - PG, 2 * PG, 0x20000)), Err(EINVAL));
    // Beyond the OAS: refused at import.
    assert_eq!(
        g.gem_import(&[PhysRange {
            addr: 1 << 40,
            len: PG
        }]),
        Err(ERANGE)
    );
}

#[test]
fn firmware_objects_with_guard_pages() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let a = g.fw_alloc(2 * PG, Prot::GPUFW_SHARED_RW, true).unwrap();
    let b = g.fw_alloc(PG, Prot::FW_PRIV_RW, false).unwrap();
    let kva = kernel_va(soc.geometry).start;
    assert_eq!(a.va, kva + PG);
    assert_eq!(b.va, kva + 4 * PG, "after a's guard page");
    let pa = g.fw_object(&a).unwrap().phys_at(PG).unwrap();
    sim::write_phys(pa, &77u64.to_le_bytes()).unwrap();
    assert_eq!(gpu_read(&soc, 0, a.va + PG), Ok(77));
    for guard in [a.va - PG, a.va + 2 * PG] {
        assert!(matches!(
            gpu_read(&soc, 0, guard),
            Err(Fault::Unmapped { .. })
        ));
    }
    // b is firmware-private and cached: freeing it flushes the firmware's caches.
    g.fw_free(b).unwrap();
    assert_eq!(soc.fw.log().flushes.len(), 1);
    g.fw_free(a).unwrap();
    assert_eq!(soc.fw.log().flushes.len(), 1, "uncached needs no flush");
    assert_eq!(g.live_objects(), 0);
    let c = g.fw_alloc(PG, Prot::GPUFW_SHARED_RW, false).unwrap();
    assert_eq!(c.va, kva, "the VA is reused");
    g.fw_free(c).unwrap();
    drop(g);
    drop(soc);
    leak.assert_clean();
}

// ---- Random sequences against the model ----

const OBJS: usize = 5;
const WINDOW: u64 = 80;
/// Straddles a leaf-table boundary.
const BASE: u64 = (1 << 25) - 40 * PG;

#[derive(Clone, Debug)]
enum Op {
    Bind {
        obj: usize,
        off: u64,
        n: u64,
        at: u64,
        write: bool,
        single: bool,
    },
    Unbind {
        at: u64,
        n: u64,
    },
    Close {
        obj: usize,
    },
    Write {
        at: u64,
        value: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..OBJS, 0..10u64, 1..12u64, 0..WINDOW, any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(obj, off, n, at, write, single)| Op::Bind { obj, off, n, at, write, single }),
        2 => (0..WINDOW, 1..20u64).prop_map(|(at, n)| Op::Unbind { at, n }),
        1 => (0..OBJS).prop_map(|obj| Op::Close { obj }),
        2 => (0..WINDOW, any::<u64>()).prop_map(|(at, value)| Op::Write { at, value }),
    ]
}

/// A region of the reserved-memory pool, given back when dropped: declared before the engine,
/// it goes after it, also when a case fails half-way.
struct Carve(u64, u64);

impl Carve {
    fn new(size: u64) -> Carve {
        Carve(sim::reserve_region(size).unwrap(), size)
    }
}

impl Drop for Carve {
    fn drop(&mut self) {
        // SAFETY: Dropped after the engine that imported it: nothing maps the region any more.
        unsafe { sim::unreserve_region(self.0, self.1) };
    }
}

fn sequence(ops: &[Op]) -> Result<(), TestCaseError> {
    let leak = LeakCheck::start();
    let carve = Carve::new(16 * PG);
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    let slot = g.submit(vm).unwrap();
    let sizes = [1u64, 3, 8, 16, 11];
    let mut handles: Vec<Handle> = sizes[..4]
        .iter()
        .map(|&s| g.gem_create(s * PG).unwrap())
        .collect();
    // And an imported buffer whose entries span several pages, out of physical order: binds at
    // offsets inside an entry map from the middle of it.
    let entries = [(8, 4), (0, 3), (13, 3), (5, 1)];
    let import: Vec<PhysRange> = entries
        .iter()
        .map(|&(first, n)| PhysRange {
            addr: carve.0 + first * PG,
            len: n * PG,
        })
        .collect();
    handles.push(g.gem_import(&import).unwrap());
    assert_eq!(g.gem(handles[4]).unwrap().sg().len(), entries.len());
    let mut open = [true; OBJS];
    // Memory model: (object, page) -> first word. Objects start tagged.
    let mut mem: BTreeMap<(usize, u64), u64> = BTreeMap::new();
    for (o, &h) in handles.iter().enumerate() {
        tag_object(&g, h, 1000 * (o as u64 + 1));
        for p in 0..sizes[o] {
            mem.insert((o, p), 1000 * (o as u64 + 1) + p);
        }
    }
    // VA model: window page -> (object, page, writable).
    let mut va: BTreeMap<u64, (usize, u64, bool)> = BTreeMap::new();
    for op in ops {
        match *op {
            Op::Bind {
                obj,
                off,
                n,
                at,
                write,
                single,
            } => {
                let n = n.min(WINDOW - at);
                let mut flags = READ | if write { WRITE } else { 0 };
                if single {
                    flags |= SINGLE_PAGE;
                }
                let got = g.bind(
                    vm,
                    &BindOp {
                        flags,
                        handle: handles[obj],
                        offset: off * PG,
                        range: n * PG,
                        addr: BASE + at * PG,
                    },
                );
                let fits = if single {
                    off < sizes[obj]
                } else {
                    off + n <= sizes[obj]
                };
                if !open[obj] {
                    prop_assert_eq!(got, Err(ENOENT));
                } else if !fits {
                    prop_assert_eq!(got, Err(EINVAL));
                } else {
                    prop_assert_eq!(got, Ok(()));
                    for i in 0..n {
                        let page = if single { off } else { off + i };
                        va.insert(at + i, (obj, page, write));
                    }
                }
            }
            Op::Unbind { at, n } => {
                let n = n.min(WINDOW - at);
                let got = g.bind(
                    vm,
                    &BindOp {
                        flags: UNBIND,
                        handle: 0,
                        offset: 0,
                        range: n * PG,
                        addr: BASE + at * PG,
                    },
                );
                prop_assert_eq!(got, Ok(()));
                for i in 0..n {
                    va.remove(&(at + i));
                }
            }
            Op::Close { obj } => {
                let got = g.gem_close(handles[obj]);
                prop_assert_eq!(got.is_ok(), open[obj]);
                if open[obj] {
                    // Closing the handle unmaps the buffer from the client's VMs.
                    va.retain(|_, &mut (o, ..)| o != obj);
                }
                open[obj] = false;
            }
            Op::Write { at, value } => {
                let got = soc.gpu.write(slot, BASE + at * PG, &value.to_le_bytes());
                match va.get(&at) {
                    Some(&(o, p, true)) => {
                        prop_assert!(got.is_ok());
                        mem.insert((o, p), value);
                    }
                    Some(_) => {
                        prop_assert!(matches!(got, Err(Fault::Permission { .. })), "{:?}", got)
                    }
                    None => prop_assert!(matches!(got, Err(Fault::Unmapped { .. })), "{:?}", got),
                }
            }
        }
        // Every page of the window, through the GPU.
        for p in 0..WINDOW {
            let got = gpu_read(&soc, slot, BASE + p * PG);
            match va.get(&p) {
                Some(&(o, page, _)) => prop_assert_eq!(got, Ok(mem[&(o, page)]), "page {}", p),
                None => prop_assert!(
                    matches!(got, Err(Fault::Unmapped { .. })),
                    "page {}: {:?}",
                    p,
                    got
                ),
            }
        }
        // The mapping list says the same as the model, page by page.
        let mut listed = BTreeMap::new();
        for m in g.mappings(vm).unwrap() {
            let o = handles.iter().position(|&h| h == m.handle).unwrap();
            for i in 0..m.range / PG {
                let page = if m.single_page {
                    m.offset / PG
                } else {
                    m.offset / PG + i
                };
                listed.insert(
                    (m.va - BASE) / PG + i,
                    (o, page, m.prot == Prot::GPU_SHARED_RW),
                );
            }
        }
        prop_assert_eq!(&listed, &va);
        // The page table's occupancies, against a full scan of every leaf table.
        prop_assert_eq!(g.uat().vm_table(vm).unwrap().check_occupancy(), Ok(()));
        // Buffers live: open ones and mapped ones.
        let mapped: std::collections::BTreeSet<usize> = va.values().map(|v| v.0).collect();
        let live = (0..OBJS)
            .filter(|&o| open[o] || mapped.contains(&o))
            .count();
        prop_assert_eq!(g.live_objects(), live);
    }
    g.complete(vm).unwrap();
    g.vm_destroy(vm).unwrap();
    drop(g);
    // Every invalidation came after a store barrier (the cleared descriptors visible first).
    prop_assert_eq!(soc.gpu.stats().unordered_tlbi, 0);
    drop(soc);
    prop_assert_eq!(leak.live_since(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(config_scaled(2, 16))]

    #[test]
    fn bind_sequences_match_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        sequence(&ops)?;
    }
}

// ---- Fuzzed fields ----

fn field_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0..64u64).prop_map(|p| p * PG),
        (0..64u64).prop_map(|p| p * PG + 0x100),
        Just(u64::MAX - PG + 1),
        Just(1u64 << 39),
        Just((1u64 << 39) - 2 * PG),
        Just((1u64 << 39) - (32 << 30)),
        Just((1u64 << 39) - (32 << 30) - PG),
        Just(32u64 << 30),
        Just(0),
    ]
}

/// The spec, written independently of the driver (the render node's rules, in its order):
/// `Ok` or the errno of this bind in a VM with Mesa's kernel range. The VA window is
/// `[0x4000, 2^39)`; the kernel range its top 32 GiB; flags UNBIND 1, READ 2, WRITE 4,
/// SINGLE_PAGE 8.
fn expected(op: &BindOp, handles: &[(Handle, u64)]) -> Result<(), kernel::error::Error> {
    const WINDOW: (u64, u64) = (0x4000, 1 << 39);
    const KERNEL: (u64, u64) = ((1 << 39) - (32 << 30), 1 << 39);
    if op.flags & !0xf != 0 {
        return Err(EINVAL);
    }
    let Some(end) = op.addr.checked_add(op.range) else {
        return Err(EINVAL);
    };
    let va_ok = (op.addr | end).is_multiple_of(PG)
        && op.addr < end
        && op.addr >= WINDOW.0
        && end <= WINDOW.1
        && (end <= KERNEL.0 || op.addr >= KERNEL.1);
    if op.flags & UNBIND != 0 {
        let ok = op.flags == UNBIND && op.handle == 0 && op.offset == 0 && va_ok;
        return if ok { Ok(()) } else { Err(EINVAL) };
    }
    if op.flags & (READ | WRITE) == 0 {
        return Err(EINVAL);
    }
    let Some(&(_, size)) = handles.iter().find(|(h, _)| *h == op.handle) else {
        return Err(ENOENT);
    };
    let need = if op.flags & SINGLE_PAGE != 0 {
        PG
    } else {
        op.range
    };
    let in_obj =
        op.offset.is_multiple_of(PG) && op.offset.checked_add(need).is_some_and(|e| e <= size);
    if va_ok && in_obj {
        Ok(())
    } else {
        Err(EINVAL)
    }
}

/// A SoC, its VM_BIND layer, a VM with one mapping, and the buffers with their sizes.
type Fixture = (Soc, SimGpuvm, u64, Vec<(Handle, u64)>);

proptest! {
    #![proptest_config(config_scaled(1, 64))]

    #[test]
    fn fuzzed_binds_validate_and_change_nothing_on_error(
        flags in prop_oneof![any::<u32>(), 0..16u32],
        handle in 0u32..5,
        offset in field_u64(),
        range in field_u64(),
        addr in field_u64(),
    ) {
        thread_local! {
            static FIXTURE: std::cell::RefCell<Option<Fixture>> =
                const { std::cell::RefCell::new(None) };
        }
        FIXTURE.with(|f| {
            let mut f = f.borrow_mut();
            let (_, g, vm, handles) = f.get_or_insert_with(|| {
                let soc = Soc::new(FwKnobs::default());
                let mut g = soc.boot_gpuvm().unwrap();
                let vm = g.vm_create().unwrap();
                let handles = vec![
                    (g.gem_create(4 * PG).unwrap(), 4 * PG),
                    (g.gem_create(64 * PG).unwrap(), 64 * PG),
                ];
                g.bind(vm, &BindOp { flags: READ, handle: handles[1].0, offset: 0, range: 64 * PG, addr: 0 }).unwrap_err();
                g.bind(vm, &BindOp { flags: READ, handle: handles[1].0, offset: 0, range: 64 * PG, addr: 16 * PG }).unwrap();
                (soc, g, vm, handles)
            });
            let op = BindOp { flags, handle, offset, range, addr };
            let before = state(g, *vm);
            let got = g.bind(*vm, &op);
            prop_assert_eq!(got, expected(&op, handles), "{:x?}", op);
            if got.is_err() {
                prop_assert_eq!(state(g, *vm), before);
            } else {
                // Put the fixture back as it was for the next case.
                let undo = BindOp { flags: UNBIND, handle: 0, offset: 0, range: op.range, addr: op.addr };
                g.bind(*vm, &undo).unwrap();
                let redo = BindOp { flags: READ, handle: handles[1].0, offset: 0, range: 64 * PG, addr: 16 * PG };
                g.bind(*vm, &redo).unwrap();
            }
            Ok(())
        })?;
    }
}

// ---- Allocation failure at every point of a bind ----

#[test]
fn enomem_at_every_allocation_of_a_bind_changes_nothing() {
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    let slot = g.submit(vm).unwrap();
    let a = g.gem_create(8 * PG).unwrap();
    let b = g.gem_create(4 * PG).unwrap();
    // Existing mappings to replace and split: one in a leaf table the new bind also needs,
    // and new tables needed in another L1 entry.
    g.bind(
        vm,
        &BindOp {
            flags: READ,
            handle: a,
            offset: 0,
            range: 8 * PG,
            addr: 0x100_0000,
        },
    )
    .unwrap();
    // A mapping that ends at a leaf-table boundary, with no table after it.
    g.bind(
        vm,
        &BindOp {
            flags: READ,
            handle: a,
            offset: 0,
            range: 4 * PG,
            addr: (1 << 25) - 4 * PG,
        },
    )
    .unwrap();
    let ops = [
        // Replaces two pages and needs the next leaf table: the table must come first.
        BindOp {
            flags: READ,
            handle: b,
            offset: 0,
            range: 4 * PG,
            addr: (1 << 25) - 2 * PG,
        },
        BindOp {
            flags: READ | WRITE,
            handle: b,
            offset: 0,
            range: 4 * PG,
            addr: 0x100_0000 + 2 * PG,
        },
        BindOp {
            flags: READ,
            handle: b,
            offset: 0,
            range: 4 * PG,
            addr: (5 << 36) + 0x4000,
        },
        BindOp {
            flags: READ,
            handle: a,
            offset: 0,
            range: 8 * PG,
            addr: 0x100_0000 + 6 * PG,
        },
        // Three new tables: an L2 table and the two leaf tables the range straddles.
        BindOp {
            flags: READ,
            handle: a,
            offset: 0,
            range: 4 * PG,
            addr: (6 << 36) + (1 << 25) - 2 * PG,
        },
        BindOp {
            flags: UNBIND,
            handle: 0,
            offset: 0,
            range: 2 * PG,
            addr: 0x100_0000 + 3 * PG,
        },
    ];
    let mut failures = 0;
    for op in &ops {
        for k in 0.. {
            let before = state(&g, vm);
            let seen = gpu_view(&soc, slot, &before.mappings);
            let live = sim::page_stats().live;
            let attempts = sim::alloc_attempts();
            sim::fail_nth_alloc(k);
            let got = g.bind(vm, op);
            let made = sim::alloc_attempts() - attempts;
            sim::clear_faults();
            if made > k {
                assert_eq!(got, Err(ENOMEM), "{op:?} with allocation {k} failing");
                assert_eq!(state(&g, vm), before);
                assert_eq!(sim::page_stats().live, live, "leak");
                // What the GPU reaches is unchanged too, page by page.
                assert_eq!(gpu_view(&soc, slot, &before.mappings), seen);
                failures += 1;
            } else {
                assert_eq!(got, Ok(()), "{op:?}");
                break;
            }
        }
    }
    assert!(failures >= 5, "only {failures} allocation points");
    g.complete(vm).unwrap();
}

#[test]
fn user_va_limits() {
    let g = asahi::geometry::Geometry::G13;
    assert_eq!(user_va(g).start, 0x4000);
    assert_eq!(user_va(g).last, (1 << 39) - 1);
    assert_eq!(
        asahi::gpuvm::default_kernel_range(g),
        (1 << 39) - (32 << 30)..1 << 39
    );
}

/// VM_CREATE's rules, stated independently: the kernel range is page aligned, inside
/// `[0x4000, 2^39)` and at least 1 GiB, else `EINVAL`; the dummy page goes at its start.
#[test]
fn vm_create_kernel_ranges() {
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    const GIB: u64 = 1 << 30;
    const END: u64 = 1 << 39;
    for (start, end) in [
        (0, GIB),
        (0x4000, GIB),
        (0x4000 + 0x100, GIB + 0x4000),
        (0x4000, GIB + 0x4000 + 1),
        (END - GIB + PG, END),
        (END - GIB, END + PG),
        (END, END + GIB),
        (GIB, 0),
        (u64::MAX - PG + 1, u64::MAX - PG + 1),
    ] {
        let ok = start.is_multiple_of(PG)
            && end.is_multiple_of(PG)
            && start >= 0x4000
            && end <= END
            && end.saturating_sub(start) >= GIB;
        let got = g.vm_create_in(start, end);
        assert_eq!(got.is_ok(), ok, "{start:#x}..{end:#x}: {got:?}");
        if !ok {
            assert_eq!(got, Err(EINVAL));
        }
    }
    // A kernel range at the bottom: the dummy page at 0x4000, binds below 1 GiB + 0x4000
    // refused, above it accepted.
    let vm = g.vm_create_in(0x4000, GIB + 0x4000).unwrap();
    let a = g.gem_create(PG).unwrap();
    let slot = g.submit(vm).unwrap();
    assert_eq!(gpu_read(&soc, slot, 0x4000), Ok(0));
    let at = |addr| BindOp {
        flags: READ,
        handle: a,
        offset: 0,
        range: PG,
        addr,
    };
    assert_eq!(g.bind(vm, &at(GIB)), Err(EINVAL));
    assert_eq!(g.bind(vm, &at(GIB + 0x4000)), Ok(()));
    assert_eq!(
        g.bind(vm, &at(END - PG)),
        Ok(()),
        "the top is userspace's here"
    );
    g.complete(vm).unwrap();
}

/// GEM_CREATE's rules, stated independently: size non-zero and page aligned, flags within
/// WRITEBACK 1 | VM_PRIVATE 2, a VM only with VM_PRIVATE (all `EINVAL`), then the VM must exist
/// (`ENOENT`).
#[test]
fn gem_create_flags_and_private_buffers() {
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    let (wb, private) = (gem_flags::WRITEBACK, gem_flags::VM_PRIVATE);
    assert_eq!(wb | private, 3);
    assert_eq!(g.gem_create_flags(0, 0, 0), Err(EINVAL));
    assert_eq!(g.gem_create_flags(PG + 1, 0, 0), Err(EINVAL));
    assert_eq!(g.gem_create_flags(PG, 4, 0), Err(EINVAL));
    assert_eq!(g.gem_create_flags(PG, wb, vm), Err(EINVAL));
    assert_eq!(g.gem_create_flags(PG, 0, vm + 1), Err(EINVAL));
    assert_eq!(g.gem_create_flags(PG, private, 0), Err(ENOENT));
    assert_eq!(g.gem_create_flags(PG, private, vm + 1), Err(ENOENT));
    assert_eq!(
        g.gem_create_flags(PG + 1, private, vm + 1),
        Err(EINVAL),
        "EINVAL first"
    );
    assert_eq!(g.live_objects(), 0);
    let h = g.gem_create_flags(2 * PG, wb | private, vm).unwrap();
    let shared = g.gem_create_flags(PG, wb, 0).unwrap();
    let op = BindOp {
        flags: READ | WRITE,
        handle: h,
        offset: 0,
        range: 2 * PG,
        addr: 0x100_0000,
    };
    g.bind(vm, &op).unwrap();
    // A VM-private buffer maps in its own VM only.
    let other = g.vm_create().unwrap();
    assert_eq!(
        g.bind(other, &op),
        Err(EINVAL),
        "another VM's private buffer"
    );
    let shared_op = BindOp {
        handle: shared,
        range: PG,
        ..op
    };
    assert_eq!(
        g.bind(other, &shared_op),
        Ok(()),
        "a shared one maps anywhere"
    );
    g.vm_destroy(vm).unwrap();
    assert_eq!(
        g.gem_create_flags(PG, private, vm),
        Err(ENOENT),
        "destroyed"
    );
    let again = g.vm_create().unwrap();
    assert_eq!(
        g.bind(again, &op),
        Err(EINVAL),
        "its VM destroyed, it maps nowhere"
    );
    assert_eq!(g.live_objects(), 2);
}

/// Several operations in one VM_BIND: all validated before any is applied (a malformed one
/// anywhere changes nothing), then applied in order (a later one sees an earlier one's result).
#[test]
fn multi_op_binds() {
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    let a = g.gem_create(4 * PG).unwrap();
    tag_object(&g, a, 500);
    let slot = g.submit(vm).unwrap();
    let base = 0x200_0000;
    let op = |flags, handle, offset, range, addr| BindOp {
        flags,
        handle,
        offset,
        range,
        addr,
    };
    let good = [
        op(READ, a, 0, 4 * PG, base),
        op(UNBIND, 0, 0, PG, base + PG),
        op(READ | WRITE, a, 3 * PG, PG, base + 2 * PG),
    ];
    let before = state(&g, vm);
    for bad in [
        op(READ, a, 0, PG, (1 << 39) - PG),
        op(READ, 99, 0, PG, base),
        op(READ, a, 0, 5 * PG, base),
        op(UNBIND, a, 0, PG, base),
    ] {
        for at in 0..=good.len() {
            let mut ops = good.to_vec();
            ops.insert(at, bad);
            assert!(g.bind_ops(vm, &ops).is_err(), "{bad:?} at {at}");
            assert_eq!(state(&g, vm), before, "{bad:?} at {at}");
        }
    }
    assert_eq!(g.bind_ops(vm + 1, &good), Err(ENOENT));
    assert_eq!(g.bind_ops(vm, &[]), Ok(()));
    g.bind_ops(vm, &good).unwrap();
    let tags: Vec<_> = (0..4)
        .map(|i| gpu_read(&soc, slot, base + i * PG).ok())
        .collect();
    assert_eq!(tags, [Some(500), None, Some(503), Some(503)]);
    assert_eq!(g.mappings(vm).unwrap().len(), 3);
    g.complete(vm).unwrap();
}

/// The multi-op VM_BIND of the two tests below, of buffer `a`: the mappings the VM has first,
/// and the ops. Each map under a top-level entry of its own allocates tables; the one at
/// `x + 4 PG` needs the tables the unbind of `x` empties. The two unbinds at `y` empty two leaf
/// tables and their second-level table for good: the first covers `y`'s whole leaf table, the
/// second starts where it ends, so the pruning at the end of the bind merges their ranges. All
/// three unbinds come before a map, so the bind keeps their tables until its end.
fn multi_op_case(a: Handle) -> ([BindOp; 3], [BindOp; 6]) {
    let map = |addr| BindOp {
        flags: READ,
        handle: a,
        offset: 0,
        range: 2 * PG,
        addr,
    };
    let unbind = |addr, range| BindOp {
        flags: UNBIND,
        handle: 0,
        offset: 0,
        range,
        addr,
    };
    const LEAF_SPAN: u64 = 1 << 25;
    let (x, y) = (1u64 << 36, 5u64 << 36);
    let ops = [
        unbind(x, 2 * PG),
        map(2 << 36),
        unbind(y, LEAF_SPAN),
        unbind(y + LEAF_SPAN, 2 * PG),
        map(3 << 36),
        map(x + 4 * PG),
    ];
    ([map(x), map(y), map(y + LEAF_SPAN)], ops)
}

/// A fresh VM with the mappings `setup`.
fn fresh_vm(g: &mut SimGpuvm, setup: &[BindOp]) -> u64 {
    let vm = g.vm_create().unwrap();
    g.bind_ops(vm, setup).unwrap();
    vm
}

/// The VM after each prefix of `ops` (from none to all), applied one VM_BIND each to a fresh VM
/// with the mappings `setup`.
fn prefix_states(g: &mut SimGpuvm, setup: &[BindOp], ops: &[BindOp]) -> Vec<State> {
    (0..=ops.len())
        .map(|k| {
            let vm = fresh_vm(g, setup);
            for o in &ops[..k] {
                g.bind(vm, o).unwrap();
            }
            let s = state(g, vm);
            g.vm_destroy(vm).unwrap();
            s
        })
        .collect()
}

/// A multi-op VM_BIND is all or nothing when memory runs out: whichever allocation fails, the
/// VM is exactly as before (mappings, descriptors, table memory), and nothing leaks. One that
/// succeeds leaves what the same ops one VM_BIND each leave, table memory included: the tables
/// an unbind keeps for a later map go at the end if they hold nothing.
#[test]
fn a_multi_op_bind_failing_part_way_changes_nothing() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let a = g.gem_create(2 * PG).unwrap();
    let (setup, ops) = multi_op_case(a);
    let prefixes = prefix_states(&mut g, &setup, &ops);
    let (before, one_at_a_time) = (&prefixes[0], &prefixes[ops.len()]);
    // `y`'s two leaf tables and their second-level table went, two pairs came for the new
    // top-level entries.
    assert_eq!(one_at_a_time.tables, before.tables + 1);
    let mut failures = 0;
    for k in 0.. {
        let vm = fresh_vm(&mut g, &setup);
        let attempts = sim::alloc_attempts();
        sim::fail_nth_alloc(k);
        let got = g.bind_ops(vm, &ops);
        let made = sim::alloc_attempts() - attempts;
        sim::clear_faults();
        let s = state(&g, vm);
        g.vm_destroy(vm).unwrap();
        if made <= k {
            assert_eq!(got, Ok(()), "no allocation failed");
            assert!(s == *one_at_a_time, "all applied, as one at a time");
            break;
        }
        assert_eq!(got, Err(ENOMEM), "allocation {k}");
        assert!(s == *before, "allocation {k} failing changed the VM");
        failures += 1;
    }
    // The `drm_gpuva`s of five ops, two `vm_bo`s... and the tables of three maps.
    assert!(failures >= 15, "only {failures} allocations to fail");
    drop(g);
    drop(soc);
    leak.assert_clean();
}

/// A multi-op VM_BIND whose caller is dying (`killable` fails, as the render node's check of a
/// fatal signal): stopped before its first op is applied, it changed nothing; stopped before op
/// `k`, the ops before `k` stay applied, and the VM is what those ops one VM_BIND each leave,
/// table memory included (the tables preallocated for the maps not applied, and those the
/// unbinds kept for them, go).
#[test]
fn a_multi_op_bind_killed_part_way_keeps_the_ops_before() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let a = g.gem_create(2 * PG).unwrap();
    let (setup, ops) = multi_op_case(a);
    let prefixes = prefix_states(&mut g, &setup, &ops);
    // Asked before preparing each op, preallocating each map's tables, and applying each op.
    let maps = ops.iter().filter(|o| o.flags & UNBIND == 0).count();
    let before_apply = ops.len() + maps;
    for j in 0.. {
        let vm = fresh_vm(&mut g, &setup);
        let mut asked = 0;
        let got = g.bind_ops_killable(vm, &ops, || {
            asked += 1;
            if asked > j {
                Err(EINTR)
            } else {
                Ok(())
            }
        });
        let s = state(&g, vm);
        g.vm_destroy(vm).unwrap();
        if asked <= j {
            assert_eq!(got, Ok(()));
            assert_eq!(
                j,
                before_apply + ops.len(),
                "asked once per op and map, twice per op"
            );
            assert!(s == prefixes[ops.len()], "all applied");
            break;
        }
        assert_eq!(got, Err(EINTR), "stopped at {j}");
        let applied = j.saturating_sub(before_apply);
        assert!(
            s == prefixes[applied],
            "stopped at {j}: not the first {applied} ops"
        );
    }
    drop(g);
    drop(soc);
    leak.assert_clean();
}

/// One op can need thousands of tables: a single-page bind of 8 GiB needs 256 leaf tables and a
/// second-level one. Their preallocation asks `killable` every 2 GiB; a caller dying at any of
/// those points leaves the VM as it was (the chunks preallocated before go again).
#[test]
fn a_large_bind_can_be_killed_while_its_tables_are_allocated() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let a = g.gem_create(PG).unwrap();
    let size = 8u64 << 30;
    let op = BindOp {
        flags: READ | SINGLE_PAGE,
        handle: a,
        offset: 0,
        range: size,
        addr: 1 << 36,
    };
    let chunks = size / (1 << 31);
    let vm = g.vm_create().unwrap();
    let before = state(&g, vm);
    // Asked once to prepare the op, then before each chunk: fail at each of those.
    for j in 0..=chunks {
        let mut asked = 0;
        let got = g.bind_ops_killable(vm, &[op], || {
            asked += 1;
            if asked > j {
                Err(EINTR)
            } else {
                Ok(())
            }
        });
        assert_eq!(got, Err(EINTR), "stopped at {j}");
        assert!(state(&g, vm) == before, "stopped at {j}: the VM changed");
    }
    g.bind_ops_killable(vm, &[op], || Ok(())).unwrap();
    assert_eq!(
        state(&g, vm).tables,
        before.tables + size as usize / (1 << 25) + 1
    );
    g.vm_destroy(vm).unwrap();
    drop(g);
    drop(soc);
    leak.assert_clean();
}
