// SPDX-License-Identifier: GPL-2.0

//! The render node's VM_BIND steps (`vm_steps.rs`, the source the kernel's `vm.rs` uses) on the
//! host: [`VmSteps`] over the host `kernel::drm::gpuvm`, the simulated SoC's UAT, and host GEM
//! objects carrying scatter lists of pages of their own.
//!
//! Random sequences of binds (maps at offsets, single-page maps, binds replacing mappings or
//! parts of them) and unbinds (whole mappings, holes in the middle) go through `sm_map` /
//! `sm_unmap` as `vm.rs` makes them (tables preallocated before an `sm_map`, three preallocated
//! `drm_gpuva`s per call) and into an independent page model: VA page -> (buffer, page,
//! protection). After every call: every page of the window and one page on each side translates
//! in the page tables to the model's page with the model's protection, or is unmapped; the
//! simulated GPU, which caches translations until invalidated, reaches the same page with the
//! same permissions, or faults; the tables hold no other page and exactly the table pages the
//! model's pages need (empty ones freed); GPUVM's VAs cover the model's pages with the right
//! objects and offsets; and the call allocated nothing (all of it was preallocated), unless the
//! VM had mappings the firmware caches, whose unmaps collect what to flush. At the end an unbind of everything leaves no table, and everything
//! allocated is freed.

use agx_soc::firmware::{FwKnobs, FwPort};
use agx_soc::gpu::{Fault, GpuTlbi};
use agx_soc::{SimUat, Soc};
use asahi::pgtable::PhysRange;
use asahi::pte::Prot;
use asahi::sg::SgList;
use asahi::slots::VmId;
use asahi::tlbi::Broadcast;
use asahi::vm_steps::{StepCtx, VmSteps};
use kernel::drm::{
    self, gem,
    gpuvm::{sim as gpuvm_sim, GpuVm, OpMapRequest, UniqueRefGpuVm},
};
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sim;
use kernel::sync::aref::ARef;
use pin_init::PinInit;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use uat_tests::config::config_scaled;
use uat_tests::leak::LeakCheck;

const PG: u64 = 1 << 14;
/// The window's first VA: 24 pages below 64 GiB, so that it straddles a leaf table (32 MiB) and
/// a second-level table (64 GiB) boundary.
const BASE: u64 = (1 << 36) - 24 * PG;
/// The window, in pages.
const WINDOW: u64 = 48;
/// The buffers' sizes, in pages (the last one as large as the window).
const SIZES: [u64; 3] = [7, 20, WINDOW];
/// The protections of binds: the user ones, and one the firmware caches (unmapping it goes
/// through the firmware's cache flush).
const PROTS: [Prot; 4] = [
    Prot::GPU_SHARED_RW,
    Prot::GPU_SHARED_RO,
    Prot::GPU_SHARED_WO,
    Prot::GPUFW_PRIV_RW,
];

struct HostDriver;

impl drm::Driver for HostDriver {
    type Data = ();
    type Object = gem::Object<Buffer>;
    const INFO: drm::DriverInfo = drm::DriverInfo {
        major: 0,
        minor: 0,
        patchlevel: 0,
        name: c"vm-steps-test",
        desc: c"the VM_BIND steps on the host",
    };
}

/// A GEM buffer: pages of its own and their scatter list.
struct Buffer {
    pages: Vec<Page>,
    sg: SgList,
}

impl gem::DriverObject for Buffer {
    type Driver = HostDriver;
    type Args = Vec<Page>;

    fn new(
        _dev: &drm::Device<HostDriver>,
        _size: usize,
        pages: Vec<Page>,
    ) -> impl PinInit<Self, Error> {
        // Physically contiguous pages make one range, as a scatter table would.
        let mut sg = SgList::new();
        let listed = pages.iter().try_for_each(|p| {
            sg.push(PhysRange {
                addr: p.phys(),
                len: PG,
            })
        });
        // SAFETY: The closure initializes the slot fully, or fails without writing it.
        unsafe {
            pin_init::pin_init_from_closure(move |slot: *mut Buffer| {
                listed?;
                slot.write(Buffer { pages, sg });
                Ok(())
            })
        }
    }
}

type Bo = gem::Object<Buffer>;
type Steps = VmSteps<HostDriver, Bo, Broadcast<GpuTlbi>, FwPort>;
type Ctx<'a> = StepCtx<'a, HostDriver, Bo, Broadcast<GpuTlbi>, FwPort>;

// The steps are `Send + Sync` whatever their parameters (the phantom is a function pointer).
const _: () = {
    const fn send_sync<X: Send + Sync>() {}
    send_sync::<VmSteps<std::rc::Rc<()>, *const u8, std::cell::Cell<u8>, ()>>();
};

