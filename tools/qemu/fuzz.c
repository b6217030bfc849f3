// SPDX-License-Identifier: GPL-2.0
/*
 * Bounded ioctl fuzzing of the render node, in the `make kernel-check` initramfs: random and
 * boundary arguments for every asahi ioctl (bad pointers, extreme strides and counts, handles
 * closed while mapped, VMs destroyed under binds), from the seed and for the time init.c
 * gives. The kernel must answer every call with success or an errno of the expected set (a
 * corrupt page table would show as EIO); the sanitizers the kernel is built with watch the
 * rest, and the kmemleak scan after this run sees what the closed files left.
 *
 * The first half of the time, one caller makes the calls: its run is the seed's, call for call.
 * The second half, four callers make them at once, three on one open file of the render node
 * and one on another, the two files sharing buffers through PRIME: binds racing closes, VM
 * destroys, kernel object binds and the other file's binds of the same buffer, which lockdep
 * and the sanitizers watch (the guest has two CPUs). Each caller's calls follow from the seed;
 * their interleaving does not, so a failure of this half may need a few runs to show again.
 * The callers are processes that inherit the files: the kernel sees what threads of one client
 * would make (the same open files, `struct drm_file`), and the guest's minimal kernel has no
 * futexes for threads. A caller still in the kernel a minute after the end (a deadlock) fails
 * the run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

#include "uapi.h"

#define PG 0x4000ull

static uint64_t state;

/* One caller's calls: where they go, how big a buffer they ask for, for how long, their answers. */
struct fuzzer {
	/* The open file of the render node the calls go to. */
	int fd;
	/* Another one, which PRIME shares the buffers of `fd` with; -1 for none. */
	int peer;
	/* The largest GEM_CREATE size. */
	uint64_t max_size;
	uint64_t seed;
	unsigned int seconds;
	/* Whether other callers destroy VMs of `fd` meanwhile. */
	int shared_vms;
	unsigned long calls, ok, unexpected;
};

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
		0x7fffffc000ull, 0x8000000000ull, 0x8000004000ull, 1ull << 48, ~0ull,
		~0ull - PG + 1, 0x7fffffffffffffffull,
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
 * successful create or import on the file `fd` makes beyond those is given back at once, and
 * the release must succeed (counted as a call): otherwise a long run fills the guest (buffers,
 * VMs and pinned kernel objects that no call reaches again), and a guest whose only process is
 * this one panics when it runs out of memory. That is the test setup, not the driver: each
 * client's memory is charged to its cgroup. With other callers making VM_DESTROYs on the file,
 * a VM_DESTROY that answers ENOENT is no failure: one of theirs may have taken the VM first
 * (their calls name the others only now and then, but 4, 5, 8 and 99 are among their edge
 * values). An imported handle is this caller's alone: it alone imports into that file (see
 * run_concurrent()).
 */
static void release_out_of_reach(struct fuzzer *f, int fd, unsigned long req, const void *out)
{
	const struct drm_asahi_gem_create *gc = out;
	const struct drm_prime_handle *ph = out;
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
	} else if (req == DRM_IOCTL_PRIME_FD_TO_HANDLE && ph->handle >= 8) {
		rel = DRM_IOCTL_GEM_CLOSE;
		r.cl.handle = ph->handle;
	} else if (req == DRM_IOCTL_ASAHI_VM_CREATE && vc->vm_id >= 4) {
		rel = DRM_IOCTL_ASAHI_VM_DESTROY;
		r.vd.vm_id = vc->vm_id;
	} else if (req == DRM_IOCTL_ASAHI_GEM_BIND_OBJECT &&
		   bo->op == DRM_ASAHI_BIND_OBJECT_OP_BIND && bo->object_handle >= 4) {
		rel = DRM_IOCTL_ASAHI_GEM_BIND_OBJECT;
		r.bo.op = DRM_ASAHI_BIND_OBJECT_OP_UNBIND;
		r.bo.object_handle = bo->object_handle;
	} else {
		return;
	}
	f->calls++;
	if (ioctl(fd, rel, &r) &&
	    !(errno == ENOENT && f->shared_vms && rel == DRM_IOCTL_ASAHI_VM_DESTROY)) {
		printf("fuzz: FAILED: releasing with ioctl %#lx answered %s\n", rel,
		       strerrorname_np(errno));
		f->unexpected++;
		return;
	}
	f->ok++;
}

