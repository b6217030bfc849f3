// SPDX-License-Identifier: GPL-2.0
/*
 * The trace replay of the `make kernel-check` initramfs: the simulator's traces
 * (tools/uat-sim/src/trace.rs) replayed through the render node's ioctls, with results in the
 * format of `uat-sim --out` (results.jsonl, maps.txt), compared line for line with the
 * simulator's, which the host put next to each trace.
 *
 * /replay/list names the traces, one "NAME EVERY" per line; for each NAME, /replay/NAME.jsonl is
 * the trace, NAME.expected the simulator's results and NAME.maps its maps, taken after every
 * EVERY operations and at the end (`uat-sim --maps-every EVERY`). Each trace runs on a fresh
 * open of the render node (closing it at the end drops its VMs and handles), as the simulator
 * boots a fresh machine per trace.
 *
 * How the trace's operations are replayed:
 * - vm_create, vm_destroy, gem_create, gem_close, bind: the ioctls, with the trace's names
 *   mapped to the kernel's IDs and handles (a name nothing has, to an ID or handle nothing has:
 *   ~0), and the name-level answers the simulator gives (EEXIST for a name in use, ENOENT for
 *   one unknown). A VM without a kernel range gets Mesa's (from GET_PARAMS). A new buffer is
 *   mmapped through GEM_MMAP_OFFSET and must read as zeroes, as the GPU sees it.
 * - gpu_read, gpu_write: debugfs gpu_mem, which walks the VM's page tables in the kernel and
 *   faults as the GPU does (a page not mapped, or not readable / writable by the GPU).
 * - submit, complete: the render node runs no work (SUBMIT is EOPNOTSUPP: no firmware), so the
 *   client keeps the work in flight as the simulator's UAT does: per VM, in submission order;
 *   a complete ends the oldest work submitted under the name, even of a VM destroyed since;
 *   EINVAL for a VM without work, ENOENT for an unknown name; the GPU reaches a VM only while
 *   it has work (else EINVAL); a submit finds no context slot (EBUSY) when the 63 user slots
 *   all run other VMs' work.
 * After every EVERY operations and at the end, debugfs `maps` gives each live VM's mappings by
 * buffer (named by its fake mmap offset, mapped back to the trace's buffer name), and they must
 * equal NAME.maps.
 *
 * The last line is "uapi replay: N traces, M ops, kernel == simulator", or says what differs.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <drm/asahi_drm.h>
#include <drm/drm.h>

#include "uapi.h"

#define NONE 0xffffffffu
#define USER_SLOTS 63
/* The most bytes one debugfs gpu_mem access moves (gpu_mem.rs MAX_LEN). */
#define MAX_ACCESS 4096
#define MAX_VMS 256
#define MAX_BOS 4096
#define MAX_JOBS 4096
#define MAX_OPS 64
#define SHOW_DIFFS 8

/* ---- A small JSON reader, enough for trace lines ---- */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
	enum jtype t;
	uint64_t n;
	const char *s; /* J_STR: unescaped, NUL-terminated (in the line's buffer) */
	const char *key; /* in an object */
	struct jv *child, *next;
};

#define NODES 4096
static struct jv nodes[NODES];
static int used;

static struct jv *node(enum jtype t)
{
	struct jv *v;

	if (used == NODES)
		return NULL;
	v = &nodes[used++];
	memset(v, 0, sizeof(*v));
	v->t = t;
	return v;
}

static void ws(char **p)
{
	while (isspace((unsigned char)**p))
		(*p)++;
}

/* A string at *p (after its quote), unescaped in place. */
static char *str(char **p)
{
	char *out = *p, *w = *p;

	for (;;) {
		char c = *(*p)++;

		if (!c)
			return NULL;
		if (c == '"')
			break;
		if (c == '\\') {
			c = *(*p)++;
			switch (c) {
			case 'n':
				c = '\n';
				break;
			case 't':
				c = '\t';
				break;
			case '"':
			case '\\':
			case '/':
				break;
			default:
				return NULL; /* traces have no other escapes */
			}
		}
		*w++ = c;
	}
	*w = 0;
	return out;
}

