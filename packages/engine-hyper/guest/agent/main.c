/*
 * main.c - PID 1 of the hyper VM: early init, the host channel and the loop.
 *
 * Boot: mount the pseudo filesystems, load the virtio modules, open the
 * virtio-serial port named "hcr.agent", then serve requests until Shutdown.
 * The host may disconnect and reconnect at any time (an HCR restart); the
 * agent keeps running containers and buffering their output meanwhile.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

bool host_connected;
bool host_greeted;
static int port_fd = -1;
static struct buf outq;
static struct frame_reader reader;
static bool pod_configured;
static bool shutting_down;
/* Test-only fault injection (hcr.fault=abort:<Request> on the kernel command line), or NULL. */
static char *fault_abort_on;

/* Modules the guest needs, in load order (modprobe resolves their dependencies). */
static const char *const modules[] = {"virtio_mmio", "virtio_console", "virtio_net", "9pnet_virtio", "9p"};

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t uptime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void logmsg(uint32_t level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	uint64_t up = uptime_ns();
	dprintf(STDERR_FILENO, "[%5llu.%03llu] hcr-agent: %s\n", (unsigned long long)(up / 1000000000u),
		(unsigned long long)(up / 1000000u % 1000u), line);
	struct hcr_agent_log msg = {.level = level, .message = line};
	send_msg(HCR_MSG_AGENT_LOG, 0, &hcr_desc_agent_log, &msg);
}

void send_msg(uint16_t type, uint32_t id, const struct hcr_desc *d, const void *body)
{
	if (!host_connected || port_fd < 0)
		return;
	hcr_frame(&outq, type, id, d, body);
}

void send_error(uint32_t id, uint32_t code, const char *fmt, ...)
{
	char message[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	struct hcr_error_reply r = {.code = code, .message = message};
	send_msg(HCR_MSG_ERROR_REPLY, id, &hcr_desc_error_reply, &r);
}

void send_empty(uint32_t id)
{
	struct hcr_empty e = {0};
	send_msg(HCR_MSG_EMPTY, id, &hcr_desc_empty, &e);
}

size_t out_pending(void)
{
	return outq.len;
}

/* ------------------------------------------------------------------ init */

static void must_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, flags, data) != 0 && errno != EBUSY)
		logmsg(HCR_LOG_LEVEL_ERROR, "mount %s on %s: %s", type, dst, strerror(errno));
}

/* Runs a program from the initramfs with an argv array and waits for it. */
static int run(char *const argv[])
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The kernel command line word that is `word` or starts with `word` followed by '=', or NULL. */
static char *cmdline_word(const char *word)
{
	static char buf[4096];
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = 0;
	size_t len = strlen(word);
	for (char *tok = strtok(buf, " \n"); tok != NULL; tok = strtok(NULL, " \n"))
		if (strncmp(tok, word, len) == 0 && (tok[len] == 0 || tok[len] == '='))
			return tok;
	return NULL;
}

static bool cmdline_has(const char *word)
{
	char *tok = cmdline_word(word);
	return tok != NULL && tok[strlen(word)] == 0;
}

/*
 * hcr.fault=abort:<Request> makes the agent abort() when it receives that
 * request (e.g. abort:Exec), so tests can see what the host does when PID 1
 * of a pod VM dies. The host puts it there only when HCR runs with
 * HCR_AGENT_FAULT set; nothing else reads it.
 */
static void read_fault(void)
{
	char *tok = cmdline_word("hcr.fault");
	if (tok == NULL || strncmp(tok, "hcr.fault=abort:", 16) != 0)
		return;
	fault_abort_on = strdup(tok + 16);
	dprintf(STDERR_FILENO, "hcr-agent: fault injection on: abort on %s\n", fault_abort_on);
}

static void power_off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	/* Without ACPI power-off the kernel halts; the host's QMP quit ends QEMU then. */
	for (;;)
		pause();
}

