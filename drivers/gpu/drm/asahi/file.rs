// SPDX-License-Identifier: GPL-2.0

//! A client of the render node, and the ioctls of `include/uapi/drm/asahi_drm.h`.
//!
//! Every ioctl validates all of its arguments before it changes anything, and answers as DRM
//! drivers do: `EINVAL` for malformed arguments (alignment, outside the VA window, inside the
//! kernel range, non-zero MBZ fields, unknown flags, a bad stride or non-zero bytes past the
//! known part of a larger one, overflow, a VM-private buffer outside its VM), `ENOENT` for an
//! unknown handle or ID, `EFAULT` for a bad user pointer, `ENOMEM`; `EINTR` when the process
//! is killed during a VM_BIND.

use crate::bo::{self, Bo};
use crate::driver::{AsahiDevice, AsahiDriver, AsahiRegData};
use crate::geometry::{Geometry, UAT_PGMSK};
use crate::gpuvm::{check_gem_create, check_kernel_range, BindOp};
use crate::pte::Prot;
use crate::vacant::vacant_place;
use crate::vm::{window, Bind, Vm, KERNEL_MIN_SIZE};
use kernel::drm::{self, gem::BaseObject, Registered};
use kernel::pr_warn_once;
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use kernel::sync::{Arc, Mutex};
use kernel::transmute::AsBytes;
use kernel::uaccess::UserSlice;
use kernel::{new_mutex, uapi};

/// A buffer bound into the kernel VM with GEM_BIND_OBJECT (where the firmware sees it).
struct KernelObject {
    bo: ARef<Bo>,
    va: u64,
    size: u64,
}

/// Per-client state.
#[pin_data(PinnedDrop)]
pub(crate) struct File {
    dev: ARef<AsahiDevice>,
    /// The client's VMs: `vm_id` is the index plus one. Per-file lists are kvmalloc'd too.
    #[pin]
    vms: Mutex<KVVec<Option<Arc<Vm>>>>,
    /// The client's kernel-VM objects: `object_handle` is the index plus one.
    #[pin]
    objects: Mutex<KVVec<Option<KernelObject>>>,
}

/// The DRM file type of this driver.
pub(crate) type DrmFile = drm::File<File>;

impl drm::file::DriverFile for File {
    type Driver = AsahiDriver;

    fn open(dev: &AsahiDevice) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(
            try_pin_init!(Self {
                dev: ARef::from(dev),
                vms <- new_mutex!(KVVec::new()),
                objects <- new_mutex!(KVVec::new()),
            }),
            GFP_KERNEL,
        )
    }
}

#[pinned_drop]
impl PinnedDrop for File {
    fn drop(self: Pin<&mut Self>) {
        // Kernel-VM objects go with their client. The VMs go with their last reference.
        let objects = core::mem::take(&mut *self.objects.lock());
        for o in objects.into_iter().flatten() {
            unbind_object(&self.dev, o);
        }
    }
}

/// Unmaps a kernel-VM object, then frees its VA and drops its buffer.
///
/// If the unmap fails (a corrupt table, the firmware not flushing), the firmware may still reach
/// the buffer through the VA: both are leaked rather than reused or freed.
fn unbind_object(dev: &AsahiDevice, o: KernelObject) {
    if let Err(e) = dev.uat.lock().kernel_unmap(o.va, o.size) {
        pr_err!(
            "unbinding kernel object at {:#x}: {:?}; leaking its VA and buffer\n",
            o.va,
            e
        );
        core::mem::forget(o);
        return;
    }
    let _ = dev.kva.free(o.va);
}

/// `drm_asahi_params_global` as bytes for `UserSliceWriter`.
#[repr(transparent)]
struct Params(uapi::drm_asahi_params_global);

// SAFETY: `drm_asahi_params_global` is `repr(C)`, of integers only, without padding.
unsafe impl AsBytes for Params {}

