// SPDX-License-Identifier: GPL-2.0

//! Workloads: traces generated together with the result every operation must have, from a model
//! of the uAPI written independently of the driver (VA pages per VM, bytes per buffer).
//!
//! [`builtin`] is the realistic default of `make run`; [`random`] makes short random traces for
//! the tests. Both are deterministic for a seed.

use crate::trace::{GemBindOp, Op};
use asahi::gpuvm::bind_flags::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};

const PG: u64 = 1 << 14;
/// The VA window, `[vm_start, vm_end)`.
const WINDOW: (u64, u64) = (0x4000, 1 << 39);
/// Mesa's kernel range: the top 32 GiB of the window.
const MESA_KERNEL: (u64, u64) = (WINDOW.1 - (32 << 30), WINDOW.1);
/// `vm_kernel_min_size`.
const KERNEL_MIN: u64 = 1 << 30;
/// GEM_CREATE flags.
const GEM_WRITEBACK: u32 = 1;
const GEM_VM_PRIVATE: u32 = 2;

/// The result an operation must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `{"ok":true}`.
    Ok,
    /// `{"err": name}`.
    Err(&'static str),
    /// `{"ok":true,"data": hex}`.
    Data(Vec<u8>),
}

impl Expect {
    /// Whether `result` is what was expected.
    pub fn matches(&self, result: &Value) -> bool {
        match self {
            Expect::Ok => {
                result.get("ok") == Some(&Value::Bool(true)) && result.get("data").is_none()
            }
            Expect::Err(e) => result.get("err").and_then(Value::as_str) == Some(e),
            Expect::Data(d) => {
                let hex = crate::trace::hex_bytes_string(d);
                result.get("data").and_then(Value::as_str) == Some(hex.as_str())
            }
        }
    }
}

struct VmModel {
    /// VA page -> (buffer, buffer page, readable, writable).
    pages: BTreeMap<u64, (u64, u64, bool, bool)>,
    /// The kernel range, `[start, end)`: nothing binds there; a read-only zero page at its start.
    kernel: (u64, u64),
    /// Which VM of the name this is (names are reused after a destroy).
    instance: u64,
}

struct BoModel {
    size: u64,
    open: bool,
    /// The VM (name, instance) a VM-private buffer belongs to: it maps there only.
    private: Option<(u64, u64)>,
    /// Bytes written (others read as zero: buffers start zeroed).
    data: HashMap<u64, u8>,
}

/// One page of a VM in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelPage {
    /// VA >> 14.
    pub va_page: u64,
    /// Buffer name.
    pub bo: u64,
    /// Page of the buffer.
    pub page: u64,
    /// GPU may read.
    pub read: bool,
    /// GPU may write.
    pub write: bool,
}

/// A trace under construction, with its model.
pub struct Gen {
    rng: u64,
    /// The operations and their expected results.
    pub ops: Vec<(Op, Expect)>,
    vms: BTreeMap<u64, VmModel>,
    /// Work in flight by VM name, oldest first: the instance it was submitted for.
    jobs: BTreeMap<u64, VecDeque<u64>>,
    instances: u64,
    bos: BTreeMap<u64, BoModel>,
    /// Phase boundaries, for progress reports: (index of first op, name).
    pub phases: Vec<(usize, String)>,
}

