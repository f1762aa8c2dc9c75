/**
 * One hyper pod (one VM under TCG) through the container lifecycle: busybox
 * from the local registry, root filesystem over 9p, CRI logs, exit codes,
 * exec and execSync (the guest kernel, not the host's), attach, stats,
 * resource updates, and a leak-free teardown.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { parseCriLogLine, type ContainerRef, type SandboxRef, type StreamIO } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HyperEngine } from '../src/engine.js';
import { BUSYBOX, closeHarness, eventually, Harness, ok } from './helpers.js';

function logText(path: string): string {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const r = parseCriLogLine(l);
      if (r === null) throw new Error(`not a CRI log line: ${l}`);
      return `${r.stream}:${r.content}${r.partial ? '' : '\\n'}`;
    })
    .join('');
}

function io(opts: { stdin?: PassThrough; tty?: boolean } = {}) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (d: Buffer) => out.push(d));
  stderr.on('data', (d: Buffer) => err.push(d));
  const streams: StreamIO = {
    stdin: opts.stdin ?? null,
    stdout,
    stderr,
    tty: opts.tty ?? false,
    onResize: () => undefined,
  };
  return { streams, out: () => Buffer.concat(out).toString(), err: () => Buffer.concat(err).toString() };
}

describe('hyper engine: container lifecycle in one pod VM', () => {
  let h: Harness;
  let engine: HyperEngine;
  let pod: SandboxRef;
  let logDir: string;

  beforeAll(async () => {
    h = await Harness.open();
    engine = await h.engine();
    logDir = mkdtempSync(join(h.dir, 'logs-'));
    await h.image(BUSYBOX);
    const t0 = performance.now();
    pod = await h.sandbox();
    const created = await ok(engine.createSandbox(pod));
    console.log(`hyper: pod VM up in ${(performance.now() - t0).toFixed(0)} ms`, created.engineData);
    pod = { ...pod, engineData: created.engineData };
  });

  afterAll(async () => {
    // The harness goes even when teardown or the leak check fails, so a failed run leaves nothing.
    try {
      if (engine !== undefined) {
        await ok(engine.stopSandbox(pod, 0));
        await h.dropNetwork(pod);
        await ok(engine.removeSandbox(pod));
        await engine.close();
        expect(await h.leaks()).toEqual([]);
      }
    } finally {
      await closeHarness(h);
    }
  });

  const start = async (c: ContainerRef) => {
    await ok(engine.createContainer(c));
    await ok(engine.startContainer(c));
    return c;
  };
  const exited = (c: ContainerRef) =>
    eventually(
      async () => {
        const st = await ok(engine.containerStatus(c));
        return st.state === 'exited' ? st : null;
      },
      60_000,
      `container ${c.spec.metadata.name} to exit`,
    );

  it('runs a container from a busybox rootfs over 9p: logs and exit code', async () => {
    const c = await h.container(
      pod,
      BUSYBOX,
      { command: ['sh', '-c', 'echo out-line; echo err-line >&2; printf partial; exit 3'] },
      join(logDir, 'first.log'),
    );
    await ok(engine.createContainer(c));
    expect((await ok(engine.containerStatus(c))).state).toBe('created');
    await ok(engine.startContainer(c));
    const st = await exited(c);
    expect(st.exitCode).toBe(3);
    expect(st.reason).toBe('Error');
    expect(st.finishedAt).toBeGreaterThanOrEqual(st.startedAt);
    const text = logText(join(logDir, 'first.log'));
    expect(text).toContain('stdout:out-line\\n');
    expect(text).toContain('stderr:err-line\\n');
    expect(text).toContain('stdout:partial');
    expect(h.events).toContainEqual(
      expect.objectContaining({ type: 'container-exited', containerId: c.id, exitCode: 3 }),
    );
    await ok(engine.removeContainer(c));
    await ok(engine.removeContainer(c)); // idempotent
  });

  it('applies env, working dir, user and the pod files', async () => {
    const c = await start(
      await h.container(
        pod,
        BUSYBOX,
        {
          command: ['sh', '-c', 'echo "$GREETING $(id -u):$(id -g) $(pwd) $(hostname)"; cat /etc/hosts'],
          envs: [{ key: 'GREETING', value: 'hi' }],
          workingDir: '/tmp/work',
          linux: {
            resources: (await h.container(pod, BUSYBOX)).spec.linux.resources,
            security: { ...(await h.container(pod, BUSYBOX)).spec.linux.security, runAsUsername: 'nobody' },
          },
        },
        join(logDir, 'env.log'),
      ),
    );
    const st = await exited(c);
    expect(st.exitCode).toBe(0);
    const text = logText(join(logDir, 'env.log'));
    expect(text).toContain(`stdout:hi 65534:65534 /tmp/work ${pod.spec.hostname}\\n`);
    expect(text).toContain(pod.network.ips[0]);
    await ok(engine.removeContainer(c));
  });

  it('starts processes with no blocked or ignored signals (the agent blocks SIGCHLD, ignores SIGPIPE)', async () => {
    const c = await start(await h.container(pod, BUSYBOX, { command: ['sleep', '3600'] }));
    const none = 'SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n';
    for (const pid of ['1', 'self']) {
      const r = await ok(engine.execSync(c, ['grep', '-E', '^Sig(Blk|Ign)', `/proc/${pid}/status`], 30));
      expect(r.stdout.toString()).toBe(none);
    }
    await ok(engine.stopContainer(c, 0));
    await ok(engine.removeContainer(c));
  });

  it('applies security settings and CRI host-path mounts', async () => {
    const hostDir = mkdtempSync(join(h.dir, 'hostpath-'));
    writeFileSync(join(hostDir, 'data.txt'), 'from the host\n');
    const base = await h.container(pod, BUSYBOX);
    const script = [
      'cat /data/data.txt',
      'touch /data/new 2>/dev/null && echo data-writable || echo data-readonly',
      'touch /rootfs-file 2>/dev/null && echo root-writable || echo root-readonly',
      'touch /dev/shm/f && (chown 1 /dev/shm/f 2>/dev/null && echo chown-allowed || echo chown-denied)',
      'grep NoNewPrivs /proc/self/status',
      'wc -c < /proc/kcore',
    ].join('; ');
    const c = await start(
      await h.container(
        pod,
        BUSYBOX,
        {
          command: ['sh', '-c', script],
          mounts: [
            {
              containerPath: '/data',
              hostPath: hostDir,
              readonly: true,
              propagation: 'private',
              selinuxRelabel: false,
            },
          ],
          linux: {
            resources: base.spec.linux.resources,
            security: {
              ...base.spec.linux.security,
              readonlyRootfs: true,
              noNewPrivs: true,
              capabilities: { add: [], drop: ['CHOWN'] },
              maskedPaths: ['/proc/kcore'],
            },
          },
        },
        join(logDir, 'security.log'),
      ),
    );
    expect((await exited(c)).exitCode).toBe(0);
    expect(logText(join(logDir, 'security.log'))).toBe(
      [
        'stdout:from the host\\n',
        'stdout:data-readonly\\n',
        'stdout:root-readonly\\n',
        'stdout:chown-denied\\n',
        'stdout:NoNewPrivs:\t1\\n',
        'stdout:0\\n',
      ].join(''),
    );
    await ok(engine.removeContainer(c));
  });

  it('execs in a running container: the guest kernel, exit codes, streams, stdin', async () => {
    const c = await start(await h.container(pod, BUSYBOX, { command: ['sleep', '3600'] }));
    const uname = await ok(engine.execSync(c, ['uname', '-r'], 30));
    expect(uname.exitCode).toBe(0);
    const guestKernel = uname.stdout.toString().trim();
    expect(guestKernel).not.toBe(release());
    expect(guestKernel).toMatch(/^\d+\.\d+/);
    const fail = await ok(engine.execSync(c, ['sh', '-c', 'echo to-err >&2; exit 7'], 30));
    expect(fail.exitCode).toBe(7);
    expect(fail.stderr.toString()).toBe('to-err\n');
    const missing = await engine.execSync(c, ['/no/such/binary'], 30);
    expect(missing.isErr()).toBe(true);
    const slow = await engine.execSync(c, ['sleep', '30'], 1);
    expect(slow.isErr() && slow.error.code).toBe('DeadlineExceeded');

    const stdin = new PassThrough();
    const s = io({ stdin });
    const running = engine.exec(c, ['sh', '-c', 'tr a-z A-Z; echo done >&2'], s.streams);
    stdin.end('shout\n');
    expect((await ok(running)).exitCode).toBe(0);
    expect(s.out()).toBe('SHOUT\n');
    expect(s.err()).toBe('done\n');

    const t = io({ tty: true });
    expect((await ok(engine.exec(c, ['sh', '-c', 'tty; echo $TERM'], t.streams))).exitCode).toBe(0);
    expect(t.out()).toMatch(/\/dev\/pts\/\d+/);

    const stats = await ok(engine.containerStats(c));
    expect(stats.memoryUsageBytes).toBeGreaterThan(0);
    expect(stats.cpuUsageCoreNanoSeconds).toBeGreaterThan(0n);
    const podStats = await ok(engine.sandboxStats(pod, [c]));
    expect(podStats.processes).toBeGreaterThan(0);

    const before = Date.now();
    await ok(engine.stopContainer(c, 1)); // sleep as PID 1 ignores SIGTERM: SIGKILL after 1 s
    expect(Date.now() - before).toBeGreaterThanOrEqual(900);
    const st = await ok(engine.containerStatus(c));
    expect(st.state).toBe('exited');
    expect(st.exitCode).toBe(137);
    await ok(engine.stopContainer(c, 1)); // idempotent
    await ok(engine.removeContainer(c));
  });

  it('stops a container right after its start: the SIGTERM waits for the handler instead of being lost', async () => {
    // PID 1 of a PID namespace never sees a signal it leaves at the default action; under TCG
    // a process that just started has not installed its handlers yet.
    const late = await start(
      await h.container(pod, BUSYBOX, {
        command: ['sh', '-c', 'sleep 2; trap "exit 42" TERM; while :; do sleep 0.1; done'],
      }),
    );
    let before = Date.now();
    await ok(engine.stopContainer(late, 30));
    const lateMs = Date.now() - before;
    expect((await ok(engine.containerStatus(late))).exitCode).toBe(42); // the handler ran, no SIGKILL
    expect(lateMs).toBeLessThan(15_000);
    await ok(engine.removeContainer(late));

    // What critest does: `top`, stopped as soon as StartContainer returned.
    const top = await start(await h.container(pod, BUSYBOX, { command: ['sh', '-c', 'top'] }));
    before = Date.now();
    await ok(engine.stopContainer(top, 30));
    const topMs = Date.now() - before;
    expect((await ok(engine.containerStatus(top))).exitCode).toBe(143);
    expect(topMs).toBeLessThan(15_000);
    console.log(`hyper: stop right after start took ${lateMs} ms (handler after 2 s) and ${topMs} ms (top)`);
    await ok(engine.removeContainer(top));
  });

  it('honours setuid programs in the root filesystem and in volumes, unless no_new_privs is set', async () => {
    // `euid PROG` runs PROG as nobody; `euid` alone prints its effective uid.
    const source = [
      '#define _GNU_SOURCE',
      '#include <grp.h>',
      '#include <stdio.h>',
      '#include <unistd.h>',
      'int main(int argc, char **argv) {',
      '  if (argc == 1) return printf("%d\\n", (int)geteuid()) < 0;',
      '  if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)) return 2;',
      '  execv(argv[1], argv + 1);',
      '  return 3;',
      '}',
    ].join('\n');
    const dir = mkdtempSync(join(h.dir, 'suid-'));
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'euid.c'), `${source}\n`);
    await promisify(execFile)('gcc', ['-static', '-O2', '-o', join(dir, 'euid'), join(dir, 'euid.c')]);
    chmodSync(join(dir, 'euid'), 0o4755);
    const base = await h.container(pod, BUSYBOX);
    for (const [noNewPrivs, want] of [
      [false, '0'],
      [true, '65534'],
    ] as const) {
      const log = join(logDir, `suid-${noNewPrivs}.log`);
      const c = await start(
        await h.container(
          pod,
          BUSYBOX,
          {
            command: [
              'sh',
              '-c',
              'cp /suid/euid /euid && chmod 4755 /euid && /suid/euid /euid && /suid/euid /suid/euid',
            ],
            mounts: [
              { containerPath: '/suid', hostPath: dir, readonly: true, propagation: 'private', selinuxRelabel: false },
            ],
            linux: { resources: base.spec.linux.resources, security: { ...base.spec.linux.security, noNewPrivs } },
          },
          log,
        ),
      );
      await exited(c);
      expect(logText(log)).toBe(`stdout:${want}\\nstdout:${want}\\n`);
      await ok(engine.removeContainer(c));
    }
  });

  it('lets a container with NET_ADMIN add a bridge (the guest kernel has the bridge module)', async () => {
    const base = await h.container(pod, BUSYBOX);
    const script = 'brctl addbr hcrbr0 && ip link show hcrbr0 >/dev/null && brctl delbr hcrbr0 && echo bridge-ok';
    for (const [add, want] of [
      [['NET_ADMIN'], 'stdout:bridge-ok\\n'],
      [[], 'stderr:brctl: bridge hcrbr0: Operation not permitted\\n'],
    ] as const) {
      const log = join(logDir, `bridge-${add.length}.log`);
      const c = await start(
        await h.container(
          pod,
          BUSYBOX,
          {
            command: ['sh', '-c', script],
            linux: {
              resources: base.spec.linux.resources,
              security: { ...base.spec.linux.security, capabilities: { add, drop: [] } },
            },
          },
          log,
        ),
      );
      await exited(c);
      expect(logText(log)).toBe(want);
      await ok(engine.removeContainer(c));
    }
  });

  it('applies seccomp: RuntimeDefault (capability-aware), Localhost profiles, also to execs', async () => {
    const base = await h.container(pod, BUSYBOX);
    const run = async (
      name: string,
      script: string,
      security: Partial<typeof base.spec.linux.security>,
    ): Promise<{ c: ContainerRef; log: string }> => {
      const log = join(logDir, `seccomp-${name}.log`);
      const c = await start(
        await h.container(
          pod,
          BUSYBOX,
          {
            command: ['sh', '-c', script],
            linux: { resources: base.spec.linux.resources, security: { ...base.spec.linux.security, ...security } },
          },
          log,
        ),
      );
      return { c, log };
    };
    const runtimeDefault = { type: 'runtimeDefault', localhostRef: '' } as const;

    // A filter is on, the shell still forks (clone without namespace flags passes), and execs get it too.
    const dflt = await run('default', 'grep Seccomp: /proc/self/status; echo $(echo forked); sleep 3600', {
      seccomp: runtimeDefault,
    });
    await eventually(async () => (logText(dflt.log).includes('forked') ? true : null), 30_000, 'output');
    expect(logText(dflt.log)).toBe('stdout:Seccomp:\t2\\nstdout:forked\\n');
    const inExec = await ok(engine.execSync(dflt.c, ['grep', 'Seccomp:', '/proc/self/status'], 30));
    expect(inExec.stdout.toString()).toBe('Seccomp:\t2\n');
    await ok(engine.stopContainer(dflt.c, 0));
    await ok(engine.removeContainer(dflt.c));

    // RuntimeDefault denies new namespaces unless the container holds CAP_SYS_ADMIN.
    const unshare = 'unshare -u sh -c "hostname inner && hostname" 2>&1';
    const denied = await run('no-admin', unshare, { seccomp: runtimeDefault });
    await exited(denied.c);
    expect(logText(denied.log)).toBe('stdout:unshare: unshare(0x4000000): Operation not permitted\\n');
    await ok(engine.removeContainer(denied.c));
    const admin = await run('admin', unshare, {
      seccomp: runtimeDefault,
      capabilities: { add: ['SYS_ADMIN'], drop: [] },
    });
    expect((await exited(admin.c)).exitCode).toBe(0);
    expect(logText(admin.log)).toBe('stdout:inner\\n');
    await ok(engine.removeContainer(admin.c));

    // A Localhost profile in the OCI format, read on the host: chmod fails even for root. With
    // no_new_privs the filter goes in last before exec (above: before the privileges are dropped).
    const profile = join(h.dir, 'block-chmod.json');
    writeFileSync(
      profile,
      JSON.stringify({
        defaultAction: 'SCMP_ACT_ALLOW',
        syscalls: [{ names: ['chmod', 'fchmod', 'fchmodat', 'fchmodat2'], action: 'SCMP_ACT_ERRNO' }],
      }),
    );
    const local = await run('localhost', 'touch /tmp/f && chmod 400 /tmp/f', {
      seccomp: { type: 'localhost', localhostRef: profile },
      noNewPrivs: true,
    });
    expect((await exited(local.c)).exitCode).toBe(1);
    expect(logText(local.log)).toBe('stderr:chmod: /tmp/f: Operation not permitted\\n');
    await ok(engine.removeContainer(local.c));

    const missing = await h.container(pod, BUSYBOX, {
      linux: {
        resources: base.spec.linux.resources,
        security: {
          ...base.spec.linux.security,
          seccomp: { type: 'localhost', localhostRef: '/no/such/profile.json' },
        },
      },
    });
    const refused = await engine.createContainer(missing);
    expect(refused.isErr() && refused.error.code).toBe('InvalidArgument');
  });

  it('updates resources inside the guest and attaches to a container', async () => {
    const c = await start(
      await h.container(pod, BUSYBOX, {
        command: ['sh', '-c', 'while read line; do echo "got $line"; done'],
        stdin: true,
      }),
    );
    await ok(
      engine.updateContainerResources(c, {
        ...c.spec.linux.resources,
        memoryLimitInBytes: 64 * 1024 * 1024,
        cpuQuota: 50_000,
        cpuPeriod: 100_000,
      }),
    );
    const limits = await ok(engine.execSync(c, ['cat', '/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/cpu.max'], 30));
    expect(limits.stdout.toString()).toBe(`${64 * 1024 * 1024}\n50000 100000\n`);

    const stdin = new PassThrough();
    const a = io({ stdin });
    const attached = engine.attach(c, a.streams);
    stdin.write('ping\n');
    await eventually(async () => (a.out().includes('got ping') ? true : null), 30_000, 'attach output');
    await ok(engine.stopContainer(c, 0));
    await ok(attached);
    await ok(engine.removeContainer(c));
  });
});
