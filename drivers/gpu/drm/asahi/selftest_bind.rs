// SPDX-License-Identifier: GPL-2.0

//! Built-in self-tests of the VM_BIND rules, firmware objects and crash dumps, on the stand-in
//! SoC of `selftest_uat` (real page allocator, real mappings, real TLB maintenance on arm64).
//!
//! VM_BIND itself runs on `drm::gpuvm`, which needs a DRM device: the render node's binds are
//! tested through its ioctls (`tools/qemu`) and on the host (`tests/vm_bind.rs`). Here, the rules
//! both builds check binds with ([`check_bind`]), in their order.

use crate::crashdump::{vm_core, EM_AARCH64};
use crate::gem::GemObject;
use crate::geometry::{Geometry, UAT_PGSZ};
use crate::gpuvm::{
    bind_flags::*, check_bind, check_gem_create, check_kernel_range, default_kernel_range,
    gem_flags, Bind, BindOp, KERNEL_MIN_SIZE,
};
use crate::kalloc::KernelVaAlloc;
use crate::pte::Prot;
use crate::selftest::{check, ok, Case, CaseResult, Env};
use crate::selftest_uat::StandIn;
use crate::uat::kernel_va;
use kernel::page::Page;
use kernel::prelude::*;

const PG: u64 = UAT_PGSZ;

/// Writes `tag` at the start of the page at `pa`.
fn tag(pa: u64, tag: u64) -> Result {
    // SAFETY: `pa` is a page of a buffer this case owns; the borrow ends here.
    let page = unsafe { Page::borrow_phys(pa) }.ok_or(EIO)?;
    // SAFETY: 8 readable bytes, no concurrent access to the buffer.
    unsafe { page.write_raw(tag.to_le_bytes().as_ptr(), 0, 8) }
}

/// The errno of a refused bind (`None` if accepted).
fn errno<B>(r: Result<Bind<B>>) -> Option<Error> {
    r.err()
}

fn bind_rules(_env: &Env) -> CaseResult {
    let g = Geometry::G13;
    let kernel = default_kernel_range(g);
    let a = ok!(GemObject::new(6 * PG));
    // Handle 1 is `a`, handle 2 `a` as a buffer private to another VM; no other handle exists.
    let lookup = |h| match h {
        1 => Ok((&a, a.size(), true)),
        2 => Ok((&a, a.size(), false)),
        _ => Err(ENOENT),
    };
    let op = |flags, handle, offset, range, addr| BindOp {
        flags,
        handle,
        offset,
        range,
        addr,
    };
    let base = 0x40_0000;
    let b = ok!(check_bind(
        &op(READ | WRITE, 1, PG, 5 * PG, base),
        &kernel,
        g,
        lookup
    ));
    check!(b.va == (base..base + 5 * PG) && b.prot == Prot::GPU_SHARED_RW && !b.single_page);
    check!(b
        .map
        .is_some_and(|(o, off)| core::ptr::eq(o, &a) && off == PG));
    let b = ok!(check_bind(
        &op(READ | SINGLE_PAGE, 1, 5 * PG, 64 * PG, base),
        &kernel,
        g,
        lookup
    ));
    check!(b.single_page && b.prot == Prot::GPU_SHARED_RO);
    let u = ok!(check_bind(&op(UNBIND, 0, 0, PG, base), &kernel, g, lookup));
    check!(u.map.is_none() && u.va == (base..base + PG));
    // Refused: past the buffer, unaligned, unknown flags, no access, wrapping.
    let bad = |o| errno(check_bind(&o, &kernel, g, lookup));
    check!(bad(op(READ, 1, 4 * PG, 3 * PG, base)) == Some(EINVAL));
    check!(bad(op(READ, 1, 0, PG, base + 1)) == Some(EINVAL));
    check!(bad(op(READ, 1, 1, PG, base)) == Some(EINVAL));
    check!(bad(op(READ | 0x100, 1, 0, PG, base)) == Some(EINVAL));
    check!(bad(op(0, 1, 0, PG, base)) == Some(EINVAL));
    check!(bad(op(READ, 1, 0, PG, u64::MAX - PG + 1)) == Some(EINVAL));
    check!(bad(op(READ, 1, 0, PG, 0)) == Some(EINVAL));
    // Another VM's private buffer: after the handle, as the VA range (both `EINVAL`).
    check!(bad(op(READ, 2, 0, PG, base)) == Some(EINVAL));
    check!(bad(op(0, 2, 0, PG, base)) == Some(EINVAL));
    // The handle is looked up before the VA range is checked, after the flags.
    check!(bad(op(READ, 99, 0, PG, base)) == Some(ENOENT));
    check!(bad(op(READ, 99, 0, PG, 1)) == Some(ENOENT));
    check!(bad(op(0, 99, 0, PG, base)) == Some(EINVAL));
    // The kernel range, where the dummy page is: refused.
    check!(bad(op(READ, 1, 0, PG, kernel.start)) == Some(EINVAL));
    check!(bad(op(READ, 1, 0, 2 * PG, kernel.start - PG)) == Some(EINVAL));
    check!(bad(op(UNBIND, 0, 0, PG, kernel.start)) == Some(EINVAL));
    // An unbind names nothing else.
    check!(bad(op(UNBIND, 1, 0, PG, base)) == Some(EINVAL));
    check!(bad(op(UNBIND, 0, PG, PG, base)) == Some(EINVAL));
    check!(bad(op(UNBIND | READ, 0, 0, PG, base)) == Some(EINVAL));
    // VM_CREATE's kernel range and GEM_CREATE's flags.
    check!(check_kernel_range(kernel.start, kernel.end, g) == Ok(kernel.clone()));
    check!(check_kernel_range(0x4000, 0x4000 + KERNEL_MIN_SIZE, g).is_ok());
    check!(check_kernel_range(0x4000, KERNEL_MIN_SIZE, g) == Err(EINVAL));
    check!(check_kernel_range(0, KERNEL_MIN_SIZE, g) == Err(EINVAL));
    check!(check_kernel_range(kernel.start + 1, kernel.end, g) == Err(EINVAL));
    check!(check_kernel_range(kernel.start, kernel.end + PG, g) == Err(EINVAL));
    check!(check_gem_create(PG, gem_flags::WRITEBACK, false) == Ok(false));
    check!(check_gem_create(PG, gem_flags::VM_PRIVATE, true) == Ok(true));
    check!(check_gem_create(0, 0, false) == Err(EINVAL));
    check!(check_gem_create(PG + 1, 0, false) == Err(EINVAL));
    check!(check_gem_create(PG, 4, false) == Err(EINVAL));
    check!(check_gem_create(PG, gem_flags::WRITEBACK, true) == Err(EINVAL));
    Ok(())
}

