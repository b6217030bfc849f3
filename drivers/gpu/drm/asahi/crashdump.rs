// SPDX-License-Identifier: GPL-2.0

//! GPU crash dumps: what a VM lets the GPU see, as an ELF core file.
//!
//! One `PT_LOAD` program header per run of pages mapped contiguously with one protection:
//! `p_vaddr` is the GPU VA, `p_paddr` the physical address, `p_flags` the GPU's access (R, W).
//! Contents are read through the pages themselves, borrowed by physical address; a run that is
//! not RAM (MMIO, a carve-out) is not read: its header has no file contents. A note (`AGXUAT`,
//! type [`NT_AGX_SEGMENT`]) gives, per program header, the full protection (the leaf
//! descriptor's attribute bits) and whether it was RAM, so tools see exactly what was mapped.
//! `readelf` and `gdb` open the result.

use crate::geometry::UAT_PGSZ;
use crate::pgtable::{Mapping, PageTable};
use crate::pte::{Access, PteTemplate};
use kernel::page::{Page, PhysAddr};
use kernel::prelude::*;

/// ELF machine: the dump holds GPU memory, not code of a CPU; AArch64 is what the SoC's tools
/// (and a cross `gdb`) expect.
pub const EM_AARCH64: u16 = 183;
/// Note type: one [`SegmentRecord`] per `PT_LOAD`.
pub const NT_AGX_SEGMENT: u32 = 0x4147_0001;
/// Note owner name.
pub const NOTE_NAME: &[u8] = b"AGXUAT\0";

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// Per-segment note record: five little-endian 64-bit words (va, pa, size, attrs, ram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentRecord {
    /// GPU VA.
    pub va: u64,
    /// Physical address.
    pub pa: PhysAddr,
    /// Bytes.
    pub size: u64,
    /// Leaf descriptor bits other than the output address.
    pub attrs: u64,
    /// Whether the contents are in the file (the pages were RAM).
    pub ram: bool,
    /// The GPU's access (the program header's flags; not in the note, `attrs` says it all).
    pub access: Access,
}

/// Size of one encoded [`SegmentRecord`].
pub const RECORD_SIZE: usize = 40;

fn is_ram(pa: PhysAddr) -> bool {
    // SAFETY: Only asks whether the page is RAM; the borrow ends here.
    unsafe { Page::borrow_phys(&pa) }.is_some()
}

/// Splits the mapped runs of `pt` where RAM-ness changes.
fn segments(pt: &PageTable) -> Result<KVec<SegmentRecord>> {
    let mut runs: KVec<Mapping> = KVec::new();
    let mut err = Ok(());
    pt.for_each_mapping_all(|m| {
        if err.is_ok() {
            err = runs.push(*m, GFP_KERNEL);
        }
    })?;
    err?;
    let user = pt.config().user;
    let mut out: KVec<SegmentRecord> = KVec::new();
    for m in runs.iter() {
        let attrs = PteTemplate::new(m.prot, user).pte(0);
        let mut off = 0;
        while off < m.size {
            let ram = is_ram(m.pa + off);
            let mut len = UAT_PGSZ;
            while off + len < m.size && is_ram(m.pa + off + len) == ram {
                len += UAT_PGSZ;
            }
            out.push(
                SegmentRecord {
                    va: m.va + off,
                    pa: m.pa + off,
                    size: len,
                    attrs,
                    ram,
                    access: m.prot.gpu_access(),
                },
                GFP_KERNEL,
            )?;
            off += len;
        }
    }
    Ok(out)
}

fn put(buf: &mut KVec<u8>, bytes: &[u8]) -> Result {
    buf.extend_from_slice(bytes, GFP_KERNEL)?;
    Ok(())
}

