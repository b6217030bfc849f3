// SPDX-License-Identifier: GPL-2.0
/*
 * The uAPI session of the `make kernel-check` initramfs: a client of the render node that calls
 * every ioctl of include/uapi/drm/asahi_drm.h as Mesa would, with good arguments and with each
 * kind of bad one, and checks every answer (DRM practice: EINVAL for malformed arguments, ENOENT
 * for unknown handles and IDs, EFAULT for bad pointers). Each call is printed with its arguments
 * and result; the last line is "uapi: N passed, M failed".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <drm/asahi_drm.h>
#include <drm/drm.h>
#include <drm/drm_mode.h>
#include <linux/udmabuf.h>

#include "uapi.h"

#define PG 0x4000ull

static int passed, failed;

/* Runs one ioctl and checks that it answers `want` (0 or an errno). */
static int call(int fd, unsigned long req, void *arg, int want, const char *what)
{
	int ret, err;

	do {
		ret = ioctl(fd, req, arg);
	} while (ret == -1 && errno == EINTR);
	err = ret ? errno : 0;
	if (err == want)
		passed++;
	else
		failed++;
	printf("uapi: %s%s -> %s%s%s\n", err == want ? "" : "FAILED: ", what,
	       err ? strerrorname_np(err) : "ok",
	       err == want ? "" : ", expected ", err == want ? "" :
	       (want ? strerrorname_np(want) : "ok"));
	return err;
}

static void check(int cond, const char *what)
{
	if (cond)
		passed++;
	else
		failed++;
	printf("uapi: %scheck %s\n", cond ? "" : "FAILED: ", what);
}

static int vm_bind(int fd, uint32_t vm_id, struct drm_asahi_gem_bind_op *ops, uint32_t n,
		   uint32_t stride, int want, const char *what)
{
	struct drm_asahi_vm_bind b = {
		.vm_id = vm_id, .num_binds = n, .stride = stride, .userptr = (uintptr_t)ops,
	};

	return call(fd, DRM_IOCTL_ASAHI_VM_BIND, &b, want, what);
}

long uat_id_of_pid(int pid, uint32_t vm_id)
{
	char line[128];
	long uat = -1, id;
	int owner;
	unsigned int vm;
	FILE *f = fopen(DBG "vms", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%ld pid %d vm %u", &id, &owner, &vm) == 3 && owner == pid &&
		    (vm == vm_id || !vm_id))
			uat = id;
	fclose(f);
	return uat;
}

long uat_id_of(uint32_t vm_id)
{
	return uat_id_of_pid(getpid(), vm_id);
}

/* Reads `len` bytes at GPU VA `va` of UAT VM `uat` through debugfs into `out` (hex). */
static int gpu_read(long uat, uint64_t va, unsigned int len, char *out, size_t size)
{
	char cmd[96];
	int fd = open(DBG "gpu_mem", O_RDWR), n;

	if (fd < 0)
		return -1;
	n = snprintf(cmd, sizeof(cmd), "read %ld 0x%llx %u", uat, (unsigned long long)va, len);
	if (write(fd, cmd, n) != n) {
		close(fd);
		return -1;
	}
	lseek(fd, 0, SEEK_SET);
	n = read(fd, out, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	out[n] = 0;
	if (n && out[n - 1] == '\n')
		out[n - 1] = 0;
	return 0;
}

/* Writes `hex` at GPU VA `va` of UAT VM `uat` through debugfs. */
static int gpu_write(long uat, uint64_t va, const char *hex)
{
	char cmd[256];
	int fd = open(DBG "gpu_mem", O_WRONLY), n, ret;

	if (fd < 0)
		return -1;
	n = snprintf(cmd, sizeof(cmd), "write %ld 0x%llx %s", uat, (unsigned long long)va, hex);
	ret = write(fd, cmd, n) == n ? 0 : -1;
	close(fd);
	return ret;
}

static struct drm_asahi_gem_bind_op op(uint32_t flags, uint32_t handle, uint64_t offset,
				       uint64_t range, uint64_t addr)
{
	struct drm_asahi_gem_bind_op o = {
		.flags = flags, .handle = handle, .offset = offset, .range = range, .addr = addr,
	};
	return o;
}

/*
 * VM_BIND claiming 2^32 - 1 ops when its array ends after the first (a guard page follows it):
 * EFAULT at the second, nothing applied (the caller checks), not ENOMEM from an allocation
 * sized by the claimed count.
 */
static void bogus_count(int fd, uint32_t vm, uint32_t handle)
{
	struct drm_asahi_gem_bind_op *last;
	char *page;

	page = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED || mprotect(page + PG, PG, PROT_NONE)) {
		check(0, "a page before a guard page");
		return;
	}
	last = (struct drm_asahi_gem_bind_op *)(page + PG) - 1;
	*last = op(DRM_ASAHI_BIND_READ, handle, 0, 3 * PG, 0x100000);
	vm_bind(fd, vm, last, UINT32_MAX, sizeof(*last), EFAULT,
		"VM_BIND of 2^32 - 1 ops, the array ending after the first");
	munmap(page, 2 * PG);
}

int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY), ret;

	if (fd < 0)
		return -1;
	ret = write(fd, s, strlen(s)) == (ssize_t)strlen(s) ? 0 : -1;
	close(fd);
	return ret;
}

int mapped(long uat, uint64_t va, uint64_t len)
{
	char hex[64];
	int yes = 0, no = 0;

	for (uint64_t off = 0; off < len; off += PG) {
		if (gpu_read(uat, va + off, 4, hex, sizeof(hex)))
			return -1;
		if (strncmp(hex, "fault", 5))
			yes++;
		else
			no++;
	}
	return yes && no ? -1 : yes != 0;
}

/*
 * ioctl(fd, req, arg) with the n-th allocation it makes failing (/proc/thread-self/fail-nth
 * fails the n-th allocation of the next syscall): its errno (0 if it succeeded), or -1 if
 * fail-nth cannot be used. *unreached says whether the fault was never injected (the ioctl made
 * fewer than n allocations): every allocation has then been failed once.
 */
