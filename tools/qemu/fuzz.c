// SPDX-License-Identifier: GPL-2.0
/*
 * Bounded ioctl fuzzing of the render node, in the `make kernel-check` initramfs: random and
 * boundary arguments for every asahi ioctl (bad pointers, extreme strides and counts, handles
 * closed while mapped, VMs destroyed under binds), from the seed and for the time init.c
 * gives. The kernel must answer every call with success or an errno of the expected set (a
 * corrupt page table would show as EIO); the sanitizers the kernel is built with watch the
 * rest, and the kmemleak scan after this run sees what the closed file left.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <drm/asahi_drm.h>
#include <drm/drm.h>

#include "uapi.h"

#define PG 0x4000ull

static uint64_t state;

static uint64_t rnd(void)
{
	state ^= state << 13;
	state ^= state >> 7;
	state ^= state << 17;
	return state;
}

static uint64_t pick(const uint64_t *v, unsigned int n)
{
	return v[rnd() % n];
}

/* A value that is interesting for an address, size or offset field. */
static uint64_t val64(void)
{
	static const uint64_t edge[] = {
		0, 1, PG - 1, PG, PG + 1, 2 * PG, 0x100000, 0x104000, 0x7800000000ull,
		0x7fffffc000ull, 0x8000000000ull, 0x8000004000ull, 1ull << 48, ~0ull, ~0ull - PG + 1,
		0x7fffffffffffffffull,
	};

	switch (rnd() % 4) {
	case 0:
		return pick(edge, sizeof(edge) / sizeof(edge[0]));
	case 1:
		return (rnd() % 64) * PG;
	case 2:
		return 0x100000 + (rnd() % 256) * PG;
	default:
		return rnd();
	}
}

static uint32_t val32(void)
{
	static const uint32_t edge[] = { 0, 1, 2, 3, 4, 5, 8, 99, 0x7fffffff, 0xffffffff };

	return rnd() % 3 ? edge[rnd() % (sizeof(edge) / sizeof(edge[0]))] : (uint32_t)rnd();
}

/* A user pointer: to `buf`, or a bad one. */
static uint64_t ptr(void *buf)
{
	static const uint64_t bad[] = { 0, 16, 0xffff000000000000ull, 0x7fffffff0000ull, ~0ull };

	return rnd() % 4 ? (uintptr_t)buf : bad[rnd() % (sizeof(bad) / sizeof(bad[0]))];
}

static int allowed(int err)
{
	switch (err) {
	case 0: case EINVAL: case ENOENT: case EFAULT: case ENOMEM: case EOPNOTSUPP:
	case ENOSPC: case EBUSY: case EOVERFLOW: case E2BIG:
		return 1;
	default:
		return 0;
	}
}

/*
 * The calls name buffers by the handles below 8 (binds, mmap offsets, closes), VMs by the IDs
 * below 4 and kernel objects by the handles below 4, and only now and then others. What a
 * successful create makes beyond those is given back at once, its own release checked as any
 * call: otherwise a long run fills the guest (buffers, VMs and pinned kernel objects that no
 * call reaches again), and a guest whose only process is this one panics when it runs out of
 * memory. That is the test setup, not the driver: each client's memory is charged to its cgroup.
 * Returns 0 when nothing was released, 1 when the release succeeded, -1 when it failed.
 */
static int release_out_of_reach(int fd, unsigned long req, const void *out)
{
	const struct drm_asahi_gem_create *gc = out;
	const struct drm_asahi_vm_create *vc = out;
	const struct drm_asahi_gem_bind_object *bo = out;
	unsigned long rel;
	union {
		struct drm_gem_close cl;
		struct drm_asahi_vm_destroy vd;
		struct drm_asahi_gem_bind_object bo;
	} r;

	memset(&r, 0, sizeof(r));
	if (req == DRM_IOCTL_ASAHI_GEM_CREATE && gc->handle >= 8) {
		rel = DRM_IOCTL_GEM_CLOSE;
		r.cl.handle = gc->handle;
	} else if (req == DRM_IOCTL_ASAHI_VM_CREATE && vc->vm_id >= 4) {
		rel = DRM_IOCTL_ASAHI_VM_DESTROY;
		r.vd.vm_id = vc->vm_id;
	} else if (req == DRM_IOCTL_ASAHI_GEM_BIND_OBJECT &&
		   bo->op == DRM_ASAHI_BIND_OBJECT_OP_BIND && bo->object_handle >= 4) {
		rel = DRM_IOCTL_ASAHI_GEM_BIND_OBJECT;
		r.bo.op = DRM_ASAHI_BIND_OBJECT_OP_UNBIND;
		r.bo.object_handle = bo->object_handle;
	} else {
		return 0;
	}
	if (ioctl(fd, rel, &r)) {
		printf("fuzz: FAILED: releasing with ioctl %#lx answered %s\n", rel,
		       strerrorname_np(errno));
		return -1;
	}
	return 1;
}