static struct jv *value(char **p, int depth)
{
	struct jv *v, **tail;

	if (depth > 16)
		return NULL;
	ws(p);
	switch (**p) {
	case '{':
	case '[': {
		int obj = **p == '{';

		(*p)++;
		v = node(obj ? J_OBJ : J_ARR);
		if (!v)
			return NULL;
		tail = &v->child;
		ws(p);
		if (**p == (obj ? '}' : ']')) {
			(*p)++;
			return v;
		}
		for (;;) {
			const char *key = NULL;
			struct jv *c;

			ws(p);
			if (obj) {
				if (*(*p)++ != '"')
					return NULL;
				key = str(p);
				if (!key)
					return NULL;
				ws(p);
				if (*(*p)++ != ':')
					return NULL;
			}
			c = value(p, depth + 1);
			if (!c)
				return NULL;
			c->key = key;
			*tail = c;
			tail = &c->next;
			ws(p);
			if (**p == ',') {
				(*p)++;
				continue;
			}
			if (*(*p)++ != (obj ? '}' : ']'))
				return NULL;
			return v;
		}
	}
	case '"':
		(*p)++;
		v = node(J_STR);
		if (!v)
			return NULL;
		v->s = str(p);
		return v->s ? v : NULL;
	default:
		if (isdigit((unsigned char)**p)) {
			char *end;

			v = node(J_NUM);
			if (!v)
				return NULL;
			errno = 0;
			v->n = strtoull(*p, &end, 10);
			if (errno || end == *p)
				return NULL;
			*p = end;
			return v;
		}
		if (!strncmp(*p, "true", 4) || !strncmp(*p, "null", 4)) {
			v = node(**p == 't' ? J_BOOL : J_NULL);
			*p += 4;
			return v;
		}
		if (!strncmp(*p, "false", 5)) {
			v = node(J_BOOL);
			*p += 5;
			return v;
		}
		return NULL;
	}
}

static struct jv *get(struct jv *obj, const char *key)
{
	for (struct jv *c = obj ? obj->child : NULL; c; c = c->next)
		if (c->key && !strcmp(c->key, key))
			return c;
	return NULL;
}

/* A number: a JSON integer, or a string ("0x..." hex or decimal). */
static int num(struct jv *v, uint64_t *out)
{
	char *end;

	if (!v)
		return -1;
	if (v->t == J_NUM) {
		*out = v->n;
		return 0;
	}
	if (v->t != J_STR || !*v->s)
		return -1;
	errno = 0;
	if (!strncasecmp(v->s, "0x", 2))
		*out = strtoull(v->s + 2, &end, 16);
	else
		*out = strtoull(v->s, &end, 10);
	return errno || *end ? -1 : 0;
}

struct flag_name {
	uint32_t bit;
	const char *name;
};

static const struct flag_name bind_names[] = {
	{ DRM_ASAHI_BIND_READ, "READ" }, { DRM_ASAHI_BIND_WRITE, "WRITE" },
	{ DRM_ASAHI_BIND_SINGLE_PAGE, "SINGLE_PAGE" }, { DRM_ASAHI_BIND_UNBIND, "UNBIND" },
	{ 0, NULL },
};

static const struct flag_name gem_names[] = {
	{ DRM_ASAHI_GEM_WRITEBACK, "WRITEBACK" }, { DRM_ASAHI_GEM_VM_PRIVATE, "VM_PRIVATE" },
	{ 0, NULL },
};

/* Flags: absent (0), a number, or a list of names. */
static int flags(struct jv *v, const struct flag_name *names, uint32_t *out)
{
	uint64_t n;

	*out = 0;
	if (!v)
		return 0;
	if (v->t != J_ARR) {
		if (num(v, &n) || n > UINT32_MAX)
			return -1;
		*out = n;
		return 0;
	}
	for (struct jv *c = v->child; c; c = c->next) {
		const struct flag_name *f = names;

		if (c->t != J_STR)
			return -1;
		while (f->name && strcmp(f->name, c->s))
			f++;
		if (!f->name)
			return -1;
		*out |= f->bit;
	}
	return 0;
}

