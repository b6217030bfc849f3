// SPDX-License-Identifier: GPL-2.0

//! GPU crash dumps: what a VM lets the GPU see, as an ELF core file.
//!
//! One `PT_LOAD` program header per run of pages mapped contiguously with one protection:
//! `p_vaddr` is the GPU VA, `p_paddr` the physical address, `p_flags` the GPU's access (R, W).
//! Contents are read through the pages themselves, borrowed by physical address; a run that is
//! not RAM (MMIO, a carve-out) is not read: its header has no file contents. A run mapping one
//! page over and over (a sparse binding) is one segment holding that page once. A note
//! (`AGXUAT`, type [`NT_AGX_SEGMENT`]) gives, per program header, the full protection (the leaf
//! descriptor's attribute bits) and flags ([`SEG_RAM`], [`SEG_REPEAT`]), so tools see exactly
//! what was mapped. Beyond 65534 segments the count goes in section 0 (`PN_XNUM`), as in
//! Linux's own core dumps, with a section-name table that some readers insist on. `readelf`
//! and `gdb` open the result.

use crate::geometry::UAT_PGSZ;
use crate::pgtable::PageTable;
use crate::pte::Access;
use kernel::io::PhysAddr;
use kernel::page::Page;
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

/// Per-segment note record: five little-endian 64-bit words (va, pa, size, attrs, flags).
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
    /// Whether every page of the segment maps the same physical page (a sparse binding): the
    /// file then holds that page once.
    pub repeat: bool,
    /// The GPU's access (the program header's flags; not in the note, `attrs` says it all).
    pub access: Access,
}

/// Size of one encoded [`SegmentRecord`].
pub const RECORD_SIZE: usize = 40;
/// [`SegmentRecord`] flag: the contents are in the file (the pages were RAM).
pub const SEG_RAM: u64 = 1 << 0;
/// [`SegmentRecord`] flag: one physical page repeated over the segment, in the file once.
pub const SEG_REPEAT: u64 = 1 << 1;
/// `e_phnum` when the real count is in section header 0's `sh_info` (ELF's extended
/// numbering).
const PN_XNUM: usize = 0xffff;
const SHDR_SIZE: usize = 64;
const SHT_STRTAB: u32 = 3;
const SHSTRTAB: &[u8] = b"\0.shstrtab\0";

impl SegmentRecord {
    /// Bytes of contents in the file.
    pub fn file_size(&self) -> u64 {
        match (self.ram, self.repeat) {
            (false, _) => 0,
            (true, true) => UAT_PGSZ,
            (true, false) => self.size,
        }
    }

    /// The note's flags word.
    pub fn flags(&self) -> u64 {
        (if self.ram { SEG_RAM } else { 0 }) | (if self.repeat { SEG_REPEAT } else { 0 })
    }
}

/// Whether the page at `pa` is ordinary RAM (from the page allocator).
///
/// # Safety
///
/// `pa` must be mapped by a table whose RAM pages stay allocated during the call (see
/// [`vm_core`]): [`Page::borrow_phys`] reads the `struct page`.
unsafe fn is_ram(pa: PhysAddr) -> bool {
    // SAFETY: If `pa` is RAM, the caller keeps it allocated; otherwise it is memory that cannot
    // be hot-removed (MMIO, a reserved region), which is refused. The borrow ends here.
    unsafe { Page::borrow_phys(pa) }.is_some()
}

