// SPDX-License-Identifier: GPL-2.0

//! The simulated machine: a SoC booted from a device tree, the driver's VM_BIND layer on it,
//! and the replay of trace operations with their results.

use crate::fdt::{self, NodeId};
use crate::trace::Op;
use agx_soc::engine::FwBuf;
use agx_soc::firmware::FwKnobs;
use agx_soc::{SimGpuvm, Soc};
use asahi::gpuvm::{default_kernel_range, BindOp, Handle};
use asahi::pte::Oas;
use asahi::pte::Prot;
use asahi::slots::VmId;
use asahi::uat::RegionDesc;
use kernel::error::Error;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};

/// The example board `make run` boots (the binding's example, compiled with `dtc`; `make
/// dt-check` checks it is up to date).
pub const DEFAULT_DTB: &[u8] = include_bytes!("../../../dt-bindings/examples/agx-sim.dtb");

/// What the driver's probe finds in the device tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtInfo {
    /// The GPU node's first compatible.
    pub compatible: String,
    /// GPU generation (G13, G14).
    pub generation: &'static str,
    /// Output address size, from the SoC.
    pub oas: u32,
    /// The `ttbs` region.
    pub ttbs: RegionDesc,
    /// The `pagetables` region.
    pub pagetables: RegionDesc,
    /// The `handoff` region.
    pub handoff: RegionDesc,
    /// DRAM banks from the memory node.
    pub memory: Vec<(u64, u64)>,
}

/// Finds the GPU node and its regions by name, as the driver does.
pub fn dt_info(dtb: &[u8]) -> Result<DtInfo, String> {
    let tree = fdt::parse(dtb).map_err(|e| e.to_string())?;
    let is_gpu = |n: NodeId| {
        tree.strings(n, "compatible")
            .is_some_and(|c| c.iter().any(|s| s.starts_with("apple,agx-g1")))
    };
    let gpu = tree.find(is_gpu).ok_or("no apple,agx GPU node")?;
    let gpath = tree.path(gpu);
    let compatible = tree
        .strings(gpu, "compatible")
        .unwrap_or_default()
        .into_iter()
        .next()
        .unwrap_or_default();
    // By bytes: the string may hold multi-byte characters (or U+FFFD for invalid UTF-8).
    let generation = match compatible.as_bytes().get(..14) {
        Some(b"apple,agx-g13g" | b"apple,agx-g13s" | b"apple,agx-g13c" | b"apple,agx-g13d") => {
            "G13"
        }
        Some(b"apple,agx-g14g" | b"apple,agx-g14s" | b"apple,agx-g14c" | b"apple,agx-g14d") => {
            "G14"
        }
        _ => return Err(format!("{gpath}: unsupported GPU {compatible:?}")),
    };
    let soc = tree.strings(tree.root(), "compatible").unwrap_or_default();
    let oas = if soc.iter().any(|c| c == "apple,t8103" || c == "apple,t8112") {
        40
    } else if soc.iter().any(|c| c.starts_with("apple,t60")) {
        42
    } else {
        return Err(format!("unknown SoC {soc:?}"));
    };
    let e = |e: fdt::FdtError| e.to_string();
    let phandles = tree
        .cells(gpu, "memory-region")
        .map_err(e)?
        .ok_or_else(|| format!("{gpath}: no memory-region"))?;
    let names = tree
        .strings(gpu, "memory-region-names")
        .ok_or_else(|| format!("{gpath}: no memory-region-names"))?;
    let region = |name: &str| -> Result<RegionDesc, String> {
        let i = names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| format!("{gpath}: no memory region named {name}"))?;
        let ph = *phandles
            .get(i)
            .ok_or_else(|| format!("{gpath}: memory-region is shorter than its names"))?;
        let node = tree
            .by_phandle(ph)
            .ok_or_else(|| format!("memory region {name}: phandle {ph} not found"))?;
        let reg = tree
            .reg(node)
            .map_err(|e| format!("memory region {name}: {e}"))?;
        let (phys, size) = reg[0];
        if size == 0 || phys.checked_add(size - 1).is_none() {
            return Err(format!(
                "memory region {name}: {phys:#x}+{size:#x} is empty or wraps"
            ));
        }
        Ok(RegionDesc { phys, size })
    };
    let mem_node = tree
        .find(|n| tree.prop(n, "device_type") == Some(b"memory\0"))
        .ok_or("no memory node")?;
    let memory = tree.reg(mem_node).map_err(e)?;
    for &(base, size) in &memory {
        if size == 0 || base.checked_add(size - 1).is_none() {
            return Err(format!(
                "{}: bank {base:#x}+{size:#x} is empty or wraps past 2^64",
                tree.path(mem_node)
            ));
        }
    }
    Ok(DtInfo {
        compatible,
        generation,
        oas,
        ttbs: region("ttbs")?,
        pagetables: region("pagetables")?,
        handoff: region("handoff")?,
        memory,
    })
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    /// Operations replayed.
    pub ops: u64,
    /// Operations that failed (expected or not).
    pub errors: u64,
    /// Highest number of pages mapped in user VMs at once.
    pub peak_pages_mapped: u64,
    /// Highest number of table pages at once.
    pub peak_tables: u64,
    /// Pages mapped in user VMs now (kept up to date op by op: [`Machine::pages_mapped`]
    /// recounts them).
    pub pages_mapped: u64,
    /// Table pages now (likewise, [`Machine::tables`]).
    pub tables: u64,
}

