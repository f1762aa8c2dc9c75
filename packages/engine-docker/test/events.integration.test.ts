import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EngineEvent, ImageInfo } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  containerRef,
  docker,
  ensurePulled,
  expectNoLeftovers,
  imageInfo,
  makeEngine,
  ok,
  sandboxRef,
  waitFor,
  type TestEngine,
} from './helpers.js';

/**
 * A unix-socket relay to dockerd that can be cut and restored, so the
 * engine sees dockerd "go away" without disturbing the real daemon.
 */
class DockerRelay {
  readonly path: string;
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(dir: string) {
    this.path = join(dir, 'docker.sock');
  }

  async up(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect('/var/run/docker.sock');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => server.listen(this.path, r));
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    if (server !== null) await new Promise<void>((r) => server.close(() => r()));
    rmSync(this.path, { force: true });
  }
}

let te: TestEngine;
let busybox: ImageInfo;
let relay: DockerRelay;
let dir: string;

beforeAll(async () => {
  ensurePulled(BUSYBOX);
  busybox = await imageInfo(BUSYBOX);
  dir = mkdtempSync(join(tmpdir(), 'hcr-relay-'));
  relay = new DockerRelay(dir);
  await relay.up();
  te = await makeEngine({ socket: relay.path, healthTimeoutMs: 1000 });
});

afterAll(async () => {
  await te.engine.close();
  await relay.down();
  rmSync(dir, { recursive: true, force: true });
  await expectNoLeftovers(te.name);
});

const healthEvents = (events: EngineEvent[]) =>
  events.filter((e): e is Extract<EngineEvent, { type: 'health-changed' }> => e.type === 'health-changed');

describe('docker events', () => {
  it('survives dockerd going away: reports health, reconnects, and reports exits it missed exactly once', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    const c = containerRef(sb, busybox, { command: ['sleep', '3600'] });
    await ok(te.engine.createContainer(c));
    await ok(te.engine.startContainer(c));

    await relay.down();
    const down = await waitFor('unready health event', () => healthEvents(te.events).find((e) => !e.health.ready));
    expect(down.health).toMatchObject({ ready: false, reason: 'DockerUnreachable' });
    expect(await ok(te.engine.health())).toMatchObject({ ready: false, reason: 'DockerUnreachable' });
    const status = await te.engine.containerStatus(c);
    expect(status.isErr() && status.error.code).toBe('Unavailable');

    // The container dies while the engine cannot see dockerd.
    await docker.getContainer(`hcr_container_${c.id}`).kill();
    await relay.up();
    await waitFor('ready health event', () => healthEvents(te.events).find((e) => e.health.ready), 30_000);
    const exit = await waitFor(
      'the missed exit',
      () => te.events.find((e) => e.type === 'container-exited' && e.containerId === c.id),
      30_000,
    );
    expect(exit).toMatchObject({ exitCode: 137, reason: 'Error' });

    // Live events flow again on the new stream.
    const quick = containerRef(sb, busybox, { command: ['sh', '-c', 'exit 4'] });
    await ok(te.engine.createContainer(quick));
    await ok(te.engine.startContainer(quick));
    await waitFor('live exit', () =>
      te.events.find((e) => e.type === 'container-exited' && e.containerId === quick.id),
    );
    await new Promise((r) => setTimeout(r, 500));
    expect(te.events.filter((e) => e.type === 'container-exited' && e.containerId === c.id)).toHaveLength(1);
    await ok(te.engine.removeSandbox(sb));
  });
});
