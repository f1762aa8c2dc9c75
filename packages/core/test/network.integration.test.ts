import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CniNetworkManager, networkLeaks } from '../src/network/index.js';
import { emptyResources, type PodNetwork, type SandboxSpec } from '../src/types.js';

// Real Debian CNI plugins on a test-only bridge and subnet. Traffic goes only
// between the namespaces this file creates, and to loopback.
const BRIDGE = 'hcrtest0';
const SUBNET_PREFIX = '10.99.0.';
const PLUGIN_DIR = '/usr/lib/cni';

const base = mkdtempSync('/tmp/hcr-net-it-');
const confDir = join(base, 'conf');
const dataDir = join(base, 'ipam');
const netnsDir = join(base, 'netns');
const cacheDir = join(base, 'cache');
const options = { confDir, netnsDir, cacheDir, binDirs: [PLUGIN_DIR] };
const ipDir = join(dataDir, 'hcrtest');

function run(file: string, args: string[]): string {
  return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function inNs(ns: string, args: string[]): string {
  return run('nsenter', [`--net=${ns}`, '--', ...args]);
}
function bridgePorts(): string[] {
  if (!run('ip', ['-o', 'link']).includes(`${BRIDGE}:`)) return [];
  return run('ip', ['-o', 'link', 'show', 'master', BRIDGE])
    .split('\n')
    .filter((l) => l.trim() !== '');
}
function allocations(): string[] {
  return existsSync(ipDir) ? readdirSync(ipDir).filter((n) => n.startsWith(SUBNET_PREFIX)) : [];
}
/** Rules the firewall plugin holds for an address. */
function firewallRules(ip: string): string[] {
  return run('iptables', ['-S', 'CNI-FORWARD'])
    .split('\n')
    .filter((l) => l.includes(`${ip}/32`));
}
function hostPortRules(port: number): string[] {
  return run('iptables', ['-t', 'nat', '-S'])
    .split('\n')
    .filter((l) => l.includes(`--dport ${port} `) && l.includes('DNAT'));
}
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

const spec = (name: string, over: Partial<SandboxSpec['linux']> = {}, ports: SandboxSpec['portMappings'] = []) =>
  ({
    metadata: { name, uid: `uid-${name}`, namespace: 'hcr-it', attempt: 0 },
    hostname: name,
    logDirectory: '',
    dns: null,
    portMappings: ports,
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
      ...over,
    },
  }) satisfies SandboxSpec;

async function readReply(stream: Duplex): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

