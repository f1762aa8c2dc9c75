import { existsSync } from 'node:fs';
import type { ResultAsync } from '@hcr/core';
import { errAsync, errors, okAsync, type HcrError } from '@hcr/core';
import { run } from './run.js';

/** The TAP device the engine adds to every pod network namespace. */
export const TAP_NAME = 'hcrtap0';

/** A link as `ip -j link show` reports it. */
interface IpLink {
  readonly ifname: string;
  readonly address?: string;
  readonly mtu?: number;
}

/** Runs `argv` inside the network namespace at `netnsPath`. */
export function inNetns(netnsPath: string, argv: readonly string[]): ResultAsync<string, HcrError> {
  return run(['nsenter', `--net=${netnsPath}`, '--', ...argv]).map((o) => o.stdout);
}

/** MAC and MTU of `ifname` in the namespace (the CNI interface the guest NIC impersonates). */
export function linkInfo(netnsPath: string, ifname: string): ResultAsync<{ mac: string; mtu: number }, HcrError> {
  return inNetns(netnsPath, ['ip', '-j', 'link', 'show', 'dev', ifname]).andThen((out) => {
    const links = JSON.parse(out) as IpLink[];
    const link = links[0];
    if (link?.address === undefined) return errAsync(errors.internal(`${ifname} in ${netnsPath} has no MAC address`));
    return okAsync({ mac: link.address, mtu: link.mtu ?? 1500 });
  });
}

/**
 * Connects a TAP device to the pod's CNI interface the Kata way: each side's
 * ingress is redirected (tc mirred) to the other's egress, so frames pass
 * through untouched and the guest, carrying the CNI interface's MAC and IP,
 * is the pod on the pod network. QEMU opens the TAP by name later.
 */
export function connectTap(netnsPath: string, ifname: string, mtu: number): ResultAsync<void, HcrError> {
  const steps: string[][] = [
    ['ip', 'tuntap', 'add', 'dev', TAP_NAME, 'mode', 'tap'],
    ['ip', 'link', 'set', 'dev', TAP_NAME, 'mtu', String(mtu), 'up'],
    ['tc', 'qdisc', 'add', 'dev', ifname, 'ingress'],
    redirect(ifname, TAP_NAME),
    ['tc', 'qdisc', 'add', 'dev', TAP_NAME, 'ingress'],
    redirect(TAP_NAME, ifname),
  ];
  // Start from a clean slate: a half-made earlier attempt must not make this one fail.
  return disconnectTap(netnsPath, ifname)
    .andThen(() =>
      steps.reduce<ResultAsync<void, HcrError>>(
        (acc, argv) => acc.andThen(() => inNetns(netnsPath, argv).map(() => undefined)),
        okAsync(undefined),
      ),
    )
    .mapErr((e) => e.withContext(`connect ${TAP_NAME} to ${ifname} in ${netnsPath}`));
}

function redirect(from: string, to: string): string[] {
  return [
    'tc',
    'filter',
    'add',
    'dev',
    from,
    'parent',
    'ffff:',
    'protocol',
    'all',
    'u32',
    'match',
    'u32',
    '0',
    '0',
    'action',
    'mirred',
    'egress',
    'redirect',
    'dev',
    to,
  ];
}

/** Removes the TAP and the redirect on `ifname`; succeeds when either (or the namespace) is already gone. */
export function disconnectTap(netnsPath: string, ifname: string): ResultAsync<void, HcrError> {
  if (!existsSync(netnsPath)) return okAsync(undefined);
  const quiet = (argv: string[]) => inNetns(netnsPath, argv).orElse(() => okAsync(''));
  return quiet(['tc', 'qdisc', 'del', 'dev', ifname, 'ingress'])
    .andThen(() => quiet(['ip', 'link', 'del', 'dev', TAP_NAME]))
    .andThen(() => tapPresent(netnsPath))
    .andThen((present) =>
      present ? errAsync(errors.internal(`cannot delete ${TAP_NAME} in ${netnsPath}`)) : okAsync(undefined),
    );
}

/** Whether the namespace still holds the TAP device (a leak check). */
export function tapPresent(netnsPath: string): ResultAsync<boolean, HcrError> {
  if (!existsSync(netnsPath)) return okAsync(false);
  return inNetns(netnsPath, ['ip', '-j', 'link', 'show']).map((out) =>
    (JSON.parse(out) as IpLink[]).some((l) => l.ifname === TAP_NAME),
  );
}
