import { errAsync, okAsync } from 'neverthrow';
import { describe, expect, it } from 'vitest';
import { ErrorCode, errors } from '../errors.js';
import {
  batchFailure,
  linkNameProblem,
  type NetnsToolRunner,
  TapPlumbing,
  existingTapLinkScript,
  tapLinkScript,
  tapRedirectScript,
} from './tap.js';

const NS = '/run/hcr/netns/pod';

const links = (extra: object[] = []) =>
  JSON.stringify([
    { ifname: 'lo', address: '00:00:00:00:00:00', mtu: 65536 },
    { ifname: 'eth0', address: '5e:23:d3:86:cc:aa', mtu: 1450 },
    ...extra,
  ]);

interface Call {
  readonly tool: 'ip' | 'tc';
  readonly args: readonly string[];
  readonly input?: string;
}

/** A fake host: answers `ip -j link show` with `listing`, fails the calls `fail` picks. */
function fakeHost(listing: () => string, fail: (c: Call) => string | null = () => null) {
  const calls: Call[] = [];
  const run: NetnsToolRunner = (netnsPath, tool, args, what, _timeoutMs, input) => {
    expect(netnsPath).toBe(NS);
    const call: Call = { tool, args, ...(input === undefined ? {} : { input }) };
    calls.push(call);
    const why = fail(call);
    if (why !== null) return errAsync(errors.internal(`${what}: nsenter failed (exit status 1): ${why}`));
    if (tool === 'ip' && args.join(' ') === '-j link show') return okAsync(listing());
    return okAsync('');
  };
  return { calls, plumbing: new TapPlumbing(run, () => Promise.resolve(true)) };
}

describe('TAP batch scripts', () => {
  it('makes the TAP with one ip script, replacing a leftover only when there is one', () => {
    expect(tapLinkScript('uk0123', 1450, false)).toBe(
      'tuntap add dev uk0123 mode tap\nlink set dev uk0123 mtu 1450 up\n',
    );
    expect(tapLinkScript('uk0123', 1500, true)).toBe(
      'link del dev uk0123\ntuntap add dev uk0123 mode tap\nlink set dev uk0123 mtu 1500 up\n',
    );
  });

  it('redirects both ways with one tc script that first empties the interface ingress', () => {
    expect(tapRedirectScript('hcrtap0', 'eth0').split('\n')).toEqual([
      'qdisc replace dev eth0 ingress',
      'filter del dev eth0 parent ffff:',
      'filter add dev eth0 parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev hcrtap0',
      'qdisc add dev hcrtap0 ingress',
      'filter add dev hcrtap0 parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev eth0',
      '',
    ]);
  });

  it('refuses names that could carry another command into a batch script', () => {
    for (const ok of ['eth0', 'hcrtap0', 'uk0123456789ab', 'net1.100', 'a-b_c@d'])
      expect(linkNameProblem(ok)).toBeNull();
    for (const bad of ['', 'x'.repeat(16), 'eth0\nlink del dev lo', 'a b', 'a#b', '"a"', 'a/b', 'a:1', '.', '..'])
      expect(linkNameProblem(bad)).toMatch(/not a usable interface name/);
  });

  it('names the script line a batch failed at', () => {
    const script = tapRedirectScript('t0', 'eth0');
    expect(batchFailure(script, 'Error: Exclusivity flag on.\nCommand failed -:4')).toBe(
      'Error: Exclusivity flag on.\nCommand failed -:4 (at "qdisc add dev t0 ingress")',
    );
    expect(batchFailure(script, 'killed')).toBe('killed');
    expect(batchFailure(script, 'Command failed -:99')).toBe('Command failed -:99');
  });
});