impl Gen {
    /// An empty trace with its generator seeded.
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: seed | 1,
            ops: Vec::new(),
            vms: BTreeMap::new(),
            jobs: BTreeMap::new(),
            instances: 0,
            bos: BTreeMap::new(),
            phases: Vec::new(),
        }
    }

    /// A pseudo-random number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n.max(1)
    }

    /// Starts a named phase.
    pub fn phase(&mut self, name: impl Into<String>) {
        self.phases.push((self.ops.len(), name.into()));
    }

    fn push(&mut self, op: Op, e: Expect) {
        self.ops.push((op, e));
    }

    /// Creates a VM with Mesa's kernel range.
    pub fn vm_create(&mut self, vm: u64) {
        self.vm_create_in(vm, None);
    }

    /// Creates a VM with kernel range `kernel` (`[start, end)`), or Mesa's if `None`: page
    /// aligned, inside the window, at least 1 GiB.
    pub fn vm_create_in(&mut self, vm: u64, kernel: Option<(u64, u64)>) {
        let (ks, ke) = kernel.unwrap_or(MESA_KERNEL);
        let e = if self.vms.contains_key(&vm) {
            Expect::Err("EEXIST")
        } else if !(ks | ke).is_multiple_of(PG)
            || ks < WINDOW.0
            || ke > WINDOW.1
            || ke.saturating_sub(ks) < KERNEL_MIN
        {
            Expect::Err("EINVAL")
        } else {
            self.instances += 1;
            let m = VmModel {
                pages: BTreeMap::new(),
                kernel: (ks, ke),
                instance: self.instances,
            };
            self.vms.insert(vm, m);
            Expect::Ok
        };
        self.push(Op::VmCreate { vm, kernel }, e);
    }

    /// Destroys a VM: its name is gone at once, even with work in flight.
    pub fn vm_destroy(&mut self, vm: u64) {
        let e = match self.vms.remove(&vm) {
            None => Expect::Err("ENOENT"),
            Some(_) => Expect::Ok,
        };
        self.push(Op::VmDestroy { vm }, e);
    }

    /// Creates a buffer.
    pub fn gem_create(&mut self, bo: u64, size: u64) {
        self.gem_create_flags(bo, size, 0, None);
    }

    /// Creates a buffer with GEM flags, private to VM `vm_id` (a name) if given.
    pub fn gem_create_flags(&mut self, bo: u64, size: u64, flags: u32, vm_id: Option<u64>) {
        let private = flags & GEM_VM_PRIVATE != 0;
        let e = if self.bos.get(&bo).is_some_and(|b| b.open) {
            Expect::Err("EEXIST")
        } else if size == 0
            || !size.is_multiple_of(PG)
            || flags & !(GEM_WRITEBACK | GEM_VM_PRIVATE) != 0
            || (!private && vm_id.is_some())
        {
            Expect::Err("EINVAL")
        } else if private && !vm_id.is_some_and(|v| self.vms.contains_key(&v)) {
            Expect::Err("ENOENT")
        } else {
            let private = vm_id
                .filter(|_| private)
                .and_then(|v| Some((v, self.vms.get(&v)?.instance)));
            self.bos.insert(
                bo,
                BoModel {
                    size,
                    open: true,
                    private,
                    data: HashMap::new(),
                },
            );
            Expect::Ok
        };
        self.push(
            Op::GemCreate {
                bo,
                size,
                flags,
                vm_id,
            },
            e,
        );
    }

    /// Closes a buffer's handle, which unmaps the buffer from every VM (Mesa frees a buffer
    /// with GEM_CLOSE alone).
    pub fn gem_close(&mut self, bo: u64) {
        let e = match self.bos.get_mut(&bo) {
            Some(b) if b.open => {
                b.open = false;
                for vm in self.vms.values_mut() {
                    vm.pages.retain(|_, &mut (owner, ..)| owner != bo);
                }
                Expect::Ok
            }
            _ => Expect::Err("ENOENT"),
        };
        self.push(Op::GemClose { bo }, e);
    }

    /// Binds `range` bytes of `bo` from `offset` at `addr` in `vm` (a one-op VM_BIND).
    pub fn bind(&mut self, vm: u64, bo: u64, offset: u64, range: u64, addr: u64, flags: u32) {
        let op = GemBindOp {
            flags,
            handle: Some(bo),
            offset,
            range,
            addr,
        };
        self.bind_ops(vm, vec![op]);
    }

    /// Unbinds `range` bytes at `addr` in `vm` (a one-op VM_BIND).
    pub fn unbind(&mut self, vm: u64, addr: u64, range: u64) {
        let op = GemBindOp {
            flags: UNBIND,
            handle: None,
            offset: 0,
            range,
            addr,
        };
        self.bind_ops(vm, vec![op]);
    }

    /// A VM_BIND of `ops` in `vm`: the VM must exist, then every op must be valid (the first
    /// error is the answer, and nothing changes); then they apply in order.
    pub fn bind_ops(&mut self, vm: u64, ops: Vec<GemBindOp>) {
        let e = match self.vms.get(&vm) {
            None => Expect::Err("ENOENT"),
            Some(m) => ops
                .iter()
                .find_map(|o| self.op_error((vm, m.instance), m.kernel, o).err())
                .map_or(Expect::Ok, Expect::Err),
        };
        if e == Expect::Ok {
            let m = self.vms.get_mut(&vm).unwrap();
            for o in &ops {
                let (addr, n) = (o.addr / PG, o.range / PG);
                match o.handle {
                    Some(bo) if o.flags & UNBIND == 0 => {
                        let single = o.flags & SINGLE_PAGE != 0;
                        let (r, w) = (o.flags & READ != 0, o.flags & WRITE != 0);
                        for i in 0..n {
                            let page = o.offset / PG + if single { 0 } else { i };
                            m.pages.insert(addr + i, (bo, page, r, w));
                        }
                    }
                    _ => {
                        for p in addr..addr + n {
                            m.pages.remove(&p);
                        }
                    }
                }
            }
        }
        self.push(Op::Bind { vm, ops }, e);
    }

    /// The rules of one bind op in VM `vm` (name, instance) with kernel range `kernel`, in the
    /// render node's order.
    fn op_error(
        &self,
        vm: (u64, u64),
        kernel: (u64, u64),
        o: &GemBindOp,
    ) -> Result<(), &'static str> {
        if o.flags & !(UNBIND | READ | WRITE | SINGLE_PAGE) != 0 {
            return Err("EINVAL");
        }
        let end = o.addr.checked_add(o.range).ok_or("EINVAL")?;
        let va_ok = (o.addr | end).is_multiple_of(PG)
            && o.addr < end
            && o.addr >= WINDOW.0
            && end <= WINDOW.1
            && (end <= kernel.0 || o.addr >= kernel.1);
        if o.flags & UNBIND != 0 {
            let ok = o.flags == UNBIND && o.handle.is_none() && o.offset == 0 && va_ok;
            return if ok { Ok(()) } else { Err("EINVAL") };
        }
        if o.flags & (READ | WRITE) == 0 {
            return Err("EINVAL");
        }
        let b = o
            .handle
            .and_then(|h| self.bos.get(&h))
            .filter(|b| b.open)
            .ok_or("ENOENT")?;
        if b.private.is_some_and(|p| p != vm) {
            return Err("EINVAL");
        }
        let need = if o.flags & SINGLE_PAGE != 0 {
            PG
        } else {
            o.range
        };
        let in_bo =
            o.offset.is_multiple_of(PG) && o.offset.checked_add(need).is_some_and(|e| e <= b.size);
        if va_ok && in_bo {
            Ok(())
        } else {
            Err("EINVAL")
        }
    }

    /// Submits work for `vm`.
    pub fn submit(&mut self, vm: u64) {
        let e = match self.vms.get(&vm) {
            None => Expect::Err("ENOENT"),
            Some(m) => {
                self.jobs.entry(vm).or_default().push_back(m.instance);
                Expect::Ok
            }
        };
        self.push(Op::Submit { vm }, e);
    }

    /// Completes the oldest work submitted under `vm` (whose VM may be destroyed since).
    pub fn complete(&mut self, vm: u64) {
        let e = match self.jobs.get_mut(&vm).and_then(VecDeque::pop_front) {
            Some(_) => Expect::Ok,
            None if self.vms.contains_key(&vm) => Expect::Err("EINVAL"),
            None => Expect::Err("ENOENT"),
        };
        self.push(Op::Complete { vm }, e);
    }

    /// Work in flight for the VM now named `vm`.
    fn users(&self, vm: u64) -> usize {
        let Some(m) = self.vms.get(&vm) else {
            return 0;
        };
        self.jobs
            .get(&vm)
            .map_or(0, |j| j.iter().filter(|&&i| i == m.instance).count())
    }

    /// The pages `[addr, addr + len)` touches, if all are mapped (and writable for a write).
    fn reach(
        &self,
        vm: u64,
        addr: u64,
        len: u64,
        write: bool,
    ) -> Result<Vec<Option<(u64, u64)>>, &'static str> {
        let m = self.vms.get(&vm).ok_or("ENOENT")?;
        if self.users(vm) == 0 {
            return Err("EINVAL");
        }
        let mut out = Vec::new();
        for a in addr..addr + len {
            match m.pages.get(&(a / PG)) {
                Some(&(bo, page, r, w)) if (write && w) || (!write && r) => {
                    out.push(Some((bo, page * PG + a % PG)))
                }
                // The dummy page: read-only zeroes.
                None if !write && a / PG == m.kernel.0 / PG => out.push(None),
                _ => return Err("EFAULT"),
            }
        }
        Ok(out)
    }

    /// The GPU writes `data` at `addr` in `vm`.
    pub fn gpu_write(&mut self, vm: u64, addr: u64, data: Vec<u8>) {
        let e = match self.reach(vm, addr, data.len() as u64, true) {
            Err(e) => Expect::Err(e),
            Ok(bytes) => {
                for ((bo, off), &v) in bytes.into_iter().flatten().zip(&data) {
                    self.bos.get_mut(&bo).unwrap().data.insert(off, v);
                }
                Expect::Ok
            }
        };
        self.push(Op::GpuWrite { vm, addr, data }, e);
    }

    /// The GPU reads `len` bytes at `addr` in `vm`.
    pub fn gpu_read(&mut self, vm: u64, addr: u64, len: u64) {
        let e = match self.reach(vm, addr, len, false) {
            Err(e) => Expect::Err(e),
            Ok(bytes) => Expect::Data(
                bytes
                    .into_iter()
                    .map(|b| {
                        b.map_or(0, |(bo, off)| {
                            self.bos[&bo].data.get(&off).copied().unwrap_or(0)
                        })
                    })
                    .collect(),
            ),
        };
        self.push(Op::GpuRead { vm, addr, len }, e);
    }

    /// The model's mappings of `vm`, page by page.
    pub fn mapped_pages(&self, vm: u64) -> Vec<ModelPage> {
        self.vms.get(&vm).map_or(Vec::new(), |m| {
            m.pages
                .iter()
                .map(|(&va_page, &(bo, page, read, write))| ModelPage {
                    va_page,
                    bo,
                    page,
                    read,
                    write,
                })
                .collect()
        })
    }

    /// Random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.below(256) as u8).collect()
    }

    /// A mapped VA of `vm` (random; writable if `writable`), if any.
    fn some_mapped(&mut self, vm: u64, writable: bool) -> Option<u64> {
        let pages: Vec<u64> = self
            .vms
            .get(&vm)?
            .pages
            .iter()
            .filter(|(_, &(_, _, r, w))| if writable { w } else { r })
            .map(|(&p, _)| p)
            .collect();
        if pages.is_empty() {
            return None;
        }
        let page = pages[self.below(pages.len() as u64) as usize];
        Some(page * PG + self.below(PG - 64))
    }
}