/* Counts a call that answered `err`: a success, a refusal, or an unexpected answer. */
static void count(struct fuzzer *f, unsigned long req, int err)
{
	f->calls++;
	f->ok += !err;
	if (!allowed(err)) {
		f->unexpected++;
		printf("fuzz: FAILED: ioctl %#lx answered %s\n", req, strerrorname_np(err));
	}
}

/*
 * Shares a buffer of `f->fd` with the other file: exports a handle below 8 (now and then with
 * random flags) as a dma-buf and imports it there, where it names the same buffer; a handle
 * there that the calls do not reach is closed at once.
 */
static void share(struct fuzzer *f)
{
	struct drm_prime_handle ph = { .handle = rnd() % 8, .flags = DRM_CLOEXEC | DRM_RDWR };
	int err;

	if (rnd() % 8 == 0)
		ph.flags = val32();
	err = ioctl(f->fd, DRM_IOCTL_PRIME_HANDLE_TO_FD, &ph) ? errno : 0;
	count(f, DRM_IOCTL_PRIME_HANDLE_TO_FD, err);
	if (err)
		return;
	ph.handle = 0;
	err = ioctl(f->peer, DRM_IOCTL_PRIME_FD_TO_HANDLE, &ph) ? errno : 0;
	count(f, DRM_IOCTL_PRIME_FD_TO_HANDLE, err);
	close(ph.fd);
	if (!err)
		release_out_of_reach(f, f->peer, DRM_IOCTL_PRIME_FD_TO_HANDLE, &ph);
}

/* Makes random calls for `f->seconds`, from `f->seed`. */
static void run(struct fuzzer *f)
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
	unsigned char scratch[4096];
	struct timespec t0, t;

	state = f->seed | 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		unsigned long req;
		int ret, err, kind = rnd() % (f->peer >= 0 ? 13 : 12);

		/* Without another file, the calls are those of the kinds before sharing. */
		if (kind == 11 && f->peer < 0)
			kind = 12;

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
			 * Sizes up to `max_size`: binding a buffer pins all of it, and a guest
			 * whose only process is this one has nothing for the OOM killer to
			 * kill (it would panic, which is the test setup, not the driver).
			 */
			a.gc.size = rnd() % 2 ? (1 + rnd() % 8) * PG : val64() % f->max_size;
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
		case 11:
			share(f);
			goto next;
		default:
			/* Closing handles, mapped ones included. */
			req = DRM_IOCTL_GEM_CLOSE;
			a.cl.handle = rnd() % 8;
			break;
		}
		ret = ioctl(f->fd, req, &a);
		err = ret ? errno : 0;
		count(f, req, err);
		if (!err)
			release_out_of_reach(f, f->fd, req, &a.raw[0]);
next:
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (t.tv_sec - t0.tv_sec < (time_t)f->seconds);
}

static void report(const char *what, const struct fuzzer *f, unsigned int n)
{
	unsigned long calls = 0, ok = 0, unexpected = 0;

	for (unsigned int i = 0; i < n; i++) {
		calls += f[i].calls;
		ok += f[i].ok;
		unexpected += f[i].unexpected;
	}
	printf("fuzz: %s: %lu calls in %u s: %lu succeeded, %lu refused, %lu unexpected\n", what,
	       calls, f[0].seconds, ok, calls - ok - unexpected, unexpected);
}

#define CALLERS 4

/* A failure that is no call's answer (the caller could not start, crashed, or got stuck). */
static void failed(struct fuzzer *f)
{
	f->calls++;
	f->unexpected++;
}

/* Prints where the caller `pid` is in the kernel. */
static void print_stack(pid_t pid)
{
	char path[64], buf[2048];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stack", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0) {
		buf[n] = 0;
		printf("%s", buf);
	}
}

/*
 * Whether the caller `*pid` (0 when done, or never started) of `f` just ended; a failure if it
 * ended badly, or if it is `stuck` in the kernel, where it is left.
 */
static int reap(struct fuzzer *f, pid_t *pid, int stuck)
{
	int status;

	if (*pid <= 0)
		return 0;
	if (stuck) {
		printf("fuzz: FAILED: the caller of seed %#llx is still in the kernel:\n",
		       (unsigned long long)f->seed);
		print_stack(*pid);
		failed(f);
		return 0;
	}
	if (waitpid(*pid, &status, WNOHANG) != *pid)
		return 0;
	*pid = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		printf("fuzz: FAILED: the caller of seed %#llx ended with status %#x\n",
		       (unsigned long long)f->seed, status);
		failed(f);
	}
	return 1;
}

