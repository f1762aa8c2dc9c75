/*
 * net.c - the guest side of the pod network: the NIC that carries the CNI
 * interface's MAC gets its addresses and routes (rtnetlink), and the pod's
 * net.* sysctls are applied.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

static char configured[8][IF_NAMESIZE];
static size_t nconfigured;

struct nlreq {
	struct nlmsghdr n;
	union {
		struct ifaddrmsg ifa;
		struct rtmsg rt;
	} u;
	char attrs[512];
};

static void add_attr(struct nlmsghdr *n, size_t cap, unsigned short type, const void *data, size_t len)
{
	size_t rtalen = RTA_LENGTH(len);
	if (NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(rtalen) > cap)
		return;
	struct rtattr *rta = (struct rtattr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));
	rta->rta_type = type;
	rta->rta_len = (unsigned short)rtalen;
	memcpy(RTA_DATA(rta), data, len);
	n->nlmsg_len = (uint32_t)(NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(rtalen));
}

/* Sends one request and returns 0 or the negative errno of the kernel's ack. */
static int rtnl(struct nlmsghdr *n)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -errno;
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
	n->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	n->nlmsg_seq = 1;
	if (sendto(fd, n, n->nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	char buf[4096];
	ssize_t len = recv(fd, buf, sizeof(buf), 0);
	int e = errno;
	close(fd);
	if (len < 0)
		return -e;
	for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)len); h = NLMSG_NEXT(h, len)) {
		if (h->nlmsg_type == NLMSG_ERROR)
			return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
	}
	return 0;
}

/* Parses "a.b.c.d/n" or "x::y/n"; returns the family or 0. */
static int parse_cidr(const char *cidr, unsigned char addr[16], unsigned *prefix)
{
	char tmp[128];
	snprintf(tmp, sizeof(tmp), "%s", cidr);
	char *slash = strchr(tmp, '/');
	int family = strchr(tmp, ':') != NULL ? AF_INET6 : AF_INET;
	unsigned max = family == AF_INET ? 32 : 128;
	*prefix = max;
	if (slash != NULL) {
		*slash = 0;
		char *end;
		unsigned long p = strtoul(slash + 1, &end, 10);
		if (*end != 0 || p > max)
			return 0;
		*prefix = (unsigned)p;
	}
	return inet_pton(family, tmp, addr) == 1 ? family : 0;
}

static int set_flags_up(const char *name, unsigned mtu)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	int rc = 0;
	if (mtu > 0) {
		ifr.ifr_mtu = (int)mtu;
		rc = ioctl(fd, SIOCSIFMTU, &ifr);
	}
	if (rc == 0)
		rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
	if (rc == 0) {
		ifr.ifr_flags |= IFF_UP;
		rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
	}
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

/* Gives a (down) NIC another MAC: a clone's NIC carries the template's until the pod's is set. */
static int set_mac(const char *name, const char *mac)
{
	unsigned b[6];
	char tail;
	if (sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6) {
		errno = EINVAL;
		return -1;
	}
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
	for (int i = 0; i < 6; i++)
		ifr.ifr_hwaddr.sa_data[i] = (char)b[i];
	int rc = ioctl(fd, SIOCSIFHWADDR, &ifr);
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

void net_loopback(void)
{
	if (set_flags_up("lo", 0) != 0)
		logmsg(HCR_LOG_LEVEL_WARN, "bring up lo: %s", strerror(errno));
}

/* Name of the interface whose MAC is `mac`, in name (IF_NAMESIZE). */
static bool iface_by_mac(const char *mac, char *name)
{
	DIR *d = opendir("/sys/class/net");
	if (d == NULL)
		return false;
	struct dirent *e;
	bool found = false;
	while (!found && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || strlen(e->d_name) >= IF_NAMESIZE)
			continue;
		char path[512], addr[64] = {0};
		snprintf(path, sizeof(path), "/sys/class/net/%s/address", e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, addr, sizeof(addr) - 1);
		close(fd);
		if (n > 0 && addr[n - 1] == '\n')
			addr[n - 1] = 0;
		if (strcasecmp(addr, mac) == 0) {
			snprintf(name, IF_NAMESIZE, "%s", e->d_name);
			found = true;
		}
	}
	closedir(d);
	return found;
}

static int add_address(unsigned ifindex, const char *cidr, char *err, size_t errlen)
{
	unsigned char addr[16];
	unsigned prefix;
	int family = parse_cidr(cidr, addr, &prefix);
	if (family == 0) {
		snprintf(err, errlen, "bad address %s", cidr);
		return -1;
	}
	struct nlreq req;
	memset(&req, 0, sizeof(req));
	req.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
	req.n.nlmsg_type = RTM_NEWADDR;
	req.n.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
	req.u.ifa.ifa_family = (unsigned char)family;
	req.u.ifa.ifa_prefixlen = (unsigned char)prefix;
	req.u.ifa.ifa_index = ifindex;
	size_t alen = family == AF_INET ? 4 : 16;
	add_attr(&req.n, sizeof(req), IFA_LOCAL, addr, alen);
	add_attr(&req.n, sizeof(req), IFA_ADDRESS, addr, alen);
	int rc = rtnl(&req.n);
	if (rc != 0 && rc != -EEXIST) {
		snprintf(err, errlen, "add address %s: %s", cidr, strerror(-rc));
		return -1;
	}
	return 0;
}

