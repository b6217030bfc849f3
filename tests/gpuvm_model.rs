// SPDX-License-Identifier: GPL-2.0

//! The host `drm::gpuvm` (the twin of Linux 7.3's `rust/kernel/drm/gpuvm/`) against an
//! independent model.
//!
//! Random sequences of `sm_map` / `sm_unmap` over several GEM objects and offsets, with a step
//! failing now and then, go both to a `GpuVm` whose `DriverGpuVm` records the ops it is given
//! and to a page map (VA page -> object, offset, VA identity). The ops expected are derived from
//! the model before each call, from drm_gpuvm's rules stated independently: in address order, an
//! unmap for each VA wholly covered, a remap (kept prev and/or next part, their GEM offsets moved
//! along) for each VA partially covered, then the map; `keep` when the VA maps the same object
//! with the same address-to-offset translation as the request (never for `sm_unmap`); VAs never
//! merged; a request that wraps, leaves the VA space or touches the kernel-reserved range is
//! `EINVAL` with no op. A failing step ends the call with its error; the ops before it stay done.
//! After every call the VA tree must equal the model's runs, and the vm_bos alive must be those
//! of the objects still mapped; at the end everything (VAs, vm_bos, objects, VM, device) is freed.
//! Unit tests cover the kernel-reserved node, range validation, zero-length requests as C treats
//! them, vm_bo lifetime and the `DriverGpuVm` shape of the 7.3 in-kernel users.

// The crates.io build of pin-init names itself `pinned_init` in its macros' expansions.
extern crate pin_init as pinned_init;

use core::marker::PhantomData;
use kernel::drm::{
    self, gem,
    gpuvm::{
        sim, DriverGpuVm, GpuVaAlloc, GpuVm, GpuVmBo, OpMap, OpMapRequest, OpMapped, OpRemap,
        OpRemapped, OpUnmap, OpUnmapped, UniqueRefGpuVm,
    },
};
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use pin_init::PinInit;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use uat_tests::config::config;

const PAGE: u64 = 0x1000;
/// The VA space, in pages.
const MM: (u64, u64) = (16, 80);
/// The kernel-reserved range, in pages.
const KERNEL: (u64, u64) = (60, 64);
const OBJECTS: u32 = 3;

/// A live-object counter: +1 when made, -1 when dropped.
#[derive(Clone, Default)]
struct Live(Arc<AtomicI64>);

impl Live {
    fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Driver data that counts itself.
struct Tracked {
    id: u64,
    live: Live,
}

impl Tracked {
    fn new(id: u64, live: &Live) -> Tracked {
        live.0.fetch_add(1, Ordering::Relaxed);
        Tracked {
            id,
            live: live.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.live.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct TestDriver;

impl drm::Driver for TestDriver {
    type Data = Tracked;
    type Object = gem::Object<Bo>;
    const INFO: drm::DriverInfo = drm::DriverInfo {
        major: 0,
        minor: 0,
        patchlevel: 0,
        name: c"gpuvm-test",
        desc: c"drm::gpuvm host tests",
    };
}

struct Bo {
    id: u32,
    _t: Tracked,
}

impl gem::DriverObject for Bo {
    type Driver = TestDriver;
    type Args = (u32, Live);

    fn new(
        _dev: &drm::Device<TestDriver>,
        _size: usize,
        args: Self::Args,
    ) -> impl PinInit<Self, Error> {
        let bo = Bo {
            id: args.0,
            _t: Tracked::new(0, &args.1),
        };
        // SAFETY: The closure initializes the slot fully and never fails after writing.
        unsafe {
            pin_init::pin_init_from_closure(move |slot: *mut Bo| {
                slot.write(bo);
                Ok(())
            })
        }
    }
}

/// A part of a remap or a VA, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seg {
    addr: u64,
    range: u64,
    obj: u32,
    offset: u64,
}

/// An op as the driver is given it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rop {
    Unmap {
        va: Seg,
        keep: bool,
    },
    Remap {
        va: Seg,
        prev: Option<Seg>,
        next: Option<Seg>,
        keep: bool,
    },
    Map(Seg),
}

/// The recording driver.
struct Rec {
    log: Vec<Rop>,
    /// The step of the current call that fails (`ENOMEM`, nothing done).
    fail_at: Option<usize>,
    steps: usize,
    next_id: u64,
    va_live: Live,
    _t: Tracked,
}

impl Rec {
    fn fail(&mut self) -> Result {
        let i = self.steps;
        self.steps += 1;
        if self.fail_at == Some(i) {
            return Err(ENOMEM);
        }
        Ok(())
    }

