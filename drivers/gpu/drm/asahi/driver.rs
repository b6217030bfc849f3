// SPDX-License-Identifier: GPL-2.0

//! The platform driver and the DRM driver: probe brings the UAT up on the reserved-memory regions
//! of the GPU's node and registers the render node.

use crate::bo::{Bo, BufferPages};
use crate::file::File;
use crate::geometry::Geometry;
use crate::gpu_mem::{self, GpuMem};
#[cfg(not(CONFIG_DRM_ASAHI_FW_STANDIN))]
use crate::handoff::{FlushMsg, FwChannel};
use crate::kalloc::KernelVaAlloc;
use crate::pte::Oas;
use crate::slots::VmId;
use crate::tlbi::{Arm64, Broadcast};
use crate::uat::{kernel_va, RegionDesc, Uat, UatConfig};
use kernel::device::{Bound, Core, DeviceContext};
use kernel::dma::{Device as DmaDevice, DmaMask};
use kernel::drm::{self, ioctl};
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use kernel::sync::Mutex;
use kernel::time::{Instant, Monotonic};
use kernel::{debugfs, new_mutex, of, platform};

/// The GPU's firmware channel. Without a firmware transport in this driver yet, only the
/// stand-in firmware (`CONFIG_DRM_ASAHI_FW_STANDIN`) brings the UAT up.
#[cfg(CONFIG_DRM_ASAHI_FW_STANDIN)]
pub(crate) type Firmware = crate::fw_standin::StandInFw;

/// The GPU's firmware channel: none yet (the mailbox transport is not part of this driver), so
/// probe fails with `ENODEV` unless the stand-in firmware is built in.
#[cfg(not(CONFIG_DRM_ASAHI_FW_STANDIN))]
pub(crate) enum Firmware {}

#[cfg(not(CONFIG_DRM_ASAHI_FW_STANDIN))]
impl FwChannel for Firmware {
    fn flush_cache(&self, _msg: &FlushMsg) -> Result {
        match *self {}
    }
}

/// The UAT of a probed GPU.
pub(crate) type DevUat = Uat<Broadcast<Arm64>, Firmware>;

/// The DRM driver.
pub(crate) struct AsahiDriver;

/// The DRM device of this driver.
pub(crate) type AsahiDevice<Ctx = drm::Normal> = drm::Device<AsahiDriver, Ctx>;

/// The platform driver.
pub(crate) struct AsahiPlatformDriver;

/// What the platform device keeps while bound: dropping it unregisters the DRM device and
/// removes the debugfs files.
pub(crate) struct AsahiData<'bound> {
    _debugfs: Pin<KBox<debugfs::Scope<GpuMem>>>,
    _reg: drm::Registration<'bound, AsahiDriver>,
}

/// A VM of a client, as debugfs lists it.
pub(crate) struct VmTag {
    /// The UAT VM.
    pub(crate) uat: VmId,
    /// The process that created it.
    pub(crate) pid: i32,
    /// The client's ID of it.
    pub(crate) vm_id: u32,
}

/// The GPU's identity, from its `compatible`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GpuId {
    /// The generation: 13 for G13 (M1), 14 for G14 (M2).
    pub(crate) generation: u32,
    /// The variant letter: `G`, `S`, `C`, `D`.
    pub(crate) variant: u8,
}

/// What the ioctls see while the DRM device is registered.
pub(crate) struct AsahiRegData<'drm> {
    /// The bound parent device: buffer scatter tables are made for it.
    pub(crate) pdev: &'drm platform::Device<Bound>,
}

/// The DRM device's data. The UAT lives as long as the DRM device, not only while it is
/// registered: VMs and clients that outlive an unbind tear their mappings down through it.
#[pin_data]
pub(crate) struct AsahiDevData {
    /// The GPU's identity.
    pub(crate) gpu: GpuId,
    /// Probe time, the origin of GET_TIME's timestamps.
    pub(crate) t0: Instant<Monotonic>,
    /// The GPU's MMU: every VM's page tables, the TTBAT, the handoff. Taken after a VM's
    /// GPUVM lock, never before.
    #[pin]
    pub(crate) uat: Mutex<DevUat>,
    /// The kernel VM's addresses for buffers bound with GEM_BIND_OBJECT (its own lock).
    #[pin]
    pub(crate) kva: KernelVaAlloc,
    /// Every client's VMs, for debugfs. The device-wide lists grow with what every client
    /// makes: kvmalloc'd (`KVVec`), so that growing one never needs a high-order allocation.
    #[pin]
    pub(crate) vm_tags: Mutex<KVVec<VmTag>>,
    /// Where the pages of every buffer pinned for the GPU are, for debugfs, in no order (a freed
    /// buffer's entry takes the last one). Taken after `uat`, never before.
    #[pin]
    pub(crate) buffers: Mutex<KVVec<BufferPages>>,
}