/* ---- The operations ---- */

enum opkind { VM_CREATE, VM_DESTROY, GEM_CREATE, GEM_CLOSE, BIND, SUBMIT, COMPLETE, GPU_WRITE,
	      GPU_READ };

struct bind_op {
	uint32_t flags;
	int has_handle;
	uint64_t handle, offset, range, addr;
};

struct op {
	enum opkind kind;
	uint64_t vm, bo, size, addr, len;
	uint32_t flags;
	int has_kernel, has_vm_id;
	uint64_t kernel_start, kernel_end, vm_id;
	unsigned int nops;
	struct bind_op *ops;
	char *data; /* gpu_write: hex digits */
};

static int hexdigits(const char *s)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return -1;
	return n % 2 ? -1 : 0;
}

/* Parses one trace line into `o`; -1 if it is not a trace operation. */
static int parse_op(char *line, struct op *o)
{
	char *p = line;
	struct jv *v, *kind;
	const char *k;

	used = 0;
	memset(o, 0, sizeof(*o));
	v = value(&p, 0);
	ws(&p);
	kind = v && !*p && v->t == J_OBJ ? get(v, "op") : NULL;
	if (!kind || kind->t != J_STR)
		return -1;
	k = kind->s;
	if (strcmp(k, "gem_create") && strcmp(k, "gem_close") && num(get(v, "vm"), &o->vm))
		return -1;
	if (!strcmp(k, "vm_create")) {
		o->kind = VM_CREATE;
		o->has_kernel = !!get(v, "kernel_start");
		if (o->has_kernel && (num(get(v, "kernel_start"), &o->kernel_start) ||
				      num(get(v, "kernel_end"), &o->kernel_end)))
			return -1;
	} else if (!strcmp(k, "vm_destroy")) {
		o->kind = VM_DESTROY;
	} else if (!strcmp(k, "submit")) {
		o->kind = SUBMIT;
	} else if (!strcmp(k, "complete")) {
		o->kind = COMPLETE;
	} else if (!strcmp(k, "gem_create")) {
		o->kind = GEM_CREATE;
		if (num(get(v, "bo"), &o->bo) || num(get(v, "size"), &o->size) ||
		    flags(get(v, "flags"), gem_names, &o->flags))
			return -1;
		o->has_vm_id = !!get(v, "vm_id");
		if (o->has_vm_id && num(get(v, "vm_id"), &o->vm_id))
			return -1;
	} else if (!strcmp(k, "gem_close")) {
		o->kind = GEM_CLOSE;
		if (num(get(v, "bo"), &o->bo))
			return -1;
	} else if (!strcmp(k, "bind") || !strcmp(k, "unbind")) {
		struct jv *ops = get(v, "ops"), *c;
		unsigned int n = 0;

		o->kind = BIND;
		for (c = ops ? ops->child : NULL; c; c = c->next)
			n++;
		o->nops = ops ? n : 1;
		if (o->nops > MAX_OPS || (ops && ops->t != J_ARR))
			return -1;
		o->ops = calloc(o->nops ? o->nops : 1, sizeof(*o->ops));
		if (!o->ops)
			return -1;
		if (!strcmp(k, "unbind")) {
			o->ops[0].flags = DRM_ASAHI_BIND_UNBIND;
			return num(get(v, "addr"), &o->ops[0].addr) ||
			       num(get(v, "range"), &o->ops[0].range) ? -1 : 0;
		}
		if (!ops) {
			/* The single-op form. */
			struct bind_op *b = &o->ops[0];

			b->has_handle = 1;
			return num(get(v, "bo"), &b->handle) || num(get(v, "offset"), &b->offset) ||
			       num(get(v, "range"), &b->range) || num(get(v, "addr"), &b->addr) ||
			       flags(get(v, "flags"), bind_names, &b->flags) ? -1 : 0;
		}
		n = 0;
		for (c = ops->child; c; c = c->next, n++) {
			struct bind_op *b = &o->ops[n];

			b->has_handle = !!get(c, "handle");
			if (flags(get(c, "flags"), bind_names, &b->flags) ||
			    (b->has_handle && num(get(c, "handle"), &b->handle)) ||
			    (get(c, "offset") && num(get(c, "offset"), &b->offset)) ||
			    num(get(c, "range"), &b->range) || num(get(c, "addr"), &b->addr))
				return -1;
		}
	} else if (!strcmp(k, "gpu_write")) {
		struct jv *d = get(v, "data");

		o->kind = GPU_WRITE;
		if (num(get(v, "addr"), &o->addr) || !d || d->t != J_STR || hexdigits(d->s))
			return -1;
		o->data = strdup(d->s);
		if (!o->data)
			return -1;
	} else if (!strcmp(k, "gpu_read")) {
		o->kind = GPU_READ;
		if (num(get(v, "addr"), &o->addr) || num(get(v, "len"), &o->len) ||
		    o->len > (1 << 20))
			return -1;
	} else {
		return -1;
	}
	return 0;
}