static int ioctl_failing_nth(int fd, unsigned long req, void *arg, unsigned int n, int *unreached)
{
	char nth[16], left[16];
	int tid, ret, err, got;

	snprintf(nth, sizeof(nth), "%u", n);
	tid = open("/proc/thread-self/fail-nth", O_RDWR);
	if (tid < 0)
		return -1;
	if (write(tid, nth, strlen(nth)) < 0) {
		close(tid);
		return -1;
	}
	ret = ioctl(fd, req, arg);
	err = ret ? errno : 0;
	lseek(tid, 0, SEEK_SET);
	got = read(tid, left, sizeof(left) - 1);
	left[got > 0 ? got : 0] = 0;
	*unreached = strcmp(left, "0\n") && strcmp(left, "0");
	/* Disarmed, should the fault not have been reached. */
	if (write(tid, "0", 1) < 0)
		err = -1;
	close(tid);
	return err;
}

/* The page-table pages below the root of UAT VM `uat`, as debugfs `vms` lists them; -1 if none. */
static long vm_tables(long uat)
{
	char line[160];
	long id, tables = -1, n;
	int pid;
	unsigned int vm;
	FILE *f = fopen(DBG "vms", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%ld pid %d vm %u tables %ld", &id, &pid, &vm, &n) == 4 &&
		    id == uat)
			tables = n;
	fclose(f);
	return tables;
}

/* VM_BIND of `n` ops, counted by the caller: 0 or -1 with errno. */
static int bind_quiet(int fd, uint32_t vm, struct drm_asahi_gem_bind_op *ops, uint32_t n)
{
	return ioctl(fd, DRM_IOCTL_ASAHI_VM_BIND, &(struct drm_asahi_vm_bind){
		.vm_id = vm, .num_binds = n, .stride = sizeof(*ops), .userptr = (uintptr_t)ops });
}

/*
 * ENOMEM in the middle of a VM_BIND, at every allocation the ioctl makes, through the kernel's
 * fault injection (/proc/thread-self/fail-nth fails the n-th allocation of the next syscall).
 * The array has three ops: an unbind of a mapping made just before (under a top-level entry of
 * its own, so that unbinding it empties two tables), then two maps of fresh VAs that need new
 * page tables. Each time the bind fails, nothing may have changed: the mapping is still there,
 * the new VAs are not mapped, and the VM has the page-table pages it had. Each time it succeeds,
 * the tables the unbind emptied must be gone by its end. Either way the VM must still work (an
 * unbind of the whole area succeeds and brings the tables back to where they were).
 */
static void enomem_binds(int fd, uint32_t vm, long uat, uint32_t handle)
{
	const uint64_t w = 0x1000000000ull;
	struct drm_asahi_gem_bind_op ops[3];
	unsigned int n, points = 0, bad = 0;
	long base = vm_tables(uat);

	if (write_file("/sys/kernel/debug/failslab/ignore-gfp-wait", "N") ||
	    write_file("/sys/kernel/debug/fail_page_alloc/ignore-gfp-wait", "N") ||
	    write_file("/sys/kernel/debug/fail_page_alloc/min-order", "0")) {
		check(0, "fault injection is available");
		return;
	}
	if (base < 0) {
		check(0, "debugfs vms lists the VM's tables");
		return;
	}
	for (n = 1; n < 400; n++) {
		uint64_t x = 0x40000000ull + n * 0x4000000ull, y = x + 0x2000000ull;
		struct drm_asahi_vm_bind b = {
			.vm_id = vm, .num_binds = 3, .stride = sizeof(ops[0]),
			.userptr = (uintptr_t)ops,
		};
		int err, unreached;
		long before;

		ops[0] = op(DRM_ASAHI_BIND_READ, handle, 0, 2 * PG, w);
		if (bind_quiet(fd, vm, ops, 1)) {
			bad++;
			break;
		}
		before = vm_tables(uat);
		ops[0] = op(DRM_ASAHI_BIND_UNBIND, 0, 0, 2 * PG, w);
		ops[1] = op(DRM_ASAHI_BIND_READ, handle, 0, 2 * PG, x);
		ops[2] = op(DRM_ASAHI_BIND_READ, handle, PG, 2 * PG, y);
		err = ioctl_failing_nth(fd, DRM_IOCTL_ASAHI_VM_BIND, &b, n, &unreached);
		if (err < 0) {
			check(0, "fail-nth is available");
			return;
		}
		if (err) {
			points++;
			if (err != ENOMEM) {
				printf("uapi: FAILED: allocation %u failed: %s\n", n,
				       strerrorname_np(err));
				bad++;
			}
			if (mapped(uat, w, 2 * PG) != 1 || mapped(uat, x, 2 * PG) != 0 ||
			    mapped(uat, y, 2 * PG) != 0 || vm_tables(uat) != before) {
				printf("uapi: FAILED: allocation %u: the bind changed the VM\n", n);
				bad++;
			}
		} else if (mapped(uat, w, 2 * PG) != 0 || mapped(uat, x, 2 * PG) != 1 ||
			   mapped(uat, y, 2 * PG) != 1 || vm_tables(uat) != before) {
			/* Done: the unbind's two tables went, the maps' two leaf tables came. */
			printf("uapi: FAILED: the bind with fault %u succeeded, not applied\n", n);
			bad++;
		}
		ops[0] = op(DRM_ASAHI_BIND_UNBIND, 0, 0, y + 2 * PG - x, x);
		ops[1] = op(DRM_ASAHI_BIND_UNBIND, 0, 0, 2 * PG, w);
		if (bind_quiet(fd, vm, ops, 2) || vm_tables(uat) != base) {
			printf("uapi: FAILED: unbind after allocation %u\n", n);
			bad++;
		}
		/*
		 * Done once the injected fault was not reached: every allocation of the ioctl has
		 * been failed once. (A fault that was reached without an error hit an allocation
		 * that has a fallback, such as kmemleak's metadata.)
		 */
		if (!err && unreached)
			break;
	}
	printf("uapi: VM_BIND of three ops with each of its %u allocations failing: ENOMEM,\n",
	       points);
	printf("uapi: and the VM as it was each time\n");
	check(points >= 6 && n < 400 && !bad,
	      "ENOMEM at every allocation of a bind changes nothing");
}

/* The VMs debugfs lists for this process, and the highest UAT VM ID it lists for anyone. */
static int listed_vms(long *highest)
{
	char line[128];
	long id;
	int pid, n = 0;
	unsigned int vm;
	FILE *f = fopen(DBG "vms", "r");

	*highest = 0;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%ld pid %d vm %u", &id, &pid, &vm) != 3)
			continue;
		n += pid == getpid();
		if (id > *highest)
			*highest = id;
	}
	fclose(f);
	return n;
}

