import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { emptyResources, type SandboxSpec } from '../src/types.js';
import {
  addNetworkList,
  type Attachment,
  capabilityArgs,
  checkNetworkList,
  delNetworkList,
  formatCniArgs,
  kubernetesCniArgs,
  parseCniError,
  pluginEnv,
  requestConfig,
} from '../src/network/cni.js';
import { type NetworkConfList, parseNetworkConfig } from '../src/network/config.js';
import { readCache } from '../src/network/cache.js';
import { CniNetworkManager } from '../src/network/manager.js';

// Fake plugins are small Node scripts: they log what they were given and act
// as `behaviour.json` says, so the runtime side of the protocol is observable.
const FAKE_PLUGIN = `#!${process.execPath}
const fs = require('node:fs');
const path = require('node:path');
const name = path.basename(process.argv[1]);
const dir = path.dirname(process.argv[1]);
const input = fs.readFileSync(0, 'utf8');
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('CNI_')));
fs.appendFileSync(path.join(dir, 'calls.jsonl'), JSON.stringify({ plugin: name, env, conf: JSON.parse(input) }) + '\\n');
const all = JSON.parse(fs.readFileSync(path.join(dir, 'behaviour.json'), 'utf8'));
const b = all[name + ':' + process.env.CNI_COMMAND] || {};
if (b.stderr) process.stderr.write(b.stderr);
if (b.sleepMs) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, b.sleepMs);
if (b.stdout !== undefined) process.stdout.write(typeof b.stdout === 'string' ? b.stdout : JSON.stringify(b.stdout));
else if (process.env.CNI_COMMAND === 'ADD') {
  const conf = JSON.parse(input);
  process.stdout.write(JSON.stringify(conf.prevResult || { cniVersion: conf.cniVersion }));
}
process.exit(b.exit || 0);
`;

interface Call {
  plugin: string;
  env: Record<string, string>;
  conf: Record<string, unknown>;
}

