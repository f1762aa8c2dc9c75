/*
 * cgroup.c - guest cgroup v2: one cgroup per container under /hcr, limits
 * from the CRI resources, usage for stats.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

static int write_file(const char *dir, const char *name, const char *value)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = strlen(value);
	ssize_t w = write(fd, value, n);
	int saved = errno;
	close(fd);
	errno = saved;
	return w == (ssize_t)n ? 0 : -1;
}

/* Reads a small file into buf (NUL-terminated); returns its length or -1. */
static ssize_t read_file(const char *dir, const char *name, char *buf, size_t len)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return n;
}

/* The value of `key` in a flat-keyed file such as cpu.stat or memory.stat. */
static uint64_t keyed(const char *dir, const char *name, const char *key)
{
	char buf[8192];
	if (read_file(dir, name, buf, sizeof(buf)) < 0)
		return 0;
	size_t kl = strlen(key);
	for (char *line = buf; line != NULL && *line != 0;) {
		if (strncmp(line, key, kl) == 0 && line[kl] == ' ')
			return strtoull(line + kl + 1, NULL, 10);
		line = strchr(line, '\n');
		if (line != NULL)
			line++;
	}
	return 0;
}

static uint64_t single(const char *dir, const char *name)
{
	char buf[64];
	if (read_file(dir, name, buf, sizeof(buf)) < 0)
		return 0;
	return strtoull(buf, NULL, 10);
}

void cgroup_init(void)
{
	static const char *const controllers[] = {"+cpu", "+cpuset", "+io", "+memory", "+pids"};
	if (mkdir(CGROUP_PODS, 0755) != 0 && errno != EEXIST)
		logmsg(HCR_LOG_LEVEL_WARN, "mkdir %s: %s", CGROUP_PODS, strerror(errno));
	/* One at a time: a controller the kernel lacks must not keep the others off. */
	for (size_t i = 0; i < sizeof(controllers) / sizeof(controllers[0]); i++) {
		if (write_file("/sys/fs/cgroup", "cgroup.subtree_control", controllers[i]) != 0 ||
		    write_file(CGROUP_PODS, "cgroup.subtree_control", controllers[i]) != 0)
			logmsg(HCR_LOG_LEVEL_WARN, "enable cgroup controller %s: %s", controllers[i] + 1, strerror(errno));
	}
}

int cgroup_apply(const char *path, const struct hcr_resources *r, const char **err)
{
	char v[128];
	if (r->cpu_quota > 0 || r->cpu_period > 0) {
		uint64_t period = r->cpu_period > 0 ? r->cpu_period : 100000;
		if (r->cpu_quota > 0)
			snprintf(v, sizeof(v), "%llu %llu", (unsigned long long)r->cpu_quota, (unsigned long long)period);
		else
			snprintf(v, sizeof(v), "max %llu", (unsigned long long)period);
		if (write_file(path, "cpu.max", v) != 0)
			return *err = "cannot write cpu.max", -1;
	}
	if (r->cpu_shares > 0) {
		/* The usual shares (2..262144) to weight (1..10000) mapping of runc and crun. */
		uint64_t shares = r->cpu_shares < 2 ? 2 : r->cpu_shares > 262144 ? 262144 : r->cpu_shares;
		snprintf(v, sizeof(v), "%llu", (unsigned long long)(1 + ((shares - 2) * 9999) / 262142));
		if (write_file(path, "cpu.weight", v) != 0)
			return *err = "cannot write cpu.weight", -1;
	}
	if (r->memory_limit > 0) {
		snprintf(v, sizeof(v), "%llu", (unsigned long long)r->memory_limit);
		if (write_file(path, "memory.max", v) != 0)
			return *err = "cannot write memory.max (below current usage?)", -1;
		if (r->memory_swap_limit > r->memory_limit) {
			/* CRI's swap limit counts memory plus swap; cgroup v2 counts swap alone. */
			snprintf(v, sizeof(v), "%llu", (unsigned long long)(r->memory_swap_limit - r->memory_limit));
			write_file(path, "memory.swap.max", v);
		}
	}
	if (r->cpuset_cpus[0] != 0 && write_file(path, "cpuset.cpus", r->cpuset_cpus) != 0)
		return *err = "cannot write cpuset.cpus", -1;
	if (r->cpuset_mems[0] != 0 && write_file(path, "cpuset.mems", r->cpuset_mems) != 0)
		return *err = "cannot write cpuset.mems", -1;
	for (size_t i = 0; i < r->unified_count; i++) {
		const char *k = r->unified[i].key;
		if (k[0] == 0 || k[0] == '.' || strchr(k, '/') != NULL)
			return *err = "unified key is not a cgroup file name", -1;
		if (write_file(path, k, r->unified[i].value) != 0)
			return *err = "cannot write a unified cgroup setting", -1;
	}
	return 0;
}

int cgroup_create(const char *path, const struct hcr_resources *r, const char **err)
{
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		return *err = "cannot make the container cgroup", -1;
	return cgroup_apply(path, r, err);
}

void cgroup_remove(const char *path)
{
	if (path[0] == 0)
		return;
	/* Processes killed a moment ago may still be leaving it. */
	for (int i = 0; i < 100; i++) {
		if (rmdir(path) == 0 || errno == ENOENT)
			return;
		if (errno != EBUSY)
			break;
		usleep(10000);
	}
	logmsg(HCR_LOG_LEVEL_WARN, "rmdir %s: %s", path, strerror(errno));
}

void cgroup_kill(const char *path)
{
	if (write_file(path, "cgroup.kill", "1") != 0 && errno != ENOENT)
		logmsg(HCR_LOG_LEVEL_WARN, "kill cgroup %s: %s", path, strerror(errno));
}

bool cgroup_oom_killed(const char *path)
{
	return keyed(path, "memory.events", "oom_kill") > 0;
}

void cgroup_stats(const char *path, struct hcr_stats_reply *out)
{
	out->timestamp = now_ns();
	out->cpu_usage_ns = keyed(path, "cpu.stat", "usage_usec") * 1000u;
	out->memory_usage = single(path, "memory.current");
	uint64_t inactive = keyed(path, "memory.stat", "inactive_file");
	out->memory_working_set = out->memory_usage > inactive ? out->memory_usage - inactive : 0;
	out->processes = (uint32_t)single(path, "pids.current");
}
