// SPDX-License-Identifier: GPL-2.0

//! Host-only inspection of a [`GpuVm`] for tests (like [`crate::sim`]: driver code must never use
//! it; 7.3's Rust GPUVM API offers no iteration over a VM's VAs).

use super::*;

/// A VA of the tree, as `drm_gpuvm_for_each_va()` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaInfo {
    /// `va.addr`.
    pub addr: u64,
    /// `va.range`.
    pub range: u64,
    /// `gem.offset`.
    pub gem_offset: u64,
    /// `gem.obj`, as an address (0 for the kernel-reserved node).
    pub obj: usize,
    /// Whether this is the kernel-reserved node.
    pub kernel: bool,
}

/// Every node of the tree in address order (`drm_gpuvm_for_each_va()`), the kernel-reserved
/// node included.
pub fn vas<T: DriverGpuVm>(vm: &UniqueRefGpuVm<T>) -> Vec<VaInfo> {
    // SAFETY: `vm` is borrowed, so no `sm_*` call runs; the reference to the tree does not
    // outlive this function.
    let tree = unsafe { vm.tree_ref() };
    tree.iter()
        .map(|(k, n)| match n.va {
            None => VaInfo {
                addr: k.0,
                range: n.range,
                gem_offset: 0,
                obj: 0,
                kernel: true,
            },
            Some(va) => {
                // SAFETY: A VA in the tree is valid.
                let va = unsafe { va.as_ref() };
                VaInfo {
                    addr: va.addr(),
                    range: va.length(),
                    gem_offset: va.gem_offset(),
                    obj: va.obj().as_raw() as usize,
                    kernel: false,
                }
            }
        })
        .collect()
}

/// Calls `f` on every VA of the tree (not the kernel-reserved node) in address order, with its
/// driver data.
pub fn for_each_va<T: DriverGpuVm>(
    vm: &UniqueRefGpuVm<T>,
    mut f: impl FnMut(&GpuVa<T>, &T::VaData),
) {
    // SAFETY: As in `vas`.
    let tree = unsafe { vm.tree_ref() };
    for (_, n) in tree.iter() {
        if let Some(va) = n.va {
            // SAFETY: A VA in the tree is valid.
            let va = unsafe { va.as_ref() };
            f(va, va.data());
        }
    }
}

/// Calls `f` on every VA of the tree (not the kernel-reserved node) overlapping `[start, end)`,
/// in address order, with its driver data (`drm_gpuvm_for_each_va_range()`): the cost is the
/// tree's search plus the VAs found.
pub fn for_each_va_in<T: DriverGpuVm>(
    vm: &UniqueRefGpuVm<T>,
    start: u64,
    end: u64,
    mut f: impl FnMut(&GpuVa<T>, &T::VaData),
) {
    if start >= end {
        return;
    }
    // SAFETY: As in `vas`.
    let tree = unsafe { vm.tree_ref() };
    let mut key = tree.find_first(start, end - start);
    while let Some(k) = key {
        let Some(n) = tree.get(k) else { break };
        if k.0 >= end {
            break;
        }
        if let Some(va) = n.va {
            // SAFETY: A VA in the tree is valid.
            let va = unsafe { va.as_ref() };
            f(va, va.data());
        }
        key = tree.next(k);
    }
}

/// The reference count of a GEM object (`kref`): whether anything but its owner holds it (a
/// vm_bo of a VA mapping it, say).
pub fn obj_refcount<T: IntoGEMObject>(obj: &T) -> usize {
    // SAFETY: `obj` is borrowed, so its `drm_gem_object` is valid.
    unsafe { (*obj.as_raw()).refcount() }
}

/// The address of a GEM object as [`VaInfo::obj`] shows it.
pub fn obj_id<T: IntoGEMObject>(obj: &T) -> usize {
    obj.as_raw() as usize
}

/// The VM's reference count (`kref`).
pub fn vm_refcount<T: DriverGpuVm>(vm: &GpuVm<T>) -> usize {
    vm.vm.kref.load(Ordering::Relaxed)
}

/// The number of zombie vm_bos waiting for [`GpuVm::deferred_cleanup`].
pub fn deferred_count<T: DriverGpuVm>(vm: &GpuVm<T>) -> usize {
    lock(&vm.vm.bo_defer).len()
}

/// The name the VM was created with.
pub fn name<T: DriverGpuVm>(vm: &GpuVm<T>) -> &'static CStr {
    vm.name()
}
