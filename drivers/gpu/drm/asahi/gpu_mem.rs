// SPDX-License-Identifier: GPL-2.0

//! Debugfs access to the GPU's view of a VM: `/sys/kernel/debug/asahi/<device>/`.
//!
//! - `vms` lists the VMs: `<uat id> pid <pid> vm <vm_id> tables <n>` (the client's ID of it,
//!   and the page-table pages of the VM below its root).
//! - `gpu_mem` reads and writes a VM's memory at a GPU VA the way the GPU does, by walking the
//!   VM's page tables: write `read <uat id> <va> <len>` then read the file for the bytes (hex),
//!   or write `write <uat id> <va> <hex bytes>`. Each page is reached by borrowing it by
//!   physical address, under the UAT lock (so it cannot be unmapped, and it is pinned by the
//!   buffer the mapping holds). As for the GPU, an access faults as a whole if a page is not
//!   mapped or the GPU may not read (write) it: the read shows `fault`, the write fails with
//!   `EFAULT`.
//! - `maps` shows each VM's mappings, page by page as its tables hold them, merged into runs of
//!   one buffer: `vm <uat id>: <n> runs, <n> pages, <n> tables` (the page-table pages below its
//!   root), then per run its VAs, the physical address
//!   of its first page, its size, the GPU's and the firmware's access, and the buffer (`obj`
//!   and its fake mmap offset, which is how its client knows it) with the offset into it, or
//!   `-` for a page of no buffer (the VM's zero page). A run is consecutive VA pages of one
//!   buffer with one access whose offsets advance a page at a time, or stay on one page (then
//!   marked `(one page repeated)`): the same runs as the simulator's `maps.txt`
//!   (`tools/uat-sim/src/maps.rs`), so that a trace replayed both ways compares.
//!
//! For testing the render node without a GPU (QEMU), and for debugging.

use crate::bo::BufferPages;
use crate::driver::AsahiDevice;
use crate::geometry::{UAT_PGMSK, UAT_PGSZ};
use crate::pte::{Access, Prot};
use crate::slots::VmId;
use core::fmt;
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use kernel::sync::Mutex;
use kernel::uaccess::UserSliceReader;

/// The most bytes one access moves.
const MAX_LEN: usize = 4096;

/// A read waiting for the next read of `gpu_mem`.
#[derive(Clone, Copy)]
struct Pending {
    vm: VmId,
    va: u64,
    len: usize,
}

/// The data behind the debugfs files.
#[pin_data]
pub(crate) struct GpuMem {
    dev: ARef<AsahiDevice>,
    #[pin]
    pending: Mutex<Option<Pending>>,
}

impl GpuMem {
    /// The data for `dev`'s files.
    pub(crate) fn new(dev: ARef<AsahiDevice>) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            dev,
            pending <- kernel::new_mutex!(None),
        })
    }
}

/// Moves `buf.len()` bytes between `buf` and the GPU view of VM `vm` at `va`: `read` from the
/// pages into `buf`, else from `buf` into the pages. As the GPU's access, it faults (`EFAULT`,
/// nothing moved) if any page is not mapped, or not readable (writable) by the GPU; `EIO` if a
/// descriptor is corrupt or a page is not RAM.
fn access(dev: &AsahiDevice, vm: VmId, va: u64, buf: &mut [u8], read: bool) -> Result {
    let uat = dev.uat.lock();
    let pt = uat.vm_table(vm)?;
    let end = va.checked_add(buf.len() as u64).ok_or(EINVAL)?;
    // Every page first: an access that faults moves nothing.
    let mut page = va & !UAT_PGMSK;
    while page < end {
        let t = pt
            .translate(page)
            .map_err(|e| if e == EIO { EIO } else { EFAULT })?;
        let access = t.prot.gpu_access();
        if !(if read { access.read } else { access.write }) {
            return Err(EFAULT);
        }
        page += UAT_PGSZ;
    }
    let mut done = 0usize;
    while done < buf.len() {
        let at = va + done as u64;
        let t = pt.translate(at)?;
        let off = (at & UAT_PGMSK) as usize;
        let n = (UAT_PGSZ as usize - off).min(buf.len() - done);
        // SAFETY: The page is mapped in the VM, so it belongs to a buffer that the mapping keeps
        // pinned, and the UAT lock held here keeps it mapped for the whole access.
        let page = unsafe { Page::borrow_phys(t.pa & !UAT_PGMSK) }.ok_or(EIO)?;
        let chunk = &mut buf[done..done + n];
        // SAFETY: `chunk` is valid for `n` bytes; the GPU's accesses race with the CPU's by
        // nature, as with any buffer shared with a device.
        unsafe {
            if read {
                page.read_raw(chunk.as_mut_ptr(), off, n)?;
            } else {
                page.write_raw(chunk.as_ptr(), off, n)?;
            }
        }
        done += n;
    }
    Ok(())
}