fn new_buffer(dev: &drm::Device<HostDriver>, pages: u64) -> ARef<Bo> {
    let pages: Vec<Page> = (0..pages)
        .map(|_| Page::alloc_page(GFP_KERNEL).unwrap())
        .collect();
    let size = pages.len() * PG as usize;
    gem::Object::<Buffer>::new(dev, size, pages).unwrap()
}

/// A bind or an unbind, in pages of the window.
#[derive(Clone, Copy, Debug)]
enum Op {
    Map {
        buf: usize,
        /// Offset into the buffer.
        off: u64,
        va: u64,
        len: u64,
        prot: Prot,
        single: bool,
    },
    Unmap {
        va: u64,
        len: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let map = (
        0..SIZES.len(),
        any::<u64>(),
        0..WINDOW,
        any::<u64>(),
        0..PROTS.len(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(buf, off, va, len, prot, single)| {
            let size = SIZES[buf];
            let room = WINDOW - va;
            let (off, len) = if single {
                (off % size, 1 + len % room)
            } else {
                let len = 1 + len % room.min(size);
                (off % (size - len + 1), len)
            };
            Op::Map {
                buf,
                off,
                va,
                len,
                prot: PROTS[prot],
                single,
            }
        });
    // Unbinds: mostly short (holes), sometimes long (whole mappings and more).
    let unmap =
        (0..WINDOW, prop_oneof![3 => 1..4u64, 1 => 1..=WINDOW]).prop_map(|(va, len)| Op::Unmap {
            va,
            len: len.min(WINDOW - va),
        });
    prop_oneof![3 => map, 1 => unmap]
}

/// What a VA page maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    buf: usize,
    /// The buffer page.
    page: u64,
    prot: Prot,
    /// Mapped by a single-page bind (whose GPUVM offsets do not follow the pages).
    single: bool,
}

/// The page model: window page -> entry.
type Model = BTreeMap<u64, Entry>;

fn apply_model(model: &mut Model, op: &Op) {
    match *op {
        Op::Map {
            buf,
            off,
            va,
            len,
            prot,
            single,
        } => {
            for i in 0..len {
                let page = if single { off } else { off + i };
                model.insert(
                    va + i,
                    Entry {
                        buf,
                        page,
                        prot,
                        single,
                    },
                );
            }
        }
        Op::Unmap { va, len } => {
            for i in 0..len {
                model.remove(&(va + i));
            }
        }
    }
}

/// The table pages the model's pages need: second-level tables (64 GiB each) and leaf tables
/// (32 MiB each); the top-level table is not counted.
fn tables_needed(model: &Model) -> usize {
    let vas = model.keys().map(|p| BASE + p * PG);
    let l2: BTreeSet<u64> = vas.clone().map(|va| va >> 36).collect();
    let l3: BTreeSet<u64> = vas.map(|va| va >> 25).collect();
    l2.len() + l3.len()
}

/// A VM of the render node, as `vm.rs` keeps one, on the simulated SoC.
struct World {
    /// Locked as the device's UAT is in the kernel: the steps reach it through the guard.
    uat: Mutex<SimUat>,
    id: VmId,
    slot: usize,
    bufs: Vec<ARef<Bo>>,
    gpuvm: ARef<GpuVm<Steps>>,
    vm: UniqueRefGpuVm<Steps>,
    /// Whether a bind had a protection the firmware caches: then unmaps collect the mappings to
    /// flush (an allocation in `Uat::vm_unmap`, not in the steps).
    fw_cached: bool,
}

impl World {
    fn new(soc: &Soc, dev: &drm::Device<HostDriver>) -> World {
        let mut uat = soc.boot().unwrap();
        let id = uat.create_vm(true).unwrap();
        // Work in flight: the VM holds a slot, so the steps' unmaps invalidate its ASID.
        let slot = uat.bind(id).unwrap();
        let bufs: Vec<ARef<Bo>> = SIZES.iter().map(|&n| new_buffer(dev, n)).collect();
        let root = new_buffer(dev, 1);
        let vm = GpuVm::new::<Error, _>(
            c"vm-steps",
            dev,
            &*root,
            BASE..BASE + WINDOW * PG,
            0..0,
            Steps::new(id),
        )
        .unwrap();
        let gpuvm = ARef::from(&*vm);
        World {
            uat: Mutex::new(uat),
            id,
            slot,
            bufs,
            gpuvm,
            vm,
            fw_cached: false,
        }
    }