const fn gpu(generation: u32, variant: u8) -> GpuId {
    GpuId {
        generation,
        variant,
    }
}

kernel::of_device_table!(
    OF_TABLE,
    <AsahiPlatformDriver as platform::Driver>::IdInfo,
    [
        (of::DeviceId::new(c"apple,agx-g13g"), gpu(13, b'G')),
        (of::DeviceId::new(c"apple,agx-g13s"), gpu(13, b'S')),
        (of::DeviceId::new(c"apple,agx-g13c"), gpu(13, b'C')),
        (of::DeviceId::new(c"apple,agx-g13d"), gpu(13, b'D')),
        (of::DeviceId::new(c"apple,agx-g14g"), gpu(14, b'G')),
        (of::DeviceId::new(c"apple,agx-g14s"), gpu(14, b'S')),
        (of::DeviceId::new(c"apple,agx-g14c"), gpu(14, b'C')),
        (of::DeviceId::new(c"apple,agx-g14d"), gpu(14, b'D'))
    ]
);

/// The reserved-memory region `name` of the GPU's node.
fn region(pdev: &platform::Device<Core<'_>>, name: &CStr) -> Result<RegionDesc> {
    let (phys, size) = pdev
        .reserved_mem_region_by_name(name)
        .inspect_err(|e| dev_err!(pdev, "no reserved-memory region {}: {:?}\n", name, e))?;
    Ok(RegionDesc { phys, size })
}

/// The firmware channel of the probed GPU.
#[cfg(CONFIG_DRM_ASAHI_FW_STANDIN)]
fn firmware(pdev: &platform::Device<Core<'_>>, cfg: &UatConfig) -> Result<Firmware> {
    dev_warn!(
        pdev,
        "stand-in GPU firmware (CONFIG_DRM_ASAHI_FW_STANDIN): for testing without a GPU only\n"
    );
    // The UAT checks the region's size too, but only once the stand-in has mapped it.
    crate::region::check_region(
        "handoff",
        cfg.handoff.phys,
        cfg.handoff.size,
        crate::handoff::HANDOFF_SIZE,
    )?;
    // SAFETY: `cfg.handoff` is the device tree's `handoff` reserved-memory region, which only
    // the UAT and this stand-in use, of at least `HANDOFF_SIZE` bytes (checked above).
    unsafe { crate::fw_standin::StandInFw::new(cfg.handoff.phys, true) }
}

/// The firmware channel of the probed GPU: none in this driver yet.
#[cfg(not(CONFIG_DRM_ASAHI_FW_STANDIN))]
fn firmware(pdev: &platform::Device<Core<'_>>, _cfg: &UatConfig) -> Result<Firmware> {
    dev_err!(pdev, "no GPU firmware transport in this driver\n");
    Err(ENODEV)
}

impl platform::Driver for AsahiPlatformDriver {
    type IdInfo = GpuId;
    type Data<'bound> = AsahiData<'bound>;
    const OF_ID_TABLE: Option<of::IdTable<Self::IdInfo>> = Some(&OF_TABLE);