/*
 * VM_CREATE with each of its allocations failing in turn (fail-nth, as for VM_BIND): ENOMEM,
 * and nothing left behind. Debugfs lists no new VM after a failure, and every UAT VM made on
 * the way, by a failing VM_CREATE or a successful one destroyed at once, is gone: reading its
 * kernel-private page through gpu_mem finds no VM.
 */
static void enomem_vm_create(int fd, uint64_t kstart, uint64_t kend)
{
	struct drm_asahi_vm_create vc;
	struct drm_asahi_vm_destroy vd;
	unsigned int n, points = 0, bad = 0;
	long base, highest, last = -1, id;
	char hex[64];
	int before = listed_vms(&base);

	for (n = 1; n < 200; n++) {
		int err, unreached;

		vc = (struct drm_asahi_vm_create){ .kernel_start = kstart, .kernel_end = kend };
		err = ioctl_failing_nth(fd, DRM_IOCTL_ASAHI_VM_CREATE, &vc, n, &unreached);
		if (err < 0) {
			check(0, "fail-nth is available");
			return;
		}

		if (!err) {
			id = uat_id_of(vc.vm_id);
			vd = (struct drm_asahi_vm_destroy){ .vm_id = vc.vm_id };
			bad += id <= base || !!ioctl(fd, DRM_IOCTL_ASAHI_VM_DESTROY, &vd);
			/* Done once the injected fault was not reached (see enomem_binds). */
			if (unreached) {
				last = id;
				break;
			}
			continue;
		}
		points++;
		/* The VM's root GEM object is a shmem file: shmem answers ENOSPC for its inode. */
		if (err != ENOMEM && err != ENOSPC) {
			printf("uapi: FAILED: VM_CREATE allocation %u failed: %s\n", n,
			       strerrorname_np(err));
			bad++;
		}
		if (listed_vms(&highest) != before) {
			printf("uapi: FAILED: VM_CREATE allocation %u left a VM in debugfs\n", n);
			bad++;
		}
	}
	for (id = base + 1; id <= last; id++) {
		/* No VM: ENOENT, named so with CONFIG_SYMBOLIC_ERRNAME. */
		if (gpu_read(id, kstart, 4, hex, sizeof(hex)) ||
		    (strncmp(hex, "fault ENOENT", 12) && strncmp(hex, "fault Error(2)", 14))) {
			printf("uapi: FAILED: UAT VM %ld is still there: %s\n", id, hex);
			bad++;
		}
	}
	printf("uapi: VM_CREATE with each of its %u allocations failing: ENOMEM,\n", points);
	printf("uapi: debugfs listed no VM after them, UAT VMs %ld..%ld are gone\n",
	       base + 1, last);
	check(points >= 3 && last > base && !bad,
	      "ENOMEM at every allocation of VM_CREATE leaves no VM behind");
}

/*
 * PRIME and dumb buffers: the device's own buffer comes back as itself; a foreign dma-buf (a
 * udmabuf) and dumb buffers are refused, since the shmem binding would make bare objects of them
 * that the driver would take for its own buffers.
 */
static void prime_and_dumb(int fd, uint32_t handle)
{
	struct drm_prime_handle ph = { .handle = handle, .flags = DRM_CLOEXEC | DRM_RDWR };
	struct udmabuf_create uc = { .flags = UDMABUF_FLAGS_CLOEXEC, .size = PG };
	struct drm_mode_create_dumb cd = { .width = 64, .height = 64, .bpp = 32 };
	int memfd, dev, card;

	call(fd, DRM_IOCTL_PRIME_HANDLE_TO_FD, &ph, 0, "PRIME_HANDLE_TO_FD of a buffer");
	ph.handle = 0;
	call(fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, &ph, 0, "PRIME_FD_TO_HANDLE of the device's own");
	check(ph.handle == handle, "importing the device's own buffer gives that buffer back");
	close(ph.fd);

	memfd = memfd_create("udmabuf", MFD_ALLOW_SEALING);
	dev = open("/dev/udmabuf", O_RDWR);
	if (memfd < 0 || ftruncate(memfd, PG) || fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK) ||
	    dev < 0) {
		check(0, "a udmabuf to import");
	} else {
		uc.memfd = memfd;
		ph = (struct drm_prime_handle){ .fd = ioctl(dev, UDMABUF_CREATE, &uc) };
		check(ph.fd >= 0, "a udmabuf: a foreign dma-buf");
		call(fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, &ph, EINVAL,
		     "PRIME_FD_TO_HANDLE of a foreign dma-buf");
		if (ph.fd >= 0)
			close(ph.fd);
	}
	if (dev >= 0)
		close(dev);
	if (memfd >= 0)
		close(memfd);

	card = open("/dev/dri/card0", O_RDWR);
	check(card >= 0, "the primary node /dev/dri/card0");
	if (card >= 0) {
		/* The DRM core's answer for a driver without dumb buffers: "not implemented". */
		int err = ioctl(card, DRM_IOCTL_MODE_CREATE_DUMB, &cd) ? errno : 0;
		const char *name = err ? strerrorname_np(err) : "ok";

		printf("uapi: MODE_CREATE_DUMB on card0 -> %s\n", name);
		check(!strcmp(name, "ENOSYS") && !cd.handle,
		      "MODE_CREATE_DUMB on card0 is not implemented, no handle");
		close(card);
	}
}

/*
 * A VM-private buffer maps in its own VM only: not in another, not in the kernel VM; and it
 * cannot be exported.
 */
static void private_elsewhere(int fd, uint32_t priv, uint64_t kstart, uint64_t kend)
{
	struct drm_asahi_vm_create vc = { .kernel_start = kstart, .kernel_end = kend };
	struct drm_asahi_gem_bind_object bo = { .op = DRM_ASAHI_BIND_OBJECT_OP_BIND,
		.flags = DRM_ASAHI_BIND_OBJECT_USAGE_TIMESTAMPS, .handle = priv, .range = PG };
	struct drm_asahi_vm_destroy vd = { 0 };
	struct drm_asahi_gem_bind_op o = op(DRM_ASAHI_BIND_READ, priv, 0, PG, 0x200000);
	struct drm_prime_handle ph = { .handle = priv, .flags = DRM_CLOEXEC | DRM_RDWR };

	call(fd, DRM_IOCTL_ASAHI_VM_CREATE, &vc, 0, "VM_CREATE a second VM");
	vm_bind(fd, vc.vm_id, &o, 1, sizeof(o), EINVAL,
		"VM_BIND of another VM's private buffer");
	call(fd, DRM_IOCTL_ASAHI_GEM_BIND_OBJECT, &bo, EINVAL,
	     "GEM_BIND_OBJECT of a VM-private buffer");
	call(fd, DRM_IOCTL_PRIME_HANDLE_TO_FD, &ph, EINVAL,
	     "PRIME_HANDLE_TO_FD of a VM-private buffer");
	vd.vm_id = vc.vm_id;
	call(fd, DRM_IOCTL_ASAHI_VM_DESTROY, &vd, 0, "VM_DESTROY the second VM");
}

