/*
 * container.c - containers and execs inside the guest.
 *
 * A container's init is cloned straight into its cgroup with new mount, PID,
 * UTS, IPC and cgroup namespaces. It builds its root (the rootfs bind-mounted
 * from the pod share, /proc, /dev, /sys, the pod files and CRI mounts),
 * pivots into it and waits on the start pipe, like `runc create`; the start
 * byte makes it drop to the container user and exec. Errors travel back on
 * a close-on-exec sync pipe: EOF there means the exec happened.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

#define SYNC_FD 3
#define START_FD 4

/* Where child_fail reports: the sync pipe, at SYNC_FD once child_fds ran. */
static int sync_out = SYNC_FD;

/* ------------------------------------------------------------ child side */

/* Reports a setup error to the agent and exits; only ever called in a child. */
__attribute__((noreturn, format(printf, 1, 2))) static void child_fail(const char *fmt, ...)
{
	char msg[1024];
	msg[0] = 'E';
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg + 1, sizeof(msg) - 1, fmt, ap);
	va_end(ap);
	size_t len = 1 + (n < 0 ? 0 : (size_t)n >= sizeof(msg) - 1 ? sizeof(msg) - 2 : (size_t)n);
	ssize_t w = write(sync_out, msg, len);
	(void)w;
	_exit(127);
}

/* True when `rel` is a relative path without `..` components. */
static bool safe_relative(const char *rel)
{
	if (rel[0] == 0 || rel[0] == '/')
		return false;
	for (const char *p = rel; *p != 0;) {
		const char *slash = strchr(p, '/');
		size_t n = slash == NULL ? strlen(p) : (size_t)(slash - p);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return false;
		if (slash == NULL)
			break;
		p = slash + 1;
	}
	return true;
}

/*
 * Resolves `path` inside `root` the way the container will see it: symlinks
 * are followed relative to `root` and `..` never climbs above it, so a
 * hostile image cannot point a mount outside its own root. Components that do
 * not exist yet are appended as they are. Returns 0, or -1 (ELOOP/ENAMETOOLONG).
 */
static int resolve_in_root(const char *root, const char *path, char *out, size_t outlen)
{
	char rest[PATH_MAX];
	char cur[PATH_MAX];
	int links = 0;
	if (snprintf(rest, sizeof(rest), "%s", path) >= (int)sizeof(rest))
		return errno = ENAMETOOLONG, -1;
	cur[0] = 0; /* path relative to root, always "" or "/a/b" */
	char *p = rest;
	while (*p != 0) {
		while (*p == '/')
			p++;
		if (*p == 0)
			break;
		char *slash = strchr(p, '/');
		size_t n = slash == NULL ? strlen(p) : (size_t)(slash - p);
		char comp[NAME_MAX + 1];
		if (n > NAME_MAX)
			return errno = ENAMETOOLONG, -1;
		memcpy(comp, p, n);
		comp[n] = 0;
		p += n;
		if (strcmp(comp, ".") == 0)
			continue;
		if (strcmp(comp, "..") == 0) {
			char *last = strrchr(cur, '/');
			if (last != NULL)
				*last = 0;
			continue;
		}
		size_t curlen = strlen(cur);
		if (curlen + 1 + n >= sizeof(cur))
			return errno = ENAMETOOLONG, -1;
		cur[curlen] = '/';
		memcpy(cur + curlen + 1, comp, n + 1);
		char full[PATH_MAX];
		if (snprintf(full, sizeof(full), "%s%s", root, cur) >= (int)sizeof(full))
			return errno = ENAMETOOLONG, -1;
		struct stat st;
		if (lstat(full, &st) != 0 || !S_ISLNK(st.st_mode))
			continue;
		if (++links > 40)
			return errno = ELOOP, -1;
		char target[PATH_MAX];
		ssize_t tl = readlink(full, target, sizeof(target) - 1);
		if (tl < 0)
			return -1;
		target[tl] = 0;
		char next[PATH_MAX];
		if (snprintf(next, sizeof(next), "%s/%s", target, p) >= (int)sizeof(next))
			return errno = ENAMETOOLONG, -1;
		if (target[0] == '/')
			cur[0] = 0;
		else
			*strrchr(cur, '/') = 0;
		memcpy(rest, next, strlen(next) + 1);
		p = rest;
	}
	if (snprintf(out, outlen, "%s%s", root, cur) >= (int)outlen)
		return errno = ENAMETOOLONG, -1;
	return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return errno = ENAMETOOLONG, -1;
	for (char *p = tmp + 1; *p != 0; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, mode) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, mode) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* Makes `dst` (inside root, already resolved) a directory or an empty file to mount on. */
static void make_target(const char *dst, bool dir)
{
	if (dir) {
		if (mkdir_p(dst, 0755) != 0)
			child_fail("mkdir %s: %s", dst, strerror(errno));
		return;
	}
	char parent[PATH_MAX];
	snprintf(parent, sizeof(parent), "%s", dst);
	char *slash = strrchr(parent, '/');
	if (slash != NULL && slash != parent) {
		*slash = 0;
		if (mkdir_p(parent, 0755) != 0)
			child_fail("mkdir %s: %s", parent, strerror(errno));
	}
	int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 && errno != EISDIR)
		child_fail("create %s: %s", dst, strerror(errno));
	if (fd >= 0)
		close(fd);
}

static void mount_in(const char *root, const char *path, const char *src, const char *type, unsigned long flags,
		     const char *data)
{
	char dst[PATH_MAX];
	if (resolve_in_root(root, path, dst, sizeof(dst)) != 0)
		child_fail("resolve %s: %s", path, strerror(errno));
	make_target(dst, true);
	if (mount(src, dst, type, flags, data) != 0)
		child_fail("mount %s on %s: %s", type, path, strerror(errno));
}

static void make_dev(const char *root, const char *name, mode_t mode, unsigned maj, unsigned min)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/dev/%s", root, name);
	if (mknod(path, S_IFCHR | mode, makedev(maj, min)) != 0 && errno != EEXIST)
		child_fail("mknod %s: %s", path, strerror(errno));
	/* mknod honours the umask; the modes here are meant exactly. */
	if (chmod(path, mode) != 0)
		child_fail("chmod %s: %s", path, strerror(errno));
}

