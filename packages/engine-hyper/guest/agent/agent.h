/*
 * agent.h - shared state of the HCR guest agent (PID 1 of every hyper VM).
 *
 * The agent is single-threaded: one poll loop serves the host channel, the
 * stdio of every container and exec, port-forward sockets and SIGCHLD.
 */
#ifndef HCR_AGENT_H
#define HCR_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "wire.h"

#ifndef HCR_AGENT_BUILD
#define HCR_AGENT_BUILD "dev"
#endif
#define AGENT_VERSION "hcr-agent 1 (" HCR_AGENT_BUILD ")"

/* Where the pod share (virtio-9p) is mounted in the guest. */
#define SHARE_DIR "/run/hcr/share"
/* Parent cgroup of every container. */
#define CGROUP_PODS "/sys/fs/cgroup/hcr"

/* Output kept per container for replay after the host reconnects. */
#define LOG_KEEP_BYTES (4u << 20)
/* Unsent output per container above which its pipes are not read (backpressure). */
#define LOG_UNSENT_HIGH (1u << 20)
/* Queued bytes towards the host above which no more output is read. */
#define OUT_HIGH (1u << 20)
/* Largest data chunk in one frame. */
#define CHUNK (32u << 10)

/* ------------------------------------------------------------------ main.c */

/* Writes a line to the console and, when connected, an AgentLog event. */
void logmsg(uint32_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Unix time in nanoseconds (the guest clock, set from the host at Hello). */
uint64_t now_ns(void);
/* Nanoseconds since boot (monotonic; not changed by setting the clock). */
uint64_t uptime_ns(void);

extern bool host_connected;
/* The connected host sent its Hello (container output resumes where it said). */
extern bool host_greeted;
/* Queues a frame for the host; dropped while no host is connected. */
void send_msg(uint16_t type, uint32_t id, const struct hcr_desc *d, const void *body);
void send_error(uint32_t id, uint32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void send_empty(uint32_t id);
/* Bytes queued towards the host. */
size_t out_pending(void);

/* -------------------------------------------------------------------- io.c */

/* One chunk of container output, kept for replay. */
struct record {
	struct record *next;
	uint64_t offset; /* of data[0] in the container's output stream */
	uint64_t time;
	uint32_t stream;
	size_t len;
	uint8_t data[];
};

/* A container's output stream: records [head..tail], `sent` bytes delivered. */
struct output {
	struct record *head, *tail;
	uint64_t end;
	uint64_t sent;
	size_t bytes;
	bool warned_loss;
};

/* Input waiting for a process that reads slowly. */
struct input {
	int fd; /* -1 when the process has no stdin */
	struct buf pending;
	bool close_after;
};

/* The stdio of a container's init or of an exec. */
struct proc_io {
	int out_fd; /* stdout pipe, or the PTY master */
	int err_fd; /* -1 with a TTY */
	int tty_fd; /* PTY master (for resizes), or -1 */
	struct input in;
};

struct container {
	struct container *next;
	char *id;
	uint32_t status;
	pid_t pid;
	int32_t exit_code;
	uint32_t signal;
	bool oom_killed;
	bool exit_pending; /* the ContainerExited event is still to be sent */
	uint64_t started_at, finished_at;
	bool pid_ns_init; /* PID 1 of its own PID namespace (see container_signal) */
	int held_signal;  /* a signal waiting until the process can take it, or 0 */
	uint64_t held_until; /* uptime (ns) at which a held signal is given up */
	int sync_fd;  /* child -> agent: setup errors; EOF once the process exec'd */
	int start_fd; /* agent -> child: one byte starts the process */
	struct proc_io io;
	struct output out;
	char cgroup[512];
};

struct exec {
	struct exec *next;
	uint32_t id;
	pid_t pid;
	struct proc_io io;
};

extern struct container *containers;
extern struct exec *execs;

struct container *container_find(const char *id);
void io_init(struct proc_io *io);
void io_close(struct proc_io *io);
/* Appends container output to its stream, dropping the oldest records past LOG_KEEP_BYTES. */
void output_append(struct container *c, uint32_t stream, const uint8_t *p, size_t n);
void output_free(struct output *o);
/* Rewinds or advances the delivery cursor after the host says what it has. */
void output_resume(struct output *o, uint64_t offset);
/* Sends pending output (and pending exit events) to a greeted host while it keeps up. */
void output_pump(void);
/* Reads what a container or exec wrote; false on EOF or error (the fd is closed). */
bool read_container_fd(struct container *c, int *fd, uint32_t stream);
bool read_exec_fd(struct exec *e, int *fd, uint32_t stream);
/* Queues input for a process and writes what it takes now. */
void input_push(struct input *in, const uint8_t *p, size_t n, bool close_after);
void input_flush(struct input *in);

/* ------------------------------------------------------------- container.c */

void handle_create(uint32_t id, struct hcr_create_container *req);
void handle_start(uint32_t id, struct hcr_start_container *req);
void handle_exec(uint32_t id, struct hcr_exec *req);
/* Reaps children; updates containers and execs that ended. */
void reap_children(void);
void container_remove(struct container *c);
void container_info(const struct container *c, struct hcr_container_info *out);
/*
 * Signals a container's main process. A namespace init neither catching nor
 * blocking `sig` would lose it, so it is held for up to hold_ms instead.
 * 0, or -1 with errno.
 */
int container_signal(struct container *c, int sig, uint32_t hold_ms);
/* Sends held signals their processes can now take; ms until the next check is due, or -1 when none is held. */
int deliver_held_signals(void);
/* Kills every container and exec (shutdown). */
void kill_everything(void);

/* ---------------------------------------------------------------- cgroup.c */

/* Enables the controllers and makes CGROUP_PODS. */
void cgroup_init(void);
/* Makes (or finds) a container's cgroup and applies limits; 0 or -1 with *err. */
int cgroup_create(const char *path, const struct hcr_resources *r, const char **err);
int cgroup_apply(const char *path, const struct hcr_resources *r, const char **err);
void cgroup_remove(const char *path);
/* SIGKILLs every process left in the cgroup (a container's main process ended). */
void cgroup_kill(const char *path);
bool cgroup_oom_killed(const char *path);
void cgroup_stats(const char *path, struct hcr_stats_reply *out);

/* --------------------------------------------------------------- seccomp.c */

/* Builds and loads a process's seccomp filter (none for default action NONE); 0, or -1 with a message. */
int install_seccomp(const struct hcr_seccomp *s, char *err, size_t errlen);

/* ------------------------------------------------------------------- net.c */

/* Configures interfaces, routes and sysctls; 0 or -1 with a message in err. */
int net_setup(const struct hcr_setup_pod *req, char *err, size_t errlen);
/* Byte counters of the interfaces configured by net_setup. */
void net_counters(uint64_t *rx, uint64_t *tx);
/* Brings up lo. */
void net_loopback(void);

/* ----------------------------------------------------------------- ports.c */

struct port_conn {
	struct port_conn *next;
	uint32_t id;
	int fd;
	struct buf pending; /* host data the socket did not take yet */
	bool host_closed;   /* the host sent PortClose: shut our write side when drained */
	bool guest_closed;  /* the socket hit EOF; we sent PortClose */
};
extern struct port_conn *ports;

void handle_port_forward(uint32_t id, struct hcr_port_forward *req);
void handle_port_data(struct hcr_port_data *msg);
void handle_port_close(struct hcr_port_close *msg);
/* Reads from a port socket; frees the connection when both sides are done. */
void port_readable(struct port_conn *p);
void port_writable(struct port_conn *p);
void port_free_all(void);

#endif