/// The machine.
pub struct Machine {
    /// The driver's VM_BIND layer (dropped before the SoC under it).
    pub gpuvm: SimGpuvm,
    /// The SoC.
    pub soc: Soc,
    /// What the device tree said.
    pub dt: DtInfo,
    /// Trace VM names (of the VMs not destroyed).
    pub vms: BTreeMap<u64, VmId>,
    /// Work in flight, by the VM name it was submitted under, oldest first: the VM of each
    /// (destroyed VMs' too, which the last completion tears down).
    pub jobs: BTreeMap<u64, VecDeque<VmId>>,
    /// Trace buffer names of the open handles.
    pub bos: BTreeMap<u64, Handle>,
    /// The trace name each handle was last created under (closed but mapped buffers keep it).
    pub names: BTreeMap<Handle, u64>,
    /// Counters.
    pub stats: RunStats,
    /// Firmware objects in the kernel VM (what the firmware's rings and control structures
    /// would be), allocated at boot.
    pub fw_bufs: Vec<FwBuf>,
}

/// The firmware objects the machine allocates at boot: (size, protection, guard pages).
pub const FW_OBJECTS: [(u64, Prot, bool); 3] = [
    (64 << 10, Prot::GPUFW_SHARED_RW, true),
    (16 << 10, Prot::FW_PRIV_RW, false),
    (128 << 10, Prot::GPU_RO_FW_PRIV_RW, true),
];

/// The VM ID a `vm_id` naming no VM is replayed as: one no VM has (IDs count up from 1).
const NO_VM: VmId = VmId::MAX;

/// The handle a `handle` naming no open buffer is replayed as: one no buffer has (handles are
/// indices plus one, and there are fewer than `Handle::MAX` of them).
const NO_HANDLE: Handle = Handle::MAX;

fn errno(e: Error) -> Value {
    json!({"err": format!("{e:?}")})
}

fn done(r: Result<(), Error>) -> Value {
    match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => errno(e),
    }
}

impl Machine {
    /// Boots the SoC described by `dtb`.
    pub fn boot(dtb: &[u8]) -> Result<Machine, String> {
        let dt = dt_info(dtb)?;
        let oas = Oas::new(dt.oas).ok_or("bad OAS")?;
        for &(base, size) in &dt.memory {
            if !kernel::sim::is_ram(base) || !kernel::sim::is_ram(base + size - 1) {
                return Err(format!(
                    "memory {base:#x}+{size:#x} is not the simulated RAM"
                ));
            }
        }
        let soc = Soc::from_regions(dt.ttbs, dt.pagetables, dt.handoff, oas, FwKnobs::default())
            .ok_or("the reserved-memory regions are not free in the simulated pool")?;
        let mut gpuvm = soc
            .boot_gpuvm()
            .map_err(|e| format!("UAT init failed: {e:?}"))?;
        let mut fw_bufs = Vec::new();
        for (size, prot, guard) in FW_OBJECTS {
            let b = gpuvm
                .fw_alloc(size, prot, guard)
                .map_err(|e| format!("firmware object: {e:?}"))?;
            fw_bufs.push(b);
        }
        let mut m = Machine {
            fw_bufs,
            gpuvm,
            soc,
            dt,
            vms: BTreeMap::new(),
            jobs: BTreeMap::new(),
            bos: BTreeMap::new(),
            names: BTreeMap::new(),
            stats: RunStats::default(),
        };
        m.stats.tables = m.tables();
        m.stats.peak_tables = m.stats.tables;
        Ok(m)
    }

    fn vm(&self, name: u64) -> Result<VmId, Error> {
        self.vms
            .get(&name)
            .copied()
            .ok_or(kernel::error::code::ENOENT)
    }

    /// Pages mapped in user VMs now, counted over every VM and mapping (the running count is
    /// `stats.pages_mapped`).
    pub fn pages_mapped(&self) -> u64 {
        self.gpuvm
            .vm_ids()
            .map(|id| self.gpuvm.pages_in(id, 0, u64::MAX))
            .sum()
    }

