// SPDX-License-Identifier: GPL-2.0

//! The structures of `include/uapi/drm/asahi_drm.h`, stated once for both builds.
//!
//! The kernel build uses the `uapi` crate's bindings of the header; the host build, which has no
//! kernel headers, uses these `#[repr(C)]` twins. So that the two cannot drift apart, the kernel
//! build checks at compile time that every twin has the size of its binding and every field the
//! binding's offset.

/// Declares the twins, and in the kernel build the layout checks against `kernel::uapi`.
macro_rules! uapi_twins {
    ($($(#[$meta:meta])* $twin:ident = $uapi:ident { $($field:ident: $ty:ty),* $(,)? })*) => {
        $(
            $(#[$meta])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            pub struct $twin {
                $(
                    #[allow(missing_docs)]
                    pub $field: $ty,
                )*
            }
        )*

        #[cfg(CONFIG_DRM_ASAHI)]
        const _: () = {
            use core::mem::{offset_of, size_of};
            $(
                assert!(size_of::<kernel::uapi::$uapi>() == size_of::<$twin>());
                $(
                    assert!(
                        offset_of!(kernel::uapi::$uapi, $field) == offset_of!($twin, $field)
                    );
                )*
            )*
        };
    };
}

uapi_twins! {
    /// `struct drm_asahi_params_global`.
    ParamsGlobal = drm_asahi_params_global {
        features: u64,
        gpu_generation: u32,
        gpu_variant: u32,
        gpu_revision: u32,
        chip_id: u32,
        num_dies: u32,
        num_clusters_total: u32,
        num_cores_per_cluster: u32,
        max_frequency_khz: u32,
        core_masks: [u64; 64],
        vm_start: u64,
        vm_end: u64,
        vm_kernel_min_size: u64,
        max_commands_per_submission: u32,
        max_attachments: u32,
        command_timestamp_frequency_hz: u64,
    }
    /// `struct drm_asahi_get_params`.
    GetParams = drm_asahi_get_params { param_group: u32, pad: u32, pointer: u64, size: u64 }
    /// `struct drm_asahi_get_time`.
    GetTime = drm_asahi_get_time { flags: u64, gpu_timestamp: u64 }
    /// `struct drm_asahi_vm_create`.
    VmCreate = drm_asahi_vm_create { kernel_start: u64, kernel_end: u64, vm_id: u32, pad: u32 }
    /// `struct drm_asahi_vm_destroy`.
    VmDestroy = drm_asahi_vm_destroy { vm_id: u32, pad: u32 }
    /// `struct drm_asahi_gem_create`.
    GemCreate = drm_asahi_gem_create { size: u64, flags: u32, vm_id: u32, handle: u32, pad: u32 }
    /// `struct drm_asahi_gem_mmap_offset`.
    GemMmapOffset = drm_asahi_gem_mmap_offset { handle: u32, flags: u32, offset: u64 }
    /// `struct drm_asahi_gem_bind_op`.
    GemBindOp = drm_asahi_gem_bind_op { flags: u32, handle: u32, offset: u64, range: u64, addr: u64 }
    /// `struct drm_asahi_vm_bind`.
    VmBind = drm_asahi_vm_bind { vm_id: u32, num_binds: u32, stride: u32, pad: u32, userptr: u64 }
    /// `struct drm_asahi_gem_bind_object`.
    GemBindObject = drm_asahi_gem_bind_object {
        op: u32,
        flags: u32,
        handle: u32,
        vm_id: u32,
        offset: u64,
        range: u64,
        object_handle: u32,
        pad: u32,
    }
    /// `struct drm_asahi_queue_create`.
    QueueCreate = drm_asahi_queue_create {
        flags: u32,
        vm_id: u32,
        priority: u32,
        queue_id: u32,
        usc_exec_base: u64,
    }
    /// `struct drm_asahi_queue_destroy`.
    QueueDestroy = drm_asahi_queue_destroy { queue_id: u32, pad: u32 }
}
