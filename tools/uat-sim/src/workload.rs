// SPDX-License-Identifier: GPL-2.0

//! Workloads: traces generated together with the result every operation must have, from a model
//! of the uAPI written independently of the driver (VA pages per VM, bytes per buffer).
//!
//! [`builtin`] is the realistic default of `make run`; [`random`] makes short random traces for
//! the tests. Both are deterministic for a seed.

use crate::trace::Op;
use asahi::gpuvm::bind_flags::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

const PG: u64 = 1 << 14;
const USER_FIRST: u64 = 0x4000;
const USER_END: u64 = (1 << 39) - 2 * PG;

/// The result an operation must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `{"ok":true}` (a submit may add its slot).
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

#[derive(Default)]
struct VmModel {
    /// VA page -> (buffer, buffer page, readable, writable).
    pages: BTreeMap<u64, (u64, u64, bool, bool)>,
    users: u32,
}

struct BoModel {
    size: u64,
    open: bool,
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

    /// Creates a VM.
    pub fn vm_create(&mut self, vm: u64) {
        let e = if let std::collections::btree_map::Entry::Vacant(e) = self.vms.entry(vm) {
            e.insert(VmModel::default());
            Expect::Ok
        } else {
            Expect::Err("EEXIST")
        };
        self.push(Op::VmCreate { vm }, e);
    }

    /// Destroys a VM.
    pub fn vm_destroy(&mut self, vm: u64) {
        let e = match self.vms.get(&vm) {
            None => Expect::Err("ENOENT"),
            Some(m) if m.users > 0 => Expect::Err("EBUSY"),
            Some(_) => {
                self.vms.remove(&vm);
                Expect::Ok
            }
        };
        self.push(Op::VmDestroy { vm }, e);
    }

    /// Creates a buffer.
    pub fn gem_create(&mut self, bo: u64, size: u64) {
        let e = if self.bos.get(&bo).is_some_and(|b| b.open) {
            Expect::Err("EEXIST")
        } else if size == 0 || !size.is_multiple_of(PG) {
            Expect::Err("EINVAL")
        } else {
            self.bos.insert(
                bo,
                BoModel {
                    size,
                    open: true,
                    data: HashMap::new(),
                },
            );
            Expect::Ok
        };
        self.push(Op::GemCreate { bo, size }, e);
    }

    /// Closes a buffer's handle.
    pub fn gem_close(&mut self, bo: u64) {
        let e = match self.bos.get_mut(&bo) {
            Some(b) if b.open => {
                b.open = false;
                Expect::Ok
            }
            _ => Expect::Err("ENOENT"),
        };
        self.push(Op::GemClose { bo }, e);
    }