    /// Table pages now (user VMs and the kernel VM), counted over every VM (the running count
    /// is `stats.tables`).
    pub fn tables(&self) -> u64 {
        let uat = self.gpuvm.uat();
        let (lo, hi) = uat.kernel_tables();
        let user: usize = uat
            .vm_ids()
            .filter_map(|id| uat.vm_table(id).ok())
            .map(|pt| pt.table_pages() + 1)
            .sum();
        (user + lo.table_pages() + 1 + hi.table_pages()) as u64
    }

    /// Frees the firmware objects (cached ones through the firmware's cache flush), as the
    /// driver does when the GPU goes down.
    pub fn shutdown(&mut self) -> Result<(), String> {
        for b in self.fw_bufs.drain(..) {
            self.gpuvm
                .fw_free(b)
                .map_err(|e| format!("freeing a firmware object: {e:?}"))?;
        }
        Ok(())
    }

    /// The VMs an operation may change the pages or tables of, each with the disjoint VA ranges
    /// it may change (the whole VM for a destroy, a completion that may tear a VM down, or the
    /// close of a buffer's handle, which unmaps it from every VM that maps it).
    fn touched(&self, op: &Op) -> Vec<(VmId, Vec<(u64, u64)>)> {
        if let Op::GemClose { bo } = op {
            let Some(&handle) = self.bos.get(bo) else {
                return Vec::new();
            };
            return self
                .gpuvm
                .vms_mapping(handle)
                .into_iter()
                .map(|id| (id, vec![(0, u64::MAX)]))
                .collect();
        }
        self.touched_one(op).into_iter().collect()
    }

    /// [`Machine::touched`] of an operation on one VM.
    fn touched_one(&self, op: &Op) -> Option<(VmId, Vec<(u64, u64)>)> {
        match op {
            Op::Bind { vm, ops } => {
                let mut r: Vec<(u64, u64)> = ops
                    .iter()
                    .map(|o| (o.addr, o.addr.saturating_add(o.range)))
                    .collect();
                r.sort_unstable();
                let mut merged: Vec<(u64, u64)> = Vec::with_capacity(r.len());
                for (s, e) in r {
                    match merged.last_mut() {
                        Some(last) if s <= last.1 => last.1 = last.1.max(e),
                        _ => merged.push((s, e)),
                    }
                }
                Some((*self.vms.get(vm)?, merged))
            }
            Op::VmDestroy { vm } => Some((*self.vms.get(vm)?, vec![(0, u64::MAX)])),
            Op::Complete { vm } => {
                let id = self.jobs.get(vm).and_then(|j| j.front())?;
                Some((*id, vec![(0, u64::MAX)]))
            }
            _ => None,
        }
    }

    /// Pages of VM `id` mapped in `[start, end)`, from its GPUVM's VA tree: O(log n) plus the
    /// mappings in the range.
    fn pages_in(&self, id: VmId, start: u64, end: u64) -> u64 {
        self.gpuvm.pages_in(id, start, end)
    }

    /// Table pages of user VM `id` (its top-level table included).
    fn vm_tables(&self, id: VmId) -> u64 {
        self.gpuvm
            .uat()
            .vm_table(id)
            .map_or(0, |pt| pt.table_pages() as u64 + 1)
    }

    /// Replays one operation; returns its result line. The statistics are updated from what the
    /// operation can change alone (one VM, one range), in time independent of the number of
    /// VMs and mappings; but for a GEM_CLOSE, which changes every VM that maps its buffer, and
    /// is counted over each of them whole.
    pub fn execute(&mut self, op: &Op) -> Value {
        let touched = self.touched(op);
        let pages = |m: &Machine, id: VmId, r: &[(u64, u64)]| -> u64 {
            r.iter().map(|&(s, e)| m.pages_in(id, s, e)).sum()
        };
        let before: Vec<(u64, u64)> = touched
            .iter()
            .map(|(id, r)| (pages(self, *id, r), self.vm_tables(*id)))
            .collect();
        let r = self.execute_inner(op);
        self.stats.ops += 1;
        if r.get("err").is_some() {
            self.stats.errors += 1;
        }
        for ((id, r), (pages_before, tables)) in touched.into_iter().zip(before) {
            // A VM torn down has neither mappings nor tables any more: both count as 0.
            let (p, t) = (pages(self, id, &r), self.vm_tables(id));
            let st = &mut self.stats;
            st.pages_mapped = (st.pages_mapped + p).saturating_sub(pages_before);
            st.tables = (st.tables + t).saturating_sub(tables);
        }
        if let Op::VmCreate { vm, .. } = *op {
            if r.get("ok").is_some() {
                let id = self.vms[&vm];
                self.stats.tables += self.vm_tables(id);
            }
        }
        let st = &mut self.stats;
        st.peak_pages_mapped = st.peak_pages_mapped.max(st.pages_mapped);
        st.peak_tables = st.peak_tables.max(st.tables);
        r
    }