    fn data(&mut self) -> Tracked {
        self.next_id += 1;
        Tracked::new(self.next_id, &self.va_live)
    }
}

struct Ctx<'a> {
    prealloc: Vec<GpuVaAlloc<Rec>>,
    _p: PhantomData<&'a ()>,
}

impl Ctx<'_> {
    fn new() -> Self {
        let prealloc = (0..3)
            .map(|_| GpuVaAlloc::new(GFP_KERNEL).unwrap())
            .collect();
        Ctx {
            prealloc,
            _p: PhantomData,
        }
    }
}

fn seg(addr: u64, range: u64, obj: &gem::Object<Bo>, offset: u64) -> Seg {
    Seg {
        addr,
        range,
        obj: obj.id,
        offset,
    }
}

impl DriverGpuVm for Rec {
    type Driver = TestDriver;
    type Object = gem::Object<Bo>;
    type VaData = Tracked;
    type VmBoData = Tracked;
    type SmContext<'ctx>
        = Ctx<'ctx>
    where
        Self: 'ctx;

    // The shape of the 7.3 in-kernel users (one lifetime, `'_` context).
    fn sm_step_map<'op>(
        &mut self,
        op: OpMap<'op, Self>,
        ctx: &mut Self::SmContext<'_>,
    ) -> Result<OpMapped<'op, Self>> {
        assert!(core::ptr::eq(op.vm_bo().obj(), op.obj()));
        self.log.push(Rop::Map(seg(
            op.addr(),
            op.length(),
            op.obj(),
            op.gem_offset(),
        )));
        self.fail()?;
        let va = ctx.prealloc.pop().ok_or(ENOMEM)?;
        let data = self.data();
        Ok(op.insert(va, data))
    }

    fn sm_step_unmap<'op>(
        &mut self,
        op: OpUnmap<'op, Self>,
        _ctx: &mut Self::SmContext<'_>,
    ) -> Result<OpUnmapped<'op, Self>> {
        let va = op.va();
        self.log.push(Rop::Unmap {
            va: seg(va.addr(), va.length(), va.obj(), va.gem_offset()),
            keep: op.keep(),
        });
        self.fail()?;
        let (done, removed) = op.remove();
        drop(removed.into_inner());
        Ok(done)
    }

    fn sm_step_remap<'op>(
        &mut self,
        op: OpRemap<'op, Self>,
        ctx: &mut Self::SmContext<'_>,
    ) -> Result<OpRemapped<'op, Self>> {
        let va = op.va_to_unmap();
        assert!(core::ptr::eq(op.obj(), va.obj()));
        assert!(core::ptr::eq(op.vm_bo(), va.vm_bo()));
        let obj = va.obj().id;
        let part = |p: &kernel::drm::gpuvm::OpRemapMapData| Seg {
            addr: p.addr(),
            range: p.length(),
            obj,
            offset: p.gem_offset(),
        };
        self.log.push(Rop::Remap {
            va: seg(va.addr(), va.length(), va.obj(), va.gem_offset()),
            prev: op.prev().map(part),
            next: op.next().map(part),
            keep: op.keep(),
        });
        self.fail()?;
        let vas = [
            ctx.prealloc.pop().ok_or(ENOMEM)?,
            ctx.prealloc.pop().ok_or(ENOMEM)?,
        ];
        // Ids in the model's order: prev, then next.
        let prev = if op.prev().is_some() {
            self.data()
        } else {
            Tracked::new(0, &self.va_live)
        };
        let next = if op.next().is_some() {
            self.data()
        } else {
            Tracked::new(0, &self.va_live)
        };
        let (done, ret) = op.remap(vas, prev, next);
        if let Some(va) = ret.unused_va {
            ctx.prealloc.push(va);
        }
        drop(ret.unmapped_va);
        Ok(done)
    }
}

