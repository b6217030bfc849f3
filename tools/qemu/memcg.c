// SPDX-License-Identifier: GPL-2.0
/*
 * The memory-cgroup session of the `make kernel-check` initramfs: what a client makes the driver
 * allocate for its VMs (page tables, their counts, the mappings' bookkeeping) is charged to that
 * client's memory cgroup (GFP_KERNEL_ACCOUNT), the charge goes with the VM, and the cgroup's
 * limit stops a client that binds without end.
 *
 * Each client is a child process, in a cgroup of its own for each check. The client that the
 * OOM killer may not take touches everything it will need (stack, the page shared with this
 * process) before its limit is set, and prints nothing while at the limit: a page fault there
 * would have no memory to take, and no process to kill for it. This process reads the cgroups'
 * files and debugfs from the root cgroup. The last line is "memcg: N passed, M failed".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <drm/asahi_drm.h>

#include "uapi.h"

#define PG 0x4000ull
#define CG "/sys/fs/cgroup/"
/* One page bound per 32 MiB: each bind needs a leaf table of its own (16 KiB). */
#define SPAN (32ull << 20)
#define FIRST_VA (4ull << 30)
/* More binds than the limit allows: 64 MiB of leaf tables. */
#define MAX_BINDS 4096
/* The binds of the accounting check: 16 MiB of leaf tables. */
#define COUNTED_BINDS 1024
/*
 * What the cgroup's charges may be off by: the per-CPU charge stock (64 pages of 16 KiB) and
 * the slab pages a VM's kmalloc'd bookkeeping shares with others.
 */
#define SLACK (2ull << 20)

static int passed, failed;
/* The cgroup of the current check's clients: one per check, so that its counters are its own. */
static char group[64];

/* The file `name` of the current check's cgroup (in a static buffer, one at a time). */
static const char *cg_file(const char *name)
{
	static char path[128];

	snprintf(path, sizeof(path), "%s%s", group, name);
	return path;
}

/* Makes the cgroup `name` the current check's. */
static int use_group(const char *name)
{
	snprintf(group, sizeof(group), CG "%s/", name);
	return mkdir(group, 0755) && errno != EEXIST ? -1 : 0;
}

static void check(int cond, const char *what)
{
	if (cond)
		passed++;
	else
		failed++;
	printf("memcg: %scheck %s\n", cond ? "" : "FAILED: ", what);
}

/* What a client and this process share (a page both touch before the client joins). */
struct shared {
	uint32_t vm;
	int binds;
	int err;
	int destroy_err;
	int recreate_err;
};

/* A client and its two pipes: this process -> client (go) and client -> this process (done). */
struct client {
	pid_t pid;
	int go, done;
};

static long read_value(const char *path)
{
	char buf[64] = "";
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return strtol(buf, NULL, 10);
}

/* The value of `key` in the flat-keyed cgroup file `path` (memory.events), -1 if absent. */
static long read_key(const char *path, const char *key)
{
	char line[128], name[64];
	long v, found = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%63s %ld", name, &v) == 2 && !strcmp(name, key))
			found = v;
	fclose(f);
	return found;
}

/* Sets the current cgroup's memory.max to `bytes`. */
static int set_max(unsigned long long bytes)
{
	char v[32];

	snprintf(v, sizeof(v), "%llu", bytes);
	return write_file(cg_file("memory.max"), v);
}

/* Writes one byte to the pipe `fd`: -1 if its reader is gone. */
static int signal_byte(int fd)
{
	char c = 1;

	return write(fd, &c, 1) == 1 ? 0 : -1;
}

static int wait_byte(int fd)
{
	char c;

	return read(fd, &c, 1) == 1 ? 0 : -1;
}

/* Binds one page of `handle` at each SPAN from FIRST_VA until one fails or `max` succeeded. */
static void bind_spans(int fd, struct shared *sh, uint32_t handle, int max)
{
	struct drm_asahi_gem_bind_op op = {
		.flags = DRM_ASAHI_BIND_READ, .handle = handle, .range = PG,
	};
	struct drm_asahi_vm_bind b = {
		.vm_id = sh->vm, .num_binds = 1, .stride = sizeof(op), .userptr = (uintptr_t)&op,
	};

	sh->err = 0;
	for (sh->binds = 0; sh->binds < max; sh->binds++) {
		op.addr = FIRST_VA + sh->binds * SPAN;
		if (ioctl(fd, DRM_IOCTL_ASAHI_VM_BIND, &b)) {
			sh->err = errno;
			return;
		}
	}
}

/*
 * Faults in the stack that the client's ioctls will use, before any limit: `depth` frames of
 * 4 KiB below the caller's (recursive, so that the compiler cannot fold them into the caller's
 * frame).
 */
