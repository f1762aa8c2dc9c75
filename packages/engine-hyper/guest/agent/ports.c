/*
 * ports.c - port forwarding: each host connection becomes a TCP connection
 * to 127.0.0.1:port inside the guest (the pod's network namespace), relayed
 * as PortData frames both ways; PortClose is a half-close.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

struct port_conn *ports;

static struct port_conn *find(uint32_t id)
{
	for (struct port_conn *p = ports; p != NULL; p = p->next)
		if (p->id == id)
			return p;
	return NULL;
}

static void release(struct port_conn *p)
{
	for (struct port_conn **pp = &ports; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	close(p->fd);
	buf_reset(&p->pending);
	free(p);
}

static void send_close(uint32_t id, const char *error)
{
	struct hcr_port_close msg = {.conn_id = id, .error = (char *)error};
	send_msg(HCR_MSG_PORT_CLOSE, 0, &hcr_desc_port_close, &msg);
}

/* Frees the connection once neither side will send more and nothing is pending. */
static void maybe_release(struct port_conn *p)
{
	if (p->guest_closed && p->host_closed && p->pending.len == 0)
		release(p);
}

void handle_port_forward(uint32_t id, struct hcr_port_forward *req)
{
	if (req->port == 0 || req->port > 65535) {
		send_error(id, HCR_ERROR_CODE_INVALID_ARGUMENT, "port %u is out of range", req->port);
		return;
	}
	if (find(req->conn_id) != NULL) {
		send_error(id, HCR_ERROR_CODE_ALREADY_EXISTS, "port connection %u already exists", req->conn_id);
		return;
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		send_error(id, HCR_ERROR_CODE_INTERNAL, "socket: %s", strerror(errno));
		return;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)req->port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* Loopback connects complete (or are refused) at once. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		send_error(id, HCR_ERROR_CODE_FAILED_PRECONDITION, "connect to 127.0.0.1:%u in the pod: %s", req->port,
			   strerror(errno));
		close(fd);
		return;
	}
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	struct port_conn *p = calloc(1, sizeof(*p));
	if (p == NULL) {
		close(fd);
		send_error(id, HCR_ERROR_CODE_INTERNAL, "out of memory");
		return;
	}
	p->id = req->conn_id;
	p->fd = fd;
	p->next = ports;
	ports = p;
	send_empty(id);
}

void handle_port_data(struct hcr_port_data *msg)
{
	struct port_conn *p = find(msg->conn_id);
	if (p == NULL || p->host_closed)
		return;
	buf_append(&p->pending, msg->data, msg->data_len);
	port_writable(p);
}

void handle_port_close(struct hcr_port_close *msg)
{
	struct port_conn *p = find(msg->conn_id);
	if (p == NULL)
		return;
	if (msg->error[0] != 0) {
		release(p);
		return;
	}
	p->host_closed = true;
	if (p->pending.len == 0)
		shutdown(p->fd, SHUT_WR);
	maybe_release(p);
}

void port_writable(struct port_conn *p)
{
	while (p->pending.len > 0) {
		ssize_t n = send(p->fd, p->pending.data, p->pending.len, MSG_NOSIGNAL);
		if (n > 0) {
			buf_consume(&p->pending, (size_t)n);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		send_close(p->id, strerror(errno));
		release(p);
		return;
	}
	if (p->host_closed) {
		shutdown(p->fd, SHUT_WR);
		maybe_release(p);
	}
}

void port_readable(struct port_conn *p)
{
	uint8_t tmp[CHUNK];
	ssize_t n = recv(p->fd, tmp, sizeof(tmp), 0);
	if (n > 0) {
		struct hcr_port_data msg = {.conn_id = p->id, .data = tmp, .data_len = (size_t)n};
		send_msg(HCR_MSG_PORT_DATA, 0, &hcr_desc_port_data, &msg);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		send_close(p->id, strerror(errno));
		release(p);
		return;
	}
	send_close(p->id, "");
	p->guest_closed = true;
	maybe_release(p);
}

void port_free_all(void)
{
	while (ports != NULL) {
		send_close(ports->id, "the pod is shutting down");
		release(ports);
	}
}