static void make_link(const char *root, const char *name, const char *target)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/dev/%s", root, name);
	if (symlink(target, path) != 0 && errno != EEXIST)
		child_fail("symlink %s: %s", path, strerror(errno));
}

/* /proc, /dev, /sys and /sys/fs/cgroup of a new container root. */
static void mount_pseudo(const char *root)
{
	mount_in(root, "/proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_in(root, "/dev", "tmpfs", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
	make_dev(root, "null", 0666, 1, 3);
	make_dev(root, "zero", 0666, 1, 5);
	make_dev(root, "full", 0666, 1, 7);
	make_dev(root, "random", 0666, 1, 8);
	make_dev(root, "urandom", 0666, 1, 9);
	make_dev(root, "tty", 0666, 5, 0);
	make_link(root, "ptmx", "pts/ptmx");
	make_link(root, "fd", "/proc/self/fd");
	make_link(root, "stdin", "/proc/self/fd/0");
	make_link(root, "stdout", "/proc/self/fd/1");
	make_link(root, "stderr", "/proc/self/fd/2");
	make_link(root, "core", "/proc/kcore");
	mount_in(root, "/dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
	mount_in(root, "/dev/shm", "shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
	mount_in(root, "/dev/mqueue", "mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_in(root, "/sys", "sysfs", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL);
	mount_in(root, "/sys/fs/cgroup", "cgroup2", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL);
}

/*
 * Makes the bind mount at `path` read-only. A bind remount sets exactly the
 * flags it is given, so the mount's nosuid/nodev/noexec are passed on; without
 * them /proc/sys, say, would come back without noexec.
 */
static int remount_readonly(const char *path)
{
	struct statvfs sv;
	if (statvfs(path, &sv) != 0)
		return -1;
	unsigned long keep = 0;
	if (sv.f_flag & ST_NOSUID)
		keep |= MS_NOSUID;
	if (sv.f_flag & ST_NODEV)
		keep |= MS_NODEV;
	if (sv.f_flag & ST_NOEXEC)
		keep |= MS_NOEXEC;
	return mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | keep, NULL);
}

static void bind_mounts(const char *root, const struct hcr_create_container *req)
{
	for (size_t i = 0; i < req->mounts_count; i++) {
		const struct hcr_mount *m = &req->mounts[i];
		if (!safe_relative(m->source))
			child_fail("mount source %s is not a path inside the pod share", m->source);
		char src[PATH_MAX], dst[PATH_MAX];
		snprintf(src, sizeof(src), "%s/%s", SHARE_DIR, m->source);
		struct stat st;
		if (stat(src, &st) != 0)
			child_fail("mount source %s: %s", m->source, strerror(errno));
		if (resolve_in_root(root, m->destination, dst, sizeof(dst)) != 0)
			child_fail("resolve %s: %s", m->destination, strerror(errno));
		make_target(dst, S_ISDIR(st.st_mode));
		if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) != 0)
			child_fail("bind %s on %s: %s", m->source, m->destination, strerror(errno));
		if (m->readonly && remount_readonly(dst) != 0)
			child_fail("remount %s read-only: %s", m->destination, strerror(errno));
	}
}

static void mask_paths(const char *root, const struct hcr_create_container *req)
{
	for (size_t i = 0; i < req->masked_paths_count; i++) {
		char dst[PATH_MAX];
		struct stat st;
		if (resolve_in_root(root, req->masked_paths[i], dst, sizeof(dst)) != 0 || stat(dst, &st) != 0)
			continue;
		int rc = S_ISDIR(st.st_mode) ? mount("tmpfs", dst, "tmpfs", MS_RDONLY, "size=0")
					     : mount("/dev/null", dst, NULL, MS_BIND, NULL);
		if (rc != 0)
			child_fail("mask %s: %s", req->masked_paths[i], strerror(errno));
	}
	for (size_t i = 0; i < req->readonly_paths_count; i++) {
		char dst[PATH_MAX];
		struct stat st;
		if (resolve_in_root(root, req->readonly_paths[i], dst, sizeof(dst)) != 0 || stat(dst, &st) != 0)
			continue;
		if (mount(dst, dst, NULL, MS_BIND | MS_REC, NULL) != 0 || remount_readonly(dst) != 0)
			child_fail("make %s read-only: %s", req->readonly_paths[i], strerror(errno));
	}
}

static void enter_root(const char *root)
{
	if (chdir(root) != 0)
		child_fail("chdir %s: %s", root, strerror(errno));
	if (syscall(SYS_pivot_root, ".", ".") != 0)
		child_fail("pivot_root: %s", strerror(errno));
	/* The old root is stacked under the new one at "."; detach it. */
	if (umount2(".", MNT_DETACH) != 0)
		child_fail("detach old root: %s", strerror(errno));
	if (chdir("/") != 0)
		child_fail("chdir /: %s", strerror(errno));
}

/* ------------------------------------------------------------- the user */

struct user {
	uid_t uid;
	gid_t gid;
	char name[256];
	char home[PATH_MAX];
	bool named; /* found in /etc/passwd */
};

static bool parse_id(const char *s, unsigned long *out)
{
	if (*s == 0)
		return false;
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno != 0 || *end != 0 || v > UINT32_MAX - 1)
		return false;
	*out = v;
	return true;
}

/* Splits a passwd/group line into at most `max` fields in place. */
static size_t split_fields(char *line, char **fields, size_t max)
{
	size_t n = 0;
	line[strcspn(line, "\n")] = 0;
	for (char *p = line; n < max;) {
		fields[n++] = p;
		char *colon = strchr(p, ':');
		if (colon == NULL)
			break;
		*colon = 0;
		p = colon + 1;
	}
	return n;
}