/// The segments of `pt`: its mapped runs, split where RAM-ness changes, with runs of one page
/// repeated merged into one.
///
/// # Safety
///
/// Every page of RAM that `pt` maps must stay allocated during the call.
unsafe fn segments(pt: &PageTable) -> Result<KVec<SegmentRecord>> {
    let range = pt.config().range;
    let runs = pt.collect_mappings(range.start, range.size(), |_| true)?;
    let mut out: KVec<SegmentRecord> = KVec::new();
    for m in runs.iter() {
        let attrs = m.attrs;
        let mut off = 0;
        while off < m.size {
            // SAFETY: These pages are mapped by `pt`, whose RAM our caller keeps allocated.
            let ram = unsafe { is_ram(m.pa + off) };
            let mut len = UAT_PGSZ;
            // SAFETY: As above.
            while off + len < m.size && unsafe { is_ram(m.pa + off + len) } == ram {
                len += UAT_PGSZ;
            }
            let (va, pa) = (m.va + off, m.pa + off);
            off += len;
            if let Some(last) = out.last_mut() {
                let one_page = last.size == UAT_PGSZ || last.repeat;
                if one_page
                    && len == UAT_PGSZ
                    && last.pa == pa
                    && last.va + last.size == va
                    && last.attrs == attrs
                {
                    last.repeat = true;
                    last.size += UAT_PGSZ;
                    continue;
                }
            }
            let seg = SegmentRecord {
                va,
                pa,
                size: len,
                attrs,
                ram,
                repeat: false,
                access: m.gpu_access(),
            };
            out.push(seg, GFP_KERNEL)?;
        }
    }
    Ok(out)
}

fn put(buf: &mut KVec<u8>, bytes: &[u8]) -> Result {
    buf.extend_from_slice(bytes, GFP_KERNEL)?;
    Ok(())
}

fn put_u16(buf: &mut KVec<u8>, v: u16) -> Result {
    put(buf, &v.to_le_bytes())
}

fn put_u32(buf: &mut KVec<u8>, v: u32) -> Result {
    put(buf, &v.to_le_bytes())
}

fn put_u64(buf: &mut KVec<u8>, v: u64) -> Result {
    put(buf, &v.to_le_bytes())
}

fn put_phdr(buf: &mut KVec<u8>, ty: u32, flags: u32, vals: [u64; 6]) -> Result {
    put_u32(buf, ty)?;
    put_u32(buf, flags)?;
    vals.iter().try_for_each(|&v| put_u64(buf, v))
}