static int touch_stack(int depth)
{
	char buf[4096];

	memset(buf, depth, sizeof(buf));
	/* Keeps the stores: the compiler must assume the buffer is read. */
	__asm__ __volatile__("" : : "r"(buf) : "memory");
	return depth ? touch_stack(depth - 1) + buf[depth] : 0;
}

/*
 * The client: opens the render node, creates a VM and a one-page buffer, reports ready, then at
 * each go: binds (up to `max`), destroys the VM, creates another; then exits.
 */
static void client_main(struct client *c, struct shared *sh, int max, int survive)
{
	struct drm_asahi_vm_create vc = {
		.kernel_start = (1ull << 39) - (32ull << 30), .kernel_end = 1ull << 39,
	};
	struct drm_asahi_gem_create gc = { .size = PG };
	struct drm_asahi_vm_destroy vd = { 0 };
	int fd;

	touch_stack(16);
	if (survive && write_file("/proc/self/oom_score_adj", "-1000"))
		_exit(3);
	fd = open("/dev/dri/renderD128", O_RDWR);
	if (fd < 0 || ioctl(fd, DRM_IOCTL_ASAHI_VM_CREATE, &vc) ||
	    ioctl(fd, DRM_IOCTL_ASAHI_GEM_CREATE, &gc))
		_exit(4);
	sh->vm = vc.vm_id;
	if (signal_byte(c->done) || wait_byte(c->go))
		_exit(5);
	bind_spans(fd, sh, gc.handle, max);
	if (signal_byte(c->done) || wait_byte(c->go))
		_exit(5);
	vd.vm_id = sh->vm;
	sh->destroy_err = ioctl(fd, DRM_IOCTL_ASAHI_VM_DESTROY, &vd) ? errno : 0;
	sh->recreate_err = ioctl(fd, DRM_IOCTL_ASAHI_VM_CREATE, &vc) ? errno : 0;
	if (signal_byte(c->done) || wait_byte(c->go))
		_exit(5);
	close(fd);
	_exit(0);
}

/* Lets the client take its next step and waits for it; -1 if it died instead. */
static int client_step(struct client *c)
{
	return signal_byte(c->go) || wait_byte(c->done) ? -1 : 0;
}

/* Lets the client exit (if it has not died) and reaps it: its wait status. */
static int client_end(struct client *c)
{
	int status = 0;

	signal_byte(c->go);
	close(c->go);
	close(c->done);
	waitpid(c->pid, &status, 0);
	return status;
}

/* Starts a client in the current check's cgroup, and waits until it is ready. */
static int client_start(struct client *c, struct shared *sh, int max, int survive)
{
	int go[2], done[2];
	char pid[16];

	if (pipe(go) || pipe(done))
		return -1;
	memset(sh, 0, sizeof(*sh));
	c->pid = fork();
	if (c->pid < 0)
		return -1;
	if (!c->pid) {
		close(go[1]);
		close(done[0]);
		c->go = go[0];
		c->done = done[1];
		/* Joined by the parent; wait for that. */
		if (wait_byte(c->go))
			_exit(5);
		client_main(c, sh, max, survive);
	}
	close(go[0]);
	close(done[1]);
	c->go = go[1];
	c->done = done[0];
	snprintf(pid, sizeof(pid), "%d", c->pid);
	if (write_file(cg_file("cgroup.procs"), pid) || signal_byte(c->go) || wait_byte(c->done)) {
		kill(c->pid, SIGKILL);
		client_end(c);
		return -1;
	}
	return 0;
}

/* Whether process `pid` has a VM in debugfs `vms`. */
static int has_vms(pid_t pid)
{
	return uat_id_of_pid(pid, 0) >= 0;
}

static int setup(void)
{
	mkdir(CG, 0755);
	if (mount("cgroup2", CG, "cgroup2", 0, NULL) && errno != EBUSY) {
		printf("memcg: mount cgroup2: %s\n", strerror(errno));
		return -1;
	}
	if (write_file(CG "cgroup.subtree_control", "+memory")) {
		printf("memcg: cannot enable the memory controller\n");
		return -1;
	}
	return 0;
}

/*
 * A client's binds raise its cgroup's charge by their leaf tables (up to the per-CPU charge
 * batches: SLACK), and destroying the VM takes the charge back.
 */
