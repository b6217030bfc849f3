// SPDX-License-Identifier: GPL-2.0

//! The render node's rules for VM_CREATE, GEM_CREATE and VM_BIND: which arguments are refused,
//! with which errno, in which order. One source for both builds: the kernel's ioctls (`file.rs`,
//! `vm.rs`) and the host's VM_BIND engine (`tools/agx-soc`, which the simulator runs) call the
//! same functions, so that the same operations get the same answers from both.
//!
//! Semantics are DRM GPUVM's (`drm::gpuvm`, driven by the steps of `vm_steps.rs`): binding over
//! existing mappings replaces the overlapped parts, unbinding part of a mapping splits it. Each
//! VM reserves a kernel range of the window ([`user_va`]), where its kernel-private mapping (a
//! read-only zero page) sits at the start and userspace cannot bind.

use crate::geometry::{Geometry, UAT_PGMSK, UAT_PGSZ};
use crate::pte::{Access, Prot};
use crate::uat::user_va;
use core::ops::Range;
use kernel::prelude::*;

/// Bind flags (the uAPI's).
pub mod bind_flags {
    /// Unmap the range instead.
    pub const UNBIND: u32 = 1 << 0;
    /// GPU may read.
    pub const READ: u32 = 1 << 1;
    /// GPU may write.
    pub const WRITE: u32 = 1 << 2;
    /// Map the one page at `offset` over the whole range (sparse / null backing).
    pub const SINGLE_PAGE: u32 = 1 << 3;
    /// Every flag this driver knows.
    pub const KNOWN: u32 = UNBIND | READ | WRITE | SINGLE_PAGE;
}

/// GEM_CREATE flags (the uAPI's).
pub mod gem_flags {
    /// CPU mappings are write-back cached (else write-combined); nothing the GPU sees.
    pub const WRITEBACK: u32 = 1 << 0;
    /// The buffer is private to the VM given with it (shares its reservation object).
    pub const VM_PRIVATE: u32 = 1 << 1;
    /// Every flag this driver knows.
    pub const KNOWN: u32 = WRITEBACK | VM_PRIVATE;
}

/// The least kernel range a VM must reserve (GET_PARAMS' `vm_kernel_min_size`).
pub const KERNEL_MIN_SIZE: u64 = 1 << 30;

/// The kernel range Mesa reserves when it creates a VM: the top 32 GiB of the window, or
/// [`KERNEL_MIN_SIZE`] if that is larger (`end` exclusive).
pub fn default_kernel_range(g: Geometry) -> Range<u64> {
    let w = user_va(g);
    let end = w.last + 1;
    let size = (32u64 << 30).max(KERNEL_MIN_SIZE);
    end.saturating_sub(size).max(w.start)..end
}

/// One bind operation, as the ioctl passes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindOp {
    /// [`bind_flags`].
    pub flags: u32,
    /// GEM handle (0 for an unbind).
    pub handle: u32,
    /// Offset into the buffer.
    pub offset: u64,
    /// Bytes to map or unmap.
    pub range: u64,
    /// GPU VA.
    pub addr: u64,
}

/// A GEM handle.
pub type Handle = u32;

// The flags above are the uAPI's: the kernel build checks them against `asahi_drm.h`.
#[cfg(CONFIG_DRM_ASAHI)]
const _: () = {
    use kernel::uapi;
    assert!(bind_flags::UNBIND == uapi::drm_asahi_bind_flags_DRM_ASAHI_BIND_UNBIND);
    assert!(bind_flags::READ == uapi::drm_asahi_bind_flags_DRM_ASAHI_BIND_READ);
    assert!(bind_flags::WRITE == uapi::drm_asahi_bind_flags_DRM_ASAHI_BIND_WRITE);
    assert!(bind_flags::SINGLE_PAGE == uapi::drm_asahi_bind_flags_DRM_ASAHI_BIND_SINGLE_PAGE);
    assert!(gem_flags::WRITEBACK == uapi::drm_asahi_gem_flags_DRM_ASAHI_GEM_WRITEBACK);
    assert!(gem_flags::VM_PRIVATE == uapi::drm_asahi_gem_flags_DRM_ASAHI_GEM_VM_PRIVATE);
};

/// The user VA window ([`user_va`]) as GPUVM and GET_PARAMS take it (`end` exclusive).
pub fn window(g: Geometry) -> Range<u64> {
    let w = user_va(g);
    w.start..w.last + 1
}