/* Looks a user up by name or uid in the container's /etc/passwd. */
static bool passwd_lookup(const char *name, long uid, struct user *u)
{
	FILE *f = fopen("/etc/passwd", "re");
	if (f == NULL)
		return false;
	char line[1024];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char *fl[7];
		unsigned long id, gid;
		if (split_fields(line, fl, 7) < 7 || !parse_id(fl[2], &id) || !parse_id(fl[3], &gid))
			continue;
		if ((name != NULL && strcmp(fl[0], name) == 0) || (name == NULL && (long)id == uid)) {
			u->uid = (uid_t)id;
			u->gid = (gid_t)gid;
			snprintf(u->name, sizeof(u->name), "%s", fl[0]);
			snprintf(u->home, sizeof(u->home), "%s", fl[5]);
			u->named = true;
			found = true;
		}
	}
	fclose(f);
	return found;
}

static bool group_lookup(const char *name, gid_t *gid)
{
	FILE *f = fopen("/etc/group", "re");
	if (f == NULL)
		return false;
	char line[4096];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char *fl[4];
		unsigned long id;
		if (split_fields(line, fl, 4) >= 3 && strcmp(fl[0], name) == 0 && parse_id(fl[2], &id)) {
			*gid = (gid_t)id;
			found = true;
		}
	}
	fclose(f);
	return found;
}

/* Groups of /etc/group that list `name` as a member. */
static size_t member_groups(const char *name, gid_t *out, size_t max)
{
	FILE *f = fopen("/etc/group", "re");
	if (f == NULL)
		return 0;
	char line[4096];
	size_t n = 0;
	while (n < max && fgets(line, sizeof(line), f) != NULL) {
		char *fl[4];
		unsigned long id;
		if (split_fields(line, fl, 4) < 4 || !parse_id(fl[2], &id))
			continue;
		for (char *m = strtok(fl[3], ","); m != NULL; m = strtok(NULL, ","))
			if (strcmp(m, name) == 0 && n < max)
				out[n++] = (gid_t)id;
	}
	fclose(f);
	return n;
}

/* "user[:group]" (names or ids) against the container's passwd and group files. */
static void resolve_user(const struct hcr_process *p, struct user *u)
{
	memset(u, 0, sizeof(*u));
	u->uid = p->uid;
	u->gid = p->gid;
	snprintf(u->home, sizeof(u->home), "/");
	if (p->username[0] == 0) {
		struct user found;
		memset(&found, 0, sizeof(found));
		if (passwd_lookup(NULL, (long)p->uid, &found)) {
			snprintf(u->home, sizeof(u->home), "%s", found.home);
			snprintf(u->name, sizeof(u->name), "%s", found.name);
			u->named = true;
		}
		return;
	}
	char spec[512];
	snprintf(spec, sizeof(spec), "%s", p->username);
	char *group = strchr(spec, ':');
	if (group != NULL)
		*group++ = 0;
	unsigned long id;
	if (parse_id(spec, &id)) {
		u->uid = (uid_t)id;
		u->gid = 0;
		struct user found;
		memset(&found, 0, sizeof(found));
		if (passwd_lookup(NULL, (long)id, &found))
			*u = found;
	} else if (!passwd_lookup(spec, -1, u)) {
		child_fail("unable to find user %s: no matching entries in passwd file", spec);
	}
	if (group != NULL) {
		if (parse_id(group, &id))
			u->gid = (gid_t)id;
		else if (!group_lookup(group, &u->gid))
			child_fail("unable to find group %s: no matching entries in group file", group);
	}
}

