import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { watchPull } from '../src/client.js';
import type { PullEventView } from '../src/pull-progress.js';
import { REGISTRY, repoRoot, startShim, type TestShim } from './helpers/shim.js';

/** Several layers, with whiteouts: progress per layer is worth seeing. */
const LAYERS = `${REGISTRY}/hcr-test/layers:latest`;
const HTTPD = `${REGISTRY}/hcr-test/httpd:latest`;

// `hcr pull` shows a progress bar although CRI's PullImage is unary: the shim
// serves hcr.v1.PullProgress beside CRI on the same socket.
describe('pull progress', () => {
  let shim: TestShim;
  beforeAll(async () => {
    shim = await startShim();
  }, 90_000);
  afterAll(async () => {
    await shim?.stop();
  });

  it('streams every layer of a pull, byte counts to the end, then done', async () => {
    const events: PullEventView[] = [];
    let ended!: Promise<ServiceError | null>;
    const watch = watchPull(
      shim.socket,
      LAYERS,
      (e) => events.push(e),
      (e) => (ended = Promise.resolve(e)),
    );
    await watch.ready;
    await shim.client.call('images', 'PullImage', { image: { image: LAYERS } });
    await expect.poll(() => events.at(-1)?.phase).toBe('done');
    await expect.poll(() => ended).toBeDefined();
    expect(await ended).toBeNull();
    expect(events[0]?.phase).toBe('resolving');
    expect(events.at(-1)?.phase).toBe('done');
    expect(new Set(events.map((e) => e.ref))).toEqual(new Set([LAYERS]));
    const layers = new Map<string, PullEventView>();
    for (const e of events) if (e.phase === 'downloading') layers.set(e.layer, e);
    expect(layers.size).toBeGreaterThan(1);
    for (const [digest, last] of layers) {
      expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(last.total).toBeGreaterThan(0);
      expect(last.done).toBe(last.total);
    }
  }, 60_000);

  it('runs hcr pull to the end and reports each layer when stderr is not a terminal', () => {
    const r = spawnSync(
      process.execPath,
      [
        '--conditions=hcr-source',
        '--import',
        'tsx',
        join(repoRoot, 'packages/cri/src/bin.ts'),
        'pull',
        '--socket',
        shim.socket,
        HTTPD,
      ],
      { cwd: repoRoot, encoding: 'utf8', timeout: 60_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${HTTPD.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: sha256:[0-9a-f]{64} \\(`));
    expect(r.stderr).toMatch(/^sha256:[0-9a-f]{12}: downloaded \d/m);
  }, 90_000);

  it('refuses to watch a malformed reference', async () => {
    const err = await new Promise<ServiceError | null>((resolve) => {
      watchPull(shim.socket, 'Not A Ref!!', () => undefined, resolve);
    });
    expect(err?.code).toBe(status.INVALID_ARGUMENT);
  });
});