/* Binds `range` bytes of `handle` into the kernel VM: the object handle, or 0 with `*err` set. */
static uint32_t bind_object(int fd, uint32_t handle, uint64_t range, int *err)
{
	struct drm_asahi_gem_bind_object bo = { .op = DRM_ASAHI_BIND_OBJECT_OP_BIND,
		.flags = DRM_ASAHI_BIND_OBJECT_USAGE_TIMESTAMPS, .handle = handle, .range = range };

	*err = ioctl(fd, DRM_IOCTL_ASAHI_GEM_BIND_OBJECT, &bo) ? errno : 0;
	return *err ? 0 : bo.object_handle;
}

/* Unbinds the kernel-VM objects `objs[0 .. n]`: how many unbinds failed. */
static unsigned int unbind_objects(int fd, const uint32_t *objs, unsigned int n)
{
	struct drm_asahi_gem_bind_object bo = { .op = DRM_ASAHI_BIND_OBJECT_OP_UNBIND };
	unsigned int bad = 0;

	while (n--) {
		bo.object_handle = objs[n];
		bad += !!ioctl(fd, DRM_IOCTL_ASAHI_GEM_BIND_OBJECT, &bo);
	}
	return bad;
}

/*
 * GEM_BIND_OBJECT's per-client limits, 4096 objects and 256 MiB of kernel VA: past either, the
 * client gets ENOSPC, another client does not, and an unbind makes room again.
 */
static void object_limits(int fd, uint32_t page)
{
	static uint32_t objs[4096];
	struct drm_asahi_gem_create gc = { .size = 16ull << 20 };
	struct drm_gem_close cl = { 0 };
	unsigned int n, ok;
	uint32_t extra;
	int err, other;

	for (n = 0, ok = 0; n < 4096; n++) {
		objs[n] = bind_object(fd, page, PG, &err);
		ok += !err;
	}
	check(ok == 4096, "GEM_BIND_OBJECT of one page 4096 times");
	extra = bind_object(fd, page, PG, &err);
	printf("uapi: the 4097th object -> %s\n", err ? strerrorname_np(err) : "ok");
	check(err == ENOSPC, "a client's 4097th kernel-VM object: ENOSPC");
	unbind_objects(fd, &extra, !err);
	other = open("/dev/dri/renderD128", O_RDWR);
	gc.size = PG;
	if (other < 0 || ioctl(other, DRM_IOCTL_ASAHI_GEM_CREATE, &gc)) {
		check(0, "a second client with a buffer");
	} else {
		uint32_t o = bind_object(other, gc.handle, PG, &err);

		check(!err && !unbind_objects(other, &o, 1),
		      "another client binds an object meanwhile");
	}
	if (other >= 0)
		close(other);
	check(!unbind_objects(fd, objs, 1) && (objs[0] = bind_object(fd, page, PG, &err)) && !err,
	      "after one unbind, one more object fits");
	check(!unbind_objects(fd, objs, 4096), "unbinding the 4096 objects");

	gc.size = 16ull << 20;
	call(fd, DRM_IOCTL_ASAHI_GEM_CREATE, &gc, 0, "GEM_CREATE 16 MiB");
	for (n = 0, ok = 0; n < 16; n++) {
		objs[n] = bind_object(fd, gc.handle, gc.size, &err);
		ok += !err;
	}
	check(ok == 16, "GEM_BIND_OBJECT of 16 MiB 16 times: 256 MiB");
	extra = bind_object(fd, gc.handle, PG, &err);
	printf("uapi: one more page past 256 MiB -> %s\n", err ? strerrorname_np(err) : "ok");
	check(err == ENOSPC, "one more page past a client's 256 MiB of kernel VA: ENOSPC");
	unbind_objects(fd, &extra, !err);
	check(!unbind_objects(fd, objs, 1) && (objs[0] = bind_object(fd, gc.handle, PG, &err)) &&
	      !err, "after unbinding 16 MiB, one page fits");
	extra = bind_object(fd, gc.handle, gc.size, &err);
	check(err == ENOSPC, "and 16 MiB do not");
	unbind_objects(fd, &extra, !err);
	check(!unbind_objects(fd, objs, 16), "unbinding them");
	cl.handle = gc.handle;
	call(fd, DRM_IOCTL_GEM_CLOSE, &cl, 0, "GEM_CLOSE the 16 MiB buffer");
}

/*
 * Closing a buffer's handle unmaps it from the client's VMs (Mesa's agx_bo_free counts on it),
 * not from another client's VM that imported it: a child maps it, then the parent closes its
 * handle and looks at both.
 */