static const char *const cap_names[] = {
    "CAP_CHOWN",	    "CAP_DAC_OVERRIDE",	  "CAP_DAC_READ_SEARCH", "CAP_FOWNER",	       "CAP_FSETID",
    "CAP_KILL",		    "CAP_SETGID",	  "CAP_SETUID",		 "CAP_SETPCAP",	       "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",  "CAP_NET_ADMIN",	 "CAP_NET_RAW",	       "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",	    "CAP_SYS_MODULE",	  "CAP_SYS_RAWIO",	 "CAP_SYS_CHROOT",     "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",	    "CAP_SYS_ADMIN",	  "CAP_SYS_BOOT",	 "CAP_SYS_NICE",       "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",	    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",		 "CAP_LEASE",	       "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",    "CAP_SETFCAP",	  "CAP_MAC_OVERRIDE",	 "CAP_MAC_ADMIN",      "CAP_SYSLOG",
    "CAP_WAKE_ALARM",	    "CAP_BLOCK_SUSPEND",  "CAP_AUDIT_READ",	 "CAP_PERFMON",	       "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};
#define NCAPS (sizeof(cap_names) / sizeof(cap_names[0]))

/* Drops to the process's user and capabilities, then execs it. Never returns. */
__attribute__((noreturn)) static void become_and_exec(const struct hcr_process *p)
{
	uint64_t keep = 0;
	for (size_t i = 0; i < p->capabilities_count; i++) {
		size_t k = 0;
		while (k < NCAPS && strcmp(cap_names[k], p->capabilities[i]) != 0)
			k++;
		if (k == NCAPS)
			child_fail("unknown capability %s", p->capabilities[i]);
		keep |= 1ull << k;
	}
	struct user u;
	resolve_user(p, &u);
	gid_t groups[256];
	size_t ngroups = u.named ? member_groups(u.name, groups, 128) : 0;
	for (size_t i = 0; i < p->additional_gids_count && ngroups < 256; i++)
		groups[ngroups++] = p->additional_gids[i];

	if (p->args_count == 0)
		child_fail("no command to run");
	/* Search PATH from the container's environment, not the agent's. */
	const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	bool has_home = false;
	for (size_t i = 0; i < p->env_count; i++) {
		if (strncmp(p->env[i], "PATH=", 5) == 0)
			path = p->env[i] + 5;
		has_home |= strncmp(p->env[i], "HOME=", 5) == 0;
	}
	char **envp = calloc(p->env_count + 2, sizeof(char *));
	if (envp == NULL)
		child_fail("out of memory");
	size_t ne = 0;
	for (size_t i = 0; i < p->env_count; i++)
		envp[ne++] = p->env[i];
	char homevar[PATH_MAX + 8];
	if (!has_home) {
		snprintf(homevar, sizeof(homevar), "HOME=%s", u.home);
		envp[ne++] = homevar;
	}
	envp[ne] = NULL;

	const char *cwd = p->cwd[0] != 0 ? p->cwd : "/";
	/* Like runc: a missing working directory is created (as root, before dropping privileges). */
	if (mkdir_p(cwd, 0755) != 0)
		child_fail("create working directory %s: %s", cwd, strerror(errno));

	char why[256];
	/*
	 * Without no_new_privs only a process holding CAP_SYS_ADMIN may install a
	 * filter, so it goes in before the privileges go (as in runc); the rest of
	 * this setup then runs under it.
	 */
	if (!p->no_new_privileges && install_seccomp(&p->seccomp, why, sizeof(why)) != 0)
		child_fail("seccomp: %s", why);
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
		child_fail("PR_SET_KEEPCAPS: %s", strerror(errno));
	for (unsigned long k = 0; k <= 63; k++) {
		if (keep & (1ull << k))
			continue;
		if (prctl(PR_CAPBSET_DROP, k, 0, 0, 0) != 0 && errno != EINVAL)
			child_fail("drop capability %lu: %s", k, strerror(errno));
	}
	if (setgroups(ngroups, groups) != 0)
		child_fail("setgroups: %s", strerror(errno));
	if (setresgid(u.gid, u.gid, u.gid) != 0)
		child_fail("setgid %u: %s", (unsigned)u.gid, strerror(errno));
	if (setresuid(u.uid, u.uid, u.uid) != 0)
		child_fail("setuid %u: %s", (unsigned)u.uid, strerror(errno));
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2] = {{0}};
	for (int w = 0; w < 2; w++) {
		uint32_t bits = (uint32_t)(keep >> (32 * w));
		data[w].effective = data[w].permitted = data[w].inheritable = bits;
	}
	if (syscall(SYS_capset, &hdr, data) != 0)
		child_fail("capset: %s", strerror(errno));
	if (p->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		child_fail("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	if (chdir(cwd) != 0)
		child_fail("chdir %s: %s", cwd, strerror(errno));

	/* The agent blocks SIGCHLD (for its signalfd) and ignores SIGPIPE; exec keeps both, the process must not. */
	sigset_t none;
	sigemptyset(&none);
	if (signal(SIGPIPE, SIG_DFL) == SIG_ERR || sigprocmask(SIG_SETMASK, &none, NULL) != 0)
		child_fail("reset signals: %s", strerror(errno));
	/* With no_new_privs set, as late as possible: only the exec runs under the filter. */
	if (p->no_new_privileges && install_seccomp(&p->seccomp, why, sizeof(why)) != 0)
		child_fail("seccomp: %s", why);

	const char *arg0 = p->args[0];
	char **argv = calloc(p->args_count + 1, sizeof(char *));
	if (argv == NULL)
		child_fail("out of memory");
	for (size_t i = 0; i < p->args_count; i++)
		argv[i] = p->args[i];
	if (strchr(arg0, '/') != NULL) {
		execve(arg0, argv, envp);
		child_fail("exec %s: %s", arg0, strerror(errno));
	}
	int last = ENOENT;
	char dirs[4096];
	snprintf(dirs, sizeof(dirs), "%s", path);
	for (char *save = NULL, *dir = strtok_r(dirs, ":", &save); dir != NULL; dir = strtok_r(NULL, ":", &save)) {
		char full[PATH_MAX];
		if (snprintf(full, sizeof(full), "%s/%s", dir[0] != 0 ? dir : ".", arg0) >= (int)sizeof(full))
			continue;
		execve(full, argv, envp);
		if (errno != ENOENT && errno != ENOTDIR)
			last = errno;
	}
	child_fail("exec %s: %s in $PATH (%s)", arg0, last == ENOENT ? "executable file not found" : strerror(last),
		   path);
}

/* ------------------------------------------------------------ agent side */

/* Files a child gets as stdin/stdout/stderr (pipes), or the socket its PTY master comes back on. */
struct child_stdio {
	int fd[3];
	int tty_sock; /* the child's end; -1 without a TTY */
	int tty_recv; /* the agent's end */
};

#define TTY_SOCK_FD 5

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/*
 * Makes the pipes of a process, or, with a TTY, a socket pair: the PTY must
 * come from the container's own devpts (so `tty` and ttyname() work inside),
 * which only the child can open; it sends the master back (child_tty).
 * 0, or -1 with errno.
 */
static int make_stdio(const struct hcr_process *p, struct proc_io *io, struct child_stdio *cs)
{
	io_init(io);
	cs->fd[0] = cs->fd[1] = cs->fd[2] = cs->tty_sock = cs->tty_recv = -1;
	if (p->tty) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
			return -1;
		cs->tty_recv = sv[0];
		cs->tty_sock = sv[1];
		return 0;
	}
	int out[2], err[2];
	if (pipe2(out, O_CLOEXEC) != 0)
		return -1;
	if (pipe2(err, O_CLOEXEC) != 0) {
		close(out[0]);
		close(out[1]);
		return -1;
	}
	io->out_fd = out[0];
	io->err_fd = err[0];
	set_nonblock(out[0]);
	set_nonblock(err[0]);
	cs->fd[1] = out[1];
	cs->fd[2] = err[1];
	if (p->stdin) {
		int in[2];
		if (pipe2(in, O_CLOEXEC) != 0)
			return -1;
		io->in.fd = in[1];
		set_nonblock(in[1]);
		cs->fd[0] = in[0];
	} else {
		cs->fd[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	return 0;
}

/* Closes the child's ends in the agent. */
static void close_child_stdio(struct child_stdio *cs)
{
	for (int i = 0; i < 3; i++)
		if (cs->fd[i] >= 0)
			close(cs->fd[i]);
	if (cs->tty_sock >= 0)
		close(cs->tty_sock);
	cs->fd[0] = cs->fd[1] = cs->fd[2] = cs->tty_sock = -1;
}

/*
 * In the child: moves stdio to 0-2, the sync/start pipes to 3/4 and the TTY
 * socket to 5, and closes everything else the agent had open.
 */
static void child_fds(struct child_stdio *cs, int sync_w, int start_r)
{
	int fds[6] = {cs->fd[0], cs->fd[1], cs->fd[2], sync_w, start_r, cs->tty_sock};
	int high[6];
	for (int i = 0; i < 6; i++)
		high[i] = fds[i] < 0 ? -1 : fcntl(fds[i], F_DUPFD_CLOEXEC, 100);
	for (int i = 0; i < 6; i++) {
		if (high[i] < 0)
			close(i);
		else if (dup3(high[i], i, i >= 3 ? O_CLOEXEC : 0) < 0)
			_exit(126);
	}
	syscall(SYS_close_range, 6, ~0U, 0);
	sync_out = SYNC_FD;
	if (cs->tty_sock < 0)
		setsid();
}

/*
 * In the child, inside the container's mount namespace: a PTY from the
 * container's devpts, its master sent to the agent, its slave as stdio and
 * controlling terminal.
 */
static void child_tty(const struct hcr_process *p)
{
	int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0)
		child_fail("open /dev/ptmx: %s", strerror(errno));
	int unlock = 0;
	if (ioctl(master, TIOCSPTLCK, &unlock) != 0)
		child_fail("unlock the PTY: %s", strerror(errno));
	/* By the master, not by a path in a /dev/pts the image might have tampered with. */
	int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
	if (slave < 0)
		child_fail("open the PTY peer: %s", strerror(errno));
	if (p->rows != 0 && p->cols != 0) {
		struct winsize ws = {.ws_row = (unsigned short)p->rows, .ws_col = (unsigned short)p->cols};
		ioctl(master, TIOCSWINSZ, &ws);
	}
	char byte = 'T';
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &master, sizeof(int));
	if (sendmsg(TTY_SOCK_FD, &msg, MSG_NOSIGNAL) != 1)
		child_fail("send the PTY to the agent: %s", strerror(errno));
	close(master);
	close(TTY_SOCK_FD);
	for (int i = 0; i < 3; i++)
		if (dup2(slave, i) < 0)
			child_fail("dup2 PTY: %s", strerror(errno));
	if (slave > 2)
		close(slave);
	setsid();
	if (ioctl(0, TIOCSCTTY, 0) != 0)
		child_fail("TIOCSCTTY: %s", strerror(errno));
}

/* In the agent: takes the PTY master a child sent and makes it the process's stdio. 0 or -1. */
static int receive_tty(struct child_stdio *cs, struct proc_io *io, bool want_stdin)
{
	struct pollfd pfd = {.fd = cs->tty_recv, .events = POLLIN};
	if (poll(&pfd, 1, 10000) <= 0)
		return -1;
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
	ssize_t n = recvmsg(cs->tty_recv, &msg, MSG_CMSG_CLOEXEC);
	close(cs->tty_recv);
	cs->tty_recv = -1;
	struct cmsghdr *cm = n == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
	if (cm == NULL || cm->cmsg_type != SCM_RIGHTS)
		return -1;
	int master;
	memcpy(&master, CMSG_DATA(cm), sizeof(int));
	set_nonblock(master);
	io->tty_fd = master;
	io->out_fd = fcntl(master, F_DUPFD_CLOEXEC, 3);
	io->in.fd = want_stdin ? fcntl(master, F_DUPFD_CLOEXEC, 3) : -1;
	return 0;
}

static pid_t clone_into(uint64_t flags, int cgroup_fd)
{
	struct clone_args args;
	memset(&args, 0, sizeof(args));
	args.flags = flags | CLONE_INTO_CGROUP;
	args.exit_signal = SIGCHLD;
	args.cgroup = (uint64_t)cgroup_fd;
	return (pid_t)syscall(SYS_clone3, &args, sizeof(args));
}

/*
 * Waits for the child's word on the sync pipe: 'R' (ready), an 'E' message,
 * or EOF (exec'd, or died). Returns 'R', 'E' (msg filled) or 0 for EOF; -1 on timeout.
 */
static int await_child(int fd, char *msg, size_t len, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int rc;
	do
		rc = poll(&p, 1, timeout_ms);
	while (rc < 0 && errno == EINTR);
	if (rc == 0)
		return -1;
	char buf[1024];
	ssize_t n;
	do
		n = read(fd, buf, sizeof(buf) - 1);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	if (buf[0] == 'E')
		snprintf(msg, len, "%s", buf + 1);
	return buf[0];
}

static void free_container(struct container *c)
{
	io_close(&c->io);
	output_free(&c->out);
	if (c->sync_fd >= 0)
		close(c->sync_fd);
	if (c->start_fd >= 0)
		close(c->start_fd);
	free(c->id);
	free(c);
}

/* Frees a container that never made it into the list, and its cgroup. */
static void discard_container(struct container *c)
{
	char cg[sizeof(c->cgroup)];
	memcpy(cg, c->cgroup, sizeof(cg));
	free_container(c);
	cgroup_remove(cg);
}

/* Waits up to `ms` for `pid` to end; true once it is reaped. */
static bool reap_within(pid_t pid, int *status, int ms)
{
	for (int waited = 0; waited <= ms; waited += 10) {
		pid_t r = waitpid(pid, status, WNOHANG);
		if (r == pid || (r < 0 && errno == ECHILD))
			return true;
		usleep(10000);
	}
	return false;
}

void handle_create(uint32_t id, struct hcr_create_container *req)
{
	if (req->id[0] == 0 || strchr(req->id, '/') != NULL || strlen(req->id) > 128) {
		send_error(id, HCR_ERROR_CODE_INVALID_ARGUMENT, "invalid container id \"%s\"", req->id);
		return;
	}
	if (container_find(req->id) != NULL) {
		send_error(id, HCR_ERROR_CODE_ALREADY_EXISTS, "container %s already exists", req->id);
		return;
	}
	if (!safe_relative(req->rootfs)) {
		send_error(id, HCR_ERROR_CODE_INVALID_ARGUMENT, "rootfs %s is not a path inside the pod share", req->rootfs);
		return;
	}
	char root[PATH_MAX];
	snprintf(root, sizeof(root), "%s/%s", SHARE_DIR, req->rootfs);
	struct stat st;
	if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
		send_error(id, HCR_ERROR_CODE_FAILED_PRECONDITION, "rootfs %s is not a directory in the pod share (%s)",
			   req->rootfs, strerror(errno));
		return;
	}
	struct container *c = calloc(1, sizeof(*c));
	if (c == NULL || (c->id = strdup(req->id)) == NULL) {
		free(c);
		send_error(id, HCR_ERROR_CODE_INTERNAL, "out of memory");
		return;
	}
	c->sync_fd = c->start_fd = -1;
	c->status = HCR_CONTAINER_STATUS_CREATED;
	snprintf(c->cgroup, sizeof(c->cgroup), "%s/%s", CGROUP_PODS, req->id);
	io_init(&c->io);

	const char *cgerr = NULL;
	if (cgroup_create(c->cgroup, &req->resources, &cgerr) != 0) {
		send_error(id, HCR_ERROR_CODE_INVALID_ARGUMENT, "cgroup of %s: %s", req->id, cgerr);
		discard_container(c);
		return;
	}
	struct child_stdio cs = {{-1, -1, -1}, -1, -1};
	int sync_p[2] = {-1, -1}, start_p[2] = {-1, -1};
	int cgfd = open(c->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd < 0 || make_stdio(&req->process, &c->io, &cs) != 0 || pipe2(sync_p, O_CLOEXEC) != 0 ||
	    pipe2(start_p, O_CLOEXEC) != 0) {
		send_error(id, HCR_ERROR_CODE_INTERNAL, "prepare container %s: %s", req->id, strerror(errno));
		int fds[] = {cgfd, sync_p[0], sync_p[1], start_p[0], start_p[1], cs.tty_recv};
		for (size_t i = 0; i < 6; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		close_child_stdio(&cs);
		discard_container(c);
		return;
	}
	/* The guest is the pod, so "shared with the pod" means the guest's own namespace. */
	uint64_t flags = CLONE_NEWNS | CLONE_NEWUTS;
	c->pid_ns_init = !req->share_pid_namespace;
	if (!req->share_pid_namespace)
		flags |= CLONE_NEWPID;
	if (!req->share_ipc_namespace)
		flags |= CLONE_NEWIPC;
	pid_t pid = clone_into(flags, cgfd);
	if (pid == 0) {
		child_fds(&cs, sync_p[1], start_p[0]);
		/* After CLONE_INTO_CGROUP, so the namespace is rooted at the container's own cgroup. */
		if (unshare(CLONE_NEWCGROUP) != 0)
			child_fail("unshare cgroup namespace: %s", strerror(errno));
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
			child_fail("make / private: %s", strerror(errno));
		if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) != 0)
			child_fail("bind rootfs %s: %s", root, strerror(errno));
		mount_pseudo(root);
		bind_mounts(root, req);
		mask_paths(root, req);
		enter_root(root);
		if (req->process.tty)
			child_tty(&req->process);
		if (req->readonly_rootfs && remount_readonly("/") != 0)
			child_fail("remount / read-only: %s", strerror(errno));
		const char *hn = req->hostname[0] != 0 ? req->hostname : "localhost";
		if (sethostname(hn, strlen(hn)) != 0)
			child_fail("sethostname %s: %s", hn, strerror(errno));
		if (write(SYNC_FD, "R", 1) != 1)
			_exit(126);
		char go;
		ssize_t n;
		do
			n = read(START_FD, &go, 1);
		while (n < 0 && errno == EINTR);
		if (n != 1)
			_exit(0); /* removed before it was started */
		close(START_FD);
		become_and_exec(&req->process);
	}
	close(cgfd);
	close_child_stdio(&cs);
	close(sync_p[1]);
	close(start_p[0]);
	c->sync_fd = sync_p[0];
	c->start_fd = start_p[1];
	if (pid < 0) {
		send_error(id, HCR_ERROR_CODE_INTERNAL, "clone3 for %s: %s", req->id, strerror(errno));
		discard_container(c);
		return;
	}
	c->pid = pid;
	char msg[1024] = "";
	int word = await_child(c->sync_fd, msg, sizeof(msg), 30000);
	if (word == 'R' && cs.tty_recv >= 0 && receive_tty(&cs, &c->io, req->process.stdin) != 0) {
		word = 'E';
		snprintf(msg, sizeof(msg), "no PTY from the container process");
	}
	if (cs.tty_recv >= 0)
		close(cs.tty_recv);
	if (word != 'R') {
		kill(pid, SIGKILL);
		int status;
		reap_within(pid, &status, 2000);
		send_error(id, HCR_ERROR_CODE_INTERNAL, "create container %s: %s", req->id,
			   word == 'E' ? msg : word < 0 ? "setup timed out" : "setup process died");
		discard_container(c);
		return;
	}
	c->next = containers;
	containers = c;
	struct hcr_create_container_reply r = {.pid = (uint32_t)pid};
	send_msg(HCR_MSG_CREATE_CONTAINER_REPLY, id, &hcr_desc_create_container_reply, &r);
}