/* ---- The client's view of the trace's names ---- */

struct vm {
	uint64_t name;
	uint32_t id; /* the kernel's vm_id */
	long uat; /* the UAT VM (debugfs) */
	unsigned int instance; /* which VM of this name (names are reused after a destroy) */
	int live;
};

struct bo {
	uint64_t name;
	uint32_t handle;
	uint64_t mmap_offset;
	int open;
};

struct job {
	uint64_t name;
	unsigned int instance;
};

static struct vm vms[MAX_VMS];
static struct bo bos[MAX_BOS];
static struct job jobs[MAX_JOBS];
static unsigned int nvms, nbos, njobs, instances;
static struct drm_asahi_params_global params;

static struct vm *vm_named(uint64_t name)
{
	for (unsigned int i = 0; i < nvms; i++)
		if (vms[i].live && vms[i].name == name)
			return &vms[i];
	return NULL;
}

static struct bo *bo_named(uint64_t name)
{
	for (unsigned int i = 0; i < nbos; i++)
		if (bos[i].open && bos[i].name == name)
			return &bos[i];
	return NULL;
}

/* Work in flight of VM instance `inst`. */
static unsigned int work_of(unsigned int inst)
{
	unsigned int n = 0;

	for (unsigned int i = 0; i < njobs; i++)
		n += jobs[i].instance == inst;
	return n;
}

/* VM instances with work in flight: each holds a context slot. */
static unsigned int running(void)
{
	unsigned int n = 0;

	for (unsigned int i = 0; i < njobs; i++) {
		unsigned int j;

		for (j = 0; j < i && jobs[j].instance != jobs[i].instance; j++)
			;
		n += j == i;
	}
	return n;
}

static int ioctl_err(int fd, unsigned long req, void *arg)
{
	int ret;

	do {
		ret = ioctl(fd, req, arg);
	} while (ret == -1 && errno == EINTR);
	return ret ? errno : 0;
}

/* ---- Results ---- */

static char result[2 * (1 << 20) + 64];

static int res_err(int err)
{
	if (err)
		snprintf(result, sizeof(result), "{\"err\":\"%s\"}", strerrorname_np(err));
	else
		strcpy(result, "{\"ok\":true}");
	return 0;
}

/* One debugfs gpu_mem access of at most MAX_ACCESS bytes; 0, EFAULT (a GPU fault) or errno. */
static int gpu_mem(long uat, uint64_t va, int read_, const char *hex, size_t len, char *out)
{
	static char cmd[2 * MAX_ACCESS + 96];
	int fd = open(DBG "gpu_mem", O_RDWR), n, err = 0;

	if (fd < 0)
		return errno;
	if (read_)
		n = snprintf(cmd, sizeof(cmd), "read %ld 0x%llx %zu", uat,
			     (unsigned long long)va, len);
	else
		n = snprintf(cmd, sizeof(cmd), "write %ld 0x%llx %.*s", uat,
			     (unsigned long long)va, (int)(2 * len), hex);
	if (write(fd, cmd, n) != n)
		err = errno;
	if (!err && read_) {
		static char answer[2 * MAX_ACCESS + 64];

		lseek(fd, 0, SEEK_SET);
		n = read(fd, answer, sizeof(answer) - 1);
		if (n < 0)
			err = errno;
		else if (n >= 5 && !strncmp(answer, "fault", 5))
			err = EFAULT;
		else if (n != (int)(2 * len + 1) || answer[2 * len] != '\n')
			err = EIO;
		for (int i = 0; !err && i < (int)(2 * len); i++)
			if (!isxdigit((unsigned char)answer[i]))
				err = EIO;
		if (!err)
			memcpy(out, answer, 2 * len);
	}
	close(fd);
	return err;
}

