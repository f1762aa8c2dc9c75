import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { criClient, loadPlugins, type CriClient } from '@hcr/cri';
import { parseCriLogLine, silentLogger } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BRIDGE, BUSYBOX, SUBNET, runscProcessesUnder } from './harness.js';

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = resolve(here, '..');
const repoRoot = resolve(pkgDir, '../..');
/** The built plugin, as an operator would name it in `plugins`. */
const pluginPath = join(pkgDir, 'dist/index.js');

/** Builds the plugin when dist/ is missing or older than a source file (CI's setup has built it already). */
function ensureBuilt(): void {
  const newestSource = Math.max(
    ...readdirSync(join(pkgDir, 'src')).map((f) => statSync(join(pkgDir, 'src', f)).mtimeMs),
  );
  if (existsSync(pluginPath) && statSync(pluginPath).mtimeMs >= newestSource) return;
  execFileSync('pnpm', ['--filter', '@hcr-examples/engine-gvisor', 'build'], { cwd: repoRoot, stdio: 'ignore' });
}

/** `hcr serve` from the sources, configured with nothing but a TOML file that names the plugin. */
describe('hcr serve with the gvisor plugin', () => {
  let dir: string;
  let socket: string;
  let shim: ChildProcess;
  let output = '';
  let client: CriClient;
  const call = <T = Record<string, unknown>>(
    service: 'runtime' | 'images',
    method: string,
    req: object,
    ms = 120_000,
  ) => client.call<T>(service, method, req, ms);

  beforeAll(async () => {
    ensureBuilt();
    dir = mkdtempSync(join(tmpdir(), 'hcr-gvisor-serve-'));
    socket = join(dir, 'hcr.sock');
    const conf = join(dir, 'cni');
    mkdirSync(conf);
    writeFileSync(
      join(conf, '10-gvisor-serve.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'hcr-gvisor-serve',
        plugins: [
          {
            type: 'bridge',
            bridge: BRIDGE,
            isGateway: true,
            ipam: { type: 'host-local', ranges: [[{ subnet: SUBNET }]], dataDir: join(dir, 'ipam') },
          },
          { type: 'firewall' },
        ],
      }),
    );
    const config = join(dir, 'config.toml');
    writeFileSync(
      config,
      [
        `socket = "${socket}"`,
        `state_dir = "${join(dir, 'state')}"`,
        `runtime_dir = "${join(dir, 'run')}"`,
        `log_level = "debug"`,
        `plugins = ["${pluginPath}"]`,
        `[cni]`,
        `conf_dir = "${conf}"`,
        `[images]`,
        `root = "${join(dir, 'images')}"`,
        `[router]`,
        `default_engine = "gvisor"`,
        `defer_binding = false`,
        `[runtimes.gvisor]`,
        `engine = "gvisor"`,
        `[engines.gvisor]`,
        `kind = "gvisor"`,
        `platform = "ptrace"`,
      ].join('\n'),
    );
    shim = spawn(
      process.execPath,
      [
        '--conditions=hcr-source',
        '--import',
        'tsx',
        join(repoRoot, 'packages/cri/src/bin.ts'),
        'serve',
        '--config',
        config,
      ],
      { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    shim.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    shim.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const deadline = Date.now() + 60_000;
    while (!output.includes('hcr serving CRI v1')) {
      if (shim.exitCode !== null) throw new Error(`hcr serve exited ${shim.exitCode}:\n${output}`);
      if (Date.now() > deadline) throw new Error(`hcr serve did not start within 60 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    client = criClient(socket);
  }, 240_000);

  afterAll(async () => {
    client?.close();
    if (shim !== undefined && shim.exitCode === null) {
      const exited = new Promise((r) => shim.once('exit', r));
      shim.kill('SIGTERM');
      await exited;
    }
    spawnSync('umount', ['--lazy', join(dir, 'run', 'netns')], { stdio: 'ignore' });
    spawnSync('ip', ['link', 'del', BRIDGE], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('accepts the built plugin as a registration of this core', async () => {
    const [reg] = await loadPlugins([pluginPath], silentLogger);
    expect(reg?.kind).toBe('gvisor');
    expect(reg?.configSchema.parse({ platform: 'kvm' })).toMatchObject({ ok: true });
    expect(reg?.configSchema.parse({ bogus: 1 })).toMatchObject({ ok: false });
    expect(output).toMatch(/engine plugin loaded.*gvisor|gvisor.*engine plugin loaded/);
  });

  it('reports the engine ready with its capabilities over CRI Status', async () => {
    const status = await call<{
      status: { conditions: { type: string; status: boolean }[] };
      info: Record<string, string>;
    }>('runtime', 'Status', { verbose: true });
    expect(status.status.conditions.find((c) => c.type === 'RuntimeReady')?.status).toBe(true);
    const engines = JSON.parse(status.info['engines'] ?? '{}') as Record<
      string,
      { kind: string; health: { ready: boolean }; capabilities: { privileged: boolean; exec: boolean } }
    >;
    expect(engines['gvisor']).toMatchObject({ kind: 'gvisor', health: { ready: true } });
    expect(engines['gvisor']?.capabilities).toMatchObject({ privileged: false, exec: true });
  });

  it('runs a pod on gVisor through the CRI socket', async () => {
    await call('images', 'PullImage', { image: { image: BUSYBOX } }, 300_000);
    const name = `gv-${randomBytes(3).toString('hex')}`;
    const podConfig = {
      metadata: { name, uid: randomBytes(8).toString('hex'), namespace: 'hcr-gvisor', attempt: 0 },
      hostname: name,
      logDirectory: join(dir, 'logs', name),
      linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    };
    const { podSandboxId } = await call<{ podSandboxId: string }>(
      'runtime',
      'RunPodSandbox',
      { config: podConfig, runtimeHandler: 'gvisor' },
      300_000,
    );
    const create = async (cname: string, command: string[], logPath = '') =>
      (
        await call<{ containerId: string }>('runtime', 'CreateContainer', {
          podSandboxId,
          config: { metadata: { name: cname, attempt: 0 }, image: { image: BUSYBOX }, command, logPath },
          sandboxConfig: podConfig,
        })
      ).containerId;

    const echo = await create('echo', ['sh', '-c', 'echo hello from gvisor; dmesg | head -1'], 'echo.log');
    await call('runtime', 'StartContainer', { containerId: echo });
    const deadline = Date.now() + 60_000;
    let state = '';
    let exitCode = -1;
    while (state !== 'CONTAINER_EXITED') {
      if (Date.now() > deadline) throw new Error(`container stayed ${state}`);
      await new Promise((r) => setTimeout(r, 200));
      ({ state, exitCode } = (
        await call<{ status: { state: string; exitCode: number } }>('runtime', 'ContainerStatus', { containerId: echo })
      ).status);
    }
    expect(exitCode).toBe(0);
    const log = readFileSync(join(podConfig.logDirectory, 'echo.log'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => parseCriLogLine(l)?.content);
    expect(log[0]).toBe('hello from gvisor');
    expect(log[1]).toContain('Starting gVisor');

    const sleeper = await create('sleeper', ['sleep', '3600']);
    await call('runtime', 'StartContainer', { containerId: sleeper });
    const exec = await call<{ stdout: Buffer; exitCode: number }>('runtime', 'ExecSync', {
      containerId: sleeper,
      cmd: ['uname', '-r'],
      timeout: 30,
    });
    expect(exec.exitCode).toBe(0);
    // gVisor reports its own kernel release, never the host's.
    expect(exec.stdout.toString().trim()).not.toBe(execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim());

    await call('runtime', 'StopPodSandbox', { podSandboxId });
    await call('runtime', 'RemovePodSandbox', { podSandboxId });
    const runscRoot = join(dir, 'run', 'engines', 'gvisor', 'runsc');
    expect(execFileSync('runsc', [`--root=${runscRoot}`, 'list', '--quiet'], { encoding: 'utf8' }).trim()).toBe('');
    expect(runscProcessesUnder(dir)).toEqual([]);
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(dir) && m !== join(dir, 'run', 'netns'));
    expect(mounts).toEqual([]);
  });
});