void handle_start(uint32_t id, struct hcr_start_container *req)
{
	struct container *c = container_find(req->id);
	if (c == NULL) {
		send_error(id, HCR_ERROR_CODE_NOT_FOUND, "container %s not found", req->id);
		return;
	}
	if (c->status != HCR_CONTAINER_STATUS_CREATED || c->start_fd < 0) {
		send_error(id, HCR_ERROR_CODE_FAILED_PRECONDITION, "container %s is not in the created state", req->id);
		return;
	}
	c->started_at = now_ns();
	ssize_t n = write(c->start_fd, "S", 1);
	close(c->start_fd);
	c->start_fd = -1;
	if (n != 1) {
		send_error(id, HCR_ERROR_CODE_INTERNAL, "start container %s: %s", req->id, strerror(errno));
		return;
	}
	char msg[1024] = "";
	int word = await_child(c->sync_fd, msg, sizeof(msg), 30000);
	close(c->sync_fd);
	c->sync_fd = -1;
	/* Until reap_children sees it end, the process counts as running. */
	c->status = HCR_CONTAINER_STATUS_RUNNING;
	if (word == 'E') {
		send_error(id, HCR_ERROR_CODE_FAILED_PRECONDITION, "start container %s: %s", req->id, msg);
		return;
	}
	if (word < 0) {
		send_error(id, HCR_ERROR_CODE_INTERNAL, "start container %s: no word from its process in 30 s", req->id);
		return;
	}
	send_empty(id);
}