fn firmware_objects(env: &Env) -> CaseResult {
    let s = ok!(StandIn::new(env, true));
    let mut uat = ok!(s.uat());
    let kva = ok!(KBox::pin_init(
        KernelVaAlloc::new(kernel_va(uat.config().geometry)),
        GFP_KERNEL
    ));
    let start = kernel_va(uat.config().geometry).start;
    // Two pages with an unmapped guard page on each side, as firmware objects are placed.
    let obj = ok!(GemObject::new(2 * PG));
    let base = ok!(kva.alloc(4 * PG));
    let va = base + PG;
    check!(va == start + PG);
    ok!(uat.kernel_map_sg(va, 2 * PG, obj.sg(), 0, Prot::FW_PRIV_RW));
    check!(uat.kernel_translate(va - PG) == Err(ENOENT));
    check!(uat.kernel_translate(va + 2 * PG) == Err(ENOENT));
    check!(ok!(uat.kernel_translate(va + PG)).prot == Prot::FW_PRIV_RW);
    ok!(uat.kernel_unmap(va, 2 * PG));
    ok!(kva.free(base));
    // Cached and firmware-visible: flushed through the protocol before the unmap.
    // (The buffer's pages may be scattered: one message per physically contiguous run.)
    let msg = ok!(s.fw.last.get().ok_or(EIO));
    check!(msg.slot == 64 && msg.addr >= va && msg.addr < va + 2 * PG);
    check!(uat.kernel_translate(va) == Err(ENOENT));
    // The allocator (a maple tree in the kernel, its host twin here) gives the lowest fit, so a
    // freed range is the next one given; the trace replay compares these addresses.
    let (a, b) = (ok!(kva.alloc(PG)), ok!(kva.alloc(2 * PG)));
    check!(a == start && b == start + PG);
    ok!(kva.free(a));
    check!(ok!(kva.alloc(PG)) == a);
    check!(kva.free(b + 2 * PG) == Err(ENOENT));
    check!(kva.alloc(0) == Err(EINVAL) && kva.alloc(PG + 1) == Err(EINVAL));
    let whole = kernel_va(uat.config().geometry);
    check!(kva.alloc(whole.last - whole.start + 1) == Err(ENOSPC));
    ok!(kva.free(b));
    ok!(kva.free(a));
    check!(kva.free(a) == Err(ENOENT));
    Ok(())
}

fn crash_dump(env: &Env) -> CaseResult {
    let s = ok!(StandIn::new(env, true));
    let mut uat = ok!(s.uat());
    let g = uat.config().geometry;
    let vm = ok!(uat.create_vm(false));
    // The VM's dummy page, as the render node maps it, and one buffer page.
    let dummy = ok!(Page::alloc_page(GFP_KERNEL | __GFP_ZERO));
    let kernel = default_kernel_range(g);
    ok!(uat.vm_map(vm, kernel.start, dummy.phys(), PG, Prot::GPU_SHARED_RO));
    let a = ok!(GemObject::new(PG));
    let pa = ok!(a.phys_at(0).ok_or(EIO));
    ok!(tag(pa, 0x5541_5443_5241_5348));
    ok!(uat.vm_map_sg(vm, 0x10_0000, PG, a.sg(), 0, Prot::GPU_SHARED_RO));
    // SAFETY: The VM maps `dummy` and `a`'s page, both alive until the end of the case.
    let core = ok!(unsafe { vm_core(ok!(uat.vm_table(vm)), 1 << 20) });
    let u16_at = |o: usize| u16::from_le_bytes([core[o], core[o + 1]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&core[o..o + 8]);
        u64::from_le_bytes(b)
    };
    check!(core[..4] == [0x7f, b'E', b'L', b'F']);
    check!(u16_at(16) == 4 && u16_at(18) == EM_AARCH64);
    // The note, the buffer's page and the dummy page.
    check!(u16_at(56) == 3);
    let load = 64 + 56;
    check!(u64_at(load + 16) == 0x10_0000 && u64_at(load + 24) == pa);
    let off = u64_at(load + 8) as usize;
    check!(u64_at(off) == 0x5541_5443_5241_5348);
    ok!(uat.destroy_vm(vm));
    Ok(())
}

/// The cases.
pub const CASES: &[Case] = &[
    Case {
        name: "bind_rules",
        run: bind_rules,
    },
    Case {
        name: "firmware_objects",
        run: firmware_objects,
    },
    Case {
        name: "crash_dump",
        run: crash_dump,
    },
];
