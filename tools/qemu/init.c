// SPDX-License-Identifier: GPL-2.0
/*
 * /init of the `make kernel-check` initramfs.
 *
 * The built-in KUnit suites have run by the time the kernel starts /init. It then runs the uAPI
 * session against the render node (uapi.c), the memory-cgroup session (memcg.c), the
 * simulator's traces replayed through the render node and compared with the simulator's results
 * (replay.c), the ioctl fuzzing (fuzz.c: UAT_FUZZ_SECONDS, default 10, from seed UAT_FUZZ_SEED,
 * default 0x5eed; the kernel hands unknown `name=value` words of its command line to /init as
 * environment variables), and the kmemleak scan: kmemleak reports
 * only objects older than 5 s, so wait that long, scan twice (an object referenced from a
 * register or a stack at the first scan shows up at the second), print its report between
 * markers for the caller to check, and power off.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

#include "uapi.h"

#define KMEMLEAK "/sys/kernel/debug/kmemleak"

static void say(const char *what)
{
	printf("init: %s\n", what);
	fflush(stdout);
}

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	close(fd);
	return n < 0 ? -errno : 0;
}

static void kmemleak_report(void)
{
	char buf[4096];
	ssize_t n;
	int fd;

	sleep(6);
	if (write_str(KMEMLEAK, "scan") || write_str(KMEMLEAK, "scan")) {
		printf("init: kmemleak: cannot scan: %s\n", strerror(errno));
		return;
	}
	fd = open(KMEMLEAK, O_RDONLY);
	if (fd < 0) {
		printf("init: kmemleak: cannot read: %s\n", strerror(errno));
		return;
	}
	say("kmemleak report begin");
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, n, stdout);
	close(fd);
	say("kmemleak report end");
}

/* The environment variable `name` as a number (decimal, or hexadecimal with 0x), else `dflt`. */
static unsigned long long env_num(const char *name, unsigned long long dflt)
{
	const char *v = getenv(name);
	unsigned long long n;
	char *end;

	if (!v || !*v)
		return dflt;
	errno = 0;
	n = strtoull(v, &end, 0);
	if (errno || *end) {
		printf("init: %s=%s is not a number; %llu instead\n", name, v, dflt);
		return dflt;
	}
	return n;
}

int main(void)
{
	unsigned long long fuzz_secs;

	if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL))
		printf("init: mount /dev: %s\n", strerror(errno));
	mkdir("/sys", 0755);
	if (mount("proc", "/proc", "proc", 0, NULL) ||
	    mount("sysfs", "/sys", "sysfs", 0, NULL) ||
	    mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL))
		printf("init: mount: %s\n", strerror(errno));
	uapi_session();
	fflush(stdout);
	uapi_memcg();
	fflush(stdout);
	uapi_replay();
	fflush(stdout);
	fuzz_secs = env_num("UAT_FUZZ_SECONDS", 10);
	if (fuzz_secs > 86400) {
		printf("init: UAT_FUZZ_SECONDS=%llu is over a day; 10 instead\n", fuzz_secs);
		fuzz_secs = 10;
	}
	uapi_fuzz(fuzz_secs, env_num("UAT_FUZZ_SEED", 0x5eed));
	fflush(stdout);
	kmemleak_report();
	say("done");
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
