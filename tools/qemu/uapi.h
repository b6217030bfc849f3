/* SPDX-License-Identifier: GPL-2.0 */
#ifndef UAPI_SESSION_H
#define UAPI_SESSION_H

#include <stdint.h>

/* The render node's debugfs directory. */
#define DBG "/sys/kernel/debug/asahi/c000000.gpu/"

/* The UAT VM of this process's VM `vm_id`, from debugfs `vms`; -1 if none. */
long uat_id_of(uint32_t vm_id);

/* Runs the uAPI session on /dev/dri/renderD128; non-zero if any check failed. */
int uapi_session(void);

/* Fuzzes the render node's ioctls for `seconds` from `seed`; non-zero on an unexpected answer. */
int uapi_fuzz(unsigned int seconds, uint64_t seed);

/*
 * Replays the traces /replay/list names through the render node and compares the results and
 * maps with the simulator's; non-zero if any differ.
 */
int uapi_replay(void);

#endif