/*
 * The concurrent half: `CALLERS` processes, the last on `b`, the others on `a`, their counts in
 * `f` (shared memory). The first and the last share buffers with the other file, and they alone
 * import into it: an import gives back the handle the file already has for the buffer, and a
 * handle another importer is closing at that moment is then closed twice, the second time
 * under whatever buffer took its number since (a race of the client, which Mesa's import and
 * close, under one lock, do not have). Buffers of at most 16 MiB: each file keeps up to 7
 * (handles 1 to 7) and up to 3 more pinned by kernel objects, and the callers make 4 more at a
 * time. Returns non-zero if a caller did not finish (it is left in the kernel; the caller's
 * files stay open).
 */
static int run_concurrent(struct fuzzer *f, int a, int b, unsigned int seconds, uint64_t seed)
{
	pid_t pid[CALLERS];
	struct timespec t0, t;
	int left = 0, stuck = 0;

	for (unsigned int i = 0; i < CALLERS; i++) {
		f[i] = (struct fuzzer){
			.fd = a,
			.peer = -1,
			.max_size = 16ull << 20,
			/* Each caller's own sequence: the seed XOR a golden-ratio multiple. */
			.seed = seed ^ ((i + 1) * 0x9e3779b97f4a7c15ull),
			.seconds = seconds,
			.shared_vms = 1,
		};
		if (i == 0) {
			f[i].peer = b;
		} else if (i == CALLERS - 1) {
			/* Alone on `b`. */
			f[i].fd = b;
			f[i].peer = a;
			f[i].shared_vms = 0;
		}
		fflush(stdout);
		pid[i] = fork();
		if (pid[i] == 0) {
			run(&f[i]);
			fflush(stdout);
			_exit(0);
		}
		if (pid[i] < 0) {
			printf("fuzz: FAILED: cannot start caller %u: %s\n", i, strerror(errno));
			failed(&f[i]);
			continue;
		}
		left++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (left) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		stuck = t.tv_sec - t0.tv_sec > (time_t)seconds + 60;
		for (unsigned int i = 0; i < CALLERS; i++)
			left -= reap(&f[i], &pid[i], stuck);
		if (stuck)
			break;
		usleep(10000);
	}
	return stuck;
}

int uapi_fuzz(unsigned int seconds, uint64_t seed)
{
	/* Shared with the callers of the concurrent half, which count into it. */
	struct fuzzer *f = mmap(NULL, (1 + CALLERS) * sizeof(*f), PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	unsigned long calls = 0, unexpected = 0;
	int a, b, stuck;

	if (f == MAP_FAILED) {
		printf("fuzz: FAILED: no shared memory: %s\n", strerror(errno));
		return 1;
	}
	a = open("/dev/dri/renderD128", O_RDWR);
	b = open("/dev/dri/renderD128", O_RDWR);
	if (a < 0 || b < 0) {
		printf("fuzz: cannot open the render node: %s\n", strerror(errno));
		return 1;
	}
	f[0] = (struct fuzzer){
		.fd = a,
		.peer = -1,
		.max_size = 64ull << 20,
		.seed = seed,
		.seconds = seconds - seconds / 2,
	};
	run(&f[0]);
	report("one caller", &f[0], 1);
	/* A fresh file for the concurrent half: the first half's buffers (up to 64 MiB) go. */
	close(a);
	a = open("/dev/dri/renderD128", O_RDWR);
	if (a < 0) {
		printf("fuzz: cannot open the render node: %s\n", strerror(errno));
		return 1;
	}
	stuck = run_concurrent(&f[1], a, b, seconds / 2, seed);
	report("four callers, two files", &f[1], CALLERS);
	if (!stuck) {
		close(a);
		close(b);
	}
	for (unsigned int i = 0; i < 1 + CALLERS; i++) {
		calls += f[i].calls;
		unexpected += f[i].unexpected;
	}
	printf("fuzz: %lu calls in %u s, seed %#llx: %lu unexpected\n", calls, seconds,
	       (unsigned long long)seed, unexpected);
	printf("fuzz: %lu passed, %lu failed\n", calls - unexpected, unexpected);
	return unexpected != 0;
}