/// One VA page of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pg {
    obj: u32,
    /// GEM offset, in pages.
    off: u64,
    /// The VA holding the page.
    id: u64,
}

/// The model: VA page -> (object, offset, VA).
#[derive(Clone, Default)]
struct Model {
    pages: BTreeMap<u64, Pg>,
    next_id: u64,
}

/// A VA of the model, in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    start: u64,
    len: u64,
    obj: u32,
    off: u64,
    id: u64,
}

impl Model {
    /// Maximal runs of pages of one VA.
    fn runs(&self) -> Vec<Run> {
        let mut out: Vec<Run> = Vec::new();
        for (&p, pg) in &self.pages {
            if let Some(r) = out.last_mut() {
                if r.id == pg.id && r.start + r.len == p {
                    assert_eq!(pg.off, r.off + r.len, "model: offsets inside a VA");
                    r.len += 1;
                    continue;
                }
            }
            out.push(Run {
                start: p,
                len: 1,
                obj: pg.obj,
                off: pg.off,
                id: pg.id,
            });
        }
        out
    }

    fn valid(start: u64, len: u64) -> bool {
        let end = start + len;
        start >= MM.0 && end <= MM.1 && !(start < KERNEL.1 && KERNEL.0 < end)
    }

    /// The ops drm_gpuvm gives for `[start, start + len)` (pages), the map last when `map` is
    /// `(object, offset)`.
    fn expected(&self, start: u64, len: u64, map: Option<(u32, u64)>) -> Vec<Rop> {
        let end = start + len;
        let bytes = |addr: u64, len: u64, obj: u32, off: u64| Seg {
            addr: addr * PAGE,
            range: len * PAGE,
            obj,
            offset: off * PAGE,
        };
        let mut ops = Vec::new();
        for r in self.runs() {
            let r_end = r.start + r.len;
            if r_end <= start || r.start >= end {
                continue;
            }
            let va = bytes(r.start, r.len, r.obj, r.off);
            // Same object, same translation of addresses to offsets.
            let keep = map.is_some_and(|(obj, off)| {
                obj == r.obj && (r.off as i64 - r.start as i64) == (off as i64 - start as i64)
            });
            let prev = (r.start < start).then(|| bytes(r.start, start - r.start, r.obj, r.off));
            let next =
                (r_end > end).then(|| bytes(end, r_end - end, r.obj, r.off + (end - r.start)));
            if prev.is_none() && next.is_none() {
                ops.push(Rop::Unmap { va, keep });
            } else {
                ops.push(Rop::Remap {
                    va,
                    prev,
                    next,
                    keep,
                });
            }
        }
        if let Some((obj, off)) = map {
            ops.push(Rop::Map(bytes(start, len, obj, off)));
        }
        ops
    }

    fn insert(&mut self, s: &Seg) {
        self.next_id += 1;
        for i in 0..s.range / PAGE {
            self.pages.insert(
                s.addr / PAGE + i,
                Pg {
                    obj: s.obj,
                    off: s.offset / PAGE + i,
                    id: self.next_id,
                },
            );
        }
    }

    fn remove(&mut self, s: &Seg) {
        for i in 0..s.range / PAGE {
            self.pages.remove(&(s.addr / PAGE + i));
        }
    }

    fn apply(&mut self, op: &Rop) {
        match op {
            Rop::Unmap { va, .. } => self.remove(va),
            Rop::Remap { va, prev, next, .. } => {
                self.remove(va);
                for p in Iterator::chain(prev.iter(), next) {
                    self.insert(p);
                }
            }
            Rop::Map(s) => self.insert(s),
        }
    }
}

/// A device, objects, and a VM over `MM` with `KERNEL` reserved.
struct World {
    live: Live,
    va_live: Live,
    bo_live: Live,
    vm_bo_live: Live,
    bos: Vec<ARef<gem::Object<Bo>>>,
    dev: ARef<drm::Device<TestDriver>>,
    gpuvm: ARef<GpuVm<Rec>>,
    vm: UniqueRefGpuVm<Rec>,
}

