/* SPDX-License-Identifier: GPL-2.0 */
#ifndef UAPI_SESSION_H
#define UAPI_SESSION_H

/* Runs the uAPI session on /dev/dri/renderD128; non-zero if any check failed. */
int uapi_session(void);

#endif
