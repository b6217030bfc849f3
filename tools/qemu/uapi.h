/* SPDX-License-Identifier: GPL-2.0 */
#ifndef UAPI_SESSION_H
#define UAPI_SESSION_H

#include <stdint.h>

/* The render node's debugfs directory. */
#define DBG "/sys/kernel/debug/asahi/c000000.gpu/"

/* The UAT VM of this process's VM `vm_id`, from debugfs `vms`; -1 if none. */
long uat_id_of(uint32_t vm_id);

/* The UAT VM of process `pid`'s VM `vm_id` (0: any of its VMs), from debugfs `vms`; -1 if none. */
long uat_id_of_pid(int pid, uint32_t vm_id);

/*
 * Whether `len` bytes at GPU VA `va` of UAT VM `uat` all read (1), all fault (0), or neither
 * (-1), through debugfs.
 */
int mapped(long uat, uint64_t va, uint64_t len);

/* Writes the string `s` to the file `path`: 0, or -1 on any error. */
int write_file(const char *path, const char *s);

/* Runs the uAPI session on /dev/dri/renderD128; non-zero if any check failed. */
int uapi_session(void);

/*
 * Runs the memory-cgroup session (clients in a cgroup, charged for their VMs, stopped at its
 * limit); non-zero if any check failed.
 */
int uapi_memcg(void);

/* Fuzzes the render node's ioctls for `seconds` from `seed`; non-zero on an unexpected answer. */
int uapi_fuzz(unsigned int seconds, uint64_t seed);

/*
 * Replays the traces /replay/list names through the render node and compares the results and
 * maps with the simulator's; non-zero if any differ.
 */
int uapi_replay(void);

#endif