static int gpu_access(struct op *o)
{
	struct vm *vm = vm_named(o->vm);
	size_t len = o->kind == GPU_READ ? o->len : strlen(o->data) / 2;
	char *hex;
	int err = 0;

	if (!vm)
		return res_err(ENOENT);
	if (!work_of(vm->instance))
		return res_err(EINVAL); /* the GPU runs no work of it */
	if (o->kind == GPU_WRITE) {
		/* Atomic per debugfs access only: longer writes are not replayed. */
		if (len > MAX_ACCESS)
			return res_err(E2BIG);
		if (len)
			err = gpu_mem(vm->uat, o->addr, 0, o->data, len, NULL);
		return res_err(err);
	}
	strcpy(result, "{\"data\":\"");
	hex = result + strlen(result);
	for (size_t done = 0; done < len && !err; done += MAX_ACCESS) {
		size_t n = len - done < MAX_ACCESS ? len - done : MAX_ACCESS;

		err = gpu_mem(vm->uat, o->addr + done, 1, NULL, n, hex + 2 * done);
	}
	if (err)
		return res_err(err);
	strcpy(hex + 2 * len, "\",\"ok\":true}");
	return 0;
}

/* Whether the `size` bytes of buffer `handle`, mapped through its fake offset, are zero. */
static int zeroed(int fd, uint64_t offset, uint64_t size)
{
	unsigned char *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, offset);
	int ok = 1;

	if (p == MAP_FAILED)
		return 0;
	for (uint64_t i = 0; i < size && ok; i++)
		ok = !p[i];
	munmap(p, size);
	return ok;
}

static int bad_mmaps;