void handle_exec(uint32_t id, struct hcr_exec *req)
{
	struct container *c = container_find(req->container_id);
	if (c == NULL) {
		send_error(id, HCR_ERROR_CODE_NOT_FOUND, "container %s not found", req->container_id);
		return;
	}
	if (c->status != HCR_CONTAINER_STATUS_RUNNING) {
		send_error(id, HCR_ERROR_CODE_FAILED_PRECONDITION, "container %s is not running", c->id);
		return;
	}
	for (struct exec *x = execs; x != NULL; x = x->next) {
		if (x->id == req->exec_id) {
			send_error(id, HCR_ERROR_CODE_ALREADY_EXISTS, "exec %u already exists", req->exec_id);
			return;
		}
	}
	const char *kinds[] = {"pid", "mnt", "uts", "ipc", "cgroup"};
	int ns[5];
	for (int i = 0; i < 5; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", c->pid, kinds[i]);
		ns[i] = open(path, O_RDONLY | O_CLOEXEC);
	}
	int self_pid = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
	int cgfd = open(c->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct exec *e = calloc(1, sizeof(*e));
	struct child_stdio cs = {{-1, -1, -1}, -1, -1};
	int sync_p[2] = {-1, -1};
	bool ok = self_pid >= 0 && cgfd >= 0 && e != NULL;
	for (int i = 0; i < 5; i++)
		ok = ok && ns[i] >= 0;
	if (e != NULL)
		io_init(&e->io);
	ok = ok && make_stdio(&req->process, &e->io, &cs) == 0 && pipe2(sync_p, O_CLOEXEC) == 0;
	pid_t pid = -1;
	int saved = errno;
	if (ok && setns(ns[0], CLONE_NEWPID) == 0) {
		/* Children are now born in the container's PID namespace; the agent itself stays where it is. */
		pid = clone_into(0, cgfd);
		if (pid == 0) {
			sync_out = sync_p[1];
			for (int i = 1; i < 5; i++) {
				int type[] = {0, CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWCGROUP};
				if (setns(ns[i], type[i]) != 0)
					child_fail("join %s namespace: %s", kinds[i], strerror(errno));
			}
			child_fds(&cs, sync_p[1], -1);
			if (req->process.tty)
				child_tty(&req->process);
			become_and_exec(&req->process);
		}
		saved = errno;
		if (setns(self_pid, CLONE_NEWPID) != 0)
			logmsg(HCR_LOG_LEVEL_ERROR, "return to the agent's PID namespace: %s", strerror(errno));
	} else if (ok) {
		saved = errno;
	}
	for (int i = 0; i < 5; i++)
		if (ns[i] >= 0)
			close(ns[i]);
	if (self_pid >= 0)
		close(self_pid);
	if (cgfd >= 0)
		close(cgfd);
	close_child_stdio(&cs);
	if (sync_p[1] >= 0)
		close(sync_p[1]);
	if (pid < 0) {
		send_error(id, HCR_ERROR_CODE_INTERNAL, "exec in %s: %s", c->id, strerror(saved));
		if (e != NULL)
			io_close(&e->io);
		free(e);
		if (sync_p[0] >= 0)
			close(sync_p[0]);
		if (cs.tty_recv >= 0)
			close(cs.tty_recv);
		return;
	}
	e->id = req->exec_id;
	e->pid = pid;
	e->next = execs;
	execs = e;
	char msg[1024] = "";
	int word = await_child(sync_p[0], msg, sizeof(msg), 30000);
	close(sync_p[0]);
	if (word != 'E' && cs.tty_recv >= 0 && receive_tty(&cs, &e->io, req->process.stdin) != 0) {
		kill(pid, SIGKILL);
		word = 'E';
		snprintf(msg, sizeof(msg), "no PTY from the exec process");
	}
	if (cs.tty_recv >= 0)
		close(cs.tty_recv);
	if (word == 'E') {
		/* The child exits 127; reap_children reports that as ExecExited after this error. */
		send_error(id, HCR_ERROR_CODE_FAILED_PRECONDITION, "exec in %s: %s", c->id, msg);
		return;
	}
	struct hcr_exec_reply r = {.pid = (uint32_t)pid};
	send_msg(HCR_MSG_EXEC_REPLY, id, &hcr_desc_exec_reply, &r);
}

/* Reads whatever a process left in its pipes before it ended. */
static void drain_container(struct container *c)
{
	while (c->io.out_fd >= 0 && read_container_fd(c, &c->io.out_fd, HCR_STREAM_STDOUT)) {
		struct pollfd p = {.fd = c->io.out_fd, .events = POLLIN};
		if (poll(&p, 1, 0) <= 0)
			break;
	}
	while (c->io.err_fd >= 0 && read_container_fd(c, &c->io.err_fd, HCR_STREAM_STDERR)) {
		struct pollfd p = {.fd = c->io.err_fd, .events = POLLIN};
		if (poll(&p, 1, 0) <= 0)
			break;
	}
}

static void drain_exec(struct exec *e)
{
	while (e->io.out_fd >= 0 && read_exec_fd(e, &e->io.out_fd, HCR_STREAM_STDOUT)) {
		struct pollfd p = {.fd = e->io.out_fd, .events = POLLIN};
		if (poll(&p, 1, 0) <= 0)
			break;
	}
	while (e->io.err_fd >= 0 && read_exec_fd(e, &e->io.err_fd, HCR_STREAM_STDERR)) {
		struct pollfd p = {.fd = e->io.err_fd, .events = POLLIN};
		if (poll(&p, 1, 0) <= 0)
			break;
	}
}

static void record_exit(struct container *c, int status)
{
	/* With a shared PID namespace nothing else ends the container's other processes. */
	cgroup_kill(c->cgroup);
	drain_container(c);
	io_close(&c->io);
	c->status = HCR_CONTAINER_STATUS_EXITED;
	c->finished_at = now_ns();
	if (WIFEXITED(status)) {
		c->exit_code = WEXITSTATUS(status);
		c->signal = 0;
	} else {
		c->signal = (uint32_t)WTERMSIG(status);
		c->exit_code = 128 + WTERMSIG(status);
	}
	c->oom_killed = cgroup_oom_killed(c->cgroup);
	c->exit_pending = true;
	c->held_signal = 0;
}

void reap_children(void)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid <= 0)
			return;
		for (struct container *c = containers; c != NULL; c = c->next) {
			if (c->pid == pid && c->status != HCR_CONTAINER_STATUS_EXITED) {
				record_exit(c, status);
				break;
			}
		}
		for (struct exec **pe = &execs; *pe != NULL; pe = &(*pe)->next) {
			struct exec *e = *pe;
			if (e->pid != pid)
				continue;
			drain_exec(e);
			struct hcr_exec_exited ev = {.exec_id = e->id};
			if (WIFEXITED(status)) {
				ev.exit_code = WEXITSTATUS(status);
			} else {
				ev.signal = (uint32_t)WTERMSIG(status);
				ev.exit_code = 128 + WTERMSIG(status);
			}
			send_msg(HCR_MSG_EXEC_EXITED, 0, &hcr_desc_exec_exited, &ev);
			io_close(&e->io);
			*pe = e->next;
			free(e);
			break;
		}
	}
}