/// `vms`: one line per VM.
pub(crate) fn show_vms(d: &GpuMem, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    // The device's lock order: `uat`, then `vm_tags`.
    let uat = d.dev.uat.lock();
    for t in d.dev.vm_tags.lock().iter() {
        let tables = uat.vm_table(t.uat).map_or(0, |pt| pt.table_pages());
        writeln!(
            f,
            "{} pid {} vm {} tables {}",
            t.uat, t.pid, t.vm_id, tables
        )?;
    }
    Ok(())
}

/// The page of buffer `label` at `offset`, or of no buffer (`None`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Owner {
    label: Option<u64>,
    offset: u64,
}

/// A run of [`show_maps`].
struct Run {
    va: u64,
    pa: u64,
    pages: u64,
    owner: Owner,
    prot: Prot,
    repeat: bool,
}

impl Run {
    /// Adds the page at `va` to the run if it continues it (see the module's documentation);
    /// `false` if it starts a new run.
    fn extend(&mut self, va: u64, owner: Owner, prot: Prot) -> bool {
        if self.va + self.pages * UAT_PGSZ != va
            || self.owner.label != owner.label
            || self.prot.gpu_access() != prot.gpu_access()
            || self.prot.fw_access() != prot.fw_access()
        {
            return false;
        }
        if (self.pages == 1 || self.repeat) && owner.offset == self.owner.offset {
            self.repeat = true;
        } else if self.repeat || owner.offset != self.owner.offset + self.pages * UAT_PGSZ {
            return false;
        }
        self.pages += 1;
        true
    }

    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = |a: Access| match (a.read, a.write) {
            (true, true) => "RW",
            (true, false) => "RO",
            (false, true) => "WO",
            (false, false) => "--",
        };
        write!(
            f,
            "  {:#018x}-{:#018x} -> {:#012x} {:>10} KiB  gpu {} fw {}  ",
            self.va,
            self.va + self.pages * UAT_PGSZ,
            self.pa,
            self.pages * UAT_PGSZ / 1024,
            access(self.prot.gpu_access()),
            access(self.prot.fw_access()),
        )?;
        match self.owner.label {
            Some(label) => write!(f, "obj {:#x} +{:#x}", label, self.owner.offset)?,
            None => write!(f, "-")?,
        }
        if self.repeat {
            write!(f, "  (one page repeated)")?;
        }
        writeln!(f)
    }
}

/// The runs of the VM whose table is `pt`, each passed to `f`; `buffers` names the pages.
fn runs(
    pt: &crate::pgtable::PageTable,
    buffers: &[BufferPages],
    mut f: impl FnMut(&Run) -> fmt::Result,
) -> fmt::Result {
    let owner = |pa: u64| {
        buffers
            .iter()
            .find_map(|b| {
                b.offset_of(pa).map(|offset| Owner {
                    label: Some(b.label),
                    offset,
                })
            })
            .unwrap_or(Owner {
                label: None,
                offset: 0,
            })
    };
    let mut run: Option<Run> = None;
    let mut result = Ok(());
    let walked = pt.for_each_mapping_all(|m| {
        for i in 0..m.size / UAT_PGSZ {
            let (va, pa) = (m.va + i * UAT_PGSZ, m.pa + i * UAT_PGSZ);
            let o = owner(pa);
            if run.as_mut().is_some_and(|r| r.extend(va, o, m.prot)) {
                continue;
            }
            let next = Run {
                va,
                pa,
                pages: 1,
                owner: o,
                prot: m.prot,
                repeat: false,
            };
            if let Some(done) = run.replace(next) {
                result = result.and_then(|()| f(&done));
            }
        }
    });
    if let Some(done) = run.take() {
        result = result.and_then(|()| f(&done));
    }
    // A corrupt descriptor: the runs before it are shown, then the error.
    walked.map_err(|_| fmt::Error)?;
    result
}

