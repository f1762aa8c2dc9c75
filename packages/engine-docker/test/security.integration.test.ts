import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ContainerRef, ContainerSecurity, ContainerSpec, ImageInfo, SandboxRef } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  containerRef,
  ensurePulled,
  expectNoLeftovers,
  imageInfo,
  makeEngine,
  makeNetns,
  ok,
  sandboxRef,
  waitFor,
  type TestEngine,
  type TestNetns,
} from './helpers.js';

let te: TestEngine;
let busybox: ImageInfo;
let ns: TestNetns;
let pod: SandboxRef;

beforeAll(async () => {
  ensurePulled(BUSYBOX);
  busybox = await imageInfo(BUSYBOX);
  te = await makeEngine();
  ns = makeNetns();
  pod = sandboxRef({
    netns: ns,
    linux: {
      sysctls: { 'kernel.shm_rmid_forced': '1' },
      namespaces: { network: 'pod', pid: 'pod', ipc: 'pod', targetId: '' },
    },
  });
  await ok(te.engine.createSandbox(pod));
});

afterAll(async () => {
  await ok(te.engine.stopSandbox(pod, 0));
  await ok(te.engine.removeSandbox(pod));
  await te.engine.close();
  ns.remove();
  await expectNoLeftovers(te.name);
});

type Spec = Partial<ContainerSpec> & { security?: Partial<ContainerSecurity> };

/** Runs a one-shot container in `sandbox` and returns its exit code and stdout+stderr. */
async function run(
  script: string,
  spec: Spec = {},
  sandbox: SandboxRef = pod,
): Promise<{ exitCode: number; output: string }> {
  const c = containerRef(sandbox, busybox, { command: ['sh', '-c', script], ...spec });
  await ok(te.engine.createContainer(c));
  await ok(te.engine.startContainer(c));
  const st = await waitFor('exit', async () => {
    const s = await ok(te.engine.containerStatus(c));
    return s.state === 'exited' ? s : undefined;
  });
  const output = readFileSync(c.logPath, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(' ').slice(3).join(' '))
    .join('\n');
  await ok(te.engine.removeContainer(c));
  return { exitCode: st.exitCode, output };
}

async function startLong(spec: Spec = {}, sandbox: SandboxRef = pod): Promise<ContainerRef> {
  const c = containerRef(sandbox, busybox, { command: ['sleep', '3600'], ...spec });
  await ok(te.engine.createContainer(c));
  await ok(te.engine.startContainer(c));
  return c;
}

const capEff = 'grep CapEff /proc/self/status | cut -f2';

describe('security context', () => {
  it('drops all capabilities and adds back the requested ones (with or without CAP_)', async () => {
    const r = await run(capEff, { security: { capabilities: { add: ['NET_RAW', 'CAP_CHOWN'], drop: ['ALL'] } } });
    expect(r.output).toBe('0000000000002001');
  });

  it('runs privileged containers with every capability and host devices', async () => {
    const r = await run(`${capEff}; ls /dev | wc -l; mkdir -p /mnt/t && mount -t tmpfs t /mnt/t && echo mounted`, {
      security: { privileged: true },
    });
    const [caps, devices, mounted] = r.output.split('\n');
    const bounding = BigInt(`0x${/^CapBnd:\s*(\w+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`);
    // Every capability of the host up to CAP_AUDIT_READ (37), the last one Debian's Docker 20.10 knows.
    const known = bounding & ((1n << 38n) - 1n);
    expect(BigInt(`0x${caps}`) & known).toBe(known);
    expect(Number(devices)).toBeGreaterThan(20);
    expect(mounted).toBe('mounted');
    if (!((bounding >> 24n) & 1n)) {
      expect(
        te.logger.lines.some((l) => l.level === 'warn' && l.message.startsWith('privileged container emulated')),
      ).toBe(true);
    }
  });

  it('enforces a read-only root filesystem, pod files included', async () => {
    const r = await run('touch /x 2>&1; echo >> /etc/hosts 2>&1; touch /tmp/x 2>&1; echo end', {
      security: { readonlyRootfs: true },
    });
    expect(r.output.match(/Read-only file system/g)).toHaveLength(3);
  });

  it('sets no-new-privileges and the seccomp profile', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hcr-seccomp-'));
    const profile = join(dir, 'no-mkdir.json');
    writeFileSync(
      profile,
      JSON.stringify({
        defaultAction: 'SCMP_ACT_ALLOW',
        syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO' }],
      }),
    );
    const status = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t ' ' '";
    expect((await run(status, { security: { noNewPrivs: true } })).output).toBe('NoNewPrivs: 1\nSeccomp: 2');
    expect((await run(status, { security: { seccomp: null } })).output).toBe('NoNewPrivs: 0\nSeccomp: 0');
    const custom = await run('mkdir /tmp/d 2>&1; echo $?', {
      security: { seccomp: { type: 'localhost', localhostRef: `localhost/${profile}` } },
    });
    expect(custom.output).toMatch(/Operation not permitted\n1$/);
    const missing = await te.engine.createContainer(
      containerRef(pod, busybox, {
        security: { seccomp: { type: 'localhost', localhostRef: join(dir, 'nope.json') } },
      }),
    );
    expect(missing.isErr() && missing.error.code).toBe('InvalidArgument');
    rmSync(dir, { recursive: true });
  });

  it('masks and write-protects the requested paths', async () => {
    const r = await run('wc -c < /proc/cpuinfo; touch /var/x 2>&1; touch /tmp/x && echo tmp-ok', {
      security: { maskedPaths: ['/proc/cpuinfo'], readonlyPaths: ['/var'] },
    });
    expect(r.output).toMatch(/^0\n.*Read-only file system\ntmp-ok$/);
  });

  it('runs as a user name from the image, and maps devices', async () => {
    const r = await run('id -un; echo x > /dev/hcrnull && echo wrote', {
      security: { runAsUsername: 'www-data' },
      devices: [{ hostPath: '/dev/null', containerPath: '/dev/hcrnull', permissions: 'rwm' }],
    });
    expect(r.output).toBe('www-data\nwrote');
  });
});