static int add_route(const struct hcr_route *r, unsigned oif, char *err, size_t errlen)
{
	unsigned char dst[16], gw[16];
	unsigned prefix, gprefix;
	int family = parse_cidr(r->destination, dst, &prefix);
	if (family == 0) {
		snprintf(err, errlen, "bad route destination %s", r->destination);
		return -1;
	}
	bool has_gw = r->gateway[0] != 0;
	if (has_gw && parse_cidr(r->gateway, gw, &gprefix) != family) {
		snprintf(err, errlen, "bad gateway %s for %s", r->gateway, r->destination);
		return -1;
	}
	struct nlreq req;
	memset(&req, 0, sizeof(req));
	req.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
	req.n.nlmsg_type = RTM_NEWROUTE;
	req.n.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
	req.u.rt.rtm_family = (unsigned char)family;
	req.u.rt.rtm_dst_len = (unsigned char)prefix;
	req.u.rt.rtm_table = RT_TABLE_MAIN;
	req.u.rt.rtm_protocol = RTPROT_BOOT;
	req.u.rt.rtm_scope = has_gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
	req.u.rt.rtm_type = RTN_UNICAST;
	size_t alen = family == AF_INET ? 4 : 16;
	if (prefix > 0)
		add_attr(&req.n, sizeof(req), RTA_DST, dst, alen);
	if (has_gw)
		add_attr(&req.n, sizeof(req), RTA_GATEWAY, gw, alen);
	else
		add_attr(&req.n, sizeof(req), RTA_OIF, &oif, sizeof(oif));
	int rc = rtnl(&req.n);
	if (rc != 0 && rc != -EEXIST) {
		snprintf(err, errlen, "add route %s via %s: %s", r->destination, has_gw ? r->gateway : "link",
			 strerror(-rc));
		return -1;
	}
	return 0;
}

static int apply_sysctl(const struct hcr_key_value *kv, char *err, size_t errlen)
{
	char path[512] = "/proc/sys/";
	size_t at = strlen(path);
	for (const char *k = kv->key; *k != 0; k++) {
		char ch = *k == '.' ? '/' : *k;
		if (at + 1 >= sizeof(path) || !(isalnum((unsigned char)ch) || ch == '/' || ch == '_' || ch == '-')) {
			snprintf(err, errlen, "bad sysctl name %s", kv->key);
			return -1;
		}
		path[at++] = ch;
	}
	path[at] = 0;
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	size_t n = strlen(kv->value);
	if (fd < 0 || write(fd, kv->value, n) != (ssize_t)n) {
		snprintf(err, errlen, "sysctl %s=%s: %s", kv->key, kv->value, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int net_setup(const struct hcr_setup_pod *req, char *err, size_t errlen)
{
	unsigned first = 0;
	for (size_t i = 0; i < req->sysctls_count; i++)
		if (apply_sysctl(&req->sysctls[i], err, errlen) != 0)
			return -1;
	nconfigured = 0;
	for (size_t i = 0; i < req->interfaces_count; i++) {
		const struct hcr_interface *iface = &req->interfaces[i];
		char name[IF_NAMESIZE];
		if (iface->guest_mac[0] != 0 && strcasecmp(iface->guest_mac, iface->mac) != 0 &&
		    iface_by_mac(iface->guest_mac, name) && set_mac(name, iface->mac) != 0) {
			snprintf(err, errlen, "set the MAC of %s to %s: %s", name, iface->mac, strerror(errno));
			return -1;
		}
		if (!iface_by_mac(iface->mac, name)) {
			snprintf(err, errlen, "no guest NIC has MAC %s", iface->mac);
			return -1;
		}
		if (set_flags_up(name, iface->mtu) != 0) {
			snprintf(err, errlen, "bring up %s: %s", name, strerror(errno));
			return -1;
		}
		unsigned idx = if_nametoindex(name);
		if (first == 0)
			first = idx;
		for (size_t k = 0; k < iface->addresses_count; k++)
			if (add_address(idx, iface->addresses[k], err, errlen) != 0)
				return -1;
		if (nconfigured < sizeof(configured) / sizeof(configured[0]))
			snprintf(configured[nconfigured++], IF_NAMESIZE, "%s", name);
	}
	/* On-link routes first: a gateway must be reachable before routes through it are added. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < req->routes_count; i++) {
			bool has_gw = req->routes[i].gateway[0] != 0;
			if (has_gw != (pass == 1))
				continue;
			if (first == 0) {
				snprintf(err, errlen, "routes given without an interface");
				return -1;
			}
			if (add_route(&req->routes[i], first, err, errlen) != 0)
				return -1;
		}
	}
	return 0;
}

void net_counters(uint64_t *rx, uint64_t *tx)
{
	*rx = *tx = 0;
	for (size_t i = 0; i < nconfigured; i++) {
		const char *names[] = {"rx_bytes", "tx_bytes"};
		uint64_t *out[] = {rx, tx};
		for (int k = 0; k < 2; k++) {
			char path[256], buf[64] = {0};
			snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/%s", configured[i], names[k]);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			ssize_t n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			if (n > 0)
				*out[k] += strtoull(buf, NULL, 10);
		}
	}
}