static void close_unmaps(int fd, long uat, uint32_t handle, uint64_t kstart, uint64_t kend)
{
	struct drm_prime_handle ph = { .handle = handle, .flags = DRM_CLOEXEC | DRM_RDWR };
	struct drm_gem_close cl = { .handle = handle };
	int to_parent[2], to_child[2], status = 0;
	long child_uat = -1;
	pid_t pid = -1;

	check(mapped(uat, 0x100000, 2 * PG) == 1 && mapped(uat, 0x410000, 2 * PG) == 1,
	      "the buffer is mapped at 0x100000 and 0x410000 before GEM_CLOSE");
	call(fd, DRM_IOCTL_PRIME_HANDLE_TO_FD, &ph, 0, "PRIME_HANDLE_TO_FD for another client");
	if (pipe(to_parent)) {
		check(0, "pipes to a child");
		close(ph.fd);
		return;
	}
	if (pipe(to_child)) {
		check(0, "pipes to a child");
		close(to_parent[0]);
		close(to_parent[1]);
		close(ph.fd);
		return;
	}
	pid = fork();
	if (pid == 0) {
		struct drm_asahi_vm_create vc = { .kernel_start = kstart, .kernel_end = kend };
		struct drm_prime_handle imp = { .fd = ph.fd };
		struct drm_asahi_gem_bind_op o;
		struct drm_asahi_vm_bind b = { .num_binds = 1, .stride = sizeof(o) };
		int gpu = open("/dev/dri/renderD128", O_RDWR);
		long id = -1;
		char c;

		/* Its copies of the parent's ends: its read must see the pipe's end. */
		close(to_child[1]);
		close(to_parent[0]);
		if (gpu >= 0 && !ioctl(gpu, DRM_IOCTL_PRIME_FD_TO_HANDLE, &imp) &&
		    !ioctl(gpu, DRM_IOCTL_ASAHI_VM_CREATE, &vc)) {
			o = op(DRM_ASAHI_BIND_READ, imp.handle, 0, PG, 0x100000);
			b.vm_id = vc.vm_id;
			b.userptr = (uintptr_t)&o;
			if (!ioctl(gpu, DRM_IOCTL_ASAHI_VM_BIND, &b))
				id = uat_id_of(vc.vm_id);
		}
		/* Then waits until the parent has looked (its end of the pipe closes). */
		if (write(to_parent[1], &id, sizeof(id)) != sizeof(id) ||
		    read(to_child[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(to_parent[1]);
	close(to_child[0]);
	if (pid < 0 || read(to_parent[0], &child_uat, sizeof(child_uat)) != sizeof(child_uat))
		child_uat = -1;
	check(child_uat >= 0, "another client imported the buffer and mapped it");
	call(fd, DRM_IOCTL_GEM_CLOSE, &cl, 0, "GEM_CLOSE of a mapped buffer");
	call(fd, DRM_IOCTL_GEM_CLOSE, &cl, EINVAL, "GEM_CLOSE again (the DRM core's answer)");
	check(mapped(uat, 0x100000, 2 * PG) == 0 && mapped(uat, 0x410000, 2 * PG) == 0,
	      "GEM_CLOSE unmapped the buffer from the client's VM");
	check(child_uat >= 0 && mapped(child_uat, 0x100000, PG) == 1,
	      "the other client's mapping of the buffer stays");
	close(to_child[1]);
	if (pid > 0)
		waitpid(pid, &status, 0);
	check(pid > 0 && WIFEXITED(status) && !WEXITSTATUS(status), "the child exits cleanly");
	close(to_parent[0]);
	close(ph.fd);
}

/*
 * A client with `n` buffers of one page, each mapped once if `map`, closes its file: how long the
 * close takes, in ms (-1 if the client could not be set up).
 */
static double close_client_with(unsigned int n, int map, uint64_t kstart, uint64_t kend)
{
	struct drm_asahi_vm_create vc = { .kernel_start = kstart, .kernel_end = kend };
	struct drm_asahi_gem_bind_op o;
	struct drm_asahi_vm_bind b = { .num_binds = 1, .stride = sizeof(o) };
	struct timespec t0, t1;
	unsigned int ok = 0;
	int fd = open("/dev/dri/renderD128", O_RDWR);

	if (fd < 0 || ioctl(fd, DRM_IOCTL_ASAHI_VM_CREATE, &vc)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	b.vm_id = vc.vm_id;
	b.userptr = (uintptr_t)&o;
	for (unsigned int i = 0; i < n; i++) {
		struct drm_asahi_gem_create gc = { .size = PG };

		if (ioctl(fd, DRM_IOCTL_ASAHI_GEM_CREATE, &gc))
			break;
		o = op(DRM_ASAHI_BIND_READ, gc.handle, 0, PG, 0x100000 + (uint64_t)i * PG);
		if (map && ioctl(fd, DRM_IOCTL_ASAHI_VM_BIND, &b))
			break;
		ok++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	close(fd);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (ok != n)
		return -1;
	return (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
}

/*
 * A client that exits with many buffers mapped: the DRM core closes each handle, and each close
 * unmaps its buffer from the client's VMs, before the VMs go. Its close is timed against the
 * same client whose buffers were never mapped (freeing the buffers alone).
 */
static void exit_with_mappings(uint64_t kstart, uint64_t kend)
{
	const unsigned int n = 1024;
	double bare = close_client_with(n, 0, kstart, kend);
	double mapped = close_client_with(n, 1, kstart, kend);

	printf("uapi: closing a client with %u buffers: %.1f ms unmapped, %.1f ms mapped\n",
	       n, bare, mapped);
	check(bare >= 0 && mapped >= 0, "clients with 1024 buffers, unmapped and mapped");
	check(mapped < 10000, "a client with 1024 mapped buffers is gone within 10 s of its close");
}

/* Maps one page of identical map ops `copies` times in a row: an op array that costs no RAM. */
static char *op_array(unsigned int copies, uint32_t handle, uint64_t va)
{
	const unsigned int per_page = PG / sizeof(struct drm_asahi_gem_bind_op);
	struct drm_asahi_gem_bind_op *page;
	unsigned int i = 0;
	char *array;
	int memfd;

	memfd = memfd_create("ops", 0);
	if (memfd < 0)
		return NULL;
	array = mmap(NULL, copies * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	page = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (!ftruncate(memfd, PG) && array != MAP_FAILED && page != MAP_FAILED) {
		for (i = 0; i < per_page; i++)
			page[i] = op(DRM_ASAHI_BIND_READ, handle, 0, PG, va);
		for (i = 0; i < copies; i++)
			if (mmap(array + i * PG, PG, PROT_READ, MAP_SHARED | MAP_FIXED, memfd,
				 0) == MAP_FAILED)
				break;
	}
	if (page != MAP_FAILED)
		munmap(page, PG);
	close(memfd);
	if (array != MAP_FAILED && i != copies) {
		munmap(array, copies * PG);
		array = MAP_FAILED;
	}
	return array == MAP_FAILED ? NULL : array;
}

/*
 * A VM_BIND of 2^21 ops (one page mapped over and over at one VA, each op replacing the last)
 * runs for seconds, minutes in a debug kernel: SIGKILL must stop it at once, not once it is
 * done. The child says when it is about to enter the ioctl; the kill comes 300 ms later.
 */
static void killed_mid_bind(int fd, uint32_t vm, uint32_t handle)
{
	const unsigned int copies = 4096, n = copies * (PG / sizeof(struct drm_asahi_gem_bind_op));
	const uint64_t va = 0x6000000000ull;
	struct drm_asahi_gem_bind_op unbind = op(DRM_ASAHI_BIND_UNBIND, 0, 0, PG, va);
	char *array = op_array(copies, handle, va), c = 0;
	struct timespec t0, t1;
	int ready[2], status = 0, gone = 0;
	pid_t pid = -1;
	long ms = 0;

	if (!array || pipe(ready)) {
		check(0, "an op array and a pipe for a long VM_BIND");
		if (array)
			munmap(array, copies * PG);
		return;
	}
	fflush(stdout);
	pid = fork();
	if (!pid) {
		struct drm_asahi_vm_bind b = {
			.vm_id = vm, .num_binds = n, .stride = sizeof(struct drm_asahi_gem_bind_op),
			.userptr = (uintptr_t)array,
		};

		close(ready[0]);
		if (write(ready[1], &c, 1) != 1)
			_exit(2);
		_exit(ioctl(fd, DRM_IOCTL_ASAHI_VM_BIND, &b) ? 1 : 0);
	}
	close(ready[1]);
	if (pid > 0 && read(ready[0], &c, 1) == 1) {
		usleep(300000);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		kill(pid, SIGKILL);
		/*
		 * Up to 5 s: a VM_BIND that ignored the kill would go on for minutes, while a
		 * killed one is gone in under a second (the exit drops the buffer references of
		 * the ops read so far: 0.3 s here, 0.7 s with KASAN).
		 */
		do {
			usleep(10000);
			gone = waitpid(pid, &status, WNOHANG) == pid;
			clock_gettime(CLOCK_MONOTONIC, &t1);
			ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
		} while (!gone && ms < 5000);
	}
	printf("uapi: VM_BIND of %u ops, SIGKILL after 300 ms in it: %s %ld ms later (%s)\n", n,
	       gone ? "gone" : "still there", ms,
	       gone && WIFSIGNALED(status) ? "killed" : "not killed");
	check(gone && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && ms < 3000,
	      "SIGKILL stops a long VM_BIND at once");
	/* Whatever happened, the session goes on with the child reaped and the VA unmapped. */
	if (pid > 0 && !gone)
		waitpid(pid, &status, 0);
	close(ready[0]);
	munmap(array, copies * PG);
	vm_bind(fd, vm, &unbind, 1, sizeof(unbind), 0,
		"VM_BIND unbind what the killed call mapped");
}

int uapi_session(void)
{
	char name[32] = "";
	struct drm_version ver = { .name = name, .name_len = sizeof(name) - 1 };
	struct drm_asahi_params_global params;
	struct drm_asahi_get_params gp;
	struct drm_asahi_get_time gt = { 0 };
	struct drm_asahi_vm_create vc;
	struct drm_asahi_vm_destroy vd = { 0 };
	struct drm_asahi_gem_create gc;
	struct drm_asahi_gem_mmap_offset mo;
	struct drm_asahi_gem_bind_object bo;
	struct drm_asahi_queue_create qc = { 0 };
	struct drm_asahi_gem_bind_op ops[2];
	uint64_t kstart, kend, t0;
	uint32_t vm, handle, priv;
	unsigned char *map;
	char hex[256], want[256];
	long uat;
	int fd;

	fd = open("/dev/dri/renderD128", O_RDWR);
	if (fd < 0) {
		printf("uapi: cannot open /dev/dri/renderD128: %s\n", strerror(errno));
		return 1;
	}
	call(fd, DRM_IOCTL_VERSION, &ver, 0, "VERSION");
	check(!strcmp(name, "asahi"), "the driver is asahi");

	/* GET_PARAMS */
	memset(&params, 0xa5, sizeof(params));
	gp = (struct drm_asahi_get_params){ .pointer = (uintptr_t)&params, .size = 8 };
	call(fd, DRM_IOCTL_ASAHI_GET_PARAMS, &gp, 0, "GET_PARAMS size 8");
	check(params.features == 0 && params.gpu_generation == 0xa5a5a5a5,
	      "GET_PARAMS copies at most size bytes");
	gp.size = sizeof(params);
	call(fd, DRM_IOCTL_ASAHI_GET_PARAMS, &gp, 0, "GET_PARAMS");
	printf("uapi: params: G%u%c vm 0x%llx..0x%llx kernel_min 0x%llx\n", params.gpu_generation,
	       params.gpu_variant, (unsigned long long)params.vm_start,
	       (unsigned long long)params.vm_end, (unsigned long long)params.vm_kernel_min_size);
	check(params.gpu_generation == 13 && params.gpu_variant == 'G' &&
	      params.vm_start == 0x4000 && params.vm_end == 1ull << 39 &&
	      params.vm_kernel_min_size == 1ull << 30, "GET_PARAMS values");
	gp.param_group = 1;
	call(fd, DRM_IOCTL_ASAHI_GET_PARAMS, &gp, EINVAL, "GET_PARAMS param_group 1");
	gp.param_group = 0;
	gp.pad = 1;
	call(fd, DRM_IOCTL_ASAHI_GET_PARAMS, &gp, EINVAL, "GET_PARAMS pad 1");
	gp.pad = 0;
	gp.pointer = 16;
	call(fd, DRM_IOCTL_ASAHI_GET_PARAMS, &gp, EFAULT, "GET_PARAMS pointer 16");

	/* GET_TIME */
	call(fd, DRM_IOCTL_ASAHI_GET_TIME, &gt, 0, "GET_TIME");
	t0 = gt.gpu_timestamp;
	call(fd, DRM_IOCTL_ASAHI_GET_TIME, &gt, 0, "GET_TIME again");
	check(gt.gpu_timestamp > t0, "GET_TIME advances");
	gt.flags = 1;
	call(fd, DRM_IOCTL_ASAHI_GET_TIME, &gt, EINVAL, "GET_TIME flags 1");

	/* VM_CREATE: Mesa's kernel range, the top 32 GiB of the window. */
	kend = params.vm_end;
	kstart = kend - (32ull << 30);
	vc = (struct drm_asahi_vm_create){ .kernel_start = kstart + 0x1000, .kernel_end = kend };
	call(fd, DRM_IOCTL_ASAHI_VM_CREATE, &vc, EINVAL, "VM_CREATE unaligned kernel range");
	vc = (struct drm_asahi_vm_create){ .kernel_start = kend - PG, .kernel_end = kend };
	call(fd, DRM_IOCTL_ASAHI_VM_CREATE, &vc, EINVAL, "VM_CREATE kernel range below min");
	vc = (struct drm_asahi_vm_create){ .kernel_start = kstart, .kernel_end = kend + PG };
	call(fd, DRM_IOCTL_ASAHI_VM_CREATE, &vc, EINVAL, "VM_CREATE kernel range outside");
	vc = (struct drm_asahi_vm_create){ .kernel_start = kstart, .kernel_end = kend, .pad = 1 };
	call(fd, DRM_IOCTL_ASAHI_VM_CREATE, &vc, EINVAL, "VM_CREATE pad 1");
	vc.pad = 0;
	call(fd, DRM_IOCTL_ASAHI_VM_CREATE, &vc, 0, "VM_CREATE kernel 0x7800000000..0x8000000000");
	vm = vc.vm_id;
	printf("uapi: vm_id %u\n", vm);

	/* GEM_CREATE */
	gc = (struct drm_asahi_gem_create){ .size = 0 };
	call(fd, DRM_IOCTL_ASAHI_GEM_CREATE, &gc, EINVAL, "GEM_CREATE size 0");
	gc = (struct drm_asahi_gem_create){ .size = PG + 1 };
	call(fd, DRM_IOCTL_ASAHI_GEM_CREATE, &gc, EINVAL, "GEM_CREATE size unaligned");
	gc = (struct drm_asahi_gem_create){ .size = PG, .flags = 1 << 5 };
	call(fd, DRM_IOCTL_ASAHI_GEM_CREATE, &gc, EINVAL, "GEM_CREATE unknown flag");
	gc = (struct drm_asahi_gem_create){ .size = PG, .flags = DRM_ASAHI_GEM_VM_PRIVATE,
					    .vm_id = 99 };
	call(fd, DRM_IOCTL_ASAHI_GEM_CREATE, &gc, ENOENT, "GEM_CREATE VM_PRIVATE vm 99");
	gc = (struct drm_asahi_gem_create){ .size = PG, .vm_id = vm };
	call(fd, DRM_IOCTL_ASAHI_GEM_CREATE, &gc, EINVAL, "GEM_CREATE vm_id without VM_PRIVATE");
	gc = (struct drm_asahi_gem_create){ .size = PG, .flags = DRM_ASAHI_GEM_VM_PRIVATE,
					    .vm_id = vm };
	call(fd, DRM_IOCTL_ASAHI_GEM_CREATE, &gc, 0, "GEM_CREATE 16 KiB VM_PRIVATE");
	priv = gc.handle;
	gc = (struct drm_asahi_gem_create){ .size = 3 * PG, .flags = DRM_ASAHI_GEM_WRITEBACK };
	call(fd, DRM_IOCTL_ASAHI_GEM_CREATE, &gc, 0, "GEM_CREATE 48 KiB WRITEBACK");
	handle = gc.handle;
	printf("uapi: handles %u (private), %u\n", priv, handle);

	/* GEM_MMAP_OFFSET and mmap */
	mo = (struct drm_asahi_gem_mmap_offset){ .handle = 999 };
	call(fd, DRM_IOCTL_ASAHI_GEM_MMAP_OFFSET, &mo, ENOENT, "GEM_MMAP_OFFSET handle 999");
	mo = (struct drm_asahi_gem_mmap_offset){ .handle = handle, .flags = 1 };
	call(fd, DRM_IOCTL_ASAHI_GEM_MMAP_OFFSET, &mo, EINVAL, "GEM_MMAP_OFFSET flags 1");
	mo.flags = 0;
	call(fd, DRM_IOCTL_ASAHI_GEM_MMAP_OFFSET, &mo, 0, "GEM_MMAP_OFFSET");
	map = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, mo.offset);
	check(map != MAP_FAILED, "mmap of the buffer");
	if (map != MAP_FAILED) {
		for (unsigned int i = 0; i < 3 * PG; i++)
			map[i] = (unsigned char)(i * 7 + 1);
		munmap(map, 3 * PG);
	}

	/* VM_BIND: refusals first, each changing nothing. */
	ops[0] = op(DRM_ASAHI_BIND_READ | DRM_ASAHI_BIND_WRITE, handle, 0, 3 * PG, 0x100000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]) - 8, EINVAL, "VM_BIND stride 24");
	vm_bind(fd, vm, ops, 1, 4096 + 8, EINVAL, "VM_BIND stride 4104");
	vm_bind(fd, 99, ops, 1, sizeof(ops[0]), ENOENT, "VM_BIND vm 99");
	vm_bind(fd, vm, (void *)16, 1, sizeof(ops[0]), EFAULT, "VM_BIND userptr 16");
	ops[0] = op(DRM_ASAHI_BIND_READ, handle, 0, 3 * PG, kstart);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), EINVAL, "VM_BIND into the kernel range");
	ops[0] = op(DRM_ASAHI_BIND_READ, handle, 0, 3 * PG, 0);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), EINVAL, "VM_BIND below the window");
	ops[0] = op(DRM_ASAHI_BIND_READ, handle, 0, 3 * PG, 0x101000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), EINVAL, "VM_BIND unaligned VA");
	ops[0] = op(DRM_ASAHI_BIND_READ, handle, PG, 3 * PG, 0x100000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), EINVAL, "VM_BIND past the buffer's end");
	ops[0] = op(DRM_ASAHI_BIND_READ, 999, 0, PG, 0x100000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), ENOENT, "VM_BIND handle 999");
	ops[0] = op(0, handle, 0, PG, 0x100000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), EINVAL, "VM_BIND neither read nor write");
	ops[0] = op(DRM_ASAHI_BIND_READ | (1 << 9), handle, 0, PG, 0x100000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), EINVAL, "VM_BIND unknown flag");
	ops[0] = op(DRM_ASAHI_BIND_UNBIND, handle, 0, PG, 0x100000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), EINVAL, "VM_BIND unbind with a handle");
	ops[0] = op(DRM_ASAHI_BIND_READ, handle, 0, 3 * PG, 0x100000);
	ops[1] = op(DRM_ASAHI_BIND_READ, handle, 0, 3 * PG, 0x1000);
	vm_bind(fd, vm, ops, 2, sizeof(ops[0]), EINVAL, "VM_BIND array with a bad second op");
	bogus_count(fd, vm, handle);
	uat = uat_id_of(vm);
	printf("uapi: vm %u is UAT VM %ld (debugfs vms)\n", vm, uat);
	check(uat > 0, "debugfs lists the VM");
	check(!gpu_read(uat, 0x100000, 16, hex, sizeof(hex)) && !strncmp(hex, "fault", 5),
	      "GPU read of 0x100000 faults: the refused array's first op was not applied");

	/* ... then the binds. */
	ops[0] = op(DRM_ASAHI_BIND_READ | DRM_ASAHI_BIND_WRITE, handle, 0, 3 * PG, 0x100000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), 0, "VM_BIND handle 2 +0 -> 0x100000+0xc000 RW");
	/* What the CPU wrote through mmap is what the GPU reads at the VA. */
	for (unsigned int i = 0; i < 16; i++)
		sprintf(want + 2 * i, "%02x", (unsigned char)((PG + i) * 7 + 1));
	gpu_read(uat, 0x104000, 16, hex, sizeof(hex));
	printf("uapi: GPU read 0x104000+16: %s\n", hex);
	check(!strcmp(hex, want), "the GPU reads at 0x104000 what the CPU wrote at offset 0x4000");
	/* And what the GPU writes, the CPU reads through a new mapping. */
	check(!gpu_write(uat, 0x108010, "deadbeef"), "GPU write of deadbeef at 0x108010");
	map = mmap(NULL, 3 * PG, PROT_READ, MAP_SHARED, fd, mo.offset);
	check(map != MAP_FAILED && map[2 * PG + 0x10] == 0xde && map[2 * PG + 0x13] == 0xef,
	      "the CPU reads at offset 0x8010 what the GPU wrote");
	if (map != MAP_FAILED)
		munmap(map, 3 * PG);
	ops[0] = op(DRM_ASAHI_BIND_READ, priv, 0, PG, 0x200000);
	ops[1] = op(DRM_ASAHI_BIND_READ | DRM_ASAHI_BIND_SINGLE_PAGE, handle, PG, 64 * PG,
		    0x400000);
	vm_bind(fd, vm, ops, 2, sizeof(ops[0]), 0, "VM_BIND two ops (private, single page)");
	{
		/* A larger stride is accepted: the extension bytes must be zero. */
		struct { struct drm_asahi_gem_bind_op op; uint64_t ext; } big = {
			op(DRM_ASAHI_BIND_UNBIND, 0, 0, PG, 0x104000), 0 };

		big.ext = 1;
		vm_bind(fd, vm, &big.op, 1, sizeof(big), EINVAL,
			"VM_BIND stride 40, extension bytes not zero");
		big.ext = 0;
		vm_bind(fd, vm, &big.op, 1, sizeof(big), 0,
			"VM_BIND stride 40, unbind the middle page");
	}
	check(!gpu_read(uat, 0x104000, 4, hex, sizeof(hex)) && !strncmp(hex, "fault", 5),
	      "the unbound middle page faults");
	check(!gpu_read(uat, 0x108000, 4, hex, sizeof(hex)) && strncmp(hex, "fault", 5),
	      "the page after it is still mapped");
	ops[0] = op(DRM_ASAHI_BIND_READ, handle, 0, 2 * PG, 0x100000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), 0,
		"VM_BIND 0x100000+0x8000 over a mapping and a hole (replace)");
	ops[0] = op(DRM_ASAHI_BIND_READ | DRM_ASAHI_BIND_WRITE, handle, PG, 2 * PG, 0x410000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), 0,
		"VM_BIND 0x410000+0x8000 inside a mapping (split in three)");
	ops[0] = op(DRM_ASAHI_BIND_READ, handle, 0, 2 * PG, 0x102000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), EINVAL, "VM_BIND unaligned over mappings");

	private_elsewhere(fd, priv, kstart, kend);
	prime_and_dumb(fd, handle);
	enomem_binds(fd, vm, uat, handle);
	enomem_vm_create(fd, kstart, kend);
	killed_mid_bind(fd, vm, handle);

	/* GEM_BIND_OBJECT: timestamps in the kernel VM. */
	bo = (struct drm_asahi_gem_bind_object){ .op = DRM_ASAHI_BIND_OBJECT_OP_BIND,
		.flags = DRM_ASAHI_BIND_OBJECT_USAGE_TIMESTAMPS, .handle = handle, .range = PG };
	bo.vm_id = vm;
	call(fd, DRM_IOCTL_ASAHI_GEM_BIND_OBJECT, &bo, EINVAL, "GEM_BIND_OBJECT vm_id set");
	bo.vm_id = 0;
	bo.flags = 0;
	call(fd, DRM_IOCTL_ASAHI_GEM_BIND_OBJECT, &bo, EINVAL, "GEM_BIND_OBJECT no usage");
	bo.flags = DRM_ASAHI_BIND_OBJECT_USAGE_TIMESTAMPS;
	call(fd, DRM_IOCTL_ASAHI_GEM_BIND_OBJECT, &bo, 0, "GEM_BIND_OBJECT timestamps");
	printf("uapi: object_handle %u\n", bo.object_handle);
	bo = (struct drm_asahi_gem_bind_object){ .op = DRM_ASAHI_BIND_OBJECT_OP_UNBIND,
		.object_handle = bo.object_handle };
	call(fd, DRM_IOCTL_ASAHI_GEM_BIND_OBJECT, &bo, 0, "GEM_BIND_OBJECT unbind");
	call(fd, DRM_IOCTL_ASAHI_GEM_BIND_OBJECT, &bo, ENOENT, "GEM_BIND_OBJECT unbind again");
	bo.op = 7;
	call(fd, DRM_IOCTL_ASAHI_GEM_BIND_OBJECT, &bo, EINVAL, "GEM_BIND_OBJECT op 7");
	object_limits(fd, handle);

	/* No firmware to run work. */
	qc.vm_id = vm;
	call(fd, DRM_IOCTL_ASAHI_QUEUE_CREATE, &qc, EOPNOTSUPP, "QUEUE_CREATE");

	/* Closing a mapped buffer unmaps it from the client's VMs only. */
	close_unmaps(fd, uat, handle, kstart, kend);
	exit_with_mappings(kstart, kend);
	ops[0] = op(DRM_ASAHI_BIND_UNBIND, 0, 0, 0x8000000, 0x100000);
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), 0, "VM_BIND unbind 0x100000+128 MiB");

	/* VM_DESTROY: the ID is gone at once. */
	vd.vm_id = vm;
	call(fd, DRM_IOCTL_ASAHI_VM_DESTROY, &vd, 0, "VM_DESTROY");
	call(fd, DRM_IOCTL_ASAHI_VM_DESTROY, &vd, ENOENT, "VM_DESTROY again");
	vm_bind(fd, vm, ops, 1, sizeof(ops[0]), ENOENT, "VM_BIND on the destroyed VM");
	close(fd);
	printf("uapi: %d passed, %d failed\n", passed, failed);
	return failed != 0;
}