/// Writes the core file of `pt` (at most `limit` bytes: `E2BIG` beyond).
///
/// # Safety
///
/// Every page of RAM that `pt` maps must stay allocated during the call (the pages of the
/// pinned buffers a VM maps, and those it owns, are): the dump reads them.
pub unsafe fn vm_core(pt: &PageTable, limit: usize) -> Result<KVec<u8>> {
    // SAFETY: Our caller keeps the RAM that `pt` maps allocated.
    let segs = unsafe { segments(pt) }?;
    let phnum = segs.len() + 1;
    let xnum = phnum >= PN_XNUM;
    let phnum32 = u32::try_from(phnum).map_err(|_| E2BIG)?;
    let note_desc = segs.len() * RECORD_SIZE;
    let note_desc32 = u32::try_from(note_desc).map_err(|_| E2BIG)?;
    let name_size = NOTE_NAME.len().next_multiple_of(4);
    let note_size = 12 + name_size + note_desc;
    let note_off = EHDR_SIZE + phnum * PHDR_SIZE;
    let note_end = note_off + note_size;
    // With extended numbering: section 0 carrying the count, and a section-name table (section
    // 1) so that readers find a valid `e_shstrndx`.
    let shdr_off = note_end.next_multiple_of(8);
    let strtab_off = shdr_off + 2 * SHDR_SIZE;
    // Segment contents start page aligned, as `p_offset ≡ p_vaddr (mod p_align)` wants.
    let headers_end = if xnum {
        strtab_off + SHSTRTAB.len()
    } else {
        note_end
    };
    let data_start = headers_end.next_multiple_of(UAT_PGSZ as usize);
    let data: u64 = segs.iter().map(SegmentRecord::file_size).sum();
    let total = (data_start as u64).checked_add(data).ok_or(E2BIG)?;
    if total > limit as u64 {
        return Err(E2BIG);
    }
    let mut buf = KVec::with_capacity(total as usize, GFP_KERNEL)?;
    let b = &mut buf;
    // ELF header.
    put(b, &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0])?;
    put(b, &[0; 8])?;
    put_u16(b, 4)?; // ET_CORE
    put_u16(b, EM_AARCH64)?;
    put_u32(b, 1)?; // EV_CURRENT
    put_u64(b, 0)?; // e_entry
    put_u64(b, EHDR_SIZE as u64)?; // e_phoff
    put_u64(b, if xnum { shdr_off as u64 } else { 0 })?; // e_shoff
    put_u32(b, 0)?; // e_flags
    put_u16(b, EHDR_SIZE as u16)?;
    put_u16(b, PHDR_SIZE as u16)?;
    put_u16(b, phnum.min(PN_XNUM) as u16)?;
    // Sections only to carry the extended segment count.
    put_u16(b, if xnum { SHDR_SIZE as u16 } else { 0 })?; // e_shentsize
    put_u16(b, if xnum { 2 } else { 0 })?; // e_shnum
    put_u16(b, u16::from(xnum))?; // e_shstrndx

    // Program headers: the note, then the loads.
    put_phdr(
        b,
        PT_NOTE,
        0,
        [note_off as u64, 0, 0, note_size as u64, 0, 4],
    )?;
    let mut off = data_start as u64;
    for s in segs.iter() {
        let flags =
            (if s.access.read { PF_R } else { 0 }) | (if s.access.write { PF_W } else { 0 });
        let at = if s.ram { off } else { 0 };
        put_phdr(
            b,
            PT_LOAD,
            flags,
            [at, s.va, s.pa, s.file_size(), s.size, UAT_PGSZ],
        )?;
        off += s.file_size();
    }
    // The note.
    put_u32(b, NOTE_NAME.len() as u32)?;
    put_u32(b, note_desc32)?;
    put_u32(b, NT_AGX_SEGMENT)?;
    put(b, NOTE_NAME)?;
    put(b, &[0; 3][..name_size - NOTE_NAME.len()])?;
    for s in segs.iter() {
        for v in [s.va, s.pa, s.size, s.attrs, s.flags()] {
            put_u64(b, v)?;
        }
    }
    if xnum {
        b.extend_with(shdr_off - note_end, 0, GFP_KERNEL)?;
        // Section 0: SHT_NULL, with the segment count in sh_info.
        put(b, &[0; 40])?; // sh_name .. sh_size
        put_u32(b, 0)?; // sh_link
        put_u32(b, phnum32)?; // sh_info
        put(b, &[0; 16])?; // sh_addralign, sh_entsize
                           // Section 1: the section-name table.
        put_u32(b, 1)?; // sh_name: ".shstrtab"
        put_u32(b, SHT_STRTAB)?;
        put_u64(b, 0)?; // sh_flags
        put_u64(b, 0)?; // sh_addr
        put_u64(b, strtab_off as u64)?;
        put_u64(b, SHSTRTAB.len() as u64)?;
        put(b, &[0; 8])?; // sh_link, sh_info
        put_u64(b, 1)?; // sh_addralign
        put_u64(b, 0)?; // sh_entsize
        put(b, SHSTRTAB)?;
    }
    b.extend_with(data_start - headers_end, 0, GFP_KERNEL)?;
    // Contents, page by page through the borrowed pages.
    for s in segs.iter().filter(|s| s.ram) {
        let mut pa = s.pa;
        while pa < s.pa + s.file_size() {
            // SAFETY: The page is RAM (checked when the segment was made) and mapped by `pt`,
            // which cannot change while borrowed; the caller keeps it allocated.
            let page = unsafe { Page::borrow_phys(pa) }.ok_or(EIO)?;
            let at = b.len();
            b.extend_with(UAT_PGSZ as usize, 0, GFP_KERNEL)?;
            // SAFETY: `b[at..]` is `UAT_PGSZ` writable bytes.
            unsafe { page.read_raw(b.as_mut_ptr().add(at), 0, UAT_PGSZ as usize)? };
            pa += UAT_PGSZ;
        }
    }
    Ok(buf)
}