/* Finds /dev/vportNpM whose virtio port name is `name`. */
static int open_port(const char *name)
{
	for (int attempt = 0; attempt < 200; attempt++) {
		DIR *d = opendir("/sys/class/virtio-ports");
		struct dirent *e;
		while (d != NULL && (e = readdir(d)) != NULL) {
			if (e->d_name[0] == '.')
				continue;
			char path[512], got[64] = {0};
			snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			ssize_t n = read(fd, got, sizeof(got) - 1);
			close(fd);
			if (n > 0 && got[n - 1] == '\n')
				got[n - 1] = 0;
			if (strcmp(got, name) != 0)
				continue;
			snprintf(path, sizeof(path), "/dev/%s", e->d_name);
			closedir(d);
			int port = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
			if (port < 0)
				logmsg(HCR_LOG_LEVEL_ERROR, "open %s: %s", path, strerror(errno));
			return port;
		}
		if (d != NULL)
			closedir(d);
		usleep(50000);
	}
	return -1;
}

/*
 * The initramfs is the kernel's rootfs, which has no parent mount, and
 * pivot_root refuses to move such a root away (EINVAL). PID 1 re-roots on a
 * bind mount of the initramfs moved over "/", so containers can pivot. (A
 * bind straight onto "/" would not do: lookups of "/" start at the process
 * root and never cross a mount stacked on it.)
 */
static void reroot(void)
{
	const char *tmp = "/.hcr-root";
	if (mkdir(tmp, 0700) != 0 || mount("/", tmp, NULL, MS_BIND | MS_REC, NULL) != 0 || chdir(tmp) != 0 ||
	    mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 || chdir("/") != 0) {
		dprintf(STDERR_FILENO, "hcr-agent: re-rooting on a bind mount failed: %s\n", strerror(errno));
		return;
	}
	rmdir(tmp);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		dprintf(STDERR_FILENO, "hcr-agent: make / private: %s\n", strerror(errno));
}

static void early_init(void)
{
	reroot();
	must_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	if (cmdline_has("hcr.probe")) {
		/* KVM probe: reaching userspace is all the host wants to know. */
		dprintf(STDERR_FILENO, "HCR-PROBE-OK\n");
		power_off();
	}
	read_fault();
	must_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	must_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	must_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620,gid=5");
	must_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	must_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	must_mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mkdir("/run/hcr", 0755);
	mkdir(SHARE_DIR, 0755);
	/* The kernel's console is stdout/stderr of PID 1 already; make sure of it. */
	int con = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (con >= 0) {
		dup2(con, STDOUT_FILENO);
		dup2(con, STDERR_FILENO);
		close(con);
	}
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		close(null);
	}
	/* One modprobe for all: under emulation each extra fork+exec and modules.dep parse costs tens of ms. */
	char *argv[3 + sizeof(modules) / sizeof(modules[0])] = {"/sbin/modprobe", "-a"};
	for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++)
		argv[2 + i] = (char *)modules[i];
	int rc = run(argv);
	if (rc != 0)
		logmsg(HCR_LOG_LEVEL_WARN, "modprobe -a of the virtio and 9p modules exited with %d", rc);
	net_loopback();
	if (sethostname("hcr-guest", 9) != 0)
		logmsg(HCR_LOG_LEVEL_WARN, "sethostname: %s", strerror(errno));
	cgroup_init();
}

/* ------------------------------------------------------------- dispatch */

static void reply_info(uint32_t id, bool hello)
{
	size_t n = 0;
	for (struct container *c = containers; c != NULL; c = c->next)
		n++;
	struct arena a = {0};
	struct hcr_container_info *infos = arena_alloc(&a, (n + 1) * sizeof(*infos));
	size_t i = 0;
	for (struct container *c = containers; c != NULL; c = c->next)
		container_info(c, &infos[i++]);
	if (hello) {
		/* See HelloReply in protocol/agent.json. */
		static char *features[] = {"seccomp", "signal-hold", "clone"};
		struct utsname u;
		uname(&u);
		struct hcr_hello_reply r = {
		    .protocol_version = HCR_PROTOCOL_VERSION,
		    .agent_version = AGENT_VERSION,
		    .kernel_release = u.release,
		    .uptime_ns = uptime_ns(),
		    .pod_configured = pod_configured,
		    .containers = infos,
		    .containers_count = n,
		    .features = features,
		    .features_count = sizeof(features) / sizeof(features[0]),
		};
		send_msg(HCR_MSG_HELLO_REPLY, id, &hcr_desc_hello_reply, &r);
	} else {
		struct hcr_list_containers_reply r = {.containers = infos, .containers_count = n};
		send_msg(HCR_MSG_LIST_CONTAINERS_REPLY, id, &hcr_desc_list_containers_reply, &r);
	}
	arena_free(&a);
}