/// Writes the core file of `pt` (at most `limit` bytes: `E2BIG` beyond).
pub fn vm_core(pt: &PageTable, limit: usize) -> Result<KVec<u8>> {
    let segs = segments(pt)?;
    let phnum = segs.len() + 1;
    if phnum > 0xfffe {
        return Err(E2BIG);
    }
    let note_desc = segs.len() * RECORD_SIZE;
    let note_size = 12 + NOTE_NAME.len().next_multiple_of(4) + note_desc;
    // Segment contents start page aligned, as `p_offset ≡ p_vaddr (mod p_align)` wants.
    let headers_end = EHDR_SIZE + phnum * PHDR_SIZE + note_size;
    let data_start = headers_end.next_multiple_of(UAT_PGSZ as usize);
    let data: u64 = segs.iter().filter(|s| s.ram).map(|s| s.size).sum();
    let total = (data_start as u64).checked_add(data).ok_or(E2BIG)?;
    if total > limit as u64 {
        return Err(E2BIG);
    }
    let mut buf = KVec::with_capacity(total as usize, GFP_KERNEL)?;
    // ELF header.
    put(&mut buf, &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0])?;
    put(&mut buf, &[0; 8])?;
    put(&mut buf, &4u16.to_le_bytes())?; // ET_CORE
    put(&mut buf, &EM_AARCH64.to_le_bytes())?;
    put(&mut buf, &1u32.to_le_bytes())?;
    put(&mut buf, &0u64.to_le_bytes())?; // e_entry
    put(&mut buf, &(EHDR_SIZE as u64).to_le_bytes())?; // e_phoff
    put(&mut buf, &0u64.to_le_bytes())?; // e_shoff
    put(&mut buf, &0u32.to_le_bytes())?; // e_flags
    put(&mut buf, &(EHDR_SIZE as u16).to_le_bytes())?;
    put(&mut buf, &(PHDR_SIZE as u16).to_le_bytes())?;
    put(&mut buf, &(phnum as u16).to_le_bytes())?;
    put(&mut buf, &[0; 6])?; // no sections
                             // Program headers: the note, then the loads.
    let phdr = |buf: &mut KVec<u8>, ty: u32, flags: u32, off: u64, s: Option<&SegmentRecord>| {
        let (va, pa, filesz, memsz, align) = match s {
            Some(s) => (s.va, s.pa, if s.ram { s.size } else { 0 }, s.size, UAT_PGSZ),
            None => (0, 0, note_size as u64, 0, 4),
        };
        put(buf, &ty.to_le_bytes())?;
        put(buf, &flags.to_le_bytes())?;
        for v in [off, va, pa, filesz, memsz, align] {
            put(buf, &v.to_le_bytes())?;
        }
        Ok::<(), Error>(())
    };
    phdr(
        &mut buf,
        PT_NOTE,
        0,
        (EHDR_SIZE + phnum * PHDR_SIZE) as u64,
        None,
    )?;
    let mut off = data_start as u64;
    for s in segs.iter() {
        let flags =
            (if s.access.read { PF_R } else { 0 }) | (if s.access.write { PF_W } else { 0 });
        phdr(
            &mut buf,
            PT_LOAD,
            flags,
            if s.ram { off } else { 0 },
            Some(s),
        )?;
        if s.ram {
            off += s.size;
        }
    }
    // The note.
    put(&mut buf, &(NOTE_NAME.len() as u32).to_le_bytes())?;
    put(&mut buf, &(note_desc as u32).to_le_bytes())?;
    put(&mut buf, &NT_AGX_SEGMENT.to_le_bytes())?;
    put(&mut buf, NOTE_NAME)?;
    put(
        &mut buf,
        &[0; 3][..NOTE_NAME.len().next_multiple_of(4) - NOTE_NAME.len()],
    )?;
    for s in segs.iter() {
        for v in [s.va, s.pa, s.size, s.attrs, s.ram as u64] {
            put(&mut buf, &v.to_le_bytes())?;
        }
    }
    buf.extend_with(data_start - headers_end, 0, GFP_KERNEL)?;
    // Contents, page by page through the borrowed pages.
    for s in segs.iter().filter(|s| s.ram) {
        let mut pa = s.pa;
        while pa < s.pa + s.size {
            // SAFETY: The page is RAM (checked when the segment was made) and mapped by `pt`,
            // which the caller keeps from changing while the dump is written.
            let page = unsafe { Page::borrow_phys(&pa) }.ok_or(EIO)?;
            let at = buf.len();
            buf.extend_with(UAT_PGSZ as usize, 0, GFP_KERNEL)?;
            // SAFETY: `buf[at..]` is `UAT_PGSZ` writable bytes.
            unsafe { page.read_raw(buf.as_mut_ptr().add(at), 0, UAT_PGSZ as usize)? };
            pa += UAT_PGSZ;
        }
    }
    Ok(buf)
}