describe('TapPlumbing', () => {
  it('connects with three processes: read the links, one ip batch, one tc batch', async () => {
    const { calls, plumbing } = fakeHost(() => links());
    const c = await plumbing.connect(NS, { tapName: 'uk0', ifname: 'eth0' });
    expect(c._unsafeUnwrap()).toEqual({ tap: 'uk0', ifname: 'eth0', mac: '5e:23:d3:86:cc:aa', mtu: 1450 });
    expect(calls).toEqual([
      { tool: 'ip', args: ['-j', 'link', 'show'] },
      { tool: 'ip', args: ['-batch', '-'], input: tapLinkScript('uk0', 1450, false) },
      { tool: 'tc', args: ['-batch', '-'], input: tapRedirectScript('uk0', 'eth0') },
    ]);
  });

  it('replaces a TAP a crashed attempt left, and takes an explicit MTU', async () => {
    const { calls, plumbing } = fakeHost(() => links([{ ifname: 'uk0', address: '02:00:00:00:00:01', mtu: 1500 }]));
    const c = await plumbing.connect(NS, { tapName: 'uk0', ifname: 'eth0', mtu: 1400 });
    expect(c._unsafeUnwrap().mtu).toBe(1400);
    expect(calls[1]?.input).toBe(tapLinkScript('uk0', 1400, true));
  });

  it('sets up a TAP a monitor already holds instead of replacing it', async () => {
    const { calls, plumbing } = fakeHost(() => links([{ ifname: 'uk0', address: '02:00:00:00:00:01', mtu: 1500 }]));
    const c = await plumbing.connect(NS, { tapName: 'uk0', ifname: 'eth0', existingTap: true });
    expect(c._unsafeUnwrap()).toEqual({ tap: 'uk0', ifname: 'eth0', mac: '5e:23:d3:86:cc:aa', mtu: 1450 });
    expect(calls[1]?.input).toBe(existingTapLinkScript('uk0', 1450));
    expect(calls[2]?.input).toBe(tapRedirectScript('uk0', 'eth0'));
  });

  it('fails with the interface named when the pod has no such interface, and runs nothing else', async () => {
    const { calls, plumbing } = fakeHost(() => links());
    const e = (await plumbing.connect(NS, { tapName: 'uk0', ifname: 'net1' }))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.FailedPrecondition);
    expect(e.message).toBe(
      `connect TAP uk0 to net1 in ${NS}: the pod interface net1 is not in network namespace ${NS}`,
    );
    expect(calls).toHaveLength(1);
  });

  it('undoes a half-made connection and reports the step that failed', async () => {
    const { calls, plumbing } = fakeHost(
      () => links(),
      (c) =>
        c.tool === 'tc' && c.args[0] === '-batch' ? 'RTNETLINK answers: No such device\nCommand failed -:3' : null,
    );
    const e = (await plumbing.connect(NS, { tapName: 'uk0', ifname: 'eth0' }))._unsafeUnwrapErr();
    expect(e.message).toMatch(
      /^connect TAP uk0 to eth0 in \/run\/hcr\/netns\/pod: redirecting with tc: .*No such device/s,
    );
    expect(e.message).toContain('(at "filter add dev eth0 parent ffff: protocol all u32');
    expect(calls.slice(3).map((c) => `${c.tool} ${c.args.join(' ')}`)).toEqual([
      'ip tuntap del dev uk0 mode tap',
      'tc qdisc del dev eth0 ingress',
    ]);
  });

  it('refuses unusable names before running anything', async () => {
    const { calls, plumbing } = fakeHost(() => links());
    const e = (await plumbing.connect(NS, { tapName: 'x\nlink del dev eth0', ifname: 'eth0' }))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.InvalidArgument);
    expect((await plumbing.connect(NS, { tapName: 'eth0', ifname: 'eth0' }))._unsafeUnwrapErr().code).toBe(
      ErrorCode.InvalidArgument,
    );
    expect(calls).toEqual([]);
  });

  it('disconnects with two processes at once and ignores an interface that is already gone', async () => {
    const { calls, plumbing } = fakeHost(
      () => links(),
      (c) => (c.tool === 'tc' ? 'Cannot find device "eth0"' : null),
    );
    expect((await plumbing.disconnect(NS, { tapName: 'uk0', ifname: 'eth0' })).isOk()).toBe(true);
    expect(calls.map((c) => `${c.tool} ${c.args.join(' ')}`)).toEqual([
      'ip tuntap del dev uk0 mode tap',
      'tc qdisc del dev eth0 ingress',
    ]);
  });

  it('deletes a TAP a process still holds, and fails only if it is still there afterwards', async () => {
    let present = true;
    const held = fakeHost(
      () => links(present ? [{ ifname: 'uk0', address: '02:00:00:00:00:01', mtu: 1500 }] : []),
      (c) => {
        if (c.args[0] === 'tuntap') return 'ioctl(TUNSETIFF): Device or resource busy';
        if (c.args.join(' ') === 'link del dev uk0') present = false;
        return null;
      },
    );
    expect((await held.plumbing.disconnect(NS, { tapName: 'uk0', ifname: 'eth0' })).isOk()).toBe(true);
    expect(held.calls.map((c) => c.args.join(' '))).toContain('link del dev uk0');

    const stuck = fakeHost(
      () => links([{ ifname: 'uk0', address: '02:00:00:00:00:01', mtu: 1500 }]),
      (c) => (c.args[0] === 'tuntap' || c.args[0] === 'link' ? 'Operation not permitted' : null),
    );
    const e = (await stuck.plumbing.disconnect(NS, { tapName: 'uk0', ifname: 'eth0' }))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.Internal);
    expect(e.message).toMatch(
      /^disconnect TAP uk0 from eth0 in \/run\/hcr\/netns\/pod: cannot delete uk0: .*not permitted/,
    );
  });

  it('has nothing to undo when the namespace is gone', async () => {
    const calls: string[] = [];
    const plumbing = new TapPlumbing(
      (_ns, tool) => {
        calls.push(tool);
        return okAsync('');
      },
      () => Promise.resolve(false),
    );
    expect((await plumbing.disconnect(NS, { tapName: 'uk0', ifname: 'eth0' })).isOk()).toBe(true);
    expect(calls).toEqual([]);
  });
});