    /// The bind or unbind as `Vm::bind` makes it, and the allocations its `sm_map` or
    /// `sm_unmap` attempted.
    fn apply(&mut self, op: &Op) -> (Result, u64) {
        let prealloc = match Steps::prealloc_vas(GFP_KERNEL) {
            Ok(v) => v,
            Err(e) => return (Err(e), 0),
        };
        let (r, allocs) = match *op {
            Op::Map {
                buf,
                off,
                va,
                len,
                prot,
                single,
            } => {
                self.fw_cached |= prot.needs_fw_flush();
                let bo = &self.bufs[buf];
                let vm_bo = match self.gpuvm.obtain(bo, ()) {
                    Ok(v) => v,
                    Err(e) => return (Err(e.into()), 0),
                };
                let (addr, range) = (BASE + va * PG, len * PG);
                let mut uat = lock(&self.uat);
                if let Err(e) = uat.vm_prealloc(self.id, addr, range) {
                    return (Err(e), 0);
                }
                let mut ctx = Ctx::for_map(&mut uat, &bo.sg, prot, single, prealloc);
                let before = sim::alloc_attempts();
                let r = self.vm.sm_map(OpMapRequest {
                    addr,
                    range,
                    gem_offset: off * PG,
                    vm_bo: &vm_bo,
                    context: &mut ctx,
                });
                let allocs = sim::alloc_attempts() - before;
                drop(vm_bo);
                (r, allocs)
            }
            Op::Unmap { va, len } => {
                let mut uat = lock(&self.uat);
                let mut ctx = Ctx::for_unmap(&mut uat, prealloc);
                let before = sim::alloc_attempts();
                let r = self.vm.sm_unmap(BASE + va * PG, len * PG, &mut ctx);
                (r, sim::alloc_attempts() - before)
            }
        };
        self.gpuvm.deferred_cleanup();
        (r, allocs)
    }

    /// Everything against the model.
    fn check(&self, soc: &Soc, model: &Model) -> Result<(), TestCaseError> {
        let uat = lock(&self.uat);
        let pt = uat.vm_table(self.id).unwrap();
        prop_assert!(pt.check_occupancy().is_ok(), "occupancies");
        // Every page of the window, and one on each side.
        for p in -1..=WINDOW as i64 {
            let va = BASE.wrapping_add_signed(p * PG as i64);
            let want = u64::try_from(p).ok().and_then(|p| model.get(&p));
            let got = pt.translate(va);
            let gpu_r = soc.gpu.translate(self.slot, va, false);
            let gpu_w = soc.gpu.translate(self.slot, va, true);
            match want {
                None => {
                    prop_assert!(got.is_err(), "page {} mapped: {:?}", p, got);
                    prop_assert!(
                        matches!(gpu_r, Err(Fault::Unmapped { .. })),
                        "page {}: the GPU reads {:?}",
                        p,
                        gpu_r
                    );
                    prop_assert!(
                        matches!(gpu_w, Err(Fault::Unmapped { .. })),
                        "page {}: the GPU writes {:?}",
                        p,
                        gpu_w
                    );
                }
                Some(e) => {
                    let pa = self.bufs[e.buf].pages[e.page as usize].phys();
                    let t = got.map_err(|err| {
                        TestCaseError::fail(format!("page {p} ({e:?}) unmapped: {err:?}"))
                    })?;
                    prop_assert_eq!((t.pa, t.prot), (pa, e.prot), "page {} ({:?})", p, e);
                    let access = e.prot.gpu_access();
                    for (write, allowed, r) in
                        [(false, access.read, gpu_r), (true, access.write, gpu_w)]
                    {
                        if allowed {
                            prop_assert_eq!(r, Ok(pa), "page {} ({:?}) write {}", p, e, write);
                        } else {
                            prop_assert!(
                                matches!(r, Err(Fault::Permission { .. })),
                                "page {} ({:?}) write {}: {:?}",
                                p,
                                e,
                                write,
                                r
                            );
                        }
                    }
                }
            }
        }
        soc.gpu.take_faults();
        // Nothing else anywhere in the VM.
        let mut pages = 0;
        pt.for_each_mapping_all(|m| pages += m.size / PG).unwrap();
        prop_assert_eq!(pages, model.len() as u64, "pages in the tables");
        prop_assert_eq!(pt.table_pages(), tables_needed(model), "table pages");
        // GPUVM's VAs: the model's pages, objects and (but for single-page binds) offsets.
        let mut covered = 0;
        for va in gpuvm_sim::vas(&self.vm) {
            prop_assert!(!va.kernel);
            for i in 0..va.range / PG {
                let p = (va.addr - BASE) / PG + i;
                let e = model.get(&p);
                prop_assert!(e.is_some(), "VA {:?} over unmapped page {}", va, p);
                let e = e.unwrap();
                prop_assert_eq!(va.obj, gpuvm_sim::obj_id(&*self.bufs[e.buf]), "page {}", p);
                if !e.single {
                    prop_assert_eq!(va.gem_offset / PG + i, e.page, "page {} of {:?}", p, va);
                }
                covered += 1;
            }
        }
        prop_assert_eq!(covered, model.len(), "pages of GPUVM's VAs");
        Ok(())
    }