impl World {
    fn new() -> World {
        Self::with(MM.0 * PAGE..MM.1 * PAGE, KERNEL.0 * PAGE..KERNEL.1 * PAGE)
    }

    fn with(range: core::ops::Range<u64>, reserve: core::ops::Range<u64>) -> World {
        let (live, va_live, bo_live, vm_bo_live): (Live, Live, Live, Live) = Default::default();
        let dev = drm::Device::<TestDriver>::new_host(Tracked::new(0, &live)).unwrap();
        let bos: Vec<_> = (0..=OBJECTS)
            .map(|i| {
                gem::Object::<Bo>::new(&dev, 64 * PAGE as usize, (i, bo_live.clone())).unwrap()
            })
            .collect();
        let rec = Rec {
            log: Vec::new(),
            fail_at: None,
            steps: 0,
            next_id: 0,
            va_live: Live::clone(&va_live),
            _t: Tracked::new(0, &live),
        };
        // The last object is the root object (its resv is the VM's).
        let vm = GpuVm::new::<Error, _>(
            c"test-vm",
            &dev,
            &*bos[OBJECTS as usize],
            range,
            reserve,
            rec,
        )
        .unwrap();
        let gpuvm = ARef::from(&*vm);
        World {
            live,
            va_live,
            bo_live,
            vm_bo_live,
            bos,
            dev,
            gpuvm,
            vm,
        }
    }

    fn obtain(&self, obj: u32) -> ARef<GpuVmBo<Rec>> {
        self.gpuvm
            .obtain(&self.bos[obj as usize], Tracked::new(0, &self.vm_bo_live))
            .unwrap()
    }

    /// `sm_map` of pages; the ops given and the result.
    fn map(
        &mut self,
        start: u64,
        len: u64,
        obj: u32,
        off: u64,
        fail: Option<usize>,
    ) -> (Result, Vec<Rop>) {
        let vm_bo = self.obtain(obj);
        let again = self.obtain(obj);
        assert!(
            core::ptr::eq(&*vm_bo, &*again),
            "obtain: one vm_bo per object"
        );
        drop(again);
        let mut ctx = Ctx::new();
        let rec = self.vm.data();
        rec.log.clear();
        rec.steps = 0;
        rec.fail_at = fail;
        let r = self.vm.sm_map(OpMapRequest {
            addr: start.wrapping_mul(PAGE),
            range: len.wrapping_mul(PAGE),
            gem_offset: off * PAGE,
            vm_bo: &vm_bo,
            context: &mut ctx,
        });
        drop(vm_bo);
        self.gpuvm.deferred_cleanup();
        (r, core::mem::take(&mut self.vm.data().log))
    }

    /// `sm_unmap` in bytes.
    fn unmap_bytes(&mut self, addr: u64, range: u64, fail: Option<usize>) -> (Result, Vec<Rop>) {
        let mut ctx = Ctx::new();
        let rec = self.vm.data();
        rec.log.clear();
        rec.steps = 0;
        rec.fail_at = fail;
        let r = self.vm.sm_unmap(addr, range, &mut ctx);
        self.gpuvm.deferred_cleanup();
        (r, core::mem::take(&mut self.vm.data().log))
    }

    fn unmap(&mut self, start: u64, len: u64, fail: Option<usize>) -> (Result, Vec<Rop>) {
        self.unmap_bytes(start * PAGE, len * PAGE, fail)
    }

    /// The VAs of the tree (kernel node apart) as model runs, with their data ids.
    fn runs(&self) -> Vec<Run> {
        let mut out = Vec::new();
        sim::for_each_va(&self.vm, |va, data| {
            out.push(Run {
                start: va.addr() / PAGE,
                len: va.length() / PAGE,
                obj: va.obj().id,
                off: va.gem_offset() / PAGE,
                id: data.id,
            });
            assert_eq!(va.range(), va.addr()..va.addr() + va.length());
            assert!(core::ptr::eq(va.vm_bo().obj(), va.obj()));
            assert!(va.vm_bo().gpuvm() == &*self.gpuvm);
        });
        out
    }

