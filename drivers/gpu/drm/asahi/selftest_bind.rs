// SPDX-License-Identifier: GPL-2.0

//! Built-in self-tests of VM_BIND, firmware objects and crash dumps, on the stand-in SoC of
//! `selftest_uat` (real page allocator, real mappings, real TLB maintenance on arm64).

use crate::crashdump::{vm_core, EM_AARCH64};
use crate::gpuvm::{bind_flags::*, BindOp, Gpuvm};
use crate::pte::Prot;
use crate::selftest::{check, ok, Case, CaseResult, Env};
use crate::selftest_uat::StandIn;
use crate::uat::kernel_va;
use kernel::page::Page;
use kernel::prelude::*;

const PG: u64 = crate::geometry::UAT_PGSZ;

/// Writes `tag` at the start of the page at `pa`.
fn tag(pa: u64, tag: u64) -> Result {
    // SAFETY: `pa` is a page of a buffer this case owns; the borrow ends here.
    let page = unsafe { Page::borrow_phys(pa) }.ok_or(EIO)?;
    // SAFETY: 8 readable bytes, no concurrent access to the buffer.
    unsafe { page.write_raw(tag.to_le_bytes().as_ptr(), 0, 8) }
}

fn bind_semantics(env: &Env) -> CaseResult {
    let s = ok!(StandIn::new(env, true));
    let uat = ok!(s.uat());
    let mut g = ok!(Gpuvm::new(uat));
    let vm = ok!(g.vm_create());
    let a = ok!(g.gem_create(6 * PG));
    let b = ok!(g.gem_create(PG));
    let pa = |g: &Gpuvm<_, _>, h, off| g.gem(h).ok().and_then(|o| o.phys_at(off));
    let base = 0x40_0000;
    let op = |flags, handle, offset, range, addr| BindOp {
        flags,
        handle,
        offset,
        range,
        addr,
    };
    ok!(g.bind(vm, &op(READ | WRITE, a, 0, 6 * PG, base)));
    ok!(g.bind(vm, &op(READ, b, 0, PG, base + 2 * PG)));
    check!(ok!(g.mappings(vm)).len() == 3);
    let t = |g: &Gpuvm<_, _>, va| g.uat().vm_table(vm).and_then(|pt| pt.translate(va));
    check!(ok!(t(&g, base + 2 * PG)).pa == ok!(pa(&g, b, 0).ok_or(EIO)));
    check!(ok!(t(&g, base + 3 * PG)).pa == ok!(pa(&g, a, 3 * PG).ok_or(EIO)));
    check!(ok!(t(&g, base + 3 * PG)).prot == Prot::GPU_SHARED_RW);
    // Refused, and nothing changes.
    check!(g.bind(vm, &op(READ, a, 4 * PG, 3 * PG, base)) == Err(EINVAL));
    check!(g.bind(vm, &op(READ, a, 0, PG, base + 1)) == Err(EINVAL));
    check!(g.bind(vm, &op(READ | 0x100, a, 0, PG, base)) == Err(EINVAL));
    check!(g.bind(vm, &op(0, a, 0, PG, base)) == Err(EINVAL));
    check!(g.bind(vm, &op(READ, 99, 0, PG, base)) == Err(ENOENT));
    check!(g.bind(vm, &op(READ, a, 0, PG, 0)) == Err(EINVAL));
    // The kernel range, where the dummy page is: refused.
    let kernel = ok!(g.kernel_range(vm));
    check!(g.bind(vm, &op(READ, a, 0, PG, kernel.start)) == Err(EINVAL));
    check!(g.bind(vm, &op(READ, a, 0, 2 * PG, kernel.start - PG)) == Err(EINVAL));
    check!(g.bind(vm, &op(UNBIND, a, 0, PG, base)) == Err(EINVAL));
    check!(ok!(g.mappings(vm)).len() == 3);
    // Unbind splits; closing a mapped buffer keeps it.
    ok!(g.bind(vm, &op(UNBIND, 0, 0, PG, base + 4 * PG)));
    check!(ok!(g.mappings(vm)).len() == 4);
    check!(t(&g, base + 4 * PG) == Err(ENOENT));
    ok!(g.gem_close(a));
    check!(g.live_objects() == 2);
    check!(ok!(t(&g, base + 5 * PG)).pa != 0);
    ok!(g.vm_destroy(vm));
    check!(g.live_objects() == 1);
    Ok(())
}

fn firmware_objects(env: &Env) -> CaseResult {
    let s = ok!(StandIn::new(env, true));
    let uat = ok!(s.uat());
    let mut g = ok!(Gpuvm::new(uat));
    let kva = kernel_va(g.uat().config().geometry).start;
    let a = ok!(g.fw_alloc(2 * PG, Prot::FW_PRIV_RW, true));
    check!(a.va == kva + PG);
    check!(g.uat().kernel_translate(a.va - PG) == Err(ENOENT));
    check!(g.uat().kernel_translate(a.va + 2 * PG) == Err(ENOENT));
    check!(ok!(g.uat().kernel_translate(a.va + PG)).prot == Prot::FW_PRIV_RW);
    ok!(g.fw_free(a));
    // Cached and firmware-visible: flushed through the protocol before the unmap.
    // (The buffer's pages may be scattered: one message per physically contiguous run.)
    let msg = ok!(s.fw.last.get().ok_or(EIO));
    check!(msg.slot == 64 && msg.addr >= a.va && msg.addr < a.va + 2 * PG);
    check!(g.uat().kernel_translate(a.va) == Err(ENOENT));
    check!(g.live_objects() == 0);
    Ok(())
}

fn crash_dump(env: &Env) -> CaseResult {
    let s = ok!(StandIn::new(env, true));
    let uat = ok!(s.uat());
    let mut g = ok!(Gpuvm::new(uat));
    let vm = ok!(g.vm_create());
    let a = ok!(g.gem_create(PG));
    let pa = ok!(ok!(g.gem(a)).phys_at(0).ok_or(EIO));
    ok!(tag(pa, 0x5541_5443_5241_5348));
    let bind = BindOp {
        flags: READ,
        handle: a,
        offset: 0,
        range: PG,
        addr: 0x10_0000,
    };
    ok!(g.bind(vm, &bind));
    let core = ok!(vm_core(ok!(g.uat().vm_table(vm)), 1 << 20));
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
    ok!(g.vm_destroy(vm));
    Ok(())
}

/// The cases.
pub const CASES: &[Case] = &[
    Case {
        name: "bind_semantics",
        run: bind_semantics,
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