/*
 * Mixes host bytes into the kernel's pool and has the kernel's generator
 * reseed at once. Every VM cloned from one template resumes with the very
 * generator state the template was saved with; without this, clones would
 * hand out the same "random" bytes until the kernel reseeded on its own.
 */
static void reseed_rng(const uint8_t *bytes, size_t len)
{
	if (len == 0)
		return;
	if (len > 512)
		len = 512;
	union {
		struct rand_pool_info info;
		uint32_t words[2 + 512 / 4];
	} pool;
	pool.info.entropy_count = (int)(len * 8);
	pool.info.buf_size = (int)len;
	memcpy(pool.info.buf, bytes, len);
	int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, RNDADDENTROPY, &pool.info) != 0 || ioctl(fd, RNDRESEEDCRNG) != 0)
		logmsg(HCR_LOG_LEVEL_WARN, "reseed the kernel RNG: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
}

static void handle_hello(uint32_t id, struct hcr_hello *req)
{
	/* Frames queued for an earlier connection mean nothing to this one. */
	buf_reset(&outq);
	/* Container output flows from the offsets below on (output_pump held it until now). */
	host_greeted = true;
	reseed_rng(req->entropy, req->entropy_len);
	if (req->host_time != 0) {
		struct timespec ts = {.tv_sec = (time_t)(req->host_time / 1000000000u),
				      .tv_nsec = (long)(req->host_time % 1000000000u)};
		if (clock_settime(CLOCK_REALTIME, &ts) != 0)
			logmsg(HCR_LOG_LEVEL_WARN, "clock_settime: %s", strerror(errno));
	}
	for (size_t i = 0; i < req->resume_count; i++) {
		struct container *c = container_find(req->resume[i].container_id);
		if (c != NULL)
			output_resume(&c->out, req->resume[i].offset);
	}
	/* Exits the host missed are in the reply; the events would only repeat them. */
	for (struct container *c = containers; c != NULL; c = c->next)
		c->exit_pending = false;
	reply_info(id, true);
}

static void handle_setup_pod(uint32_t id, struct hcr_setup_pod *req)
{
	if (req->share_tag[0] != 0) {
		/*
		 * cache=mmap: shared writable mappings work (databases need them); data stays uncached otherwise.
		 * Not nosuid: the share carries the container root filesystems, whose setuid programs must work
		 * (the VM is the boundary; the host side of the share is nosuid). nodev: a device node in an image
		 * or a host path must not open the guest's own devices.
		 */
		struct stat st, parent;
		bool mounted = stat(SHARE_DIR, &st) == 0 && stat("/run/hcr", &parent) == 0 && st.st_dev != parent.st_dev;
		if (!mounted &&
		    mount(req->share_tag, SHARE_DIR, "9p", MS_NODEV,
			  "trans=virtio,version=9p2000.L,msize=524288,cache=mmap") != 0) {
			send_error(id, HCR_ERROR_CODE_INTERNAL, "mount 9p share %s on %s: %s", req->share_tag, SHARE_DIR,
				   strerror(errno));
			return;
		}
	}
	char err[512];
	if (net_setup(req, err, sizeof(err)) != 0) {
		send_error(id, HCR_ERROR_CODE_INTERNAL, "network setup: %s", err);
		return;
	}
	if (req->hostname[0] != 0 && sethostname(req->hostname, strlen(req->hostname)) != 0) {
		send_error(id, HCR_ERROR_CODE_INVALID_ARGUMENT, "sethostname %s: %s", req->hostname, strerror(errno));
		return;
	}
	pod_configured = true;
	send_empty(id);
}