void container_remove(struct container *c)
{
	if (c->status != HCR_CONTAINER_STATUS_EXITED && c->pid > 0) {
		kill(c->pid, SIGKILL);
		int status = 0;
		if (reap_within(c->pid, &status, 5000))
			record_exit(c, status);
		else
			logmsg(HCR_LOG_LEVEL_WARN, "container %s (pid %d) did not die within 5 s of SIGKILL", c->id, c->pid);
	}
	/* Execs die with the container's PID namespace; their exits are reaped as usual. */
	for (struct container **pc = &containers; *pc != NULL; pc = &(*pc)->next) {
		if (*pc == c) {
			*pc = c->next;
			break;
		}
	}
	char cg[sizeof(c->cgroup)];
	memcpy(cg, c->cgroup, sizeof(cg));
	free_container(c);
	cgroup_remove(cg);
}

void container_info(const struct container *c, struct hcr_container_info *out)
{
	memset(out, 0, sizeof(*out));
	out->id = c->id;
	out->status = c->status;
	out->pid = (uint32_t)c->pid;
	out->exit_code = c->exit_code;
	out->signal = c->signal;
	out->oom_killed = c->oom_killed;
	out->started_at = c->started_at;
	out->finished_at = c->finished_at;
	out->output_end = c->out.end;
}

