// SPDX-License-Identifier: GPL-2.0

//! Debugfs access to the GPU's view of a VM: `/sys/kernel/debug/asahi/<device>/`.
//!
//! - `vms` lists the VMs: `<uat id> pid <pid> vm <vm_id>` (the client's ID of it).
//! - `gpu_mem` reads and writes a VM's memory at a GPU VA the way the GPU does, by walking the
//!   VM's page tables: write `read <uat id> <va> <len>` then read the file for the bytes (hex),
//!   or write `write <uat id> <va> <hex bytes>`. Each page is reached by borrowing it by
//!   physical address, under the UAT lock (so it cannot be unmapped, and it is pinned by the
//!   buffer the mapping holds). Permissions are not applied: this is a debugging view. A page
//!   that is not mapped reads as `fault` and stops the access.
//!
//! For testing the render node without a GPU (QEMU), and for debugging.

use crate::driver::AsahiDevice;
use crate::geometry::{UAT_PGMSK, UAT_PGSZ};
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

/// Moves `len` bytes between `buf` and the GPU view of VM `vm` at `va`, page by page: `read`
/// from the pages into `buf`, else from `buf` into the pages. `ENOENT` at the first page that
/// is not mapped, `EIO` if one is not RAM.
fn access(dev: &AsahiDevice, vm: VmId, va: u64, buf: &mut [u8], read: bool) -> Result {
    let uat = dev.uat.lock();
    let pt = uat.vm_table(vm)?;
    let mut done = 0usize;
    while done < buf.len() {
        let at = va.checked_add(done as u64).ok_or(EINVAL)?;
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
    for t in d.dev.vm_tags.lock().iter() {
        writeln!(f, "{} pid {} vm {}", t.uat, t.pid, t.vm_id)?;
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