static int execute(int fd, struct op *o)
{
	struct vm *vm = o->kind == GEM_CREATE || o->kind == GEM_CLOSE ? NULL : vm_named(o->vm);
	int err;

	switch (o->kind) {
	case VM_CREATE: {
		struct drm_asahi_vm_create c = { 0 };
		uint64_t size = params.vm_kernel_min_size > (32ull << 30) ?
				params.vm_kernel_min_size : 32ull << 30;

		if (vm)
			return res_err(EEXIST);
		if (nvms == MAX_VMS)
			return res_err(ENOSPC);
		c.kernel_end = o->has_kernel ? o->kernel_end : params.vm_end;
		c.kernel_start = o->has_kernel ? o->kernel_start :
				 params.vm_end - size < params.vm_start ? params.vm_start :
				 params.vm_end - size;
		err = ioctl_err(fd, DRM_IOCTL_ASAHI_VM_CREATE, &c);
		if (!err) {
			vms[nvms] = (struct vm){
				.name = o->vm, .id = c.vm_id, .uat = uat_id_of(c.vm_id),
				.instance = ++instances, .live = 1,
			};
			if (vms[nvms++].uat < 0)
				err = ENXIO; /* not in debugfs: the replay cannot go on right */
		}
		return res_err(err);
	}
	case VM_DESTROY: {
		struct drm_asahi_vm_destroy d = { 0 };

		if (!vm)
			return res_err(ENOENT);
		d.vm_id = vm->id;
		err = ioctl_err(fd, DRM_IOCTL_ASAHI_VM_DESTROY, &d);
		/* The name is gone at once; its work keeps the instance until it completes. */
		vm->live = 0;
		return res_err(err);
	}
	case GEM_CREATE: {
		struct drm_asahi_gem_create c = { .size = o->size, .flags = o->flags };
		struct drm_asahi_gem_mmap_offset m = { 0 };

		if (bo_named(o->bo))
			return res_err(EEXIST);
		if (nbos == MAX_BOS)
			return res_err(ENOSPC);
		if (o->has_vm_id) {
			struct vm *p = vm_named(o->vm_id);

			c.vm_id = p ? p->id : NONE;
		}
		err = ioctl_err(fd, DRM_IOCTL_ASAHI_GEM_CREATE, &c);
		if (err)
			return res_err(err);
		m.handle = c.handle;
		err = ioctl_err(fd, DRM_IOCTL_ASAHI_GEM_MMAP_OFFSET, &m);
		if (err || !zeroed(fd, m.offset, o->size)) {
			printf("uapi replay: buffer %llu: no mmap, or not zeroes\n",
			       (unsigned long long)o->bo);
			bad_mmaps++;
		}
		bos[nbos++] = (struct bo){ .name = o->bo, .handle = c.handle,
					   .mmap_offset = m.offset, .open = 1 };
		return res_err(0);
	}
	case GEM_CLOSE: {
		struct bo *b = bo_named(o->bo);
		struct drm_gem_close c = { 0 };

		if (!b)
			return res_err(ENOENT);
		c.handle = b->handle;
		b->open = 0; /* its name stays for the maps while it is mapped */
		return res_err(ioctl_err(fd, DRM_IOCTL_GEM_CLOSE, &c));
	}
	case BIND: {
		struct drm_asahi_gem_bind_op ops[MAX_OPS];
		struct drm_asahi_vm_bind b = {
			.vm_id = vm ? vm->id : NONE, .num_binds = o->nops, .stride = sizeof(ops[0]),
			.userptr = (uintptr_t)ops,
		};

		for (unsigned int i = 0; i < o->nops; i++) {
			struct bind_op *s = &o->ops[i];
			struct bo *h = s->has_handle ? bo_named(s->handle) : NULL;
			uint32_t handle = h ? h->handle : NONE;

			ops[i] = (struct drm_asahi_gem_bind_op){
				.flags = s->flags, .handle = s->has_handle ? handle : 0,
				.offset = s->offset, .range = s->range, .addr = s->addr,
			};
		}
		return res_err(ioctl_err(fd, DRM_IOCTL_ASAHI_VM_BIND, &b));
	}
	case SUBMIT:
		if (!vm)
			return res_err(ENOENT);
		if (!work_of(vm->instance) && running() >= USER_SLOTS)
			return res_err(EBUSY);
		if (njobs == MAX_JOBS)
			return res_err(ENOSPC);
		jobs[njobs++] = (struct job){ .name = o->vm, .instance = vm->instance };
		return res_err(0);
	case COMPLETE:
		for (unsigned int i = 0; i < njobs; i++) {
			if (jobs[i].name != o->vm)
				continue;
			memmove(&jobs[i], &jobs[i + 1], (njobs - i - 1) * sizeof(jobs[0]));
			njobs--;
			return res_err(0);
		}
		return res_err(vm ? EINVAL : ENOENT);
	case GPU_WRITE:
	case GPU_READ:
		return gpu_access(o);
	}
	return res_err(EINVAL);
}

/* ---- The maps ---- */

struct maps_vm {
	uint64_t name;
	char *text;
};

static int cmp_maps(const void *a, const void *b)
{
	const struct maps_vm *x = a, *y = b;

	return x->name < y->name ? -1 : x->name > y->name;
}

static const char *label_of(uint64_t offset, char *buf, size_t size)
{
	/* The latest buffer with that offset: offsets are reused only after a buffer is gone. */
	for (unsigned int i = nbos; i-- > 0;)
		if (bos[i].mmap_offset == offset) {
			snprintf(buf, size, "bo %llu", (unsigned long long)bos[i].name);
			return buf;
		}
	snprintf(buf, size, "obj? 0x%llx", (unsigned long long)offset);
	return buf;
}

/* A run of debugfs `maps`: VAs, physical address, KiB, access. */
#define RUN " %llx-%llx -> %llx %llu KiB gpu %7s fw %7s"
/* A run of the simulator's maps.txt: the same without the physical address. */
#define SIM_RUN "  0x%016llx-0x%016llx %10llu KiB  gpu %s fw %s"