/// `Some(id - 1)` for a non-zero ID.
fn index(id: u32) -> Result<usize> {
    (id as usize).checked_sub(1).ok_or(ENOENT)
}

/// The largest VM_BIND stride: room for extensions of `drm_asahi_gem_bind_op` (32 bytes) far
/// beyond any, while the bytes past the known part, which must be read to check they are zero,
/// stay few.
const MAX_STRIDE: usize = 4096;

/// The most kernel-VM objects (GEM_BIND_OBJECT) one open file of the render node holds at once.
///
/// The kernel VM's VA range, its page tables and its allocator are shared by every client and
/// not charged to any: without a bound, one file could take the whole range (others then get
/// `ENOSPC`), and every bind and unbind would cost time in the number of objects. Mesa binds one
/// timestamp buffer per context or query pool. The bound is per file, so a process with many
/// files can still take more.
const MAX_KERNEL_OBJECTS: usize = 4096;

/// The most kernel VA one file's kernel-VM objects cover together (1/256 of the range): with
/// [`MAX_KERNEL_OBJECTS`], what one file can take from the others.
const MAX_KERNEL_OBJECT_BYTES: u64 = 256 << 20;

/// Whether a file holding `objects` may bind `range` more bytes into the kernel VM.
fn objects_allow(objects: &[Option<KernelObject>], range: u64) -> bool {
    let (count, bytes) = objects
        .iter()
        .flatten()
        .fold((0, 0), |(n, b), o| (n + 1, b + o.size));
    count < MAX_KERNEL_OBJECTS && range <= MAX_KERNEL_OBJECT_BYTES.saturating_sub(bytes)
}

/// Skips the next `n` bytes of `r`, the part of a struct that this driver does not know (a
/// larger stride): `EINVAL` unless they are all zero, as the uAPI's extension rule asks.
fn skip_zeroed(r: &mut kernel::uaccess::UserSliceReader, mut n: usize) -> Result {
    let mut buf = [0u8; 256];
    while n != 0 {
        let len = n.min(buf.len());
        let chunk = &mut buf[..len];
        r.read_slice(chunk)?;
        if chunk.iter().any(|&b| b != 0) {
            return Err(EINVAL);
        }
        n -= chunk.len();
    }
    Ok(())
}

/// `EINTR` if the process is being killed: a long VM_BIND (up to 2^32 ops) stops then. Not for
/// other signals: restarted, the call would start over, and under a periodic timer never end.
fn killable() -> Result {
    if kernel::current!().fatal_signal_pending() {
        return Err(EINTR);
    }
    Ok(())
}

impl File {
    /// A handle of `bo` was closed (GEM_CLOSE, or the client going): unmaps the buffer from
    /// every VM of the client, as Mesa counts on (it frees a buffer with GEM_CLOSE alone). VMs
    /// of other clients keep their mappings of a shared buffer.
    ///
    /// The VMs are taken one at a time by index, the `vms` lock held only to take each, so that
    /// no VM lock is taken under it and nothing is allocated. A VM created meanwhile cannot map
    /// the buffer through this file: the handle is gone before `close` is called. A bind that
    /// looked the handle up before and maps after this ran leaves its mapping (the client's own
    /// race); it goes with an unbind or the VM.
    pub(crate) fn close_object(&self, bo: &Bo) {
        for i in 0.. {
            let vm = match self.vms.lock().get(i) {
                None => break,
                Some(vm) => vm.clone(),
            };
            if let Some(vm) = vm {
                vm.unmap_object(bo);
            }
        }
    }

    fn vm(&self, vm_id: u32) -> Result<Arc<Vm>> {
        let idx = index(vm_id)?;
        self.vms
            .lock()
            .get(idx)
            .and_then(Option::clone)
            .ok_or(ENOENT)
    }