    fn probe<'bound>(
        pdev: &'bound platform::Device<Core<'_>>,
        info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        let gpu = *info.ok_or(ENODEV)?;
        if gpu.generation != 13 {
            // G14's tables are G13's; its firmware interface is not, and neither are its
            // reported parameters: refuse rather than guess.
            dev_err!(pdev, "G{} GPUs are not supported yet\n", gpu.generation);
            return Err(ENODEV);
        }
        // Checked before anything changes.
        let tlbi = Arm64::new().ok_or_else(|| {
            dev_err!(pdev, "the CPU lacks FEAT_TLBIOS or FEAT_TLBIRANGE\n");
            ENODEV
        })?;
        let cfg = UatConfig {
            geometry: Geometry::G13,
            oas: Oas::of_variant(gpu.variant).ok_or(ENODEV)?,
            ttbs: region(pdev, c"ttbs")?,
            pagetables: region(pdev, c"pagetables")?,
            handoff: region(pdev, c"handoff")?,
        };
        let mask = DmaMask::try_new(cfg.oas.bits())?;
        // SAFETY: Nothing else can make DMA allocations or mappings for the device during probe.
        unsafe { pdev.dma_set_mask_and_coherent(mask)? };
        let fw = firmware(pdev, &cfg)?;
        // SAFETY: The regions are the reserved-memory regions the GPU's node names, which no one
        // else in the kernel uses; `pagetables` holds the firmware's upper-half table and stays
        // reserved for as long as the kernel runs. The only firmware is the stand-in, which walks
        // no page table, so none is walked once the UAT is dropped.
        let uat = unsafe { Uat::new(cfg, Broadcast(tlbi), fw) }
            .inspect_err(|e| dev_err!(pdev, "UAT bring-up failed: {:?}\n", e))?;
        let data = try_pin_init!(AsahiDevData {
            gpu,
            t0: Instant::now(),
            uat <- new_mutex!(uat),
            kva <- KernelVaAlloc::new(kernel_va(cfg.geometry)),
            vm_tags <- new_mutex!(KVVec::new()),
            buffers <- new_mutex!(KVVec::new()),
        }? Error);
        let unreg = drm::UnregisteredDevice::<AsahiDriver>::new(pdev, data)?;
        let reg_data = AsahiRegData { pdev };
        let dir = debugfs::Dir::new(c"asahi");
        let debugfs = KBox::pin_init(
            dir.scope(
                GpuMem::new(ARef::from(&*unreg)),
                pdev.as_ref().name(),
                |d, s| {
                    s.read_callback_file(c"vms", d, &gpu_mem::show_vms);
                    s.read_callback_file(c"maps", d, &gpu_mem::show_maps);
                    s.read_write_callback_file(c"gpu_mem", d, &gpu_mem::show, &gpu_mem::write);
                },
            ),
            GFP_KERNEL,
        )?;
        // SAFETY: `reg` is stored in `AsahiData` and dropped on unbind; it is never forgotten.
        let reg = unsafe { drm::Registration::new(pdev.as_ref(), unreg, reg_data, 0)? };
        dev_info!(
            pdev,
            "G{}{} GPU, UAT up (TTBAT {:#x}, handoff {:#x})\n",
            gpu.generation,
            gpu.variant as char,
            cfg.ttbs.phys,
            cfg.handoff.phys
        );
        Ok(AsahiData {
            _debugfs: debugfs,
            _reg: reg,
        })
    }
}

#[vtable]
impl drm::Driver for AsahiDriver {
    type Data = AsahiDevData;
    type RegistrationData<'drm> = AsahiRegData<'drm>;
    type File = File;
    type Object = Bo;
    type ParentDevice<Ctx: DeviceContext> = platform::Device<Ctx>;

    const INFO: drm::DriverInfo = drm::DriverInfo {
        major: 0,
        minor: 1,
        patchlevel: 0,
        name: c"asahi",
        desc: c"Apple AGX Graphics",
    };
    const FEAT_RENDER: bool = true;

    // In uAPI order, without gaps, from DRM_COMMAND_BASE.
    kernel::declare_drm_ioctls! {
        (ASAHI_GET_PARAMS, drm_asahi_get_params, ioctl::RENDER_ALLOW, File::get_params),
        (ASAHI_GET_TIME, drm_asahi_get_time, ioctl::RENDER_ALLOW, File::get_time),
        (ASAHI_VM_CREATE, drm_asahi_vm_create, ioctl::AUTH | ioctl::RENDER_ALLOW,
            File::vm_create),
        (ASAHI_VM_DESTROY, drm_asahi_vm_destroy, ioctl::AUTH | ioctl::RENDER_ALLOW,
            File::vm_destroy),
        (ASAHI_VM_BIND, drm_asahi_vm_bind, ioctl::AUTH | ioctl::RENDER_ALLOW, File::vm_bind),
        (ASAHI_GEM_CREATE, drm_asahi_gem_create, ioctl::AUTH | ioctl::RENDER_ALLOW,
            File::gem_create),
        (ASAHI_GEM_MMAP_OFFSET, drm_asahi_gem_mmap_offset, ioctl::AUTH | ioctl::RENDER_ALLOW,
            File::gem_mmap_offset),
        (ASAHI_GEM_BIND_OBJECT, drm_asahi_gem_bind_object, ioctl::AUTH | ioctl::RENDER_ALLOW,
            File::gem_bind_object),
        (ASAHI_QUEUE_CREATE, drm_asahi_queue_create, ioctl::AUTH | ioctl::RENDER_ALLOW,
            File::queue_create),
        (ASAHI_QUEUE_DESTROY, drm_asahi_queue_destroy, ioctl::AUTH | ioctl::RENDER_ALLOW,
            File::queue_destroy),
        (ASAHI_SUBMIT, drm_asahi_submit, ioctl::AUTH | ioctl::RENDER_ALLOW, File::submit),
    }
}
