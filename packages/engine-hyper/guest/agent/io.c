/*
 * io.c - stdio of containers and execs.
 *
 * Container output is kept as offset-numbered records so that a host that
 * reconnects (HCR restarted) can say how far it wrote the CRI log and get the
 * rest, without gaps or duplicates as long as the agent still holds it.
 * Exec output is live only: an exec's streams die with the host connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

struct container *containers;
struct exec *execs;

struct container *container_find(const char *id)
{
	for (struct container *c = containers; c != NULL; c = c->next)
		if (strcmp(c->id, id) == 0)
			return c;
	return NULL;
}

void io_init(struct proc_io *io)
{
	io->out_fd = io->err_fd = io->tty_fd = -1;
	io->in.fd = -1;
	io->in.pending = (struct buf){0};
	io->in.close_after = false;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

void io_close(struct proc_io *io)
{
	/* With a TTY, out_fd, tty_fd and in.fd are separate dups of the master. */
	close_fd(&io->out_fd);
	close_fd(&io->err_fd);
	close_fd(&io->tty_fd);
	close_fd(&io->in.fd);
	buf_reset(&io->in.pending);
}

void output_append(struct container *c, uint32_t stream, const uint8_t *p, size_t n)
{
	struct output *o = &c->out;
	struct record *r = malloc(sizeof(*r) + n);
	if (r == NULL) {
		logmsg(HCR_LOG_LEVEL_ERROR, "out of memory buffering output of %s", c->id);
		return;
	}
	r->next = NULL;
	r->offset = o->end;
	r->time = now_ns();
	r->stream = stream;
	r->len = n;
	memcpy(r->data, p, n);
	if (o->tail != NULL)
		o->tail->next = r;
	else
		o->head = r;
	o->tail = r;
	o->end += n;
	o->bytes += n;
	while (o->bytes > LOG_KEEP_BYTES && o->head != o->tail) {
		struct record *old = o->head;
		if (old->offset + old->len > o->sent) {
			if (!o->warned_loss)
				logmsg(HCR_LOG_LEVEL_WARN, "output of %s overflowed while the host was away; oldest dropped",
				       c->id);
			o->warned_loss = true;
			o->sent = old->offset + old->len;
		}
		o->head = old->next;
		o->bytes -= old->len;
		free(old);
	}
}

void output_free(struct output *o)
{
	while (o->head != NULL) {
		struct record *next = o->head->next;
		free(o->head);
		o->head = next;
	}
	o->tail = NULL;
	o->bytes = 0;
}

void output_resume(struct output *o, uint64_t offset)
{
	uint64_t first = o->head != NULL ? o->head->offset : o->end;
	if (offset > o->end)
		offset = o->end;
	if (offset < first)
		offset = first;
	o->sent = offset;
	o->warned_loss = false;
}

/* Sends one container's unsent output; false when the queue to the host is full. */
static bool pump_one(struct container *c)
{
	struct output *o = &c->out;
	for (struct record *r = o->head; r != NULL; r = r->next) {
		if (r->offset + r->len <= o->sent)
			continue;
		while (o->sent < r->offset + r->len) {
			if (out_pending() >= OUT_HIGH)
				return false;
			size_t skip = (size_t)(o->sent - r->offset);
			size_t n = r->len - skip;
			if (n > CHUNK)
				n = CHUNK;
			struct hcr_output msg = {
			    .container_id = c->id,
			    .stream = r->stream,
			    .offset = o->sent,
			    .data = r->data + skip,
			    .data_len = n,
			    .time = r->time,
			};
			send_msg(HCR_MSG_OUTPUT, 0, &hcr_desc_output, &msg);
			o->sent += n;
		}
	}
	if (c->exit_pending && c->io.out_fd < 0 && c->io.err_fd < 0) {
		struct hcr_container_exited ev = {0};
		container_info(c, &ev.container);
		send_msg(HCR_MSG_CONTAINER_EXITED, 0, &hcr_desc_container_exited, &ev);
		c->exit_pending = false;
	}
	return true;
}

void output_pump(void)
{
	/*
	 * A new connection gets no output before its Hello: until then `sent` is
	 * where the previous host stopped reading, not where its log ends, and
	 * what the new host got from there would look like a gap to it.
	 */
	if (!host_connected || !host_greeted)
		return;
	for (struct container *c = containers; c != NULL; c = c->next)
		if (!pump_one(c))
			return;
}

/* Reads one chunk from fd; returns bytes read, 0 when nothing is there, -1 on EOF/error (fd closed). */
static ssize_t read_chunk(int *fd, uint8_t *buf, size_t cap)
{
	for (;;) {
		ssize_t n = read(*fd, buf, cap);
		if (n > 0)
			return n;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		/* EOF, or EIO from a PTY master whose slave side is gone. */
		close(*fd);
		*fd = -1;
		return -1;
	}
}

bool read_container_fd(struct container *c, int *fd, uint32_t stream)
{
	uint8_t tmp[CHUNK];
	ssize_t n = read_chunk(fd, tmp, sizeof(tmp));
	if (n > 0)
		output_append(c, stream, tmp, (size_t)n);
	return n >= 0;
}

bool read_exec_fd(struct exec *e, int *fd, uint32_t stream)
{
	uint8_t tmp[CHUNK];
	ssize_t n = read_chunk(fd, tmp, sizeof(tmp));
	if (n > 0) {
		struct hcr_exec_output msg = {.exec_id = e->id, .stream = stream, .data = tmp, .data_len = (size_t)n};
		send_msg(HCR_MSG_EXEC_OUTPUT, 0, &hcr_desc_exec_output, &msg);
	}
	return n >= 0;
}

void input_flush(struct input *in)
{
	while (in->fd >= 0 && in->pending.len > 0) {
		ssize_t n = write(in->fd, in->pending.data, in->pending.len);
		if (n > 0) {
			buf_consume(&in->pending, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		/* The reader is gone (EPIPE): nothing more will be taken. */
		buf_reset(&in->pending);
		in->close_after = true;
		break;
	}
	if (in->fd >= 0 && in->pending.len == 0 && in->close_after) {
		close(in->fd);
		in->fd = -1;
	}
}

void input_push(struct input *in, const uint8_t *p, size_t n, bool close_after)
{
	if (in->fd < 0)
		return;
	if (in->pending.len + n > (4u << 20)) {
		logmsg(HCR_LOG_LEVEL_WARN, "stdin backlog over 4 MiB; dropping %zu bytes", n);
	} else if (n > 0) {
		buf_append(&in->pending, p, n);
	}
	in->close_after |= close_after;
	input_flush(in);
}
