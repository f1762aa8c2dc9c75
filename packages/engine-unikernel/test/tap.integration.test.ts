/**
 * Core's TAP plumbing, which this engine (and hyper) use, on a real network
 * namespace: what a crashed attempt leaves is replaced rather than doubled,
 * and teardown is idempotent and complete.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { connectTapToPodInterface, disconnectTapFromPodInterface, ErrorCode } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tapName } from '../src/network.js';
import { createTestPod, destroyTestPod, podLinks, type TestPod } from './harness.js';

const run = promisify(execFile);

let pod: TestPod;

beforeAll(async () => {
  pod = await createTestPod(8);
});

afterAll(async () => {
  await destroyTestPod(pod);
});

async function inPod(argv: string[]): Promise<string> {
  return (await run('ip', ['netns', 'exec', pod.name, ...argv])).stdout;
}

const ingressFilters = async (dev: string) =>
  (await inPod(['tc', 'filter', 'show', 'dev', dev, 'parent', 'ffff:'])).match(
    /mirred \(Egress Redirect to device (\S+)\)/g,
  ) ?? [];

describe('TAP joined to the pod interface', () => {
  const tap = tapName('0123456789abcdef');
  const opts = { tapName: tap, ifname: 'eth0' };

  it('joins a TAP with eth0 MAC and MTU, both ways, and replaces a leftover instead of doubling it', async () => {
    await inPod(['ip', 'link', 'set', 'dev', 'eth0', 'mtu', '1400']);
    const eth0 = (JSON.parse(await inPod(['ip', '-j', 'link', 'show', 'dev', 'eth0'])) as { address: string }[])[0];

    const first = (await connectTapToPodInterface(pod.netnsPath, opts))._unsafeUnwrap();
    expect(first).toEqual({ tap, ifname: 'eth0', mac: eth0?.address, mtu: 1400 });
    // As after a crash between connect and launch: connect again.
    expect((await connectTapToPodInterface(pod.netnsPath, opts))._unsafeUnwrap()).toEqual(first);

    expect((await podLinks(pod)).filter((l) => l === tap)).toHaveLength(1);
    const link = (
      JSON.parse(await inPod(['ip', '-j', 'link', 'show', 'dev', tap])) as { mtu: number; flags: string[] }[]
    )[0];
    expect(link?.mtu).toBe(1400);
    expect(link?.flags).toContain('UP');
    expect(await ingressFilters('eth0')).toEqual([`mirred (Egress Redirect to device ${tap})`]);
    expect(await ingressFilters(tap)).toEqual(['mirred (Egress Redirect to device eth0)']);
  });

  it('removes the TAP and the redirect, and succeeds when they are gone already', async () => {
    (await disconnectTapFromPodInterface(pod.netnsPath, opts))._unsafeUnwrap();
    expect(await podLinks(pod)).not.toContain(tap);
    expect(await inPod(['tc', 'qdisc', 'show', 'dev', 'eth0', 'ingress'])).toBe('');
    (await disconnectTapFromPodInterface(pod.netnsPath, opts))._unsafeUnwrap();
    expect(await podLinks(pod)).not.toContain(tap);
  });

  it('fails naming a missing pod interface and leaves nothing behind', async () => {
    const e = (await connectTapToPodInterface(pod.netnsPath, { tapName: tap, ifname: 'net1' }))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.FailedPrecondition);
    expect(e.message).toContain('the pod interface net1 is not in network namespace');
    expect(await podLinks(pod)).not.toContain(tap);
  });
});