    /// GET_PARAMS: the device's parameters, at most `size` bytes of them.
    pub(crate) fn get_params(
        ddev: &AsahiDevice<Registered>,
        _reg: &AsahiRegData<'_>,
        args: &mut uapi::drm_asahi_get_params,
        _file: &DrmFile,
    ) -> Result<u32> {
        if args.param_group != 0 || args.pad != 0 {
            return Err(EINVAL);
        }
        let w = window(Geometry::G13);
        let mut p: uapi::drm_asahi_params_global = Zeroable::zeroed();
        p.gpu_generation = ddev.gpu.generation;
        p.gpu_variant = ddev.gpu.variant.into();
        p.num_dies = 1;
        p.vm_start = w.start;
        p.vm_end = w.end;
        p.vm_kernel_min_size = KERNEL_MIN_SIZE;
        p.command_timestamp_frequency_hz = 1_000_000_000;
        let p = Params(p);
        let bytes = p.as_bytes();
        let len = bytes
            .len()
            .min(usize::try_from(args.size).unwrap_or(usize::MAX));
        let mut w = UserSlice::new(UserPtr::from_addr(args.pointer as usize), len).writer();
        w.write_slice(&bytes[..len])?;
        Ok(0)
    }

    /// GET_TIME: nanoseconds since probe (`command_timestamp_frequency_hz` is 1 GHz).
    pub(crate) fn get_time(
        ddev: &AsahiDevice<Registered>,
        _reg: &AsahiRegData<'_>,
        args: &mut uapi::drm_asahi_get_time,
        _file: &DrmFile,
    ) -> Result<u32> {
        if args.flags != 0 {
            return Err(EINVAL);
        }
        args.gpu_timestamp = u64::try_from(ddev.t0.elapsed().as_nanos())?;
        Ok(0)
    }

