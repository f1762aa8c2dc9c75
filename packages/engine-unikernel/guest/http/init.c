/*
 * init for the HCR `unikernel-http` test image: the only program in its
 * initrd, run as PID 1 by a stock Linux kernel.
 *
 * It does what a unikernel's library OS would do for its one application:
 * mounts /dev, /proc and /sys, loads the virtio network drivers the initrd
 * carries (listed in /lib/modules/load, in dependency order), configures
 * eth0 from the kernel's `ip=<ip>::<gw>:<mask>::eth0:off` parameter, then
 * serves HTTP on port 8080 (or the port given as its first argument) and
 * logs every request to the console. A power-button press (QMP
 * system_powerdown through ACPI) powers the VM off cleanly.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#define DEFAULT_PORT 8080
#define MAX_INPUTS 8

static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	ssize_t w = write(STDOUT_FILENO, buf, (size_t)n);
	(void)w;
}

static void power_off(const char *why)
{
	say("unikernel-http: %s; powering off", why);
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

static void setup_console(void)
{
	mkdir("/dev", 0755);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	int fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	mkdir("/proc", 0555);
	mount("proc", "/proc", "proc", 0, NULL);
	mkdir("/sys", 0555);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
}

/* Loads each module named in /lib/modules/load (one per line, in dependency order). */
static void load_modules(void)
{
	FILE *list = fopen("/lib/modules/load", "r");
	if (list == NULL) {
		say("unikernel-http: no /lib/modules/load: %s", strerror(errno));
		return;
	}
	char name[128];
	while (fgets(name, sizeof name, list) != NULL) {
		name[strcspn(name, "\r\n")] = '\0';
		if (name[0] == '\0')
			continue;
		char path[192];
		snprintf(path, sizeof path, "/lib/modules/%s.ko", name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			say("unikernel-http: open %s: %s", path, strerror(errno));
			continue;
		}
		if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)
			say("unikernel-http: load %s: %s", name, strerror(errno));
		close(fd);
	}
	fclose(list);
}

struct netconf {
	char ip[16], gw[16], mask[16], dev[IFNAMSIZ];
};

/* Parses `ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>` from /proc/cmdline. */
static int read_netconf(struct netconf *nc)
{
	char cmdline[4096];
	int fd = open("/proc/cmdline", O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
	close(fd);
	if (n <= 0)
		return -1;
	cmdline[n] = '\0';
	for (char *tok = strtok(cmdline, " \n"); tok != NULL; tok = strtok(NULL, " \n")) {
		if (strncmp(tok, "ip=", 3) != 0)
			continue;
		char *fields[7] = {0};
		char *p = tok + 3;
		for (int i = 0; i < 7 && p != NULL; i++) {
			fields[i] = p;
			p = strchr(p, ':');
			if (p != NULL)
				*p++ = '\0';
		}
		memset(nc, 0, sizeof *nc);
		snprintf(nc->ip, sizeof nc->ip, "%s", fields[0] ? fields[0] : "");
		snprintf(nc->gw, sizeof nc->gw, "%s", fields[2] ? fields[2] : "");
		snprintf(nc->mask, sizeof nc->mask, "%s", fields[3] ? fields[3] : "");
		snprintf(nc->dev, sizeof nc->dev, "%s", fields[5] && fields[5][0] ? fields[5] : "eth0");
		return nc->ip[0] != '\0' ? 0 : -1;
	}
	return -1;
}

static int set_addr(int s, unsigned long req, const char *dev, const char *addr)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	sin->sin_family = AF_INET;
	if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
		return errno = EINVAL, -1;
	return ioctl(s, req, &ifr);
}

static int link_up(int s, const char *dev)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
		return -1;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	return ioctl(s, SIOCSIFFLAGS, &ifr);
}