static void handle_signal(uint32_t id, struct hcr_signal_container *req)
{
	struct container *c = container_find(req->id);
	if (c == NULL) {
		send_error(id, HCR_ERROR_CODE_NOT_FOUND, "container %s not found", req->id);
		return;
	}
	if (req->signal == 0 || req->signal >= _NSIG) {
		send_error(id, HCR_ERROR_CODE_INVALID_ARGUMENT, "invalid signal %u", req->signal);
		return;
	}
	if (c->status == HCR_CONTAINER_STATUS_RUNNING && container_signal(c, (int)req->signal, req->hold_ms) != 0 &&
	    errno != ESRCH) {
		send_error(id, HCR_ERROR_CODE_INTERNAL, "kill %d: %s", c->pid, strerror(errno));
		return;
	}
	send_empty(id);
}

static void handle_signal_exec(uint32_t id, struct hcr_signal_exec *req)
{
	for (struct exec *e = execs; e != NULL; e = e->next) {
		if (e->id == req->exec_id && e->pid > 0 && kill(e->pid, (int)req->signal) != 0 && errno != ESRCH) {
			send_error(id, HCR_ERROR_CODE_INTERNAL, "kill %d: %s", e->pid, strerror(errno));
			return;
		}
	}
	send_empty(id);
}

static void handle_remove(uint32_t id, struct hcr_remove_container *req)
{
	struct container *c = container_find(req->id);
	if (c != NULL)
		container_remove(c);
	send_empty(id);
}

static void handle_stats(uint32_t id, struct hcr_stats *req)
{
	struct container *c = container_find(req->container_id);
	if (c == NULL) {
		send_error(id, HCR_ERROR_CODE_NOT_FOUND, "container %s not found", req->container_id);
		return;
	}
	struct hcr_stats_reply r = {0};
	cgroup_stats(c->cgroup, &r);
	send_msg(HCR_MSG_STATS_REPLY, id, &hcr_desc_stats_reply, &r);
}

static void handle_pod_stats(uint32_t id)
{
	struct hcr_stats_reply s = {0};
	cgroup_stats(CGROUP_PODS, &s);
	struct hcr_pod_stats_reply r = {
	    .timestamp = s.timestamp,
	    .cpu_usage_ns = s.cpu_usage_ns,
	    .memory_usage = s.memory_usage,
	    .memory_working_set = s.memory_working_set,
	    .processes = s.processes,
	};
	net_counters(&r.rx_bytes, &r.tx_bytes);
	send_msg(HCR_MSG_POD_STATS_REPLY, id, &hcr_desc_pod_stats_reply, &r);
}

static void handle_update(uint32_t id, struct hcr_update_resources *req)
{
	struct container *c = container_find(req->container_id);
	if (c == NULL) {
		send_error(id, HCR_ERROR_CODE_NOT_FOUND, "container %s not found", req->container_id);
		return;
	}
	const char *err = NULL;
	if (cgroup_apply(c->cgroup, &req->resources, &err) != 0) {
		send_error(id, HCR_ERROR_CODE_INVALID_ARGUMENT, "update resources of %s: %s", c->id, err);
		return;
	}
	send_empty(id);
}

/* Finds the input of a container (exec_id 0) or an exec. */
static struct proc_io *find_io(const char *container_id, uint32_t exec_id)
{
	if (exec_id != 0) {
		for (struct exec *e = execs; e != NULL; e = e->next)
			if (e->id == exec_id)
				return &e->io;
		return NULL;
	}
	struct container *c = container_find(container_id);
	return c == NULL ? NULL : &c->io;
}

static void handle_stdin(struct hcr_stdin *msg)
{
	struct proc_io *io = find_io(msg->container_id, msg->exec_id);
	if (io != NULL)
		input_push(&io->in, msg->data, msg->data_len, msg->close);
}

static void handle_resize(struct hcr_resize *msg)
{
	struct proc_io *io = find_io(msg->container_id, msg->exec_id);
	if (io == NULL || io->tty_fd < 0)
		return;
	struct winsize ws = {.ws_row = (unsigned short)msg->rows, .ws_col = (unsigned short)msg->cols};
	if (ioctl(io->tty_fd, TIOCSWINSZ, &ws) != 0)
		logmsg(HCR_LOG_LEVEL_WARN, "TIOCSWINSZ: %s", strerror(errno));
}

static void handle_shutdown(uint32_t id)
{
	logmsg(HCR_LOG_LEVEL_INFO, "shutting down");
	kill_everything();
	port_free_all();
	sync();
	umount2(SHARE_DIR, MNT_DETACH);
	send_empty(id);
	shutting_down = true;
}