    /// Unbinds everything (as `Vm`'s drop does: no preallocated VA, as nothing is split), then
    /// frees the VM.
    fn finish(mut self) -> Result<(), TestCaseError> {
        // As `Vm`'s drop; the context flushes what it gathered when it goes.
        let mut uat = lock(&self.uat);
        let mut ctx = Ctx::for_unmap(&mut uat, KVec::new());
        let r = self.vm.sm_unmap(BASE, WINDOW * PG, &mut ctx);
        prop_assert_eq!(ctx.unused_vas(), 0);
        drop(ctx);
        prop_assert!(r.is_ok(), "unbinding everything: {:?}", r);
        let pt = uat.vm_table(self.id).unwrap();
        prop_assert_eq!(pt.table_pages(), 0, "tables left");
        drop(uat);
        self.gpuvm.deferred_cleanup();
        prop_assert!(gpuvm_sim::vas(&self.vm).is_empty());
        let World {
            uat,
            id,
            bufs,
            gpuvm,
            vm,
            ..
        } = self;
        drop(vm);
        prop_assert_eq!(gpuvm_sim::vm_refcount(&gpuvm), 1);
        drop(gpuvm);
        drop(bufs);
        let mut uat = uat.into_inner().unwrap();
        uat.release(id).unwrap();
        uat.destroy_vm(id).unwrap();
        Ok(())
    }
}

fn lock(m: &Mutex<SimUat>) -> MutexGuard<'_, SimUat> {
    m.lock().unwrap()
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let dev = drm::Device::<HostDriver>::new_host(()).unwrap();
    let mut w = World::new(&soc, &dev);
    let mut model = Model::new();
    w.check(&soc, &model)?;
    for (i, op) in ops.iter().enumerate() {
        let (r, allocs) = w.apply(op);
        prop_assert!(r.is_ok(), "step {} {:?}: {:?}", i, op, r);
        if !w.fw_cached {
            // Everything was allocated before: the steps cannot fail for want of memory.
            prop_assert_eq!(allocs, 0, "step {} {:?} allocated", i, op);
        }
        apply_model(&mut model, op);
        w.check(&soc, &model)
            .map_err(|e| TestCaseError::fail(format!("after step {i} {op:?}: {e}")))?;
    }
    w.finish()?;
    drop(dev);
    drop(soc);
    prop_assert_eq!(leak.live_since(), 0, "pages leaked");
    Ok(())
}

proptest! {
    #![proptest_config(config_scaled(4, 50))]

    #[test]
    fn steps_follow_the_page_model(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}

/// The cases the steps must get right, spelled out: a hole punched in a mapping (a remap with
/// both sides kept), a bind over the end of one mapping and the start of the next (two remaps,
/// the unused VA of each handed back), a single-page bind split, and a bind that replaces a
/// mapping whole.
#[test]
fn remaps_keep_the_sides() {
    let map = |buf, off, va, len, single| Op::Map {
        buf,
        off,
        va,
        len,
        prot: Prot::GPU_SHARED_RW,
        single,
    };
    run(&[
        map(2, 0, 0, 30, false),
        Op::Unmap { va: 10, len: 4 },
        map(1, 3, 8, 8, false),
        map(0, 5, 30, 10, true),
        Op::Unmap { va: 33, len: 1 },
        map(2, 40, 30, 8, false),
        map(0, 0, 0, 2, false),
        Op::Unmap { va: 0, len: WINDOW },
        map(1, 2, 20, 18, false),
    ])
    .unwrap();
}

/// A remap step with no preallocated VA left for the kept parts fails before it unmaps
/// anything: GPUVM keeps the whole mapping, so the page table must too.
#[test]
fn a_remap_without_vas_unmaps_nothing() {
    let soc = Soc::new(FwKnobs::default());
    let dev = drm::Device::<HostDriver>::new_host(()).unwrap();
    let mut w = World::new(&soc, &dev);
    let (r, _) = w.apply(&Op::Map {
        buf: 0,
        off: 0,
        va: 0,
        len: 3,
        prot: Prot::GPU_SHARED_RW,
        single: false,
    });
    r.unwrap();
    // The middle page goes, with nothing preallocated.
    let r = {
        let mut uat = lock(&w.uat);
        let mut ctx = Ctx::for_unmap(&mut uat, KVec::new());
        w.vm.sm_unmap(BASE + PG, PG, &mut ctx)
    };
    assert_eq!(r, Err(ENOMEM));
    let uat = lock(&w.uat);
    let pt = uat.vm_table(w.id).unwrap();
    for p in 0..3 {
        assert!(pt.translate(BASE + p * PG).is_ok(), "page {p} still mapped");
    }
}