describe('CniNetworkManager on real CNI plugins', () => {
  const m = new CniNetworkManager({ ...options, pluginTimeoutMs: 30_000 });
  const listeners: ChildProcess[] = [];

  beforeAll(() => {
    // A bridge left by an interrupted run would carry stale addresses.
    if (run('ip', ['-o', 'link']).includes(`${BRIDGE}:`)) run('ip', ['link', 'del', BRIDGE]);
    mkdirSync(confDir, { recursive: true });
    writeFileSync(
      join(confDir, '10-hcrtest.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'hcrtest',
        plugins: [
          {
            type: 'bridge',
            bridge: BRIDGE,
            isGateway: true,
            ipMasq: false,
            ipam: {
              type: 'host-local',
              dataDir,
              // No routes: pods reach each other on the bridge's link, and nothing else.
              ranges: [[{ subnet: `${SUBNET_PREFIX}0/24` }]],
            },
          },
          { type: 'portmap', capabilities: { portMappings: true } },
          // dockerd sets the FORWARD policy to DROP; this admits the pods' traffic.
          { type: 'firewall' },
        ],
      }),
    );
  });

  afterAll(async () => {
    for (const l of listeners) l.kill('SIGKILL');
    for (const ns of (await m.listNetns()).unwrapOr([])) {
      await m.detach(ns.slice(netnsDir.length + 1), ns, spec('cleanup'));
      await m.removeNetns(ns);
    }
    if (run('ip', ['-o', 'link']).includes(`${BRIDGE}:`)) run('ip', ['link', 'del', BRIDGE]);
    if (mountsUnder(netnsDir).length > 0) run('umount', [netnsDir]);
    rmSync(base, { recursive: true, force: true });
  });

  it('is ready with the test conflist and the Debian plugins', () => {
    expect(m.readiness()).toMatchObject({ ready: true });
    const blind = new CniNetworkManager({ ...options, binDirs: [join(base, 'no-plugins')] });
    expect(blind.readiness()).toMatchObject({
      ready: false,
      reason: 'NetworkPluginNotReady',
      message: expect.stringContaining('bridge, host-local, portmap, firewall'),
    });
  });

  it('creates namespaces idempotently, with loopback up, replacing a stale file', async () => {
    const a = (await m.createNetns('idem'))._unsafeUnwrap();
    expect(a).toBe(join(netnsDir, 'idem'));
    expect((await m.createNetns('idem'))._unsafeUnwrap()).toBe(a);
    expect(mountsUnder(a)).toHaveLength(1);
    expect(inNs(a, ['ip', '-o', 'link', 'show', 'lo'])).toContain('UP');

    writeFileSync(join(netnsDir, 'stale'), '');
    const stale = (await m.createNetns('stale'))._unsafeUnwrap();
    expect(mountsUnder(stale)).toHaveLength(1);
    expect((await m.listNetns())._unsafeUnwrap()).toEqual(expect.arrayContaining([a, stale]));

    for (const p of [a, stale]) {
      (await m.removeNetns(p))._unsafeUnwrap();
      (await m.removeNetns(p))._unsafeUnwrap();
    }
    expect(mountsUnder(netnsDir)).toEqual([netnsDir]);
    expect((await m.listNetns())._unsafeUnwrap()).toEqual([]);
  });

  let ns1 = '';
  let ns2 = '';
  let net1: PodNetwork;
  let net2: PodNetwork;
  const spec1 = spec(
    'one',
    { sysctls: { 'net.ipv4.ping_group_range': '0 2147483647', 'net.ipv4.conf.eth0.arp_announce': '2' } },
    [{ protocol: 'tcp', containerPort: 8080, hostPort: 18080, hostIp: '127.0.0.1' }],
  );
  const spec2 = spec('two');

  it('attaches two pods: addresses from the subnet, sysctls applied, IP reservations recorded', async () => {
    ns1 = (await m.createNetns('pod-one'))._unsafeUnwrap();
    ns2 = (await m.createNetns('pod-two'))._unsafeUnwrap();
    net1 = (await m.attach('pod-one', ns1, spec1))._unsafeUnwrap();
    net2 = (await m.attach('pod-two', ns2, spec2))._unsafeUnwrap();
    for (const net of [net1, net2]) {
      expect(net.ips).toHaveLength(1);
      expect(net.ips[0]!.startsWith(SUBNET_PREFIX)).toBe(true);
      expect(net.gateway).toBe(`${SUBNET_PREFIX}1`);
      expect(net.interfaces).toEqual([
        { name: 'eth0', mac: expect.stringMatching(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/), addresses: [`${net.ips[0]}/24`] },
      ]);
    }
    expect(net1.ips[0]).not.toBe(net2.ips[0]);
    expect(inNs(ns1, ['ip', '-o', '-4', 'addr', 'show', 'eth0'])).toContain(`${net1.ips[0]}/24`);
    expect(inNs(ns1, ['cat', '/proc/sys/net/ipv4/ping_group_range']).split(/\s+/).slice(0, 2)).toEqual([
      '0',
      '2147483647',
    ]);
    // Set after ADD, when eth0 existed.
    expect(inNs(ns1, ['cat', '/proc/sys/net/ipv4/conf/eth0/arp_announce']).trim()).toBe('2');
    expect(inNs(ns2, ['cat', '/proc/sys/net/ipv4/ping_group_range']).trim()).not.toBe('0\t2147483647');
    expect(allocations().sort()).toEqual([net1.ips[0], net2.ips[0]].sort());
    expect(bridgePorts()).toHaveLength(2);
  });

  it('lets the two pods reach each other', () => {
    expect(inNs(ns1, ['busybox', 'ping', '-c1', '-W2', net2.ips[0]!])).toContain('1 packets received');
    expect(inNs(ns2, ['busybox', 'ping', '-c1', '-W2', net1.ips[0]!])).toContain('1 packets received');
  });

  it('connects to a listener inside the namespace, and refuses where nothing listens', async () => {
    const refused = (await m.connect(ns2, 8080))._unsafeUnwrapErr();
    expect(refused.code).toBe('Unavailable');
    expect(refused.message).toContain('Connection refused');

    // An echo server on every address of pod one, port 8080.
    const l = spawn('nsenter', [`--net=${ns1}`, '--', 'socat', 'TCP-LISTEN:8080,reuseaddr,fork', 'EXEC:cat'], {
      stdio: 'ignore',
    });
    listeners.push(l);
    let stream: Duplex | null = null;
    for (let i = 0; i < 50 && stream === null; i++) {
      const r = await m.connect(ns1, 8080);
      if (r.isOk()) stream = r.value;
      else await new Promise((res) => setTimeout(res, 100));
    }
    expect(stream).not.toBeNull();
    stream!.end('hello pod');
    expect(await readReply(stream!)).toBe('hello pod');
  });

  it('hands the port mappings to portmap, which publishes the host port', () => {
    // The DNAT rule is checked rather than traffic: host routing to the pod
    // subnet is only unambiguous while no other interface on the machine uses it.
    const rules = hostPortRules(18080);
    expect(rules).toHaveLength(1);
    expect(rules[0]).toContain(`--to-destination ${net1.ips[0]}:8080`);
    expect(rules[0]).toContain('-d 127.0.0.1/32');
    expect(hostPortRules(18080).join()).not.toContain(net2.ips[0]);
  });

  it('CHECKs an intact attachment and fails one whose interface is gone', async () => {
    (await m.check('pod-two', ns2, spec2, net2))._unsafeUnwrap();
    inNs(ns2, ['ip', 'link', 'del', 'eth0']);
    const e = (await m.check('pod-two', ns2, spec2, net2))._unsafeUnwrapErr();
    expect(e.message).toContain('CNI CHECK of network "hcrtest" failed in plugin "bridge"');
  });

  it('tears down without leaks, and DEL twice is fine', async () => {
    for (const [id, ns, s] of [
      ['pod-one', ns1, spec1],
      ['pod-two', ns2, spec2],
    ] as const) {
      (await m.detach(id, ns, s))._unsafeUnwrap();
      (await m.detach(id, ns, s))._unsafeUnwrap();
      (await m.removeNetns(ns))._unsafeUnwrap();
      (await m.detach(id, null, s))._unsafeUnwrap();
    }
    for (const l of listeners.splice(0)) {
      l.kill('SIGKILL');
      if (l.exitCode === null && l.signalCode === null) await once(l, 'exit');
    }
    expect(allocations()).toEqual([]);
    expect(bridgePorts()).toEqual([]);
    expect(hostPortRules(18080)).toEqual([]);
    expect([...firewallRules(net1.ips[0]!), ...firewallRules(net2.ips[0]!)]).toEqual([]);
    expect(readdirSync(cacheDir)).toEqual([]);
    expect(mountsUnder(netnsDir)).toEqual([netnsDir]);
    expect((await networkLeaks(options))._unsafeUnwrap()).toEqual({ netns: [], veths: [], ipAllocations: [] });
  });

  it("DEL still releases everything after the cache was lost, given the caller's record", async () => {
    const ns = (await m.createNetns('pod-three'))._unsafeUnwrap();
    const net = (await m.attach('pod-three', ns, spec('three')))._unsafeUnwrap();
    expect(firewallRules(net.ips[0]!)).toHaveLength(2);
    rmSync(join(cacheDir, 'pod-three.json'));
    (await m.detach('pod-three', ns, spec('three'), net))._unsafeUnwrap();
    (await m.removeNetns(ns))._unsafeUnwrap();
    expect(allocations()).toEqual([]);
    expect(bridgePorts()).toEqual([]);
    expect(firewallRules(net.ips[0]!)).toEqual([]);
  });

  it('DEL with neither cache nor namespace nor record releases the address; the firewall rules need the result', async () => {
    const ns = (await m.createNetns('pod-four'))._unsafeUnwrap();
    const net = (await m.attach('pod-four', ns, spec('four')))._unsafeUnwrap();
    rmSync(join(cacheDir, 'pod-four.json'));
    (await m.removeNetns(ns))._unsafeUnwrap();
    const leaks = (await networkLeaks(options))._unsafeUnwrap();
    expect(leaks.ipAllocations).toEqual([join(ipDir, net.ips[0]!)]);

    (await m.detach('pod-four', null, spec('four')))._unsafeUnwrap();
    expect(allocations()).toEqual([]);
    expect((await networkLeaks(options))._unsafeUnwrap().ipAllocations).toEqual([]);
    // The firewall plugin finds its rules only through the ADD result (prevResult).
    expect(firewallRules(net.ips[0]!)).toHaveLength(2);
    (await m.detach('pod-four', null, spec('four'), net))._unsafeUnwrap();
    expect(firewallRules(net.ips[0]!)).toEqual([]);
  });

  it('finds leaked namespaces, veths and reservations', async () => {
    const ns = (await m.createNetns('pod-five'))._unsafeUnwrap();
    const net = (await m.attach('pod-five', ns, spec('five')))._unsafeUnwrap();
    // Keep the namespace alive through a process while its file disappears: the veth then has no known peer.
    const holder = spawn('nsenter', [`--net=${ns}`, '--', 'sleep', '60'], { stdio: 'ignore' });
    await new Promise((res) => setTimeout(res, 200));
    run('umount', [ns]);
    rmSync(ns);
    writeFileSync(ns, '');
    const leaks = (await networkLeaks(options))._unsafeUnwrap();
    expect(leaks.netns).toEqual([ns]);
    expect(leaks.veths).toHaveLength(1);
    expect(leaks.ipAllocations).toEqual([join(ipDir, net.ips[0]!)]);
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    (await m.detach('pod-five', ns, spec('five')))._unsafeUnwrap();
    (await m.removeNetns(ns))._unsafeUnwrap();
    // The kernel deletes a dead namespace's veth pair asynchronously.
    for (let i = 0; i < 50 && bridgePorts().length > 0; i++) await new Promise((res) => setTimeout(res, 100));
    expect((await networkLeaks(options))._unsafeUnwrap()).toEqual({ netns: [], veths: [], ipAllocations: [] });
  });

  it('runs a single-plugin .conf (loopback) as a one-plugin list', async () => {
    const loDir = join(base, 'conf-lo');
    mkdirSync(loDir);
    writeFileSync(join(loDir, '99-lo.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'lo', type: 'loopback' }));
    const lo = new CniNetworkManager({ ...options, confDir: loDir });
    const ns = (await lo.createNetns('pod-lo'))._unsafeUnwrap();
    const net = (await lo.attach('pod-lo', ns, spec('lo')))._unsafeUnwrap();
    expect(net.ips).toEqual(['127.0.0.1', '::1']);
    (await lo.detach('pod-lo', ns, spec('lo')))._unsafeUnwrap();
    (await lo.removeNetns(ns))._unsafeUnwrap();
  });
});