/* Decodes one frame and calls its handler. */
static void dispatch(uint16_t type, uint32_t id, const uint8_t *payload, size_t len)
{
	const struct hcr_desc *d = hcr_message_desc(type);
	struct arena a = {0};
	void *body = arena_alloc(&a, d->size);
	const char *err = NULL;
	if (fault_abort_on != NULL && strcmp(d->name, fault_abort_on) == 0) {
		dprintf(STDERR_FILENO, "hcr-agent: hcr.fault: aborting on %s\n", d->name);
		abort();
	}
	if (hcr_decode(d, payload, len, body, &a, &err) != 0) {
		if (id != 0)
			send_error(id, HCR_ERROR_CODE_INVALID_ARGUMENT, "malformed %s: %s", d->name, err);
		arena_free(&a);
		return;
	}
	switch (type) {
	case HCR_MSG_HELLO:
		handle_hello(id, body);
		break;
	case HCR_MSG_SETUP_POD:
		handle_setup_pod(id, body);
		break;
	case HCR_MSG_CREATE_CONTAINER:
		handle_create(id, body);
		break;
	case HCR_MSG_START_CONTAINER:
		handle_start(id, body);
		break;
	case HCR_MSG_SIGNAL_CONTAINER:
		handle_signal(id, body);
		break;
	case HCR_MSG_REMOVE_CONTAINER:
		handle_remove(id, body);
		break;
	case HCR_MSG_LIST_CONTAINERS:
		reply_info(id, false);
		break;
	case HCR_MSG_EXEC:
		handle_exec(id, body);
		break;
	case HCR_MSG_SIGNAL_EXEC:
		handle_signal_exec(id, body);
		break;
	case HCR_MSG_STATS:
		handle_stats(id, body);
		break;
	case HCR_MSG_POD_STATS:
		handle_pod_stats(id);
		break;
	case HCR_MSG_UPDATE_RESOURCES:
		handle_update(id, body);
		break;
	case HCR_MSG_PORT_FORWARD:
		handle_port_forward(id, body);
		break;
	case HCR_MSG_SHUTDOWN:
		handle_shutdown(id);
		break;
	case HCR_MSG_STDIN:
		handle_stdin(body);
		break;
	case HCR_MSG_RESIZE:
		handle_resize(body);
		break;
	case HCR_MSG_PORT_DATA:
		handle_port_data(body);
		break;
	case HCR_MSG_PORT_CLOSE:
		handle_port_close(body);
		break;
	default:
		if (id != 0)
			send_error(id, HCR_ERROR_CODE_UNSUPPORTED, "the agent does not handle %s", d->name);
		break;
	}
	arena_free(&a);
}

/* ----------------------------------------------------------------- loop */

static void host_gone(void)
{
	if (host_connected)
		dprintf(STDERR_FILENO, "hcr-agent: host disconnected\n");
	host_connected = false;
	host_greeted = false;
	buf_reset(&outq);
	buf_reset(&reader.in);
	reader.consumed = 0;
}

static void read_port(void)
{
	uint8_t tmp[65536];
	for (;;) {
		ssize_t n = read(port_fd, tmp, sizeof(tmp));
		if (n > 0) {
			buf_append(&reader.in, tmp, (size_t)n);
			continue;
		}
		if (n == 0)
			host_gone();
		else if (errno != EAGAIN && errno != EINTR)
			logmsg(HCR_LOG_LEVEL_ERROR, "read agent port: %s", strerror(errno));
		break;
	}
	uint16_t type;
	uint32_t id;
	const uint8_t *payload;
	size_t len;
	while (host_connected && frame_next(&reader, &type, &id, &payload, &len) == 1)
		dispatch(type, id, payload, len);
	if (reader.skipped > 0) {
		logmsg(HCR_LOG_LEVEL_WARN, "skipped %zu bytes of torn frames from the host", reader.skipped);
		reader.skipped = 0;
	}
}