    /// Unmaps everything, drops everything, and checks all of it was freed.
    fn finish(mut self) {
        let (r1, _) = self.unmap(MM.0, KERNEL.0 - MM.0, None);
        let (r2, _) = self.unmap(KERNEL.1, MM.1 - KERNEL.1, None);
        assert_eq!((r1, r2), (Ok(()), Ok(())));
        assert_eq!(self.va_live.get(), 0, "VA data leaked or double-dropped");
        assert_eq!(self.vm_bo_live.get(), 0, "vm_bos left after the last VA");
        assert_eq!(
            sim::vm_refcount(&self.gpuvm),
            2,
            "VM references: the unique and the shared"
        );
        let World {
            live,
            bo_live,
            bos,
            dev,
            gpuvm,
            vm,
            ..
        } = self;
        drop(vm);
        drop(gpuvm);
        drop(bos);
        assert_eq!(live.get(), 1, "VM data freed, device still held");
        drop(dev);
        assert_eq!(live.get(), 0, "device freed");
        assert_eq!(bo_live.get(), 0, "GEM objects freed");
    }
}

#[derive(Clone, Debug)]
enum Step {
    Map {
        start: u64,
        len: u64,
        obj: u32,
        off: u64,
        fail: Option<usize>,
    },
    Unmap {
        start: u64,
        len: u64,
        fail: Option<usize>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let fail = proptest::option::weighted(0.2, 0usize..4);
    prop_oneof![
        3 => (8u64..88, 1u64..24, 0..OBJECTS, 0u64..16, fail.clone())
            .prop_map(|(start, len, obj, off, fail)| Step::Map { start, len, obj, off, fail }),
        1 => (8u64..88, 1u64..32, fail)
            .prop_map(|(start, len, fail)| Step::Unmap { start, len, fail }),
    ]
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut w = World::new();
    let mut model = Model::default();
    for (i, s) in steps.iter().enumerate() {
        let (start, len, map, fail) = match *s {
            Step::Map {
                start,
                len,
                obj,
                off,
                fail,
            } => (start, len, Some((obj, off)), fail),
            Step::Unmap { start, len, fail } => (start, len, None, fail),
        };
        let (got, log) = match map {
            Some((obj, off)) => w.map(start, len, obj, off, fail),
            None => w.unmap(start, len, fail),
        };
        if !Model::valid(start, len) {
            prop_assert_eq!(got, Err(EINVAL), "step {} {:?}", i, s);
            prop_assert!(log.is_empty(), "step {}: ops on a refused request", i);
        } else {
            let want = model.expected(start, len, map);
            let done = match fail {
                Some(k) if k < want.len() => {
                    prop_assert_eq!(got, Err(ENOMEM), "step {} {:?}", i, s);
                    prop_assert_eq!(&log[..], &want[..=k], "step {} {:?}", i, s);
                    k
                }
                _ => {
                    prop_assert_eq!(got, Ok(()), "step {} {:?}", i, s);
                    prop_assert_eq!(&log, &want, "step {} {:?}", i, s);
                    want.len()
                }
            };
            for op in &want[..done] {
                model.apply(op);
            }
        }
        prop_assert_eq!(w.runs(), model.runs(), "tree after step {} {:?}", i, s);
        let kernel: Vec<_> = sim::vas(&w.vm).into_iter().filter(|v| v.kernel).collect();
        prop_assert_eq!(kernel.len(), 1);
        prop_assert_eq!(
            (kernel[0].addr, kernel[0].range),
            (KERNEL.0 * PAGE, (KERNEL.1 - KERNEL.0) * PAGE)
        );
        let objs: BTreeSet<u32> = model.pages.values().map(|p| p.obj).collect();
        prop_assert_eq!(
            w.vm_bo_live.get(),
            objs.len() as i64,
            "vm_bos after step {}",
            i
        );
        prop_assert_eq!(
            w.va_live.get(),
            model.runs().len() as i64,
            "VA data after step {}",
            i
        );
        prop_assert_eq!(sim::deferred_count(&w.gpuvm), 0);
    }
    w.finish();
    Ok(())
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn random_sequences_match_drm_gpuvm(steps in proptest::collection::vec(step(), 1..40)) {
        run(&steps)?;
    }
}

#[test]
fn kernel_reserved_range_cannot_be_mapped_or_unmapped() {
    let mut w = World::new();
    let v = sim::vas(&w.vm);
    assert_eq!(v.len(), 1);
    assert!(v[0].kernel);
    // Into, across either edge, over the whole of it, and a zero-length request inside it.
    for (start, len) in [(60, 4), (61, 1), (58, 3), (63, 2), (50, 20), (16, 64)] {
        assert_eq!(
            w.map(start, len, 0, 0, None),
            (Err(EINVAL), vec![]),
            "{start} {len}"
        );
        assert_eq!(
            w.unmap(start, len, None),
            (Err(EINVAL), vec![]),
            "{start} {len}"
        );
    }
    assert_eq!(w.unmap_bytes(61 * PAGE, 0, None), (Err(EINVAL), vec![]));
    // Right up to it on both sides.
    assert_eq!(w.map(56, 4, 0, 0, None).0, Ok(()));
    assert_eq!(w.map(64, 4, 1, 0, None).0, Ok(()));
    let v = sim::vas(&w.vm);
    assert_eq!(
        v.iter()
            .map(|v| (v.addr / PAGE, v.range / PAGE, v.kernel))
            .collect::<Vec<_>>(),
        vec![(56, 4, false), (60, 4, true), (64, 4, false)]
    );
    w.finish();
}

#[test]
fn no_reserved_range_and_a_reserved_range_outside_the_space() {
    // An empty reserve range inserts no node; one outside the VA space is still a node.
    let w = World::with(MM.0 * PAGE..MM.1 * PAGE, 0..0);
    assert!(sim::vas(&w.vm).is_empty());
    w.finish_without_kernel();
    let mut w = World::with(MM.0 * PAGE..MM.1 * PAGE, 100 * PAGE..101 * PAGE);
    assert_eq!(sim::vas(&w.vm).len(), 1);
    assert_eq!(w.map(16, 64, 0, 0, None).0, Ok(()));
    w.finish_without_kernel();
}

impl World {
    fn finish_without_kernel(mut self) {
        let (r, _) = self.unmap(MM.0, MM.1 - MM.0, None);
        assert_eq!(r, Ok(()));
        // Bypass the two-range unmap of `finish`, which the kernel range makes necessary.
        let r = self.unmap(MM.0, MM.1 - MM.0, None).0;
        assert_eq!(r, Ok(()));
        let World {
            live,
            vm,
            gpuvm,
            bos,
            dev,
            va_live,
            vm_bo_live,
            bo_live,
            ..
        } = self;
        drop((vm, gpuvm, bos, dev));
        assert_eq!(
            (live.get(), va_live.get(), vm_bo_live.get(), bo_live.get()),
            (0, 0, 0, 0)
        );
    }
}

#[test]
fn range_validation() {
    let mut w = World::new();
    let end = MM.1 * PAGE;
    for (addr, range) in [
        (u64::MAX - PAGE + 1, 2 * PAGE), // wraps
        (u64::MAX, 1),                   // ends at 2^64: wraps too
        (MM.0 * PAGE - PAGE, 2 * PAGE),  // starts below the space
        (end - PAGE, 2 * PAGE),          // ends above it
        (end, PAGE),                     // wholly above
        (0, PAGE),                       // wholly below
    ] {
        assert_eq!(
            w.unmap_bytes(addr, range, None),
            (Err(EINVAL), vec![]),
            "{addr:#x} {range:#x}"
        );
        let vm_bo = w.obtain(0);
        let mut ctx = Ctx::new();
        let r = w.vm.sm_map(OpMapRequest {
            addr,
            range,
            gem_offset: 0,
            vm_bo: &vm_bo,
            context: &mut ctx,
        });
        assert_eq!(r, Err(EINVAL), "{addr:#x} {range:#x}");
        assert!(w.vm.data_ref().log.is_empty());
    }
    // The last page and the first page are in; unaligned addresses are GPUVM's business too.
    assert_eq!(w.map(MM.1 - 1, 1, 0, 0, None).0, Ok(()));
    assert_eq!(w.map(MM.0, 1, 0, 0, None).0, Ok(()));
    assert_eq!(w.unmap_bytes(MM.0 * PAGE + 1, 2, None).0, Ok(()));
    assert_eq!(
        w.runs()
            .iter()
            .map(|r| (r.start, r.len))
            .collect::<Vec<_>>(),
        vec![(MM.0, 0), (MM.0, 0), (MM.1 - 1, 1)],
        "the first page split at byte 1 and 3: lengths below a page show as 0 pages"
    );
    assert_eq!(w.gpuvm.va_range(), MM.0 * PAGE..MM.1 * PAGE);
    assert_eq!(w.gpuvm.va_start(), MM.0 * PAGE);
    assert_eq!(w.gpuvm.va_length(), (MM.1 - MM.0) * PAGE);
    w.finish();
}

#[test]
fn zero_length_requests_as_in_c() {
    let mut w = World::new();
    assert_eq!(w.map(20, 8, 0, 0, None).0, Ok(()));
    // drm_gpuva_find_first(addr, 0) looks up [addr, addr - 1]: a VA holding both addr - 1 and
    // addr. So a zero-length unmap inside a VA splits it there; at its edges it does nothing.
    assert_eq!(w.unmap_bytes(20 * PAGE, 0, None), (Ok(()), vec![]));
    assert_eq!(w.unmap_bytes(28 * PAGE, 0, None), (Ok(()), vec![]));
    let (r, log) = w.unmap_bytes(24 * PAGE, 0, None);
    assert_eq!(r, Ok(()));
    let seg = |s: u64, l: u64, o: u64| Seg {
        addr: s * PAGE,
        range: l * PAGE,
        obj: 0,
        offset: o * PAGE,
    };
    assert_eq!(
        log,
        vec![Rop::Remap {
            va: seg(20, 8, 0),
            prev: Some(seg(20, 4, 0)),
            next: Some(seg(24, 4, 4)),
            keep: false
        }]
    );
    assert_eq!(
        w.runs()
            .iter()
            .map(|r| (r.start, r.len))
            .collect::<Vec<_>>(),
        vec![(20, 4), (24, 4)]
    );
    w.finish();
}

#[test]
fn vm_bo_lives_while_a_va_or_a_reference_does() {
    let mut w = World::new();
    let a = w.obtain(0);
    let b = w.obtain(0);
    assert!(a == b);
    assert_eq!(
        w.vm_bo_live.get(),
        1,
        "the second obtain's preallocation is freed at once"
    );
    assert!(w.gpuvm.is_extobj(&w.bos[0]));
    assert!(
        !w.gpuvm.is_extobj(&w.bos[OBJECTS as usize]),
        "the root object shares the VM's resv"
    );
    drop(b);
    assert_eq!(w.map(20, 4, 0, 0, None).0, Ok(()));
    drop(a);
    w.gpuvm.deferred_cleanup();
    assert_eq!(w.vm_bo_live.get(), 1, "the VA holds the vm_bo");
    let c = w.obtain(0);
    let mut linked = Vec::new();
    sim::for_each_va(&w.vm, |va, _| linked.push(core::ptr::from_ref(va.vm_bo())));
    assert_eq!(
        linked,
        vec![core::ptr::from_ref(&*c)],
        "obtain finds the VA's vm_bo"
    );
    assert_eq!(w.vm_bo_live.get(), 1);
    assert_eq!(w.unmap(20, 4, None).0, Ok(()));
    assert_eq!(w.vm_bo_live.get(), 1, "our reference holds it");
    drop(c);
    assert_eq!(
        sim::deferred_count(&w.gpuvm),
        1,
        "a zombie until deferred_cleanup"
    );
    assert_eq!(w.vm_bo_live.get(), 1);
    w.gpuvm.deferred_cleanup();
    assert_eq!(w.vm_bo_live.get(), 0);
    // A VA holds the VM; so does a vm_bo.
    let base = sim::vm_refcount(&w.gpuvm);
    assert_eq!(w.map(30, 2, 1, 0, None).0, Ok(()));
    assert_eq!(sim::vm_refcount(&w.gpuvm), base + 2);
    assert_eq!(sim::name(&w.gpuvm), c"test-vm");
    w.finish();
}

#[test]
fn sm_map_refuses_a_vm_bo_of_another_vm() {
    let mut w = World::new();
    let other = World::new();
    let vm_bo = other.obtain(0);
    let mut ctx = Ctx::new();
    let r = w.vm.sm_map(OpMapRequest {
        addr: 20 * PAGE,
        range: PAGE,
        gem_offset: 0,
        vm_bo: &vm_bo,
        context: &mut ctx,
    });
    assert_eq!(r, Err(EINVAL));
    assert!(w.vm.data_ref().log.is_empty());
    drop(vm_bo);
    other.gpuvm.deferred_cleanup();
    other.finish();
    w.finish();
}

#[test]
fn allocation_failures_are_reported() {
    let w = World::new();
    kernel::sim::fail_nth_alloc(0);
    assert!(GpuVaAlloc::<Rec>::new(GFP_KERNEL).is_err());
    kernel::sim::fail_nth_alloc(0);
    assert!(w
        .gpuvm
        .obtain(&w.bos[0], Tracked::new(0, &w.vm_bo_live))
        .is_err());
    assert_eq!(
        w.vm_bo_live.get(),
        0,
        "the data of a failed obtain is dropped"
    );
    kernel::sim::clear_faults();
    w.finish();
}

/// The shape of the 7.3 users (`drivers/gpu/drm/tyr/vm.rs`, the asahi probe's `vm.rs`): the
/// unique handle in a `Mutex` in an `Arc`, a shared `ARef` for `obtain`.
#[pin_init::pin_data]
struct SharedVm {
    #[pin]
    unique: kernel::sync::Mutex<UniqueRefGpuVm<Rec>>,
    gpuvm: ARef<GpuVm<Rec>>,
}

#[test]
fn the_7_3_user_shape_compiles_and_runs() {
    use kernel::new_mutex;
    use kernel::sync::Arc;
    let w = World::new();
    let World {
        live,
        va_live,
        vm_bo_live,
        bo_live,
        bos,
        dev,
        gpuvm,
        vm,
    } = w;
    let shared = Arc::pin_init(
        pin_init::pin_init!(SharedVm {
            unique <- new_mutex!(vm),
            gpuvm,
        }),
        GFP_KERNEL,
    )
    .unwrap();
    let vm_bo = shared
        .gpuvm
        .obtain(&bos[1], Tracked::new(0, &vm_bo_live))
        .unwrap();
    let mut ctx = Ctx::new();
    {
        let mut unique = shared.unique.lock();
        let r = unique.sm_map(OpMapRequest {
            addr: 20 * PAGE,
            range: 4 * PAGE,
            gem_offset: 0,
            vm_bo: &vm_bo,
            context: &mut ctx,
        });
        assert_eq!(r, Ok(()));
        // tyr's way to the handle.
        let r = unique
            .as_mut()
            .get_mut()
            .sm_unmap(21 * PAGE, PAGE, &mut ctx);
        assert_eq!(r, Ok(()));
        assert_eq!(unique.data_ref().log.len(), 2);
        assert!(shared.unique.try_lock().is_none());
    }
    drop(vm_bo);
    shared.gpuvm.deferred_cleanup();
    assert_eq!((va_live.get(), vm_bo_live.get()), (2, 1));
    let mut ctx = Ctx::new();
    let r = shared.unique.lock().sm_unmap(20 * PAGE, 4 * PAGE, &mut ctx);
    assert_eq!(r, Ok(()));
    shared.gpuvm.deferred_cleanup();
    assert_eq!((va_live.get(), vm_bo_live.get()), (0, 0));
    drop((shared, bos, dev));
    assert_eq!((live.get(), bo_live.get()), (0, 0));
}
