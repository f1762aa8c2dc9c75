/*
 * seccomp.c - a container process's seccomp filter, built with libseccomp
 * from the filter the host resolved out of the CRI profile (Seccomp in
 * protocol/agent.json) and loaded just before the process execs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"

/* libseccomp's action for a wire action; false for one it does not know. */
static bool action_of(uint32_t action, uint32_t errno_ret, uint32_t *out)
{
	switch (action) {
	case HCR_SECCOMP_ACTION_ALLOW:
		*out = SCMP_ACT_ALLOW;
		return true;
	case HCR_SECCOMP_ACTION_ERRNO:
		*out = SCMP_ACT_ERRNO(errno_ret);
		return true;
	case HCR_SECCOMP_ACTION_KILL_THREAD:
		*out = SCMP_ACT_KILL_THREAD;
		return true;
	case HCR_SECCOMP_ACTION_KILL_PROCESS:
		*out = SCMP_ACT_KILL_PROCESS;
		return true;
	case HCR_SECCOMP_ACTION_TRAP:
		*out = SCMP_ACT_TRAP;
		return true;
	case HCR_SECCOMP_ACTION_TRACE:
		*out = SCMP_ACT_TRACE(errno_ret);
		return true;
	case HCR_SECCOMP_ACTION_LOG:
		*out = SCMP_ACT_LOG;
		return true;
	default:
		return false;
	}
}

/* Adds one rule for syscall `nr`; conditions on the same argument become separate rules (either may match), as in runc. */
static int add_rule(scmp_filter_ctx ctx, uint32_t act, int nr, const struct hcr_seccomp_rule *r)
{
	struct scmp_arg_cmp cmp[6];
	size_t n = r->args_count;
	if (n > 6)
		return -EINVAL;
	bool repeated = false;
	for (size_t i = 0; i < n; i++) {
		const struct hcr_seccomp_arg *a = &r->args[i];
		if (a->index > 5 || a->op < HCR_SECCOMP_OP_NE || a->op > HCR_SECCOMP_OP_MASKED_EQ)
			return -EINVAL;
		cmp[i] = (struct scmp_arg_cmp){.arg = a->index,
					       .op = (enum scmp_compare)a->op,
					       .datum_a = a->value,
					       .datum_b = a->value_two};
		for (size_t j = 0; j < i; j++)
			repeated |= cmp[j].arg == cmp[i].arg;
	}
	if (!repeated)
		return seccomp_rule_add_array(ctx, act, nr, (unsigned)n, cmp);
	for (size_t i = 0; i < n; i++) {
		int rc = seccomp_rule_add_array(ctx, act, nr, 1, &cmp[i]);
		if (rc != 0)
			return rc;
	}
	return 0;
}

int install_seccomp(const struct hcr_seccomp *s, char *err, size_t errlen)
{
	if (s->default_action == HCR_SECCOMP_ACTION_NONE)
		return 0;
	uint32_t def;
	if (!action_of(s->default_action, s->default_errno_ret, &def)) {
		snprintf(err, errlen, "unknown default action %u", s->default_action);
		return -1;
	}
	scmp_filter_ctx ctx = seccomp_init(def);
	if (ctx == NULL) {
		snprintf(err, errlen, "seccomp_init failed");
		return -1;
	}
	int rc = 0;
	/* no_new_privs is the process spec's to set (setuid programs must work without it). */
	if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)) != 0) {
		snprintf(err, errlen, "clear SCMP_FLTATR_CTL_NNP: %s", strerror(-rc));
		goto out;
	}
	for (size_t i = 0; i < s->architectures_count; i++) {
		uint32_t arch = seccomp_arch_resolve_name(s->architectures[i]);
		if (arch == 0) {
			snprintf(err, errlen, "unknown architecture %s", s->architectures[i]);
			rc = -EINVAL;
			goto out;
		}
		rc = seccomp_arch_add(ctx, arch);
		if (rc != 0 && rc != -EEXIST) {
			snprintf(err, errlen, "add architecture %s: %s", s->architectures[i], strerror(-rc));
			goto out;
		}
		rc = 0;
	}
	for (size_t i = 0; i < s->rules_count; i++) {
		const struct hcr_seccomp_rule *r = &s->rules[i];
		uint32_t act;
		if (!action_of(r->action, r->errno_ret, &act)) {
			snprintf(err, errlen, "rule %zu: unknown action %u", i, r->action);
			rc = -EINVAL;
			goto out;
		}
		/* libseccomp refuses a rule that repeats the default action; it would change nothing. */
		if (act == def)
			continue;
		for (size_t k = 0; k < r->names_count; k++) {
			int nr = seccomp_syscall_resolve_name(r->names[k]);
			if (nr == __NR_SCMP_ERROR)
				continue; /* not a system call of this kernel's architectures */
			rc = add_rule(ctx, act, nr, r);
			if (rc != 0) {
				snprintf(err, errlen, "rule %zu (%s): %s", i, r->names[k], strerror(-rc));
				goto out;
			}
		}
	}
	rc = seccomp_load(ctx);
	if (rc != 0)
		snprintf(err, errlen, "load the filter: %s", strerror(-rc));
out:
	seccomp_release(ctx);
	return rc == 0 ? 0 : -1;
}