/// The realistic default workload of `make run`: several processes' VMs with buffers from
/// 16 KiB to 256 MiB, full and partial binds, replacing binds, sparse single-page binds,
/// submissions, GPU writes and reads checked byte for byte, mistakes userspace makes (refused),
/// handles closed while mapped, and a burst of short-lived contexts that recycles the slots.
pub fn builtin(seed: u64) -> Gen {
    let mut g = Gen::new(seed);
    let procs = 4u64;
    let mib = 1u64 << 20;
    // Buffer names: 100 * process + index.
    let sizes = [16 << 10, 256 << 10, 4 * mib, 32 * mib];
    g.phase("create VMs and buffers");
    for p in 1..=procs {
        // The last process reserves the bottom 1 GiB for the kernel instead of Mesa's top.
        let kernel = (p == procs).then_some((WINDOW.0, WINDOW.0 + KERNEL_MIN));
        g.vm_create_in(p, kernel);
        for (i, &s) in sizes.iter().enumerate() {
            let flags = if i == 0 { GEM_WRITEBACK } else { 0 };
            g.gem_create_flags(100 * p + i as u64, s, flags, None);
        }
        // The sparse "null" page, private to the process's VM.
        g.gem_create_flags(100 * p + 9, PG, GEM_VM_PRIVATE, Some(p));
    }
    g.gem_create(1000, 256 * mib);
    g.gem_create(1001, 128 * mib);
    g.phase("bind");
    for p in 1..=procs {
        let mut va = 0x1_0000_0000 * p;
        for i in 0..sizes.len() as u64 {
            let s = sizes[i as usize];
            g.bind(p, 100 * p + i, 0, s, va, READ | WRITE);
            va += s + 16 * mib;
        }
        // Sparse: 1 GiB of one page, read-only.
        g.bind(
            p,
            100 * p + 9,
            0,
            1 << 30,
            0x40_0000_0000 + p * (2 << 30),
            READ | SINGLE_PAGE,
        );
    }
    // The two big buffers shared by processes 1 and 2.
    g.bind(1, 1000, 0, 256 * mib, 0x20_0000_0000, READ | WRITE);
    g.bind(2, 1000, 64 * mib, 64 * mib, 0x20_0000_0000, READ);
    g.bind(2, 1001, 0, 128 * mib, 0x21_0000_0000, READ | WRITE);
    g.phase("run: GPU writes and reads");
    for p in 1..=procs {
        g.submit(p);
    }
    for round in 0..200 {
        let p = 1 + round % procs;
        if let Some(va) = g.some_mapped(p, round % 4 != 3) {
            let data = g.bytes(32);
            g.gpu_write(p, va, data);
            g.gpu_read(p, va, 32);
        }
    }
    // Process 2 sees process 1's writes to the shared buffer.
    let data = g.bytes(16);
    g.gpu_write(1, 0x20_0000_0000 + 64 * mib + 0x100, data);
    g.gpu_read(2, 0x20_0000_0000 + 0x100, 16);
    g.phase("partial unbinds and replacing binds");
    for p in 1..=procs {
        let base32 = 0x1_0000_0000 * p + (16 << 10) + 256 * 1024 + 4 * mib + 3 * 16 * mib;
        g.unbind(p, base32 + 8 * mib, mib);
        g.gpu_read(p, base32 + 8 * mib + 0x40, 8);
        g.gpu_read(p, base32 + 9 * mib, 8);
        // Replace the middle of the 4 MiB buffer's mapping with the start of the 256 KiB one.
        let base4 = 0x1_0000_0000 * p + (16 << 10) + 256 * 1024 + 2 * 16 * mib;
        g.bind(p, 100 * p + 1, 0, 128 << 10, base4 + mib, READ);
        g.gpu_read(p, base4 + mib, 16);
        g.gpu_write(p, base4 + mib, vec![1, 2, 3]);
        // Sparse pages all read the same.
        let sparse = 0x40_0000_0000 + p * (2 << 30);
        g.gpu_read(p, sparse + 12345 * PG + 8, 8);
        // One VM_BIND of three ops: a hole in the 256 KiB buffer's mapping, its first page
        // mapped again read-write, then a page of the 16 KiB buffer over the hole's start.
        let base256 = 0x1_0000_0000 * p + (16 << 10) + 16 * mib;
        let op = |flags, handle, offset, range, addr| GemBindOp {
            flags,
            handle,
            offset,
            range,
            addr,
        };
        g.bind_ops(
            p,
            vec![
                op(UNBIND, None, 0, 4 * PG, base256 + 4 * PG),
                op(READ | WRITE, Some(100 * p + 1), 0, PG, base256 + 6 * PG),
                op(READ, Some(100 * p), 0, PG, base256 + 4 * PG),
            ],
        );
        for i in 3..9 {
            g.gpu_read(p, base256 + i * PG + 8, 8);
        }
    }
    // The dummy page at the start of each VM's kernel range: zeroes, read-only.
    g.gpu_read(1, MESA_KERNEL.0, 8);
    g.gpu_write(1, MESA_KERNEL.0, vec![1]);
    g.gpu_read(procs, WINDOW.0 + 8, 8);
    g.phase("mistakes userspace makes");
    g.bind(1, 101, 0, PG, 0x5000, READ);
    g.bind(1, 101, 0, 2 * (256 << 10), 0x8_0000_0000, READ);
    g.bind(1, 101, 0, PG, MESA_KERNEL.0, READ);
    g.bind(1, 101, 0, 2 * PG, MESA_KERNEL.0 - PG, READ);
    g.bind(1, 101, 0, PG, WINDOW.1, READ);
    g.bind(1, 101, 0, PG, 0x8_0000_0000, 0x100 | READ);
    g.bind(1, 4242, 0, PG, 0x8_0000_0000, READ);
    g.bind(1, 101, 0, PG, 0x8_0000_0000, 0);
    g.gem_create(4243, 12345);
    g.gem_create_flags(4244, PG, GEM_VM_PRIVATE, Some(99));
    g.gem_create_flags(4245, PG, GEM_WRITEBACK, Some(1));
    g.gem_create_flags(4246, PG, 8, None);
    g.gem_create_flags(4247, PG, GEM_VM_PRIVATE, None);
    g.bind(procs, 100 * procs, 0, PG, WINDOW.0 + KERNEL_MIN - PG, READ);
    g.vm_create_in(50, Some((WINDOW.0, WINDOW.0 + KERNEL_MIN - PG)));
    g.vm_create_in(50, Some((MESA_KERNEL.0 + 0x1000, MESA_KERNEL.1)));
    g.vm_create_in(50, Some((MESA_KERNEL.0, MESA_KERNEL.1 + PG)));
    // A malformed array changes nothing, wherever the bad op is.
    let good = GemBindOp {
        flags: UNBIND,
        handle: None,
        offset: 0,
        range: 16 << 10,
        addr: 0x1_0000_0000,
    };
    let bad = GemBindOp {
        flags: READ,
        handle: Some(101),
        offset: 0,
        range: PG,
        addr: MESA_KERNEL.0 + PG,
    };
    g.bind_ops(1, vec![good, bad]);
    g.bind_ops(1, vec![bad, good]);
    g.gpu_read(1, 0x1_0000_0000, 8);
    g.vm_destroy(99);
    g.gpu_read(3, 0x3_0000_0000, 8);
    g.phase("close handles while mapped");
    for p in 1..=procs {
        g.gem_close(100 * p + 2);
    }
    for round in 0..40 {
        let p = 1 + round % procs;
        if let Some(va) = g.some_mapped(p, false) {
            g.gpu_read(p, va, 16);
        }
    }
    g.phase("complete");
    for p in 1..=procs {
        g.complete(p);
    }
    g.phase("short-lived contexts recycling the slots");
    for v in 0..80u64 {
        let vm = 10 + v;
        g.vm_create(vm);
        g.gem_create(5000 + v, PG * (1 + v % 4));
        g.bind(vm, 5000 + v, 0, PG, 0x100_0000, READ | WRITE);
        g.submit(vm);
        let data = g.bytes(8);
        g.gpu_write(vm, 0x100_0000 + 8 * v, data);
        g.gpu_read(vm, 0x100_0000 + 8 * v, 8);
        g.complete(vm);
        g.gem_close(5000 + v);
    }
    for v in 0..80u64 {
        if v % 3 == 0 {
            g.submit(10 + v);
            g.gpu_read(10 + v, 0x100_0000 + 8 * v, 8);
            if v % 2 == 0 {
                // Destroyed with work in flight: the name is gone at once, the VM goes when
                // the work completes.
                g.vm_destroy(10 + v);
                g.gpu_read(10 + v, 0x100_0000 + 8 * v, 8);
                g.submit(10 + v);
                g.complete(10 + v);
                g.complete(10 + v);
                continue;
            }
            g.complete(10 + v);
        }
        g.vm_destroy(10 + v);
    }
    g.phase("the processes run again");
    for p in 1..=procs {
        g.submit(p);
        if let Some(va) = g.some_mapped(p, false) {
            g.gpu_read(p, va, 16);
        }
        g.complete(p);
    }
    g
}

