#!/usr/bin/env node
import { existsSync } from 'node:fs';
import { Command, Option } from 'commander';
import type { ServiceError } from '@grpc/grpc-js';
import { criClient, watchPull } from './client.js';
import { applyPullEvent, newPullView, renderPullLine } from './pull-view.js';
import { DEFAULT_CONFIG_TOML, loadConfig } from './config.js';
import { runDoctor } from './doctor.js';
import { createLogger, startShim } from './serve.js';
import { HCR_VERSION } from './server.js';
import type { PodSandbox__Output } from './generated/runtime/v1/PodSandbox.js';
import type { Container__Output } from './generated/runtime/v1/Container.js';
import type { StatusResponse__Output } from './generated/runtime/v1/StatusResponse.js';
import type { PodSandboxStatusResponse__Output } from './generated/runtime/v1/PodSandboxStatusResponse.js';

/** Exit codes scripts can rely on. */
export const EXIT = { ok: 0, failure: 1, usage: 2, unreachable: 3 } as const;

const DEFAULT_CONFIG = '/etc/hcr/config.toml';
const DEFAULT_SOCKET = '/run/hcr/hcr.sock';

const program = new Command()
  .name('hcr')
  .description('HCR, a heterogeneous container runtime: one CRI v1 socket, Docker / VM / unikernel engines')
  .version(HCR_VERSION)
  .showHelpAfterError()
  .exitOverride((e) => process.exit(e.exitCode === 0 ? EXIT.ok : EXIT.usage));

const configOption = () => new Option('-c, --config <path>', 'config file').default(DEFAULT_CONFIG);
const socketOption = () => new Option('-s, --socket <path>', 'CRI socket of a running hcr').default(DEFAULT_SOCKET);

program
  .command('serve')
  .description('run the CRI v1 shim (pods keep running when it stops)')
  .addOption(configOption())
  .action(async (o: { config: string }) => {
    const cfg = loadConfig(existsSync(o.config) ? o.config : null);
    if (cfg.isErr()) fail(cfg.error, EXIT.usage);
    const logger = createLogger(cfg.value.logLevel);
    if (!existsSync(o.config)) logger.warn({ config: o.config }, 'config file not found; using defaults');
    const shim = await startShim(cfg.value, logger).catch((e: unknown) => fail(`hcr serve: ${(e as Error).message}`));
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'shutting down (pods keep running)');
      shim.stop().then(
        () => process.exit(EXIT.ok),
        () => process.exit(EXIT.failure),
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });

const config = program.command('config').description('configuration helpers');
config
  .command('default')
  .description('print the default configuration, every key documented')
  .action(() => {
    process.stdout.write(DEFAULT_CONFIG_TOML);
  });
config
  .command('check')
  .description('validate a configuration file')
  .addOption(configOption())
  .action((o: { config: string }) => {
    const cfg = loadConfig(o.config);
    if (cfg.isErr()) fail(cfg.error, EXIT.usage);
    console.log(`${o.config}: OK (engines: ${Object.keys(cfg.value.engines).join(', ')})`);
  });

program
  .command('doctor')
  .description('check the host: dockerd, QEMU, KVM, CNI, guest assets, socket, cgroups')
  .addOption(configOption())
  .action(async (o: { config: string }) => {
    const cfg = loadConfig(existsSync(o.config) ? o.config : null);
    if (cfg.isErr()) fail(cfg.error, EXIT.usage);
    const worst = await runDoctor(cfg.value, (line) => console.log(line));
    process.exit(worst === 'FAIL' ? EXIT.failure : EXIT.ok);
  });

program
  .command('engines')
  .description("each engine's health and capabilities (asks the running shim)")
  .addOption(socketOption())
  .action(async (o: { socket: string }) => {
    const st = await rpc<StatusResponse__Output>(o.socket, 'runtime', 'Status', { verbose: true });
    const engines = JSON.parse(st.info['engines'] ?? '{}') as Record<
      string,
      {
        kind: string;
        capabilities: Record<string, unknown>;
        health?: { ready: boolean; message: string; info: Record<string, string> };
      }
    >;
    for (const [name, e] of Object.entries(engines)) {
      const caps = Object.entries(e.capabilities)
        .filter(([, v]) => v === true)
        .map(([k]) => k);
      console.log(`${name} (${e.kind}): ${e.health?.ready ? 'ready' : `NOT READY: ${e.health?.message ?? ''}`}`);
      for (const [k, v] of Object.entries(e.health?.info ?? {})) console.log(`  ${k}: ${v}`);
      console.log(`  capabilities: ${caps.join(', ')}`);
    }
    const failed = JSON.parse(st.info['failedEngines'] ?? '{}') as Record<string, string>;
    for (const [name, why] of Object.entries(failed)) console.log(`${name}: FAILED TO START: ${why}`);
  });