    fn check_va(addr: u64, range: u64, offset: u64) -> Option<&'static str> {
        if !(addr | range | offset).is_multiple_of(PG)
            || range == 0
            || addr.checked_add(range).is_none()
        {
            return Some("EINVAL");
        }
        if addr < USER_FIRST || addr + range > USER_END {
            return Some("ERANGE");
        }
        None
    }

    /// Binds `range` bytes of `bo` from `offset` at `addr` in `vm`.
    pub fn bind(&mut self, vm: u64, bo: u64, offset: u64, range: u64, addr: u64, flags: u32) {
        let e = self.bind_expect(vm, bo, offset, range, addr, flags);
        if e == Expect::Ok {
            let single = flags & SINGLE_PAGE != 0;
            let (r, w) = (flags & READ != 0, flags & WRITE != 0);
            let m = self.vms.get_mut(&vm).unwrap();
            for i in 0..range / PG {
                let page = if single { offset / PG } else { offset / PG + i };
                m.pages.insert(addr / PG + i, (bo, page, r, w));
            }
        }
        self.push(
            Op::Bind {
                vm,
                bo,
                offset,
                range,
                addr,
                flags,
            },
            e,
        );
    }

    fn bind_expect(
        &self,
        vm: u64,
        bo: u64,
        offset: u64,
        range: u64,
        addr: u64,
        flags: u32,
    ) -> Expect {
        let Some(b) = self.bos.get(&bo).filter(|b| b.open) else {
            return Expect::Err("ENOENT");
        };
        if flags & !KNOWN != 0 {
            return Expect::Err("EINVAL");
        }
        if let Some(e) = Self::check_va(addr, range, offset) {
            return Expect::Err(e);
        }
        if !self.vms.contains_key(&vm) {
            return Expect::Err("ENOENT");
        }
        if flags & UNBIND != 0 || flags & (READ | WRITE) == 0 {
            return Expect::Err("EINVAL");
        }
        let need = if flags & SINGLE_PAGE != 0 { PG } else { range };
        match offset.checked_add(need) {
            Some(end) if end <= b.size => Expect::Ok,
            _ => Expect::Err("EINVAL"),
        }
    }

    /// Unbinds `range` bytes at `addr` in `vm`.
    pub fn unbind(&mut self, vm: u64, addr: u64, range: u64) {
        let e = match Self::check_va(addr, range, 0) {
            Some(e) => Expect::Err(e),
            None => match self.vms.get_mut(&vm) {
                None => Expect::Err("ENOENT"),
                Some(m) => {
                    for p in addr / PG..(addr + range) / PG {
                        m.pages.remove(&p);
                    }
                    Expect::Ok
                }
            },
        };
        self.push(Op::Unbind { vm, addr, range }, e);
    }

    /// Submits work for `vm`.
    pub fn submit(&mut self, vm: u64) {
        let e = match self.vms.get_mut(&vm) {
            None => Expect::Err("ENOENT"),
            Some(m) => {
                m.users += 1;
                Expect::Ok
            }
        };
        self.push(Op::Submit { vm }, e);
    }

    /// Completes work of `vm`.
    pub fn complete(&mut self, vm: u64) {
        let e = match self.vms.get_mut(&vm) {
            None => Expect::Err("ENOENT"),
            Some(m) if m.users == 0 => Expect::Err("EINVAL"),
            Some(m) => {
                m.users -= 1;
                Expect::Ok
            }
        };
        self.push(Op::Complete { vm }, e);
    }

    /// The pages `[addr, addr + len)` touches, if all are mapped (and writable for a write).
    fn reach(
        &self,
        vm: u64,
        addr: u64,
        len: u64,
        write: bool,
    ) -> Result<Vec<(u64, u64)>, &'static str> {
        let m = self.vms.get(&vm).ok_or("ENOENT")?;
        if m.users == 0 {
            return Err("EINVAL");
        }
        let mut out = Vec::new();
        for a in addr..addr + len {
            match m.pages.get(&(a / PG)) {
                Some(&(bo, page, r, w)) if (write && w) || (!write && r) => {
                    out.push((bo, page * PG + a % PG))
                }
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
                for ((bo, off), &v) in bytes.into_iter().zip(&data) {
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
                    .map(|(bo, off)| self.bos[&bo].data.get(&off).copied().unwrap_or(0))
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
        g.vm_create(p);
        for (i, &s) in sizes.iter().enumerate() {
            g.gem_create(100 * p + i as u64, s);
        }
        g.gem_create(100 * p + 9, PG); // the sparse "null" page
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
    }
    g.phase("mistakes userspace makes");
    g.bind(1, 101, 0, PG, 0x5000, READ);
    g.bind(1, 101, 0, 2 * (256 << 10), 0x8_0000_0000, READ);
    g.bind(1, 101, 0, PG, USER_END, READ);
    g.bind(1, 101, 0, PG, 0x8_0000_0000, 0x100 | READ);
    g.bind(1, 4242, 0, PG, 0x8_0000_0000, READ);
    g.bind(1, 101, 0, PG, 0x8_0000_0000, 0);
    g.gem_create(4243, 12345);
    g.vm_destroy(1);
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

/// A short random trace over a few small buffers and two VMs: binds (valid or not), unbinds,
/// closes, submissions, GPU writes and reads.
pub fn random(seed: u64, n: usize) -> Gen {
    let mut g = Gen::new(seed);
    for vm in 1..=2 {
        g.vm_create(vm);
    }
    for bo in 1..=4 {
        g.gem_create(bo, bo * 2 * PG);
    }
    let window = 0x100_0000u64;
    for _ in 0..n {
        let vm = 1 + g.below(2);
        let page = g.below(64);
        match g.below(10) {
            0..=2 => {
                let bo = 1 + g.below(5);
                let off = g.below(9) * PG;
                let len = (1 + g.below(8)) * PG;
                let flags = [
                    READ,
                    READ | WRITE,
                    READ | SINGLE_PAGE,
                    WRITE,
                    0,
                    READ | 0x40,
                ][g.below(6) as usize];
                g.bind(vm, bo, off, len, window + page * PG, flags);
            }
            3 => {
                let len = (1 + g.below(10)) * PG;
                g.unbind(vm, window + page * PG, len);
            }
            4 => {
                if g.below(4) == 0 {
                    let bo = 1 + g.below(4);
                    g.gem_close(bo);
                }
            }
            5 => g.submit(vm),
            6 => g.complete(vm),
            7 => {
                let n = 1 + g.below(24) as usize;
                let data = g.bytes(n);
                let off = g.below(PG);
                g.gpu_write(vm, window + page * PG + off, data);
            }
            _ => {
                let len = 1 + g.below(32);
                let off = g.below(PG);
                g.gpu_read(vm, window + page * PG + off, len);
            }
        }
    }
    g
}