/// A short random trace over a few small buffers and two VMs: binds of one or several ops
/// (valid or not), unbinds, buffers created (VM-private or not, valid or not) and closed,
/// submissions, GPU writes and reads, and VMs destroyed (with work in flight or not) and
/// created again. VM 2's kernel range starts inside the window the ops use, so that its kernel
/// range and dummy page are in their way.
///
/// The ops address 64 pages at the window's start, and now and then the same 64 pages 2 GiB
/// further (another leaf table of the same second-level table, past VM 2's kernel range) or
/// 64 GiB further (another second-level table): mappings come and go in several tables, so
/// that what a trace leaves tells whether emptied tables are freed.
pub fn random(seed: u64, n: usize) -> Gen {
    let mut g = Gen::new(seed);
    let window = 0x100_0000u64;
    let at = |g: &mut Gen, page: u64| {
        let table = [0, 0, 0, 0, 1 << 31, 1 << 36][g.below(6) as usize];
        window + table + page * PG
    };
    let kernel2 = |g: &mut Gen| {
        let start = window + (40 + g.below(16)) * PG;
        Some((start, start + KERNEL_MIN))
    };
    g.vm_create(1);
    let k = kernel2(&mut g);
    g.vm_create_in(2, k);
    // Kernel ranges VM_CREATE refuses.
    g.vm_create_in(3, Some((WINDOW.0, WINDOW.0 + KERNEL_MIN - PG)));
    g.vm_create_in(3, Some((window + 0x100, window + 0x100 + KERNEL_MIN)));
    for bo in 1..=4 {
        g.gem_create(bo, bo * 2 * PG);
    }
    // Buffer names: 1..=4, then new ones from 10 (never reused: the model keys data by name).
    let mut bos: Vec<u64> = (1..=5).collect();
    let bind_op = |g: &mut Gen, bos: &[u64]| {
        let page = g.below(64);
        if g.below(4) == 0 {
            let len = (1 + g.below(10)) * PG;
            let flags = [UNBIND, UNBIND, UNBIND, UNBIND | READ][g.below(4) as usize];
            return GemBindOp {
                flags,
                handle: None,
                offset: 0,
                range: len,
                addr: at(g, page),
            };
        }
        let bo = bos[g.below(bos.len() as u64) as usize];
        let flags = [
            READ,
            READ | WRITE,
            READ | SINGLE_PAGE,
            WRITE,
            0,
            READ | 0x40,
        ][g.below(6) as usize];
        GemBindOp {
            flags,
            handle: Some(bo),
            offset: g.below(9) * PG,
            range: (1 + g.below(8)) * PG,
            addr: at(g, page),
        }
    };
    for _ in 0..n {
        let vm = 1 + g.below(2);
        let page = g.below(64);
        match g.below(12) {
            0..=2 => {
                let o = bind_op(&mut g, &bos);
                match o.handle {
                    Some(bo) => g.bind(vm, bo, o.offset, o.range, o.addr, o.flags),
                    None if o.flags == UNBIND => g.unbind(vm, o.addr, o.range),
                    None => g.bind_ops(vm, vec![o]),
                }
            }
            3 => {
                let k = 2 + g.below(3) as usize;
                let ops = (0..k).map(|_| bind_op(&mut g, &bos)).collect();
                g.bind_ops(vm, ops);
            }
            4 => match g.below(8) {
                0 => {
                    let bo = bos[g.below(bos.len() as u64) as usize];
                    g.gem_close(bo);
                }
                1 => {
                    let bo = 10 + bos.len() as u64;
                    bos.push(bo);
                    let size = [PG, 2 * PG, 3 * PG, 0, PG + 0x100][g.below(5) as usize];
                    let flags = [
                        0,
                        GEM_WRITEBACK,
                        GEM_VM_PRIVATE,
                        GEM_VM_PRIVATE | GEM_WRITEBACK,
                        4,
                    ][g.below(5) as usize];
                    let vm_id = [None, Some(1), Some(2), Some(3)][g.below(4) as usize];
                    g.gem_create_flags(bo, size, flags, vm_id);
                }
                2 if g.below(4) == 0 => {
                    // Destroyed (with work in flight or not), then created again.
                    g.vm_destroy(vm);
                    if g.below(2) == 0 {
                        g.gpu_read(vm, window, 4);
                    }
                    let k = if vm == 2 { kernel2(&mut g) } else { None };
                    g.vm_create_in(vm, k);
                }
                _ => {}
            },
            5 => g.submit(vm),
            6 => g.complete(vm),
            7 => {
                let n = 1 + g.below(24) as usize;
                let data = g.bytes(n);
                let off = g.below(PG);
                let addr = at(&mut g, page) + off;
                g.gpu_write(vm, addr, data);
            }
            _ => {
                let len = 1 + g.below(32);
                let off = g.below(PG);
                let addr = at(&mut g, page) + off;
                g.gpu_read(vm, addr, len);
            }
        }
    }
    g
}