program
  .command('pods')
  .description('pods with their engine, state, IP and age')
  .addOption(socketOption())
  .action(async (o: { socket: string }) => {
    const { items } = await rpc<{ items: PodSandbox__Output[] }>(o.socket, 'runtime', 'ListPodSandbox', {});
    const rows = await Promise.all(
      items.map(async (p) => {
        const st = await rpc<PodSandboxStatusResponse__Output>(o.socket, 'runtime', 'PodSandboxStatus', {
          podSandboxId: p.id,
          verbose: true,
        });
        const info = JSON.parse(st.info['info'] ?? '{}') as { engine?: string | null };
        return [
          p.id.slice(0, 13),
          `${p.metadata?.namespace}/${p.metadata?.name}`,
          info.engine ?? 'unbound',
          p.state === 'SANDBOX_READY' ? 'Ready' : 'NotReady',
          st.status?.network?.ip || '-',
          age(p.createdAt),
        ];
      }),
    );
    table(['POD ID', 'NAME', 'ENGINE', 'STATE', 'IP', 'AGE'], rows);
  });

program
  .command('ps')
  .description('containers with their pod, image, state and age')
  .addOption(socketOption())
  .option('-a, --all', 'include exited containers')
  .action(async (o: { socket: string; all?: boolean }) => {
    const { containers } = await rpc<{ containers: Container__Output[] }>(o.socket, 'runtime', 'ListContainers', {});
    const rows = containers
      .filter((c) => o.all === true || c.state === 'CONTAINER_RUNNING')
      .map((c) => [
        c.id.slice(0, 13),
        c.metadata?.name ?? '',
        c.image?.image ?? '',
        c.state.replace('CONTAINER_', '').toLowerCase(),
        age(c.createdAt),
        c.podSandboxId.slice(0, 13),
      ]);
    table(['CONTAINER', 'NAME', 'IMAGE', 'STATE', 'AGE', 'POD'], rows);
  });

program
  .command('pull')
  .description('pull an image through the running shim, showing progress')
  .argument('<image>', 'image reference, e.g. busybox or 127.0.0.1:5000/app:1')
  .addOption(socketOption())
  .action(async (image: string, o: { socket: string }) => {
    const started = Date.now();
    const tty = process.stderr.isTTY;
    const view = newPullView();
    const draw = () => {
      if (tty) process.stderr.write(`\r\x1b[K${renderPullLine(view, image, Date.now() - started)}`);
    };
    // Progress comes from HCR's own service beside CRI; the pull itself is plain CRI PullImage.
    const watch = watchPull(o.socket, image, (e) => {
      const line = applyPullEvent(view, e);
      if (line !== null && !tty) console.error(line);
      draw();
    });
    const timer = setInterval(draw, 200);
    try {
      // Bounded: a shim without the progress service must not hold up the pull.
      await Promise.race([watch.ready, new Promise((r) => setTimeout(r, 2000).unref())]);
      const r = await rpc<{ imageRef: string }>(o.socket, 'images', 'PullImage', { image: { image } }, 30 * 60_000);
      if (tty) process.stderr.write('\r\x1b[K');
      console.log(`${image}: ${r.imageRef} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
    } finally {
      clearInterval(timer);
      watch.cancel();
    }
  });

function fail(message: string, code: number = EXIT.failure): never {
  console.error(message);
  process.exit(code);
}

async function rpc<Res>(
  socket: string,
  service: 'runtime' | 'images',
  method: string,
  request: object,
  deadlineMs = 30_000,
): Promise<Res> {
  const client = criClient(socket);
  try {
    return await client.call<Res>(service, method, request, deadlineMs);
  } catch (e) {
    const se = e as ServiceError;
    if (se.code === 14)
      fail(`cannot reach hcr at ${socket}: ${se.details} (is "hcr serve" running?)`, EXIT.unreachable);
    fail(`${method}: ${se.details ?? se.message}`);
  } finally {
    client.close();
  }
}

function age(createdAtNanos: string): string {
  const s = Math.max(0, Math.floor((Date.now() - Number(BigInt(createdAtNanos) / 1_000_000n)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function table(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  console.log(line(header));
  for (const r of rows) console.log(line(r));
}

await program.parseAsync(process.argv);