describe('namespaces', () => {
  it('shares the pod PID and IPC namespaces with the pause container, and applies IPC sysctls', async () => {
    const a = await startLong();
    const b = await startLong({ security: { namespaces: { network: 'pod', pid: 'pod', ipc: 'pod', targetId: '' } } });
    const ps = await ok(te.engine.execSync(b, ['ps', '-o', 'pid,args'], 5));
    expect(ps.stdout.toString()).toMatch(/^\s*1 \/pause --netns/m);
    expect(ps.stdout.toString()).toContain('sleep 3600');
    const ipcA = (await ok(te.engine.execSync(a, ['readlink', '/proc/self/ns/ipc'], 5))).stdout.toString();
    const ipcB = (await ok(te.engine.execSync(b, ['readlink', '/proc/self/ns/ipc'], 5))).stdout.toString();
    expect(ipcA).toBe(ipcB);
    const sysctl = await ok(te.engine.execSync(a, ['cat', '/proc/sys/kernel/shm_rmid_forced'], 5));
    expect(sysctl.stdout.toString().trim()).toBe('1');
    for (const c of [a, b]) await ok(te.engine.removeContainer(c));
  });

  it('gives a container its own PID namespace, or the one of a target container', async () => {
    const own = await startLong({
      security: { namespaces: { network: 'pod', pid: 'container', ipc: 'pod', targetId: '' } },
    });
    const ps = await ok(te.engine.execSync(own, ['ps', '-o', 'pid,args'], 5));
    expect(ps.stdout.toString()).toMatch(/^\s*1 sleep 3600/m);
    const joined = await startLong({
      command: ['sleep', '3601'],
      security: { namespaces: { network: 'pod', pid: 'target', ipc: 'pod', targetId: own.id } },
    });
    const ps2 = await ok(te.engine.execSync(joined, ['ps', '-o', 'pid,args'], 5));
    expect(ps2.stdout.toString()).toMatch(/^\s*1 sleep 3600$/m);
    expect(ps2.stdout.toString()).toContain('sleep 3601');
    for (const c of [joined, own]) await ok(te.engine.removeContainer(c));
  });

  it('uses the host PID, IPC and network namespaces for a host pod', async () => {
    const hostPod = sandboxRef({ linux: { namespaces: { network: 'node', pid: 'node', ipc: 'node', targetId: '' } } });
    await ok(te.engine.createSandbox(hostPod));
    const c = await startLong(
      { security: { namespaces: { network: 'node', pid: 'node', ipc: 'node', targetId: '' } } },
      hostPod,
    );
    const r = await ok(
      te.engine.execSync(
        c,
        ['sh', '-c', `test -d /proc/${process.pid} && readlink /proc/self/ns/ipc && readlink /proc/self/ns/net`],
        5,
      ),
    );
    expect(r.exitCode).toBe(0);
    const hostNs = execFileSync('readlink', ['/proc/self/ns/ipc', '/proc/self/ns/net'], { encoding: 'utf8' });
    expect(r.stdout.toString()).toBe(hostNs);
    await ok(te.engine.stopSandbox(hostPod, 0));
    await ok(te.engine.removeSandbox(hostPod));
  });
});

describe('mount propagation', () => {
  it('propagates mounts both ways for bidirectional and host-to-container for hostToContainer', async () => {
    const shared = mkdtempSync(join(tmpdir(), 'hcr-shared-'));
    execFileSync('mount', ['--bind', shared, shared]);
    execFileSync('mount', ['--make-rshared', shared]);
    const cleanup: string[] = [];
    try {
      mkdirSync(join(shared, 'from-container'));
      mkdirSync(join(shared, 'from-host'));
      const c = await startLong({
        security: { privileged: true },
        mounts: [
          {
            containerPath: '/both',
            hostPath: shared,
            readonly: false,
            propagation: 'bidirectional',
            selinuxRelabel: false,
          },
          {
            containerPath: '/slave',
            hostPath: shared,
            readonly: false,
            propagation: 'hostToContainer',
            selinuxRelabel: false,
          },
        ],
      });
      const r = await ok(te.engine.execSync(c, ['mount', '-t', 'tmpfs', 'hcr-prop', '/both/from-container'], 5));
      expect(r.exitCode).toBe(0);
      cleanup.push(join(shared, 'from-container'));
      expect(readFileSync('/proc/self/mounts', 'utf8')).toContain(join(shared, 'from-container'));
      execFileSync('mount', ['-t', 'tmpfs', 'hcr-prop-host', join(shared, 'from-host')]);
      cleanup.push(join(shared, 'from-host'));
      const seen = await ok(te.engine.execSync(c, ['grep', '-c', 'hcr-prop-host', '/proc/self/mounts'], 5));
      expect(Number(seen.stdout.toString().trim())).toBeGreaterThanOrEqual(2);
      await ok(te.engine.removeContainer(c));
    } finally {
      for (const m of cleanup.reverse()) execFileSync('umount', ['-l', m]);
      execFileSync('umount', ['-l', shared]);
      rmSync(shared, { recursive: true });
    }
  });
});