const root = mkdtempSync(join(tmpdir(), 'hcr-cni-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const binDir = join(root, 'bin');
mkdirSync(binDir);
for (const p of ['bridge', 'host-local', 'tuning', 'portmap'])
  writeFileSync(join(binDir, p), FAKE_PLUGIN, { mode: 0o755 });

function behave(b: Record<string, unknown>): void {
  writeFileSync(join(binDir, 'behaviour.json'), JSON.stringify(b));
}
function calls(): Call[] {
  const file = join(binDir, 'calls.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Call);
}
beforeEach(() => {
  rmSync(join(binDir, 'calls.jsonl'), { force: true });
  behave({});
});

const list = (over: Record<string, unknown> = {}): NetworkConfList =>
  parseNetworkConfig(
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'testnet',
      plugins: [
        { type: 'bridge', bridge: 'br0', ipam: { type: 'host-local', subnet: '10.1.0.0/24' } },
        { type: 'tuning', name: 'ignored', cniVersion: '0.1.0', capabilities: { mac: true, dns: false } },
        { type: 'portmap', capabilities: { portMappings: true, dns: true } },
      ],
      ...over,
    }),
    '/conf/10-test.conflist',
  )._unsafeUnwrap();

const spec = (over: Partial<SandboxSpec> = {}): SandboxSpec => ({
  metadata: { name: 'web', uid: 'uid-1', namespace: 'shop', attempt: 0 },
  hostname: 'web',
  logDirectory: '',
  dns: { servers: ['10.96.0.10'], searches: ['shop.svc.cluster.local'], options: ['ndots:5'] },
  portMappings: [
    { protocol: 'tcp', containerPort: 80, hostPort: 8080, hostIp: '' },
    { protocol: 'udp', containerPort: 53, hostPort: 0, hostIp: '' },
    { protocol: 'sctp', containerPort: 9, hostPort: 9999, hostIp: '127.0.0.1' },
  ],
  labels: {},
  annotations: {},
  runtimeHandler: '',
  linux: {
    cgroupParent: '',
    sysctls: {},
    namespaces: { network: 'pod', pid: 'pod', ipc: 'pod', targetId: '' },
    privileged: false,
    runAsUser: null,
    runAsGroup: null,
    supplementalGroups: [],
    readonlyRootfs: false,
    seccomp: null,
    overhead: emptyResources,
    resources: null,
  },
  ...over,
});

const attachment = (over: Partial<Attachment> = {}): Attachment => ({
  containerId: 'sb1',
  ifName: 'eth0',
  netnsPath: '/run/hcr/netns/sb1',
  args: kubernetesCniArgs('sb1', spec()),
  capabilityArgs: capabilityArgs(spec()),
  ...over,
});

const exec = { binDirs: [join(root, 'empty'), binDir], timeoutMs: 10_000 };

describe('CNI parameters', () => {
  it('passes Kubernetes pod identity in CNI_ARGS', () => {
    expect(formatCniArgs(kubernetesCniArgs('sb1', spec()))._unsafeUnwrap()).toBe(
      'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=uid-1;IgnoreUnknown=1',
    );
    const bad = formatCniArgs([['K8S_POD_NAME', 'a;b=c']])._unsafeUnwrapErr();
    expect(bad.code).toBe('InvalidArgument');
    expect(bad.message).toContain('a;b=c');
  });

  it('offers host port mappings (hostPort > 0, lowercase protocol) and DNS as capability arguments', () => {
    expect(capabilityArgs(spec())).toEqual({
      portMappings: [
        { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
        { hostPort: 9999, containerPort: 9, protocol: 'sctp', hostIP: '127.0.0.1' },
      ],
      dns: { servers: ['10.96.0.10'], searches: ['shop.svc.cluster.local'], options: ['ndots:5'] },
    });
    expect(capabilityArgs(spec({ dns: null, portMappings: [] }))).toEqual({});
  });

  it('derives each request config per spec: list name and version, declared capabilities only, no capabilities key', () => {
    const l = list();
    const caps: Record<string, unknown> = { ...capabilityArgs(spec()), mac: '02:00:00:00:00:01' };
    const tuning = requestConfig(l, l.plugins[1]!, caps, { cniVersion: '1.0.0' });
    expect(tuning).toEqual({
      type: 'tuning',
      name: 'testnet',
      cniVersion: '1.0.0',
      runtimeConfig: { mac: '02:00:00:00:00:01' },
      prevResult: { cniVersion: '1.0.0' },
    });
    const bridge = requestConfig(l, l.plugins[0]!, caps, null);
    expect(bridge).not.toHaveProperty('runtimeConfig');
    expect(bridge).not.toHaveProperty('prevResult');
    const portmap = requestConfig(l, l.plugins[2]!, caps, null);
    expect(portmap['runtimeConfig']).toEqual({ portMappings: caps['portMappings'], dns: caps['dns'] });
    expect(portmap).not.toHaveProperty('capabilities');
  });

  it('builds the plugin environment from ours, dropping stale CNI variables', () => {
    const env = pluginEnv('DEL', attachment({ netnsPath: null }), ['/a', '/b'], {
      PATH: '/custom',
      CNI_NETNS: '/stale',
      HOME: '/root',
    })._unsafeUnwrap();
    expect(env).toMatchObject({
      CNI_COMMAND: 'DEL',
      CNI_CONTAINERID: 'sb1',
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/a:/b',
      HOME: '/root',
    });
    expect(env['CNI_NETNS']).toBeUndefined();
    expect(env['PATH']?.split(':').slice(0, 2)).toEqual(['/custom', '/usr/local/sbin']);
    expect(env['PATH']).toContain('/usr/sbin');
  });

  it('reads CNI error results', () => {
    expect(parseCniError('{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"more"}')).toEqual({
      code: 7,
      msg: 'bad',
      details: 'more',
    });
    expect(parseCniError('{"code":11,"msg":"later"}')).toEqual({ code: 11, msg: 'later', details: '' });
    expect(parseCniError('panic: oops')).toBeNull();
    expect(parseCniError('{"ips":[]}')).toBeNull();
  });
});

describe('running a network list', () => {
  it('ADD runs the plugins in order, chaining each result into the next as prevResult', async () => {
    const r1 = { cniVersion: '1.0.0', ips: [{ address: '10.1.0.2/24' }] };
    const r3 = { ...r1, interfaces: [{ name: 'eth0', sandbox: '/run/hcr/netns/sb1' }] };
    behave({ 'bridge:ADD': { stdout: r1 }, 'portmap:ADD': { stdout: r3 } });
    const result = await addNetworkList(list(), attachment(), exec);
    expect(result._unsafeUnwrap()).toEqual(r3);
    const c = calls();
    expect(c.map((x) => x.plugin)).toEqual(['bridge', 'tuning', 'portmap']);
    expect(c[0]!.conf).not.toHaveProperty('prevResult');
    expect(c[1]!.conf['prevResult']).toEqual(r1);
    expect(c[2]!.conf['prevResult']).toEqual(r1);
    expect(c[2]!.conf['runtimeConfig']).toEqual(capabilityArgs(spec()));
    for (const x of c) {
      expect(x.env).toEqual({
        CNI_COMMAND: 'ADD',
        CNI_CONTAINERID: 'sb1',
        CNI_IFNAME: 'eth0',
        CNI_NETNS: '/run/hcr/netns/sb1',
        CNI_PATH: exec.binDirs.join(':'),
        CNI_ARGS:
          'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=uid-1;IgnoreUnknown=1',
      });
    }
  });

  it('ADD stops at the first failing plugin and reports its CNI error', async () => {
    behave({
      'tuning:ADD': { exit: 1, stdout: { cniVersion: '1.0.0', code: 7, msg: 'invalid sysctl', details: 'net.x' } },
    });
    const e = (await addNetworkList(list(), attachment(), exec))._unsafeUnwrapErr();
    expect(e.code).toBe('Internal');
    expect(e.message).toBe(
      'CNI ADD of network "testnet" failed in plugin "tuning": invalid sysctl: net.x (CNI error code 7)',
    );
    expect(calls().map((x) => x.plugin)).toEqual(['bridge', 'tuning']);
  });

  it('maps "try again later" to Unavailable, and unstructured failures to Internal with stderr', async () => {
    behave({ 'bridge:ADD': { exit: 1, stdout: { code: 11, msg: 'IPAM busy' } } });
    const later = (await addNetworkList(list(), attachment(), exec))._unsafeUnwrapErr();
    expect([later.code, later.message]).toEqual([
      'Unavailable',
      'CNI ADD of network "testnet" failed in plugin "bridge": IPAM busy (CNI error code 11)',
    ]);
    behave({ 'bridge:ADD': { exit: 2, stderr: 'panic: runtime error' } });
    const crash = (await addNetworkList(list(), attachment(), exec))._unsafeUnwrapErr();
    expect([crash.code, crash.message]).toEqual([
      'Internal',
      'CNI ADD of network "testnet" failed in plugin "bridge" (exit status 2): panic: runtime error',
    ]);
  });

  it('refuses an ADD whose plugin printed no JSON result', async () => {
    behave({ 'portmap:ADD': { stdout: 'ok' } });
    const e = (await addNetworkList(list(), attachment(), exec))._unsafeUnwrapErr();
    expect(e.message).toContain('plugin "portmap" succeeded but printed no JSON result: ok');
  });

  it('kills a plugin that overruns its timeout', async () => {
    behave({ 'bridge:ADD': { sleepMs: 5_000 } });
    const started = Date.now();
    const e = (await addNetworkList(list(), attachment(), { ...exec, timeoutMs: 300 }))._unsafeUnwrapErr();
    expect(e.code).toBe('DeadlineExceeded');
    expect(e.message).toContain('plugin "bridge": no answer within 300 ms');
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('reports a plugin missing from every directory as Unavailable', async () => {
    const l = list({ plugins: [{ type: 'nosuch' }] });
    const e = (await addNetworkList(l, attachment(), exec))._unsafeUnwrapErr();
    expect([e.code, e.message]).toEqual([
      'Unavailable',
      `CNI ADD of network "testnet": plugin "nosuch" not found in ${exec.binDirs.join(', ')}`,
    ]);
  });

  it('DEL runs in reverse order with the ADD result as prevResult (0.4.0 and later)', async () => {
    const added = { cniVersion: '1.0.0', ips: [{ address: '10.1.0.2/24' }] };
    await delNetworkList(list(), attachment({ netnsPath: null }), added, exec);
    const c = calls();
    expect(c.map((x) => [x.plugin, x.env['CNI_COMMAND'], x.conf['prevResult']])).toEqual([
      ['portmap', 'DEL', added],
      ['tuning', 'DEL', added],
      ['bridge', 'DEL', added],
    ]);
    expect(c[0]!.env).not.toHaveProperty('CNI_NETNS');
  });

  it('DEL of a pre-0.4.0 list passes no prevResult', async () => {
    await delNetworkList(list({ cniVersion: '0.3.1' }), attachment(), { cniVersion: '0.3.1' }, exec);
    expect(calls().map((x) => x.conf['prevResult'])).toEqual([undefined, undefined, undefined]);
  });

  it('CHECK runs in order against the ADD result, and not at all with disableCheck', async () => {
    const added = { cniVersion: '1.0.0', ips: [] };
    (await checkNetworkList(list(), attachment(), added, exec))._unsafeUnwrap();
    expect(calls().map((x) => [x.plugin, x.env['CNI_COMMAND'], x.conf['prevResult']])).toEqual([
      ['bridge', 'CHECK', added],
      ['tuning', 'CHECK', added],
      ['portmap', 'CHECK', added],
    ]);
    rmSync(join(binDir, 'calls.jsonl'));
    (await checkNetworkList(list({ disableCheck: true }), attachment(), added, exec))._unsafeUnwrap();
    expect(calls()).toEqual([]);
    const old = (await checkNetworkList(list({ cniVersion: '0.3.1' }), attachment(), added, exec))._unsafeUnwrapErr();
    expect(old.code).toBe('FailedPrecondition');
  });
});

describe('CniNetworkManager with fake plugins', () => {
  // The host's own namespace file stands in for a pod namespace: fake plugins never enter it.
  const liveNs = '/proc/self/ns/net';
  let n = 0;
  const setup = () => {
    const base = join(root, `mgr${n++}`);
    const confDir = join(base, 'conf');
    mkdirSync(confDir, { recursive: true });
    const writeConf = (plugins: unknown[], name = '10-test.conflist') =>
      writeFileSync(join(confDir, name), JSON.stringify({ cniVersion: '1.0.0', name: 'testnet', plugins }));
    writeConf([
      { type: 'bridge', ipam: { type: 'host-local' } },
      { type: 'portmap', capabilities: { portMappings: true } },
    ]);
    const cacheDir = join(base, 'cache');
    const m = new CniNetworkManager({ confDir, binDirs: [binDir], cacheDir, netnsDir: join(base, 'netns') });
    return { m, confDir, cacheDir, writeConf };
  };
  const added = {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:07', sandbox: liveNs }],
    ips: [{ interface: 0, address: '10.1.0.7/24', gateway: '10.1.0.1' }],
  };

  it('reports readiness: config present and every plugin found', () => {
    const { m, confDir, writeConf } = setup();
    expect(m.readiness()).toMatchObject({ ready: true });
    writeConf([{ type: 'bridge', ipam: { type: 'dhcp' } }, { type: 'firewall' }]);
    expect(m.readiness()).toEqual({
      ready: false,
      reason: 'NetworkPluginNotReady',
      message: `CNI network "testnet" (${confDir}/10-test.conflist) needs plugins not found in ${binDir}: dhcp, firewall`,
    });
    rmSync(join(confDir, '10-test.conflist'));
    writeFileSync(join(confDir, '05-bad.conflist'), '{');
    expect(m.readiness()).toMatchObject({
      ready: false,
      reason: 'NetworkPluginNotReady',
      message: expect.stringMatching(/^no usable CNI network config in .*05-bad\.conflist: invalid JSON/),
    });
  });

  it('attaches, records config and result, and detaches with the recorded config after the config changed', async () => {
    const { m, cacheDir, writeConf } = setup();
    behave({ 'bridge:ADD': { stdout: added } });
    const net = (await m.attach('sb1', liveNs, spec()))._unsafeUnwrap();
    expect(net).toMatchObject({ netnsPath: liveNs, ips: ['10.1.0.7'], gateway: '10.1.0.1' });
    const cached = await readCache(cacheDir, 'sb1');
    expect(cached).toMatchObject({ kind: 'found', entry: { result: added, netnsPath: liveNs } });

    // CHECK repeats the ADD's parameters and result.
    rmSync(join(binDir, 'calls.jsonl'));
    (await m.check('sb1', liveNs, spec(), net))._unsafeUnwrap();
    expect(calls().map((c) => [c.plugin, c.env['CNI_COMMAND'], c.conf['prevResult']])).toEqual([
      ['bridge', 'CHECK', added],
      ['portmap', 'CHECK', added],
    ]);

    writeConf([{ type: 'tuning' }]);
    rmSync(join(binDir, 'calls.jsonl'));
    (await m.detach('sb1', null, spec()))._unsafeUnwrap();
    expect(calls().map((c) => [c.plugin, c.env['CNI_COMMAND'], c.env['CNI_NETNS'], c.conf['prevResult']])).toEqual([
      ['portmap', 'DEL', liveNs, added],
      ['bridge', 'DEL', liveNs, added],
    ]);
    expect(await readCache(cacheDir, 'sb1')).toEqual({ kind: 'absent' });
  });

  it('detaches without a record using the current config, without CNI_NETNS once the namespace is gone', async () => {
    const { m } = setup();
    (await m.detach('sb2', '/run/hcr/netns/gone', spec()))._unsafeUnwrap();
    (await m.detach('sb2', null, spec()))._unsafeUnwrap();
    const c = calls();
    expect(
      c.map((x) => [x.plugin, x.env['CNI_COMMAND'], x.env['CNI_NETNS'] ?? null, x.conf['prevResult'] ?? null]),
    ).toEqual([
      ['portmap', 'DEL', null, null],
      ['bridge', 'DEL', null, null],
      ['portmap', 'DEL', null, null],
      ['bridge', 'DEL', null, null],
    ]);
    expect(c[0]!.env['CNI_ARGS']).toContain('K8S_POD_INFRA_CONTAINER_ID=sb2');
  });

  it("hands the caller's last network to DEL as prevResult when the record is lost", async () => {
    const { m } = setup();
    const last = { netnsPath: liveNs, ips: ['10.1.0.7'], interfaces: [], gateway: null, cniResult: added };
    (await m.detach('sb9', null, spec(), last))._unsafeUnwrap();
    expect(calls().map((c) => [c.plugin, c.conf['prevResult']])).toEqual([
      ['portmap', added],
      ['bridge', added],
    ]);
  });

  it('succeeds at DEL with neither a record nor a config: nothing can have been added', async () => {
    const { m, confDir } = setup();
    rmSync(confDir, { recursive: true });
    (await m.detach('sb3', null, spec()))._unsafeUnwrap();
    expect(calls()).toEqual([]);
  });

  it('succeeds at DEL with no record while a plugin is missing: no ADD can have run', async () => {
    const { m, writeConf } = setup();
    writeConf([{ type: 'bridge', ipam: { type: 'host-local' } }, { type: 'not-installed' }]);
    expect((await m.attach('sb10', liveNs, spec()))._unsafeUnwrapErr().code).toBe('Unavailable');
    (await m.detach('sb10', liveNs, spec()))._unsafeUnwrap();
    expect(calls()).toEqual([]);
  });

  it('succeeds at DEL with no record for a pod whose identity CNI_ARGS cannot carry: no ADD can have run', async () => {
    const { m } = setup();
    const bad = { ...spec(), metadata: { ...spec().metadata, uid: 'u=1' } };
    expect((await m.attach('sb11', liveNs, bad))._unsafeUnwrapErr().code).toBe('InvalidArgument');
    (await m.detach('sb11', liveNs, bad))._unsafeUnwrap();
    expect(calls()).toEqual([]);
  });

  it('undoes a failed ADD with DEL and forgets it', async () => {
    const { m, cacheDir } = setup();
    behave({ 'bridge:ADD': { stdout: added }, 'portmap:ADD': { exit: 1, stdout: { code: 999, msg: 'no iptables' } } });
    const e = (await m.attach('sb4', liveNs, spec()))._unsafeUnwrapErr();
    expect(e.message).toContain('plugin "portmap": no iptables (CNI error code 999)');
    expect(calls().map((c) => [c.plugin, c.env['CNI_COMMAND']])).toEqual([
      ['bridge', 'ADD'],
      ['portmap', 'ADD'],
      ['portmap', 'DEL'],
      ['bridge', 'DEL'],
    ]);
    expect(await readCache(cacheDir, 'sb4')).toEqual({ kind: 'absent' });
  });

  it('keeps the record when the undo fails too, so a later DEL still knows the config', async () => {
    const { m, cacheDir, writeConf } = setup();
    behave({ 'bridge:ADD': { exit: 1, stdout: { code: 5, msg: 'io' } }, 'bridge:DEL': { exit: 1, stderr: 'busy' } });
    (await m.attach('sb5', liveNs, spec()))._unsafeUnwrapErr();
    expect(await readCache(cacheDir, 'sb5')).toMatchObject({ kind: 'found', entry: { result: null } });
    writeConf([{ type: 'tuning' }]);
    behave({});
    rmSync(join(binDir, 'calls.jsonl'));
    (await m.detach('sb5', liveNs, spec()))._unsafeUnwrap();
    expect(calls().map((c) => c.plugin)).toEqual(['portmap', 'bridge']);
  });

  it('undoes an earlier ADD before adding again', async () => {
    const { m } = setup();
    behave({ 'bridge:ADD': { stdout: added } });
    (await m.attach('sb6', liveNs, spec()))._unsafeUnwrap();
    rmSync(join(binDir, 'calls.jsonl'));
    (await m.attach('sb6', liveNs, spec()))._unsafeUnwrap();
    expect(calls().map((c) => `${c.plugin}:${c.env['CNI_COMMAND']}`)).toEqual([
      'portmap:DEL',
      'bridge:DEL',
      'bridge:ADD',
      'portmap:ADD',
    ]);
  });

  it('serialises operations on one sandbox', async () => {
    const { m } = setup();
    behave({ 'bridge:ADD': { stdout: added, sleepMs: 200 } });
    const attach = m.attach('sb7', liveNs, spec());
    const detach = m.detach('sb7', liveNs, spec());
    (await attach)._unsafeUnwrap();
    (await detach)._unsafeUnwrap();
    expect(calls().map((c) => `${c.plugin}:${c.env['CNI_COMMAND']}`)).toEqual([
      'bridge:ADD',
      'portmap:ADD',
      'portmap:DEL',
      'bridge:DEL',
    ]);
  });

  it('refuses what it cannot run before touching anything', async () => {
    const { m } = setup();
    const badId = (await m.attach('../x', liveNs, spec()))._unsafeUnwrapErr();
    expect([badId.code, badId.details.field]).toEqual(['InvalidArgument', 'sandboxId']);
    const noNs = (await m.attach('sb8', '/run/hcr/netns/absent', spec()))._unsafeUnwrapErr();
    expect([noNs.code, noNs.message]).toEqual([
      'FailedPrecondition',
      'network namespace /run/hcr/netns/absent does not exist',
    ]);
    const badSysctl = spec({ linux: { ...spec().linux, sysctls: { 'net.ipv4.bad name': '1' } } });
    expect((await m.attach('sb8', liveNs, badSysctl))._unsafeUnwrapErr().code).toBe('InvalidArgument');
    const badPort = (await m.connect(liveNs, 70_000))._unsafeUnwrapErr();
    expect(badPort.code).toBe('InvalidArgument');
    expect(calls()).toEqual([]);
  });

  it('refuses to remove a path outside its directory that is not a namespace', async () => {
    const { m, confDir } = setup();
    const e = (await m.removeNetns(join(confDir, '10-test.conflist')))._unsafeUnwrapErr();
    expect(e.code).toBe('InvalidArgument');
    expect(existsSync(join(confDir, '10-test.conflist'))).toBe(true);
  });
});
