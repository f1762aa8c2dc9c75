import { describe, expect, it } from 'vitest';
import { buildCmdline, compareVersions, prefixToNetmask, type CmdlineInput } from './cmdline.js';

const net = { ip: '10.88.0.5', prefixLength: 16, gateway: '10.88.0.1', dns: '' };
const input = (over: Partial<CmdlineInput>): CmdlineInput => ({
  type: 'linux',
  argv: [],
  env: [],
  network: net,
  hasInitrd: true,
  linuxTimingParams: [],
  version: '',
  appName: 'app',
  ...over,
});

describe('guest command lines', () => {
  it('linux: console, ip= in the kernel convention, env, rdinit and args', () => {
    const line = buildCmdline(
      input({ argv: ['/init', '8080'], env: ['A=1'], linuxTimingParams: ['tsc_early_khz=2000000'] }),
    );
    expect(line._unsafeUnwrap()).toBe(
      'console=ttyS0 panic=-1 tsc_early_khz=2000000 ip=10.88.0.5::10.88.0.1:255.255.0.0::eth0:off A=1 rdinit=/init -- 8080',
    );
    expect(buildCmdline(input({ argv: ['/sbin/app'], hasInitrd: false, network: null }))._unsafeUnwrap()).toBe(
      'console=ttyS0 panic=-1 init=/sbin/app',
    );
  });

  it('unikraft: app name, env.vars, netdev.ip=<ip>/<prefix>:<gw>[:<dns>], then -- and the args', () => {
    const line = buildCmdline(
      input({ type: 'unikraft', argv: ['exit=7'], env: ['K=V'], network: { ...net, dns: '10.96.0.10' } }),
    );
    expect(line._unsafeUnwrap()).toBe('app env.vars=[ K=V ] netdev.ip=10.88.0.5/16:10.88.0.1:10.96.0.10 -- exit=7');
  });

  it('unikraft before 0.16.1: the three ipv4 keys and no env', () => {
    const line = buildCmdline(input({ type: 'unikraft', version: '0.15.0', env: ['K=V'] }));
    expect(line._unsafeUnwrap()).toBe(
      'app netdev.ipv4_addr=10.88.0.5 netdev.ipv4_gw_addr=10.88.0.1 netdev.ipv4_subnet_mask=255.255.0.0 --',
    );
  });

  it('quotes words with whitespace where the guest parser honours quotes', () => {
    expect(
      buildCmdline(input({ argv: ['/init', 'hello World'], env: ['GREETING=a b'], network: null }))._unsafeUnwrap(),
    ).toBe('console=ttyS0 panic=-1 GREETING="a b" rdinit=/init -- "hello World"');
    expect(
      buildCmdline(input({ type: 'unikraft', argv: ['echo', 'hello World'], network: null }))._unsafeUnwrap(),
    ).toBe('app -- echo "hello World"');
  });

  it('refuses double quotes, whitespace for Solo5 guests, too many init env entries, and over-long lines', () => {
    expect(buildCmdline(input({ argv: ['say "hi"'] }))._unsafeUnwrapErr().message).toMatch(
      /"say \\"hi\\"" cannot be passed on a linux unikernel command line: it contains a double quote/,
    );
    expect(buildCmdline(input({ type: 'rumprun', argv: ['a b'] }))._unsafeUnwrapErr().message).toMatch(
      /"a b" cannot be passed on a rumprun unikernel command line: it contains whitespace/,
    );
    const env = Array.from({ length: 40 }, (_, i) => `V${i}=x`);
    expect(buildCmdline(input({ env }))._unsafeUnwrapErr().message).toMatch(/at most 28 environment variables/);
    expect(buildCmdline(input({ type: 'unikraft', argv: ['x'.repeat(3000)] }))._unsafeUnwrapErr().message).toMatch(
      /2048-byte limit/,
    );
  });

  it('netmasks and versions', () => {
    expect([0, 8, 16, 24, 31, 32].map(prefixToNetmask)).toEqual([
      '0.0.0.0',
      '255.0.0.0',
      '255.255.0.0',
      '255.255.255.0',
      '255.255.255.254',
      '255.255.255.255',
    ]);
    expect(compareVersions('0.16.1', [0, 16, 1])).toBe(0);
    expect(compareVersions('v0.17', [0, 16, 1])).toBeGreaterThan(0);
    expect(compareVersions('0.9.9', [0, 16, 1])).toBeLessThan(0);
  });
});