static void accounting(struct shared *sh)
{
	struct client c;
	long before, bound, destroyed;
	const long tables = COUNTED_BINDS * PG;
	char what[160];

	if (use_group("counted") || client_start(&c, sh, COUNTED_BINDS, 0)) {
		check(0, "a client starts in the cgroup");
		return;
	}
	before = read_value(cg_file("memory.current"));
	if (client_step(&c)) {
		check(0, "the client binds");
		client_end(&c);
		return;
	}
	bound = read_value(cg_file("memory.current"));
	snprintf(what, sizeof(what),
		 "%d binds, each with a leaf table of its own, charge the client %ld KiB (tables: %ld KiB)",
		 sh->binds, (bound - before) >> 10, tables >> 10);
	check(sh->binds == COUNTED_BINDS && !sh->err && bound - before >= tables - (long)SLACK &&
	      bound - before <= tables + (long)SLACK, what);
	if (client_step(&c)) {
		check(0, "the client destroys its VM");
		client_end(&c);
		return;
	}
	destroyed = read_value(cg_file("memory.current"));
	snprintf(what, sizeof(what), "VM_DESTROY takes the charge back: %ld KiB left of %ld KiB",
		 (destroyed - before) >> 10, (bound - before) >> 10);
	check(!sh->destroy_err && destroyed - before <= (long)SLACK, what);
	client_end(&c);
}

/*
 * At the cgroup's limit, a client the OOM killer may not take gets ENOMEM from the bind that
 * needs a table, which maps nothing; what it bound before stays; destroying its VM frees room
 * for a new one.
 */
static void limit_enomem(struct shared *sh)
{
	struct client c;
	long base, uat, max;
	char what[160];

	if (use_group("unkillable") || client_start(&c, sh, MAX_BINDS, 1)) {
		check(0, "an unkillable client starts in the cgroup");
		return;
	}
	base = read_value(cg_file("memory.current"));
	max = base + (8L << 20);
	if (set_max(max) || client_step(&c)) {
		check(0, "the client binds up to the limit");
		client_end(&c);
		return;
	}
	snprintf(what, sizeof(what), "at 8 MiB over its start the client's bind %d answers %s",
		 sh->binds, sh->err ? strerrorname_np(sh->err) : "ok");
	check(sh->err == ENOMEM && sh->binds > 64 && sh->binds < MAX_BINDS, what);
	uat = uat_id_of_pid(c.pid, sh->vm);
	check(uat > 0 && mapped(uat, FIRST_VA, PG) == 1 &&
	      mapped(uat, FIRST_VA + (sh->binds - 1) * SPAN, PG) == 1,
	      "the binds before the refused one are still mapped");
	check(uat > 0 && mapped(uat, FIRST_VA + sh->binds * SPAN, PG) == 0,
	      "the refused bind mapped nothing");
	if (client_step(&c)) {
		check(0, "the client destroys its VM at the limit");
		client_end(&c);
		return;
	}
	snprintf(what, sizeof(what), "at the limit VM_DESTROY answers %s and a new VM_CREATE %s",
		 sh->destroy_err ? strerrorname_np(sh->destroy_err) : "ok",
		 sh->recreate_err ? strerrorname_np(sh->recreate_err) : "ok");
	check(!sh->destroy_err && !sh->recreate_err, what);
	client_end(&c);
	check(has_vms(c.pid) == 0, "the client's VMs are gone with it");
}

/*
 * At the limit, a client the OOM killer may take is killed (the cgroup's OOM killer, as for any
 * memory it allocates), and its VM and everything charged for it go with its file.
 */
static void limit_oom_kill(struct shared *sh)
{
	struct client c;
	long left;
	int status;
	char what[160];

	if (use_group("killable") || set_max(8UL << 20) || client_start(&c, sh, MAX_BINDS, 0)) {
		check(0, "a killable client starts in the cgroup");
		return;
	}
	check(has_vms(c.pid), "the killable client's VM is listed");
	status = client_step(&c) ? client_end(&c) : -1;
	snprintf(what, sizeof(what),
		 "a killable client at the limit is killed by its cgroup's OOM killer (after %d binds)",
		 sh->binds);
	check(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL &&
	      read_key(cg_file("memory.events"), "oom_kill") == 1, what);
	if (status == -1)
		client_end(&c);
	check(has_vms(c.pid) == 0, "the killed client's VMs are gone");
	left = read_value(cg_file("memory.current"));
	snprintf(what, sizeof(what), "the cgroup holds %ld KiB once its client is gone",
		 left >> 10);
	check(left >= 0 && left <= (long)SLACK, what);
}

int uapi_memcg(void)
{
	struct shared *sh;

	/* A client that dies leaves its pipe without a reader: EPIPE, not a signal to /init. */
	signal(SIGPIPE, SIG_IGN);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED || setup()) {
		printf("memcg: 0 passed, 1 failed\n");
		return 1;
	}
	fflush(stdout);
	accounting(sh);
	fflush(stdout);
	limit_enomem(sh);
	fflush(stdout);
	limit_oom_kill(sh);
	signal(SIGPIPE, SIG_DFL);
	printf("memcg: %d passed, %d failed\n", passed, failed);
	return failed != 0;
}