    fn execute_inner(&mut self, op: &Op) -> Value {
        use kernel::error::code::*;
        match *op {
            Op::VmCreate { vm, kernel } => {
                if self.vms.contains_key(&vm) {
                    return errno(EEXIST);
                }
                let (start, end) = kernel.unwrap_or_else(|| {
                    let k = default_kernel_range(self.soc.geometry);
                    (k.start, k.end)
                });
                match self.gpuvm.vm_create_in(start, end) {
                    Ok(id) => {
                        self.vms.insert(vm, id);
                        json!({"ok": true})
                    }
                    Err(e) => errno(e),
                }
            }
            // The ID goes at once; the VM with its last work (see `Engine::vm_destroy`).
            Op::VmDestroy { vm } => done(self.vm(vm).and_then(|id| {
                self.gpuvm.vm_destroy(id)?;
                self.vms.remove(&vm);
                Ok(())
            })),
            Op::GemCreate {
                bo,
                size,
                flags,
                vm_id,
            } => {
                if self.bos.contains_key(&bo) {
                    return errno(EEXIST);
                }
                let vm_id = vm_id.map_or(0, |n| self.vms.get(&n).copied().unwrap_or(NO_VM));
                match self.gpuvm.gem_create_flags(size, flags, vm_id) {
                    Ok(handle) => {
                        self.bos.insert(bo, handle);
                        self.names.insert(handle, bo);
                        json!({"ok": true})
                    }
                    Err(e) => errno(e),
                }
            }
            Op::GemClose { bo } => match self.bos.remove(&bo) {
                Some(handle) => done(self.gpuvm.gem_close(handle)),
                None => errno(ENOENT),
            },
            Op::Bind { vm, ref ops } => {
                // The VM first, as VM_BIND looks it up before it reads the operations.
                let id = match self.vm(vm) {
                    Ok(id) => id,
                    Err(e) => return errno(e),
                };
                let ops: Vec<BindOp> = ops
                    .iter()
                    .map(|o| BindOp {
                        flags: o.flags,
                        handle: o
                            .handle
                            .map_or(0, |n| self.bos.get(&n).copied().unwrap_or(NO_HANDLE)),
                        offset: o.offset,
                        range: o.range,
                        addr: o.addr,
                    })
                    .collect();
                done(self.gpuvm.bind_ops(id, &ops))
            }
            Op::Submit { vm } => match self
                .vm(vm)
                .and_then(|id| self.gpuvm.submit(id).map(|s| (id, s)))
            {
                // The slot is the UAT's business: the render node does not show it either.
                Ok((id, _slot)) => {
                    self.jobs.entry(vm).or_default().push_back(id);
                    json!({"ok": true})
                }
                Err(e) => errno(e),
            },
            // The oldest work submitted under the name, else `EINVAL` for a VM without work
            // (from the UAT) or `ENOENT`.
            Op::Complete { vm } => {
                let job = self.jobs.get_mut(&vm).and_then(VecDeque::pop_front);
                if self.jobs.get(&vm).is_some_and(VecDeque::is_empty) {
                    self.jobs.remove(&vm);
                }
                match job {
                    Some(id) => done(self.gpuvm.complete(id)),
                    None => done(self.vm(vm).and_then(|id| self.gpuvm.complete(id))),
                }
            }
            Op::GpuWrite { vm, addr, ref data } => {
                let slot = match self.running_slot(vm) {
                    Ok(s) => s,
                    Err(v) => return v,
                };
                match self.soc.gpu.write(slot, addr, data) {
                    Ok(()) => json!({"ok": true}),
                    Err(_) => errno(EFAULT),
                }
            }
            Op::GpuRead { vm, addr, len } => {
                let slot = match self.running_slot(vm) {
                    Ok(s) => s,
                    Err(v) => return v,
                };
                let mut buf = vec![0u8; len as usize];
                match self.soc.gpu.read(slot, addr, &mut buf) {
                    Ok(()) => {
                        let hex = crate::trace::hex_bytes_string(&buf);
                        json!({"ok": true, "data": hex})
                    }
                    Err(_) => errno(EFAULT),
                }
            }
        }
    }

    /// The slot of a VM with work submitted: GPU accesses happen only there (`EINVAL` if the VM
    /// has none: the GPU runs no work of it).
    fn running_slot(&self, vm: u64) -> Result<usize, Value> {
        use kernel::error::code::*;
        let id = self.vm(vm).map_err(errno)?;
        let uat = self.gpuvm.uat();
        match uat.slot_of(id) {
            Some(s) if uat.slot_users(s) > 0 => Ok(s),
            _ => Err(errno(EINVAL)),
        }
    }
}
