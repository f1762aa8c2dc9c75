import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CniNetworkManager,
  OciImageService,
  RuntimeService,
  SqliteStateStore,
  newContainerSpec,
  newSandboxSpec,
  parseCriLogLine,
  silentLogger,
  type Logger,
  type ResultAsync,
  type HcrError,
} from '@hcr/core';
import { registration as docker } from '@hcr/engine-docker';

/** Where the embedded runtime keeps its state, and which CNI config it uses. */
export interface EmbedOptions {
  readonly image: string;
  readonly cniConfDir?: string;
  readonly workDir?: string;
  readonly logger?: Logger;
}

async function must<T>(r: ResultAsync<T, HcrError>): Promise<T> {
  const v = await r;
  if (v.isErr()) throw v.error;
  return v.value;
}

/**
 * Runs one pod with one container that prints a line, waits for it to exit and
 * returns its log lines — the whole CRI lifecycle through the library, no gRPC.
 */
export async function runPodAndReadLogs(
  opts: EmbedOptions,
): Promise<{ podIp: string; lines: string[]; exitCode: number }> {
  const dir = opts.workDir ?? mkdtempSync(join(tmpdir(), 'hcr-embed-'));
  const images = await must(OciImageService.open({ root: join(dir, 'images') }));
  const network = new CniNetworkManager({
    confDir: opts.cniConfDir ?? '/etc/cni/net.d',
    netnsDir: join(dir, 'netns'),
    cacheDir: join(dir, 'cni'),
  });
  const config = docker.configSchema.parse({});
  if (!config.ok) throw new Error(config.error);
  const engine = await must(
    docker.create(config.value, {
      name: 'docker',
      logger: opts.logger ?? silentLogger,
      runtimeDir: join(dir, 'run'),
      stateDir: join(dir, 'state'),
      images,
    }),
  );
  const store = new SqliteStateStore(join(dir, 'state.db'));
  const runtime = new RuntimeService({
    store,
    network,
    images,
    engines: new Map([['docker', engine]]),
    router: { handlers: {}, defaultEngine: 'docker', rules: [], deferBinding: false, unikernelEngine: null },
    sandboxDir: join(dir, 'sandboxes'),
  });
  const logDir = join(dir, 'logs');
  let podId = '';
  try {
    await must(images.pull(opts.image));
    const pod = newSandboxSpec(
      { name: 'embedded', uid: `uid-${Date.now()}`, namespace: 'default', attempt: 0 },
      { logDirectory: logDir },
    );

    podId = await must(runtime.runPodSandbox(pod));
    const podIp = (await must(runtime.podSandboxStatus(podId))).record.network.ips[0] ?? '';
    const container = newContainerSpec('hello', opts.image, {
      command: ['sh', '-c', 'echo "hello from $(hostname)"'],
      logPath: 'hello.log',
    });

    const cid = await must(runtime.createContainer(podId, container));
    await must(runtime.startContainer(cid));
    let status = await must(runtime.containerStatus(cid));
    for (let i = 0; status.state !== 'exited' && i < 300; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = await must(runtime.containerStatus(cid));
    }
    const lines = readFileSync(join(logDir, 'hello.log'), 'utf8')
      .split('\n')
      .map((l) => parseCriLogLine(l)?.content)
      .filter((l): l is string => l !== undefined);
    return { podIp, lines, exitCode: status.record.exitCode };
  } finally {
    if (podId !== '') await runtime.removePodSandbox(podId);
    runtime.close();
    store.close();
    await engine.close();
    if (opts.workDir === undefined) {
      // The network manager makes its netns dir a mount point (as `ip netns` does): unmount it first.
      spawnSync('umount', ['--lazy', join(dir, 'netns')], { stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