/// `maps`: every VM's mappings, by buffer.
pub(crate) fn show_maps(d: &GpuMem, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut ids = KVec::new();
    for t in d.dev.vm_tags.lock().iter() {
        ids.push(t.uat, GFP_KERNEL).map_err(|_| fmt::Error)?;
    }
    let uat = d.dev.uat.lock();
    let buffers = d.dev.buffers.lock();
    for id in ids {
        // A VM destroyed since the tags were read is skipped.
        let Ok(pt) = uat.vm_table(id) else {
            continue;
        };
        // The header comes first, with the totals: one pass counts, the next shows the runs
        // (two walks of a debugging view, rather than a buffer of every run).
        let (mut n, mut pages) = (0u64, 0u64);
        runs(pt, &buffers, |r| {
            n += 1;
            pages += r.pages;
            Ok(())
        })?;
        let tables = pt.table_pages();
        writeln!(
            f,
            "vm {}: {} runs, {} pages, {} tables",
            id, n, pages, tables
        )?;
        runs(pt, &buffers, |r| r.show(f))?;
    }
    Ok(())
}

/// `gpu_mem`, read: the bytes of the pending read, in hex, or `fault`.
pub(crate) fn show(d: &GpuMem, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let Some(p) = d.pending.lock().take() else {
        return writeln!(f, "no read pending");
    };
    let mut buf = KVec::from_elem(0u8, p.len, GFP_KERNEL).map_err(|_| fmt::Error)?;
    match access(&d.dev, p.vm, p.va, &mut buf, true) {
        Ok(()) => {
            for b in buf.iter() {
                write!(f, "{:02x}", b)?;
            }
            writeln!(f)
        }
        Err(e) => writeln!(f, "fault {:?}", e),
    }
}

/// The next space-separated word of `s`.
fn word<'a>(s: &mut &'a [u8]) -> Option<&'a [u8]> {
    let start = s.iter().position(|c| !c.is_ascii_whitespace())?;
    let rest = &s[start..];
    let end = rest
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(rest.len());
    *s = &rest[end..];
    Some(&rest[..end])
}

/// A number: `0x` hex or decimal.
fn number(w: &[u8]) -> Result<u64> {
    let s = core::str::from_utf8(w).map_err(|_| EINVAL)?;
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|_| EINVAL)
}

fn hex(c: u8) -> Result<u8> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(EINVAL),
    }
}

/// `gpu_mem`, written: a `read` request, or a `write`, done at once.
pub(crate) fn write(d: &GpuMem, r: &mut UserSliceReader) -> Result {
    let n = r.len();
    if n > 2 * MAX_LEN + 64 {
        return Err(EINVAL);
    }
    let mut line = KVec::from_elem(0u8, n, GFP_KERNEL)?;
    r.read_slice(&mut line)?;
    let mut s: &[u8] = &line;
    let cmd = word(&mut s).ok_or(EINVAL)?;
    let vm = number(word(&mut s).ok_or(EINVAL)?)?;
    let va = number(word(&mut s).ok_or(EINVAL)?)?;
    match cmd {
        b"read" => {
            let len = usize::try_from(number(word(&mut s).ok_or(EINVAL)?)?)?;
            if len == 0 || len > MAX_LEN {
                return Err(EINVAL);
            }
            *d.pending.lock() = Some(Pending { vm, va, len });
            Ok(())
        }
        b"write" => {
            let h = word(&mut s).ok_or(EINVAL)?;
            if h.len() % 2 != 0 || h.len() > 2 * MAX_LEN {
                return Err(EINVAL);
            }
            let mut buf = KVec::from_elem(0u8, h.len() / 2, GFP_KERNEL)?;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = hex(h[2 * i])? << 4 | hex(h[2 * i + 1])?;
            }
            access(&d.dev, vm, va, &mut buf, false)
        }
        _ => Err(EINVAL),
    }
}
