/*
 * pause — the infra process of an HCR pod on the docker engine.
 *
 * It holds the pod's namespaces for the app containers that join it, reaps
 * the zombies re-parented to it when the pod shares one PID namespace, and
 * exits 0 on SIGTERM or SIGINT so that a pod stop is quick and clean.
 *
 * Docker cannot put a container into a network namespace given by path, so
 * with `--netns PATH` pause first moves itself into that namespace (the one
 * HCR made and ran CNI in); app containers that use `container:<pause>`
 * networking then join /proc/<pause pid>/ns/net, which is the pod's netns.
 *
 *   pause [--netns PATH]
 *   pause --version
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef HCR_PAUSE_VERSION
#define HCR_PAUSE_VERSION "1"
#endif

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) {
	(void)sig;
	stop_requested = 1;
}

/* SIGCHLD only interrupts sigsuspend; the main loop does the reaping. */
static void on_child(int sig) { (void)sig; }

static int join_netns(const char *path) {
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "pause: open %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (setns(fd, CLONE_NEWNET) != 0) {
		fprintf(stderr, "pause: setns %s: %s (needs CAP_SYS_ADMIN and a network namespace file)\n", path,
			strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static void reap(void) {
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(int argc, char **argv) {
	const char *netns = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--netns") == 0 && i + 1 < argc) {
			netns = argv[++i];
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("hcr-pause %s\n", HCR_PAUSE_VERSION);
			return 0;
		} else {
			fprintf(stderr, "pause: unknown argument %s\nusage: pause [--netns PATH] | --version\n", argv[i]);
			return 2;
		}
	}

	/* Block the signals we wait for, so none can slip in between the check and sigsuspend. */
	sigset_t blocked, waitmask;
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGTERM);
	sigaddset(&blocked, SIGINT);
	sigaddset(&blocked, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &blocked, &waitmask) != 0) {
		perror("pause: sigprocmask");
		return 1;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop;
	if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0) {
		perror("pause: sigaction");
		return 1;
	}
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP;
	if (sigaction(SIGCHLD, &sa, NULL) != 0) {
		perror("pause: sigaction");
		return 1;
	}

	if (netns != NULL && join_netns(netns) != 0)
		return 1;

	sigdelset(&waitmask, SIGTERM);
	sigdelset(&waitmask, SIGINT);
	sigdelset(&waitmask, SIGCHLD);
	while (!stop_requested) {
		reap();
		sigsuspend(&waitmask);
	}
	reap();
	return 0;
}