static void write_port(void)
{
	while (outq.len > 0) {
		ssize_t n = write(port_fd, outq.data, outq.len > 65536 ? 65536 : outq.len);
		if (n > 0) {
			buf_consume(&outq, (size_t)n);
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			logmsg(HCR_LOG_LEVEL_ERROR, "write agent port: %s", strerror(errno));
		break;
	}
}

/* What a pollfd slot stands for. */
enum slot_kind { SLOT_PORT, SLOT_SIGNAL, SLOT_C_OUT, SLOT_C_ERR, SLOT_C_IN, SLOT_E_OUT, SLOT_E_ERR, SLOT_E_IN, SLOT_SOCK };

struct slot {
	enum slot_kind kind;
	void *obj;
};

#define MAX_SLOTS 1024

static void loop(int sigfd)
{
	static struct pollfd pfd[MAX_SLOTS];
	static struct slot slots[MAX_SLOTS];
	for (;;) {
		if (shutting_down && outq.len == 0)
			power_off();
		/* An unconnected port polls as HUP at once; look at it without waiting. */
		struct pollfd probe = {.fd = port_fd, .events = POLLIN | POLLOUT};
		if (poll(&probe, 1, 0) >= 0) {
			bool connected = (probe.revents & POLLHUP) == 0;
			if (connected && !host_connected) {
				dprintf(STDERR_FILENO, "hcr-agent: host connected\n");
				host_greeted = false;
			}
			if (!connected)
				host_gone();
			host_connected = connected;
		}
		if (shutting_down && !host_connected)
			power_off();
		output_pump();
		size_t n = 0;
#define ADD(fd_, ev_, kind_, obj_)                                                                                     \
	do {                                                                                                           \
		if (n < MAX_SLOTS) {                                                                                   \
			pfd[n] = (struct pollfd){.fd = (fd_), .events = (short)(ev_)};                                 \
			slots[n] = (struct slot){(kind_), (obj_)};                                                     \
			n++;                                                                                           \
		}                                                                                                      \
	} while (0)
		if (host_connected)
			ADD(port_fd, POLLIN | (outq.len > 0 ? POLLOUT : 0), SLOT_PORT, NULL);
		ADD(sigfd, POLLIN, SLOT_SIGNAL, NULL);
		bool room = outq.len < OUT_HIGH;
		for (struct container *c = containers; c != NULL; c = c->next) {
			/* Read while the host keeps up; while it is away, keep the newest output. */
			bool take = !host_greeted || c->out.end - c->out.sent < LOG_UNSENT_HIGH;
			if (take && c->io.out_fd >= 0)
				ADD(c->io.out_fd, POLLIN, SLOT_C_OUT, c);
			if (take && c->io.err_fd >= 0)
				ADD(c->io.err_fd, POLLIN, SLOT_C_ERR, c);
			if (c->io.in.fd >= 0 && c->io.in.pending.len > 0)
				ADD(c->io.in.fd, POLLOUT, SLOT_C_IN, c);
		}
		for (struct exec *e = execs; e != NULL; e = e->next) {
			if (room && e->io.out_fd >= 0)
				ADD(e->io.out_fd, POLLIN, SLOT_E_OUT, e);
			if (room && e->io.err_fd >= 0)
				ADD(e->io.err_fd, POLLIN, SLOT_E_ERR, e);
			if (e->io.in.fd >= 0 && e->io.in.pending.len > 0)
				ADD(e->io.in.fd, POLLOUT, SLOT_E_IN, e);
		}
		for (struct port_conn *p = ports; p != NULL; p = p->next) {
			short ev = (short)((room && !p->guest_closed ? POLLIN : 0) | (p->pending.len > 0 ? POLLOUT : 0));
			if (ev != 0)
				ADD(p->fd, ev, SLOT_SOCK, p);
		}
#undef ADD
		/* The port signals SIGIO when the host (dis)connects; the timeout is only a safety net. */
		int timeout = host_connected ? -1 : 1000;
		int held = deliver_held_signals();
		if (held >= 0 && (timeout < 0 || held < timeout))
			timeout = held;
		int ready = poll(pfd, n, timeout);
		if (ready < 0) {
			if (errno != EINTR)
				logmsg(HCR_LOG_LEVEL_ERROR, "poll: %s", strerror(errno));
			continue;
		}
		/* Handlers may free objects; a slot is looked up again before use. */
		for (size_t i = 0; i < n && ready > 0; i++) {
			short rev = pfd[i].revents;
			if (rev == 0)
				continue;
			switch (slots[i].kind) {
			case SLOT_PORT:
				if (rev & POLLOUT)
					write_port();
				if (rev & (POLLIN | POLLHUP))
					read_port();
				break;
			case SLOT_SIGNAL: {
				struct signalfd_siginfo si;
				while (read(sigfd, &si, sizeof(si)) == sizeof(si))
					;
				reap_children();
				break;
			}
			case SLOT_C_OUT:
			case SLOT_C_ERR:
			case SLOT_C_IN: {
				struct container *c = slots[i].obj;
				bool alive = false;
				for (struct container *x = containers; x != NULL; x = x->next)
					alive |= x == c;
				if (!alive)
					break;
				if (slots[i].kind == SLOT_C_IN)
					input_flush(&c->io.in);
				else if (slots[i].kind == SLOT_C_OUT && c->io.out_fd == pfd[i].fd)
					read_container_fd(c, &c->io.out_fd, HCR_STREAM_STDOUT);
				else if (slots[i].kind == SLOT_C_ERR && c->io.err_fd == pfd[i].fd)
					read_container_fd(c, &c->io.err_fd, HCR_STREAM_STDERR);
				break;
			}
			case SLOT_E_OUT:
			case SLOT_E_ERR:
			case SLOT_E_IN: {
				struct exec *e = slots[i].obj;
				bool alive = false;
				for (struct exec *x = execs; x != NULL; x = x->next)
					alive |= x == e;
				if (!alive)
					break;
				if (slots[i].kind == SLOT_E_IN)
					input_flush(&e->io.in);
				else if (slots[i].kind == SLOT_E_OUT && e->io.out_fd == pfd[i].fd)
					read_exec_fd(e, &e->io.out_fd, HCR_STREAM_STDOUT);
				else if (slots[i].kind == SLOT_E_ERR && e->io.err_fd == pfd[i].fd)
					read_exec_fd(e, &e->io.err_fd, HCR_STREAM_STDERR);
				break;
			}
			case SLOT_SOCK: {
				struct port_conn *p = slots[i].obj;
				bool alive = false;
				for (struct port_conn *x = ports; x != NULL; x = x->next)
					alive |= x == p && x->fd == pfd[i].fd;
				if (!alive)
					break;
				if (rev & POLLOUT)
					port_writable(p);
				alive = false;
				for (struct port_conn *x = ports; x != NULL; x = x->next)
					alive |= x == p && x->fd == pfd[i].fd;
				if (alive && (rev & (POLLIN | POLLHUP | POLLERR)))
					port_readable(p);
				break;
			}
			}
		}
		if (host_connected && outq.len > 0)
			write_port();
	}
}

int main(void)
{
	if (getpid() != 1) {
		fprintf(stderr, "hcr-agent: must run as PID 1 of the guest\n");
		return 1;
	}
	early_init();
	signal(SIGPIPE, SIG_IGN);
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGIO);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0) {
		logmsg(HCR_LOG_LEVEL_ERROR, "signalfd: %s", strerror(errno));
		power_off();
	}
	port_fd = open_port("hcr.agent");
	if (port_fd < 0) {
		logmsg(HCR_LOG_LEVEL_ERROR, "no virtio-serial port named hcr.agent; powering off");
		power_off();
	}
	/*
	 * A port without a host polls as HUP at once, so poll cannot wait for the host; the driver sends
	 * SIGIO when the host side opens or closes, which wakes the loop through the signalfd. A VM
	 * resumed from a template is greeted within milliseconds of its host connecting.
	 */
	if (fcntl(port_fd, F_SETOWN, getpid()) != 0 || fcntl(port_fd, F_SETFL, fcntl(port_fd, F_GETFL) | O_ASYNC) != 0)
		logmsg(HCR_LOG_LEVEL_WARN, "SIGIO on the agent port: %s; host connections are noticed by polling",
		       strerror(errno));
	struct utsname u;
	uname(&u);
	logmsg(HCR_LOG_LEVEL_INFO, "%s ready on kernel %s after %llu ms", AGENT_VERSION, u.release,
	       (unsigned long long)(uptime_ns() / 1000000u));
	loop(sigfd);
	return 0;
}
