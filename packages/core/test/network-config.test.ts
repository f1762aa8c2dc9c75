import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  decodeCacheEntry,
  encodeCacheEntry,
  readCache,
  removeCache,
  writeCache,
  type CniCacheEntry,
} from '../src/network/cache.js';
import {
  findPlugin,
  loadNetworkConfig,
  missingPlugins,
  parseNetworkConfig,
  pluginTypes,
  readNetworkConfigs,
} from '../src/network/config.js';
import { splitInterfaceSysctls, sysctlPath, validateSysctls } from '../src/network/sysctl.js';
import { networkSysctls } from '../src/network/types.js';

const root = mkdtempSync(join(tmpdir(), 'hcr-netconf-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
function confDir(files: Record<string, unknown>): string {
  const dir = join(root, `conf${n++}`);
  mkdirSync(dir);
  for (const [name, body] of Object.entries(files)) {
    writeFileSync(join(dir, name), typeof body === 'string' ? body : JSON.stringify(body));
  }
  return dir;
}

const bridgeList = (name: string) => ({
  cniVersion: '1.0.0',
  name,
  plugins: [
    { type: 'bridge', ipam: { type: 'host-local' } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
});

describe('network config selection', () => {
  it('takes the first usable file in lexical order, whatever its extension', () => {
    const dir = confDir({
      '20-b.conflist': bridgeList('b'),
      '10-a.conf': { cniVersion: '0.4.0', name: 'a', type: 'ptp' },
      '30-c.json': bridgeList('c'),
    });
    const { config, skipped } = loadNetworkConfig(dir);
    expect(skipped).toEqual([]);
    expect(config).toMatchObject({ name: 'a', cniVersion: '0.4.0', source: join(dir, '10-a.conf') });
    // A single .conf becomes a one-plugin list.
    expect(config?.plugins).toEqual([{ cniVersion: '0.4.0', name: 'a', type: 'ptp' }]);
  });

  it('passes over unusable files and says why', () => {
    const dir = confDir({
      '00-broken.conflist': '{ not json',
      '01-empty.conflist': { cniVersion: '1.0.0', name: 'e', plugins: [] },
      '02-badname.conflist': { ...bridgeList('x'), name: '-x' },
      '03-future.conflist': { ...bridgeList('f'), cniVersion: '9.0.0' },
      '04-notype.conflist': { cniVersion: '1.0.0', name: 'n', plugins: [{ bridge: 'x' }] },
      '05-ipam.conflist': { cniVersion: '1.0.0', name: 'i', plugins: [{ type: 'bridge', ipam: {} }] },
      '06-escape.conflist': { cniVersion: '1.0.0', name: 'i', plugins: [{ type: '../../bin/sh' }] },
      '10-good.conflist': bridgeList('good'),
      'README.md': 'ignored',
      '99-later-broken.conflist': '[',
    });
    const { config, skipped } = loadNetworkConfig(dir);
    expect(config?.name).toBe('good');
    expect(skipped.map((s) => [s.file.slice(dir.length + 1), s.reason])).toEqual([
      ['00-broken.conflist', expect.stringContaining('invalid JSON')],
      ['01-empty.conflist', 'no plugins in "plugins"'],
      ['02-badname.conflist', expect.stringContaining('"name"')],
      ['03-future.conflist', expect.stringContaining('unsupported CNI version 9.0.0')],
      ['04-notype.conflist', 'plugins[0] has no valid "type"'],
      ['05-ipam.conflist', expect.stringContaining('"ipam" without a valid "type"')],
      ['06-escape.conflist', 'plugins[0] has no valid "type"'],
    ]);
    // Every file is reported when the whole directory is read.
    expect(readNetworkConfigs(dir).skipped).toHaveLength(8);
  });

  it('reports nothing usable for an empty or missing directory', () => {
    expect(loadNetworkConfig(confDir({}))).toEqual({ config: null, skipped: [] });
    expect(loadNetworkConfig(join(root, 'nope'))).toEqual({ config: null, skipped: [] });
  });

  it('picks the highest supported version from cniVersion and cniVersions', () => {
    const r = parseNetworkConfig(
      JSON.stringify({ ...bridgeList('v'), cniVersion: '0.3.1', cniVersions: ['0.4.0', '1.0.0', '2.0.0'] }),
      'x.conflist',
    );
    expect(r._unsafeUnwrap().cniVersion).toBe('1.0.0');
  });

  it('accepts disableCheck as boolean or as the string of CNI 0.4', () => {
    const parse = (v: unknown) =>
      parseNetworkConfig(JSON.stringify({ ...bridgeList('d'), disableCheck: v }), 'x.conflist')._unsafeUnwrap()
        .disableCheck;
    expect([parse(true), parse('true'), parse(false), parse(undefined)]).toEqual([true, true, false, false]);
  });
});

describe('plugin lookup', () => {
  const a = join(root, 'bin-a');
  const b = join(root, 'bin-b');
  mkdirSync(a);
  mkdirSync(b);
  writeFileSync(join(a, 'bridge'), '#!/bin/sh\n', { mode: 0o755 });
  writeFileSync(join(a, 'portmap'), 'not executable', { mode: 0o644 });
  writeFileSync(join(b, 'portmap'), '#!/bin/sh\n', { mode: 0o755 });
  mkdirSync(join(a, 'host-local'));

  it('finds each binary in the first directory that has it executable', () => {
    expect(findPlugin('bridge', [a, b])).toBe(join(a, 'bridge'));
    expect(findPlugin('portmap', [a, b])).toBe(join(b, 'portmap'));
    expect(findPlugin('host-local', [a, b])).toBeNull();
    expect(findPlugin('../bin-a/bridge', [b])).toBeNull();
  });

  it('names every missing binary, IPAM plugins included', () => {
    const conf = parseNetworkConfig(JSON.stringify(bridgeList('m')), 'm.conflist')._unsafeUnwrap();
    expect(pluginTypes(conf)).toEqual(['bridge', 'host-local', 'portmap']);
    expect(missingPlugins(conf, [a, b])).toEqual(['host-local']);
    chmodSync(join(b, 'portmap'), 0o644);
    expect(missingPlugins(conf, [a, b])).toEqual(['host-local', 'portmap']);
  });
});

describe('sysctls', () => {
  it('maps dotted and slashed names to /proc/sys paths', () => {
    expect(sysctlPath('net.ipv4.ip_unprivileged_port_start')._unsafeUnwrap()).toBe(
      '/proc/sys/net/ipv4/ip_unprivileged_port_start',
    );
    // With slashes the dots belong to the name (a VLAN interface here).
    expect(sysctlPath('net/ipv4/conf/eth0.100/forwarding')._unsafeUnwrap()).toBe(
      '/proc/sys/net/ipv4/conf/eth0.100/forwarding',
    );
  });

  it('refuses names that are not sysctl names, naming them', () => {
    for (const bad of ['net', 'net..ipv4', 'net/./ipv4', 'net/../../etc/passwd', 'net.ipv4.a b', 'net/ipv4/']) {
      const e = sysctlPath(bad)._unsafeUnwrapErr();
      expect(e.code).toBe('InvalidArgument');
      expect(e.message).toContain(bad);
    }
  });

  it('refuses values that are empty or would write several lines', () => {
    expect(validateSysctls({ 'net.ipv4.ping_group_range': '0 2147483647' }).isOk()).toBe(true);
    expect(validateSysctls({ 'net.ipv4.ip_forward': '' })._unsafeUnwrapErr().code).toBe('InvalidArgument');
    expect(validateSysctls({ 'net.ipv4.ip_forward': '1\n0' })._unsafeUnwrapErr().message).toContain(
      'net.ipv4.ip_forward',
    );
  });

  it('keeps only network sysctls, in either spelling', () => {
    expect(
      networkSysctls({ 'kernel.shm_rmid_forced': '1', 'net.core.somaxconn': '1024', 'net/ipv4/ip_forward': '1' }),
    ).toEqual({ 'net.core.somaxconn': '1024', 'net/ipv4/ip_forward': '1' });
  });

  it('defers the sysctls of the pod interface until CNI has made it', () => {
    expect(
      splitInterfaceSysctls(
        {
          'net.ipv6.conf.default.disable_ipv6': '1',
          'net.ipv4.conf.eth0.rp_filter': '2',
          'net/ipv4/neigh/eth0/gc_stale_time': '30',
          'net.ipv4.conf.eth01.rp_filter': '2',
        },
        'eth0',
      ),
    ).toEqual({
      beforeAdd: { 'net.ipv6.conf.default.disable_ipv6': '1', 'net.ipv4.conf.eth01.rp_filter': '2' },
      afterAdd: { 'net.ipv4.conf.eth0.rp_filter': '2', 'net/ipv4/neigh/eth0/gc_stale_time': '30' },
    });
  });
});

describe('CNI attachment cache', () => {
  const config = parseNetworkConfig(JSON.stringify(bridgeList('c')), '/etc/cni/net.d/10-c.conflist')._unsafeUnwrap();
  const entry: CniCacheEntry = {
    sandboxId: 'abc123',
    ifName: 'eth0',
    netnsPath: '/run/hcr/netns/abc123',
    args: [
      ['K8S_POD_NAME', 'p'],
      ['IgnoreUnknown', '1'],
    ],
    capabilityArgs: { portMappings: [{ hostPort: 80, containerPort: 8080, protocol: 'tcp' }] },
    config,
    result: { cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24' }] },
  };

  it('round-trips an entry, config source included', () => {
    expect(decodeCacheEntry(encodeCacheEntry(entry))).toEqual({ kind: 'found', entry });
  });

  it('calls foreign or damaged records unreadable', () => {
    expect(decodeCacheEntry('{').kind).toBe('unreadable');
    expect(decodeCacheEntry('{"kind":"other"}')).toMatchObject({ kind: 'unreadable' });
    const text = encodeCacheEntry(entry).replace('"bridge"', '"../x"');
    expect(decodeCacheEntry(text)).toMatchObject({
      kind: 'unreadable',
      reason: expect.stringContaining('stored config'),
    });
  });

  it('writes, replaces, reads and removes a record', async () => {
    const dir = join(root, 'cache', 'nested');
    expect(await readCache(dir, 'abc123')).toEqual({ kind: 'absent' });
    await writeCache(dir, { ...entry, result: null });
    await writeCache(dir, entry);
    expect(await readCache(dir, 'abc123')).toEqual({ kind: 'found', entry });
    await removeCache(dir, 'abc123');
    await removeCache(dir, 'abc123');
    expect(await readCache(dir, 'abc123')).toEqual({ kind: 'absent' });
  });
});