int uapi_fuzz(unsigned int seconds, uint64_t seed)
{
	struct drm_asahi_gem_bind_op ops[8];
	union {
		struct drm_asahi_get_params gp;
		struct drm_asahi_get_time gt;
		struct drm_asahi_vm_create vc;
		struct drm_asahi_vm_destroy vd;
		struct drm_asahi_vm_bind vb;
		struct drm_asahi_gem_create gc;
		struct drm_asahi_gem_mmap_offset mo;
		struct drm_asahi_gem_bind_object bo;
		struct drm_asahi_queue_create qc;
		struct drm_gem_close cl;
		unsigned char raw[256];
	} a;
	static unsigned char scratch[4096];
	unsigned long calls = 0, ok = 0, unexpected = 0;
	struct timespec t0, t;
	int fd;

	state = seed | 1;
	fd = open("/dev/dri/renderD128", O_RDWR);
	if (fd < 0) {
		printf("fuzz: cannot open the render node: %s\n", strerror(errno));
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		unsigned long req;
		int ret, err, kind = rnd() % 12;

		memset(&a, 0, sizeof(a));
		if (rnd() % 8 == 0)
			for (unsigned int i = 0; i < sizeof(a); i++)
				a.raw[i] = rnd();
		switch (kind) {
		case 0:
			req = DRM_IOCTL_ASAHI_GET_PARAMS;
			a.gp.param_group = rnd() % 4 ? 0 : val32();
			a.gp.pointer = ptr(scratch);
			a.gp.size = rnd() % 2 ? sizeof(struct drm_asahi_params_global) : val64();
			if (a.gp.size > sizeof(scratch) && a.gp.pointer == (uintptr_t)scratch)
				a.gp.size = sizeof(scratch);
			break;
		case 1:
			req = DRM_IOCTL_ASAHI_GET_TIME;
			break;
		case 2:
			req = DRM_IOCTL_ASAHI_VM_CREATE;
			if (rnd() % 2) {
				a.vc.kernel_start = 0x7800000000ull;
				a.vc.kernel_end = 0x8000000000ull;
			} else {
				a.vc.kernel_start = val64();
				a.vc.kernel_end = val64();
			}
			break;
		case 3:
			req = DRM_IOCTL_ASAHI_VM_DESTROY;
			a.vd.vm_id = val32();
			break;
		case 4:
		case 5:
		case 6:
			req = DRM_IOCTL_ASAHI_VM_BIND;
			for (unsigned int i = 0; i < 8; i++) {
				ops[i].flags = rnd() % 3 ? (rnd() % 16) : val32();
				ops[i].handle = rnd() % 3 ? rnd() % 6 : val32();
				ops[i].offset = rnd() % 2 ? (rnd() % 4) * PG : val64();
				ops[i].range = rnd() % 2 ? (1 + rnd() % 8) * PG : val64();
				ops[i].addr = val64();
			}
			a.vb.vm_id = rnd() % 4 ? 1 + rnd() % 3 : val32();
			a.vb.num_binds = rnd() % 4 ? rnd() % 4 : val32();
			a.vb.stride = rnd() % 3 ? sizeof(ops[0]) : val32();
			a.vb.userptr = ptr(ops);
			if (a.vb.userptr == (uintptr_t)ops &&
			    (uint64_t)a.vb.num_binds * a.vb.stride > sizeof(ops))
				a.vb.num_binds = a.vb.stride ? sizeof(ops) / a.vb.stride : 0;
			break;
		case 7:
			req = DRM_IOCTL_ASAHI_GEM_CREATE;
			/*
			 * Sizes up to 64 MiB: binding a buffer pins all of it, and a guest
			 * whose only process is this one has nothing for the OOM killer to
			 * kill (it would panic, which is the test setup, not the driver).
			 */
			a.gc.size = rnd() % 2 ? (1 + rnd() % 8) * PG : val64() % (64ull << 20);
			a.gc.flags = rnd() % 4;
			a.gc.vm_id = a.gc.flags & DRM_ASAHI_GEM_VM_PRIVATE ? 1 + rnd() % 3 : 0;
			if (rnd() % 8 == 0)
				a.gc.vm_id = val32();
			break;
		case 8:
			req = DRM_IOCTL_ASAHI_GEM_MMAP_OFFSET;
			a.mo.handle = rnd() % 8;
			a.mo.flags = rnd() % 4 ? 0 : val32();
			break;
		case 9:
			req = DRM_IOCTL_ASAHI_GEM_BIND_OBJECT;
			a.bo.op = rnd() % 3;
			a.bo.flags = rnd() % 3;
			a.bo.handle = rnd() % 6;
			a.bo.offset = rnd() % 2 ? 0 : val64();
			a.bo.range = rnd() % 2 ? PG : val64();
			a.bo.object_handle = rnd() % 4;
			break;
		case 10:
			req = rnd() % 2 ? DRM_IOCTL_ASAHI_QUEUE_CREATE : DRM_IOCTL_ASAHI_SUBMIT;
			break;
		default:
			/* Closing handles, mapped ones included. */
			req = DRM_IOCTL_GEM_CLOSE;
			a.cl.handle = rnd() % 8;
			break;
		}
		ret = ioctl(fd, req, &a);
		err = ret ? errno : 0;
		calls++;
		ok += !err;
		if (!allowed(err)) {
			unexpected++;
			printf("fuzz: FAILED: ioctl %#lx answered %s\n", req, strerrorname_np(err));
		}
		if (!err) {
			int released = release_out_of_reach(fd, req, &a.raw[0]);

			calls += released != 0;
			ok += released > 0;
			unexpected += released < 0;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (t.tv_sec - t0.tv_sec < (time_t)seconds);
	close(fd);
	printf("fuzz: %lu calls in %u s, seed %#llx: %lu succeeded, %lu refused, %lu unexpected\n",
	       calls, seconds, (unsigned long long)seed, ok, calls - ok - unexpected, unexpected);
	printf("fuzz: %lu passed, %lu failed\n", calls - unexpected, unexpected);
	return unexpected != 0;
}