static void configure_network(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		say("unikernel-http: socket: %s", strerror(errno));
		return;
	}
	link_up(s, "lo");
	struct netconf nc;
	if (read_netconf(&nc) != 0) {
		say("unikernel-http: no ip= on the kernel command line; only loopback is configured");
		close(s);
		return;
	}
	/* The NIC appears once virtio_mmio has probed it; give it a few seconds. */
	for (int i = 0; i < 50 && if_nametoindex(nc.dev) == 0; i++)
		usleep(100 * 1000);
	if (set_addr(s, SIOCSIFADDR, nc.dev, nc.ip) != 0 ||
	    (nc.mask[0] && set_addr(s, SIOCSIFNETMASK, nc.dev, nc.mask) != 0) || link_up(s, nc.dev) != 0) {
		say("unikernel-http: configuring %s as %s/%s: %s", nc.dev, nc.ip, nc.mask, strerror(errno));
		close(s);
		return;
	}
	if (nc.gw[0] != '\0') {
		struct rtentry rt;
		memset(&rt, 0, sizeof rt);
		struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst;
		struct sockaddr_in *gw = (struct sockaddr_in *)&rt.rt_gateway;
		struct sockaddr_in *mask = (struct sockaddr_in *)&rt.rt_genmask;
		dst->sin_family = gw->sin_family = mask->sin_family = AF_INET;
		inet_pton(AF_INET, nc.gw, &gw->sin_addr);
		rt.rt_flags = RTF_UP | RTF_GATEWAY;
		rt.rt_dev = nc.dev;
		if (ioctl(s, SIOCADDRT, &rt) != 0)
			say("unikernel-http: default route via %s: %s", nc.gw, strerror(errno));
	}
	say("unikernel-http: %s is %s netmask %s gateway %s", nc.dev, nc.ip, nc.mask[0] ? nc.mask : "-",
	    nc.gw[0] ? nc.gw : "-");
	close(s);
}

/* Opens every input device that can report KEY_POWER (the ACPI power button). */
static int open_power_buttons(struct pollfd *fds, int max)
{
	int n = 0;
	for (int i = 0; i < 32 && n < max; i++) {
		char path[32];
		snprintf(path, sizeof path, "/dev/input/event%d", i);
		int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			continue;
		unsigned long keys[KEY_MAX / (8 * sizeof(unsigned long)) + 1];
		memset(keys, 0, sizeof keys);
		if (ioctl(fd, EVIOCGBIT(EV_KEY, sizeof keys), keys) >= 0 &&
		    (keys[KEY_POWER / (8 * sizeof(unsigned long))] >> (KEY_POWER % (8 * sizeof(unsigned long)))) & 1) {
			fds[n].fd = fd;
			fds[n].events = POLLIN;
			n++;
		} else {
			close(fd);
		}
	}
	return n;
}

static int power_pressed(int fd)
{
	struct input_event ev;
	while (read(fd, &ev, sizeof ev) == (ssize_t)sizeof ev)
		if (ev.type == EV_KEY && ev.code == KEY_POWER && ev.value == 1)
			return 1;
	return 0;
}

static void serve(int client, const struct sockaddr_in *peer)
{
	struct timeval tv = {.tv_sec = 5};
	setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	char req[2048];
	size_t len = 0;
	while (len < sizeof req - 1) {
		ssize_t n = read(client, req + len, sizeof req - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		req[len] = '\0';
		if (strstr(req, "\r\n\r\n") != NULL || strstr(req, "\n\n") != NULL)
			break;
	}
	req[len] = '\0';
	req[strcspn(req, "\r\n")] = '\0';
	static const char body[] = "hello from the HCR unikernel-http image\n";
	char resp[256];
	int n = snprintf(resp, sizeof resp,
			 "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 sizeof body - 1, body);
	ssize_t w = write(client, resp, (size_t)n);
	(void)w;
	char addr[INET_ADDRSTRLEN] = "?";
	inet_ntop(AF_INET, &peer->sin_addr, addr, sizeof addr);
	say("unikernel-http: %s \"%s\" 200", addr, req);
}

int main(int argc, char **argv)
{
	setup_console();
	say("unikernel-http: starting");
	load_modules();
	configure_network();

	int port = argc > 1 ? atoi(argv[1]) : DEFAULT_PORT;
	if (port <= 0 || port > 65535)
		port = DEFAULT_PORT;
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (ls < 0 || bind(ls, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(ls, 16) != 0)
		power_off("cannot listen");
	say("unikernel-http: listening on port %d", port);

	struct pollfd fds[1 + MAX_INPUTS];
	fds[0].fd = ls;
	fds[0].events = POLLIN;
	int nbuttons = open_power_buttons(fds + 1, MAX_INPUTS);
	for (;;) {
		if (poll(fds, (nfds_t)(1 + nbuttons), -1) < 0)
			continue;
		for (int i = 1; i <= nbuttons; i++)
			if ((fds[i].revents & POLLIN) && power_pressed(fds[i].fd))
				power_off("power button pressed");
		if (fds[0].revents & POLLIN) {
			struct sockaddr_in peer;
			socklen_t plen = sizeof peer;
			int c = accept4(ls, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
			if (c >= 0) {
				serve(c, &peer);
				close(c);
			}
		}
	}
}