/// VM_CREATE's check of `kernel_start .. kernel_end`: `EINVAL` unless page aligned, inside the
/// window and at least [`KERNEL_MIN_SIZE`]. Returns the range.
pub fn check_kernel_range(kernel_start: u64, kernel_end: u64, g: Geometry) -> Result<Range<u64>> {
    let w = window(g);
    if (kernel_start | kernel_end) & UAT_PGMSK != 0
        || kernel_start < w.start
        || kernel_end > w.end
        || kernel_end.saturating_sub(kernel_start) < KERNEL_MIN_SIZE
    {
        return Err(EINVAL);
    }
    Ok(kernel_start..kernel_end)
}

/// GEM_CREATE's checks before any lookup: `EINVAL` for a size that is zero or not page
/// aligned, unknown [`gem_flags`], or a VM (`has_vm`: a non-zero `vm_id`) without
/// `VM_PRIVATE`. Returns whether the buffer is VM-private: then the caller looks its VM up
/// (`ENOENT`).
pub fn check_gem_create(size: u64, flags: u32, has_vm: bool) -> Result<bool> {
    let private = flags & gem_flags::VM_PRIVATE != 0;
    if size == 0 || size & UAT_PGMSK != 0 || flags & !gem_flags::KNOWN != 0 || (!private && has_vm)
    {
        return Err(EINVAL);
    }
    Ok(private)
}

/// Validates the VA range of a bind: `EINVAL` if unaligned, empty, outside the window or
/// touching the VM's `kernel` range.
pub fn check_va(va: &Range<u64>, kernel: &Range<u64>, g: Geometry) -> Result {
    let w = window(g);
    if (va.start | va.end) & UAT_PGMSK != 0
        || va.start >= va.end
        || va.start < w.start
        || va.end > w.end
        || (va.start < kernel.end && kernel.start < va.end)
    {
        return Err(EINVAL);
    }
    Ok(())
}

/// One bind or unbind, validated ([`check_bind`]); `B` is the caller's reference to a buffer.
pub struct Bind<B> {
    /// The VA range.
    pub va: Range<u64>,
    /// The buffer and the offset into it; `None` for an unbind.
    pub map: Option<(B, u64)>,
    /// The protection of a map.
    pub prot: Prot,
    /// Whether the one page at the offset is repeated over the range.
    pub single_page: bool,
}

/// Validates one bind operation of a VM whose kernel range is `kernel`, changing nothing, in
/// the render node's order (which decides the errno): unknown flags, a wrapping range, an
/// unbind's fields (`EINVAL`); for a map the protection (`EINVAL`), the handle (`lookup`, which
/// returns the buffer, its size in bytes and whether it may be mapped in this VM, or `ENOENT`),
/// a buffer private to another VM (`DRM_ASAHI_GEM_VM_PRIVATE`: `EINVAL`), then the VA range and
/// the buffer range (`EINVAL`). So a map naming an unknown handle is `ENOENT` even if its VA
/// range is bad too, and an unbind looks nothing up.
pub fn check_bind<B>(
    op: &BindOp,
    kernel: &Range<u64>,
    g: Geometry,
    lookup: impl FnOnce(Handle) -> Result<(B, u64, bool)>,
) -> Result<Bind<B>> {
    use bind_flags::*;
    if op.flags & !KNOWN != 0 {
        return Err(EINVAL);
    }
    let end = op.addr.checked_add(op.range).ok_or(EINVAL)?;
    let va = op.addr..end;
    if op.flags & UNBIND != 0 {
        if op.flags != UNBIND || op.handle != 0 || op.offset != 0 {
            return Err(EINVAL);
        }
        check_va(&va, kernel, g)?;
        return Ok(Bind {
            va,
            map: None,
            prot: Prot::GPU_SHARED_RO,
            single_page: false,
        });
    }
    let prot = Prot::gpu(Access {
        read: op.flags & READ != 0,
        write: op.flags & WRITE != 0,
    })
    .ok_or(EINVAL)?;
    let single_page = op.flags & SINGLE_PAGE != 0;
    let (bo, size, here) = lookup(op.handle)?;
    if !here {
        return Err(EINVAL);
    }
    check_va(&va, kernel, g)?;
    let need = if single_page { UAT_PGSZ } else { op.range };
    match op.offset.checked_add(need) {
        Some(end) if op.offset & UAT_PGMSK == 0 && end <= size => Ok(Bind {
            va,
            map: Some((bo, op.offset)),
            prot,
            single_page,
        }),
        _ => Err(EINVAL),
    }
}