/*
 * This client's live VMs' mappings from debugfs `maps`, in the simulator's maps.txt form:
 * by trace name, the physical addresses dropped, buffers named by the trace's names.
 */
static char *kernel_maps(void)
{
	FILE *f = fopen(DBG "maps", "r");
	struct maps_vm mv[MAX_VMS];
	unsigned int n = 0;
	char *line = NULL, *out;
	size_t cap = 0, total = 1;
	struct maps_vm *cur = NULL;

	if (!f)
		return NULL;
	while (getline(&line, &cap, f) > 0) {
		long uat;
		unsigned long long runs, pages, tables, va, end, pa, kib, label, off;
		char gpu[8], fw[8], rest[64] = "", conv[512], name[48];
		size_t len;

		if (sscanf(line, "vm %ld: %llu runs, %llu pages, %llu tables", &uat, &runs, &pages,
			   &tables) == 4) {
			cur = NULL;
			for (unsigned int i = 0; i < nvms; i++)
				if (vms[i].live && vms[i].uat == uat && n < MAX_VMS) {
					unsigned long long vm = vms[i].name;

					cur = &mv[n++];
					cur->name = vm;
					if (asprintf(&cur->text,
						     "vm %llu: %llu runs, %llu pages, %llu tables\n",
						     vm, runs, pages, tables) < 0)
						cur->text = NULL;
				}
			continue;
		}
		if (!cur || !cur->text)
			continue;
		if (sscanf(line, RUN " obj %llx +%llx%63[^\n]", &va, &end, &pa, &kib, gpu, fw,
			   &label, &off, rest) >= 8)
			snprintf(conv, sizeof(conv), SIM_RUN "  %s +0x%llx%s\n", va, end, kib, gpu,
				 fw, label_of(label, name, sizeof(name)), off, rest);
		else if (sscanf(line, RUN " -%63[^\n]", &va, &end, &pa, &kib, gpu, fw,
				rest) >= 6)
			snprintf(conv, sizeof(conv), SIM_RUN "  -%s\n", va, end, kib, gpu, fw,
				 rest);
		else
			snprintf(conv, sizeof(conv), "?? %s", line);
		len = strlen(cur->text) + strlen(conv) + 1;
		cur->text = realloc(cur->text, len);
		if (cur->text)
			strcat(cur->text, conv);
	}
	free(line);
	fclose(f);
	qsort(mv, n, sizeof(mv[0]), cmp_maps);
	for (unsigned int i = 0; i < n; i++)
		total += mv[i].text ? strlen(mv[i].text) : 0;
	out = calloc(1, total);
	for (unsigned int i = 0; i < n; i++) {
		if (out && mv[i].text)
			strcat(out, mv[i].text);
		free(mv[i].text);
	}
	return out;
}

