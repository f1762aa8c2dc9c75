import { err, ok, type Result } from 'neverthrow';
import { errors, type HcrError } from './errors.js';

/** Linux capability names by number (linux/capability.h); every engine shares this one table. */
export const LINUX_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
] as const;

/** The capabilities a non-privileged container gets by default (Docker's and containerd's set). */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** Canonical `CAP_*` name for a CRI capability (`net_admin`, `CAP_NET_ADMIN`, …); unknown names are refused. */
export function capabilityName(
  raw: string,
  field = 'config.linux.security_context.capabilities',
): Result<string, HcrError> {
  const upper = raw.trim().toUpperCase();
  const name = upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
  return (LINUX_CAPABILITIES as readonly string[]).includes(name)
    ? ok(name)
    : err(errors.invalidArgument(`unknown capability ${JSON.stringify(raw)}`, field));
}

/**
 * A container's capability set under CRI rules: the defaults (or every
 * capability when `add` has `ALL`), emptied when `drop` has `ALL`, then the
 * named adds and drops; returned in kernel order.
 */
export function containerCapabilities(add: readonly string[], drop: readonly string[]): Result<string[], HcrError> {
  const isAll = (c: string) => c.trim().toUpperCase() === 'ALL';
  const caps = new Set<string>(add.some(isAll) ? LINUX_CAPABILITIES : DEFAULT_CAPABILITIES);
  if (drop.some(isAll)) caps.clear();
  for (const c of add.filter((x) => !isAll(x))) {
    const n = capabilityName(c);
    if (n.isErr()) return err(n.error);
    caps.add(n.value);
  }
  for (const c of drop.filter((x) => !isAll(x))) {
    const n = capabilityName(c);
    if (n.isErr()) return err(n.error);
    caps.delete(n.value);
  }
  return ok(LINUX_CAPABILITIES.filter((c) => caps.has(c)));
}