    /// VM_CREATE: a VM whose `kernel_start .. kernel_end` is the kernel's.
    pub(crate) fn vm_create(
        ddev: &AsahiDevice<Registered>,
        _reg: &AsahiRegData<'_>,
        args: &mut uapi::drm_asahi_vm_create,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.pad != 0 {
            return Err(EINVAL);
        }
        let kernel = check_kernel_range(args.kernel_start, args.kernel_end, Geometry::G13)?;
        let file = file.inner();
        let mut vms = file.vms.lock();
        let idx = match vms.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                vms.push(None, GFP_KERNEL_ACCOUNT)?;
                vms.len() - 1
            }
        };
        let vm_id = u32::try_from(idx + 1)?;
        let pid = kernel::current!().pid();
        vms[idx] = Some(Vm::new(ddev, kernel, pid, vm_id)?);
        args.vm_id = vm_id;
        Ok(0)
    }

    /// VM_DESTROY: the ID is gone at once; the VM (its mappings, its page tables) goes with its
    /// last reference.
    pub(crate) fn vm_destroy(
        _ddev: &AsahiDevice<Registered>,
        _reg: &AsahiRegData<'_>,
        args: &mut uapi::drm_asahi_vm_destroy,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.pad != 0 {
            return Err(EINVAL);
        }
        let idx = index(args.vm_id)?;
        let vm = file.inner().vms.lock().get_mut(idx).and_then(Option::take);
        // Dropped here, outside the lock.
        vm.map(|_| 0).ok_or(ENOENT)
    }

    /// Reads and validates one `drm_asahi_gem_bind_op`.
    fn read_bind(
        r: &mut kernel::uaccess::UserSliceReader,
        extra: usize,
        vm: &Vm,
        file: &DrmFile,
    ) -> Result<Bind> {
        let flags: u32 = r.read()?;
        let handle: u32 = r.read()?;
        let offset: u64 = r.read()?;
        let range: u64 = r.read()?;
        let addr: u64 = r.read()?;
        skip_zeroed(r, extra)?;
        let op = BindOp {
            flags,
            handle,
            offset,
            range,
            addr,
        };
        vm.check_bind(&op, |h| {
            let bo = Bo::lookup_handle(file, h)?;
            let size = u64::try_from(bo.size())?;
            let here = bo::bindable_in(&bo, Some(vm.root()));
            Ok((bo, size, here))
        })
    }

    /// VM_BIND: `num_binds` operations at `stride` bytes each. All of them are read and
    /// validated, then everything they need is allocated, before the first is applied: a
    /// malformed array, or memory running out (`ENOMEM`), changes nothing. They are then
    /// applied in order ([`Vm::bind`]).
    pub(crate) fn vm_bind(
        _ddev: &AsahiDevice<Registered>,
        reg: &AsahiRegData<'_>,
        args: &mut uapi::drm_asahi_vm_bind,
        file: &DrmFile,
    ) -> Result<u32> {
        const OP_SIZE: usize = core::mem::size_of::<uapi::drm_asahi_gem_bind_op>();
        let stride = args.stride as usize;
        if !(OP_SIZE..=MAX_STRIDE).contains(&stride) || args.pad != 0 {
            return Err(EINVAL);
        }
        let vm = file.inner().vm(args.vm_id)?;
        let num = args.num_binds as usize;
        let total = stride.checked_mul(num).ok_or(EINVAL)?;
        let mut r = UserSlice::new(UserPtr::from_addr(args.userptr as usize), total).reader();
        // Grown as the ops are read, not sized by `num_binds` up front: a count larger than the
        // array fails where the array ends (`EFAULT`), not with an allocation sized by the count
        // (`ENOMEM`, however short the array). kvmalloc'd, charged to the caller, quietly.
        let mut binds: KVVec<Bind> = KVVec::new();
        for _ in 0..num {
            killable()?;
            let b = Self::read_bind(&mut r, stride - OP_SIZE, &vm, file)?;
            binds.push(b, GFP_KERNEL_ACCOUNT | __GFP_NOWARN)?;
        }
        vm.bind(reg.pdev.as_ref(), &binds, killable)?;
        Ok(0)
    }

    /// GEM_CREATE: a shmem buffer of `size` bytes (page aligned, not zero); a VM-private one
    /// (`DRM_ASAHI_GEM_VM_PRIVATE`) shares its VM's reservation object.
    pub(crate) fn gem_create(
        ddev: &AsahiDevice<Registered>,
        _reg: &AsahiRegData<'_>,
        args: &mut uapi::drm_asahi_gem_create,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.pad != 0 {
            return Err(EINVAL);
        }
        let private = check_gem_create(args.size, args.flags, args.vm_id != 0)?;
        let size = usize::try_from(args.size).map_err(|_| EINVAL)?;
        let vm = if private {
            Some(file.inner().vm(args.vm_id)?)
        } else {
            None
        };
        let bo = bo::new_bo(ddev, size, args.flags, vm.as_deref().map(Vm::root))?;
        args.handle = bo.create_handle(file)?;
        Ok(0)
    }

    /// GEM_MMAP_OFFSET: the fake offset to `mmap` a buffer at.
    pub(crate) fn gem_mmap_offset(
        _ddev: &AsahiDevice<Registered>,
        _reg: &AsahiRegData<'_>,
        args: &mut uapi::drm_asahi_gem_mmap_offset,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.flags != 0 {
            return Err(EINVAL);
        }
        let bo = Bo::lookup_handle(file, args.handle)?;
        args.offset = bo.create_mmap_offset()?;
        Ok(0)
    }

    /// GEM_BIND_OBJECT: binds part of a buffer into the kernel VM, where the firmware sees it
    /// (the only usage: `DRM_ASAHI_BIND_OBJECT_USAGE_TIMESTAMPS`), or unbinds it. `ENOSPC` when
    /// the file already holds [`MAX_KERNEL_OBJECTS`] objects or the range would take it past
    /// [`MAX_KERNEL_OBJECT_BYTES`], or when the kernel VM's range is full.
    pub(crate) fn gem_bind_object(
        ddev: &AsahiDevice<Registered>,
        reg: &AsahiRegData<'_>,
        args: &mut uapi::drm_asahi_gem_bind_object,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.vm_id != 0 || args.pad != 0 {
            return Err(EINVAL);
        }
        let file = file_inner(file);
        match args.op {
            uapi::drm_asahi_bind_object_op_DRM_ASAHI_BIND_OBJECT_OP_BIND => {
                if args.flags
                    != uapi::drm_asahi_bind_object_flags_DRM_ASAHI_BIND_OBJECT_USAGE_TIMESTAMPS
                    || args.object_handle != 0
                    || (args.offset | args.range) & UAT_PGMSK != 0
                    || args.range == 0
                {
                    return Err(EINVAL);
                }
                let bo = Bo::lookup_handle(file.0, args.handle)?;
                if !bo::bindable_in(&bo, None) {
                    return Err(EINVAL);
                }
                let size = u64::try_from(bo.size())?;
                match args.offset.checked_add(args.range) {
                    Some(end) if end <= size => {}
                    _ => return Err(EINVAL),
                }
                let sg = bo::scatter(&bo, reg.pdev.as_ref())?;
                let (from, skip) = sg.from_offset(args.offset).ok_or(EINVAL)?;
                let mut objects = file.1.objects.lock();
                if !objects_allow(&objects, args.range) {
                    return Err(ENOSPC);
                }
                // The object's place and handle first: once it is mapped, nothing may fail.
                let idx = vacant_place(&mut objects, GFP_KERNEL_ACCOUNT)?;
                let handle = u32::try_from(idx + 1)?;
                let va = ddev.kva.alloc(args.range)?;
                let mapped =
                    ddev.uat
                        .lock()
                        .kernel_map_sg(va, args.range, from, skip, Prot::FW_SHARED_RW);
                if let Err(e) = mapped {
                    let _ = ddev.kva.free(va);
                    return Err(e);
                }
                let o = KernelObject {
                    bo,
                    va,
                    size: args.range,
                };
                objects[idx] = Some(o);
                args.object_handle = handle;
                Ok(0)
            }
            uapi::drm_asahi_bind_object_op_DRM_ASAHI_BIND_OBJECT_OP_UNBIND => {
                if args.flags != 0 || args.handle != 0 || args.offset != 0 || args.range != 0 {
                    return Err(EINVAL);
                }
                let idx = index(args.object_handle)?;
                let o = file
                    .1
                    .objects
                    .lock()
                    .get_mut(idx)
                    .and_then(Option::take)
                    .ok_or(ENOENT)?;
                unbind_object(ddev, o);
                Ok(0)
            }
            _ => Err(EINVAL),
        }
    }

    /// QUEUE_CREATE: there is no firmware to run work on.
    pub(crate) fn queue_create(
        _ddev: &AsahiDevice<Registered>,
        _reg: &AsahiRegData<'_>,
        _args: &mut uapi::drm_asahi_queue_create,
        _file: &DrmFile,
    ) -> Result<u32> {
        no_submission()
    }

    /// QUEUE_DESTROY: see [`File::queue_create`].
    pub(crate) fn queue_destroy(
        _ddev: &AsahiDevice<Registered>,
        _reg: &AsahiRegData<'_>,
        _args: &mut uapi::drm_asahi_queue_destroy,
        _file: &DrmFile,
    ) -> Result<u32> {
        no_submission()
    }

    /// SUBMIT: see [`File::queue_create`].
    pub(crate) fn submit(
        _ddev: &AsahiDevice<Registered>,
        _reg: &AsahiRegData<'_>,
        _args: &mut uapi::drm_asahi_submit,
        _file: &DrmFile,
    ) -> Result<u32> {
        no_submission()
    }
}

/// The file and its driver state.
fn file_inner(file: &DrmFile) -> (&DrmFile, Pin<&File>) {
    (file, file.inner())
}

/// The answer of the queue and submit ioctls: this driver runs no work on the GPU yet.
fn no_submission() -> Result<u32> {
    pr_warn_once!("queues and submission are not supported (no GPU firmware interface)\n");
    Err(EOPNOTSUPP)
}