/*
 * Whether `pid` catches or blocks `sig`, from the SigCgt and SigBlk masks in
 * /proc/<pid>/status. A blocked signal stays pending, so a process that takes
 * signals with sigwait or signalfd (tini, for one) receives it too.
 */
static bool takes_signal(pid_t pid, int sig)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "re");
	if (f == NULL)
		return true; /* gone: kill() tells the caller */
	uint64_t mask = 0;
	char line[256];
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "SigBlk:", 7) == 0 || strncmp(line, "SigCgt:", 7) == 0)
			mask |= strtoull(line + 7, NULL, 16);
	}
	fclose(f);
	return (mask >> (sig - 1)) & 1;
}

/*
 * Signals a container's main process. The kernel discards a signal that the
 * init of a PID namespace leaves at its default action (SIGKILL and SIGSTOP
 * aside, which come from the parent namespace), and a process that has just
 * exec'd has not installed its handlers yet: under TCG a stop right after a
 * start used to lose its SIGTERM and wait out the whole grace period. Such a
 * signal is held instead and sent once the process catches or blocks it;
 * sending it earlier would not reach the process anyway, so this changes
 * nothing but the timing. Given up after hold_ms, as the kernel would have.
 */
int container_signal(struct container *c, int sig, uint32_t hold_ms)
{
	c->held_signal = 0;
	if (hold_ms > 0 && c->pid_ns_init && sig != SIGKILL && sig != SIGSTOP && !takes_signal(c->pid, sig)) {
		c->held_signal = sig;
		c->held_until = uptime_ns() + (uint64_t)hold_ms * 1000000u;
		return 0;
	}
	return kill(c->pid, sig);
}

/* How often a held signal's process is looked at again. */
#define HELD_SIGNAL_POLL_MS 20

int deliver_held_signals(void)
{
	bool any = false;
	uint64_t now = uptime_ns();
	for (struct container *c = containers; c != NULL; c = c->next) {
		if (c->held_signal == 0)
			continue;
		if (c->status != HCR_CONTAINER_STATUS_RUNNING) {
			c->held_signal = 0;
		} else if (takes_signal(c->pid, c->held_signal)) {
			if (kill(c->pid, c->held_signal) != 0 && errno != ESRCH)
				logmsg(HCR_LOG_LEVEL_WARN, "container %s: kill %d: %s", c->id, c->pid, strerror(errno));
			c->held_signal = 0;
		} else if (now >= c->held_until) {
			/* Sent all the same: the kernel drops it unless a handler appeared just now. */
			logmsg(HCR_LOG_LEVEL_INFO,
			       "container %s: its process did not catch or block signal %d in time; as the init of a "
			       "PID namespace it will not see it",
			       c->id, c->held_signal);
			kill(c->pid, c->held_signal);
			c->held_signal = 0;
		} else {
			any = true;
		}
	}
	return any ? HELD_SIGNAL_POLL_MS : -1;
}

void kill_everything(void)
{
	for (struct exec *e = execs; e != NULL; e = e->next)
		kill(e->pid, SIGKILL);
	for (struct container *c = containers; c != NULL; c = c->next) {
		if (c->status == HCR_CONTAINER_STATUS_EXITED || c->pid <= 0)
			continue;
		kill(c->pid, SIGKILL);
		int status = 0;
		if (reap_within(c->pid, &status, 3000))
			record_exit(c, status);
	}
	reap_children();
}