/* ---- The replay ---- */

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n + 1);
	if (buf && fread(buf, 1, n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	if (buf)
		buf[n] = 0;
	fclose(f);
	return buf;
}

/* The first line where `a` and `b` differ (1-based), 0 if they are equal. */
static unsigned int first_diff(const char *a, const char *b, char *wa, char *wb, size_t size)
{
	unsigned int line = 1;

	while (*a || *b) {
		size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");

		if (la != lb || strncmp(a, b, la)) {
			snprintf(wa, size, "%.*s", (int)la, a);
			snprintf(wb, size, "%.*s", (int)lb, b);
			return line;
		}
		a += la + !!a[la];
		b += lb + !!b[lb];
		line++;
	}
	return 0;
}

static int diffs;

/*
 * Replays trace `name`, with the maps after every `every` operations (0: at the end only); adds
 * its operations to *ops. Non-zero if anything differs.
 */
static int replay_one(const char *name, unsigned int every, unsigned long *ops)
{
	char path[256], *trace, *expected, *want_maps, *got_maps = NULL, *line, *save = NULL, *exp;
	struct op *list = NULL;
	unsigned int n = 0, cap = 0, lineno = 0, bad = 0;
	int fd;

	snprintf(path, sizeof(path), "/replay/%s.jsonl", name);
	trace = slurp(path);
	snprintf(path, sizeof(path), "/replay/%s.expected", name);
	expected = slurp(path);
	snprintf(path, sizeof(path), "/replay/%s.maps", name);
	want_maps = slurp(path);
	if (!trace || !expected || !want_maps) {
		printf("uapi replay: %s: missing files\n", name);
		return 1;
	}
	/* The whole trace is parsed first, as the simulator does. */
	for (line = strtok_r(trace, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		while (isspace((unsigned char)*line))
			line++;
		if (!*line || *line == '#')
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			list = realloc(list, cap * sizeof(*list));
			if (!list)
				return 1;
		}
		if (parse_op(line, &list[n])) {
			printf("uapi replay: %s line %u: not a trace operation\n", name, lineno);
			return 1;
		}
		n++;
	}
	fd = open("/dev/dri/renderD128", O_RDWR);
	if (fd < 0) {
		printf("uapi replay: cannot open the render node: %s\n", strerror(errno));
		return 1;
	}
	nvms = 0;
	nbos = 0;
	njobs = 0;
	exp = expected;
	got_maps = calloc(1, 1);
	for (unsigned int i = 0; i <= n; i++) {
		size_t l = strcspn(exp, "\n");

		if (i == n || (every && i && i % every == 0)) {
			char *now = kernel_maps(), *more;

			if (!now || !got_maps ||
			    asprintf(&more, "%safter %u ops:\n%s", got_maps, i, now) < 0) {
				printf("uapi replay: %s: cannot read debugfs maps\n", name);
				free(now);
				bad++;
				break;
			}
			free(got_maps);
			free(now);
			got_maps = more;
		}
		if (i == n)
			break;
		execute(fd, &list[i]);
		if (strlen(result) != l || strncmp(result, exp, l)) {
			if (diffs++ < SHOW_DIFFS)
				printf("uapi replay: %s op %u: kernel %s, simulator %.*s\n",
				       name, i + 1, result, (int)l, exp);
			bad++;
		}
		exp += l + !!exp[l];
	}
	if (*exp) {
		printf("uapi replay: %s: the simulator has more results than operations\n", name);
		bad++;
	}
	if (got_maps) {
		char a[256], b[256];
		unsigned int d = first_diff(got_maps, want_maps, a, b, sizeof(a));

		if (d) {
			printf("uapi replay: %s maps line %u: kernel \"%s\", simulator \"%s\"\n",
			       name, d, a, b);
			bad++;
		}
	}
	close(fd);
	for (unsigned int i = 0; i < n; i++) {
		free(list[i].ops);
		free(list[i].data);
	}
	free(list);
	free(got_maps);
	free(trace);
	free(expected);
	free(want_maps);
	*ops += n;
	return bad != 0;
}

int uapi_replay(void)
{
	char *list = slurp("/replay/list"), *name, *save = NULL;
	struct drm_asahi_get_params gp = {
		.param_group = 0, .size = sizeof(params), .pointer = (uintptr_t)&params,
	};
	unsigned int traces = 0, failed = 0;
	unsigned long ops = 0;
	int fd = open("/dev/dri/renderD128", O_RDWR);

	if (!list || fd < 0 || ioctl_err(fd, DRM_IOCTL_ASAHI_GET_PARAMS, &gp)) {
		printf("uapi replay: FAILED: no /replay/list, render node or GET_PARAMS\n");
		return 1;
	}
	close(fd);
	for (name = strtok_r(list, "\n", &save); name; name = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(name, ' ');
		unsigned int every = sp ? strtoul(sp + 1, NULL, 10) : 0;

		if (sp)
			*sp = 0;
		failed += replay_one(name, every, &ops);
		traces++;
	}
	free(list);
	if (failed || bad_mmaps || !traces)
		printf("uapi replay: FAILED: %u of %u traces differ (%d results), %d bad mmaps\n",
		       failed, traces, diffs, bad_mmaps);
	else
		printf("uapi replay: %u traces, %lu ops, kernel == simulator\n", traces, ops);
	return failed || bad_mmaps || !traces;
}
