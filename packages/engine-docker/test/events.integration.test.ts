import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EngineEvent, ImageInfo } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toContainerStatus } from '../src/engine.js';
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
  /** Request lines (`GET /v1.41/containers/…/json`) the engine sent through the relay. */
  readonly requests: string[] = [];
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
      client.on('data', (chunk: Buffer) => {
        for (const m of chunk.toString('latin1').matchAll(/(?:GET|POST|PUT|DELETE|HEAD) \S+ HTTP\/1\.1/g))
          this.requests.push(m[0]);
      });
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
  it('answer ContainerStatus from a cache they keep current, without an inspect per request', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    // No CRI log: the log copier inspects the container too, which would blur the count.
    const c = containerRef(sb, busybox, { command: ['sleep', '3600'] }, { logPath: '' });
    const name = `hcr_container_${c.id}`;
    const inspects = () => relay.requests.filter((r) => r.includes(`/containers/${name}/json `)).length;
    const real = async () => toContainerStatus(await docker.getContainer(name).inspect());

    await ok(te.engine.createContainer(c));
    expect(await ok(te.engine.containerStatus(c))).toEqual(await real());
    expect(inspects()).toBe(0);

    await ok(te.engine.startContainer(c));
    // Its own start event is older than any inspect sent from here on, so it cannot void the fill,
    // however late it arrives (within the same millisecond it could, costing one more inspect).
    await new Promise((r) => setTimeout(r, 50));
    const running = await ok(te.engine.containerStatus(c));
    expect(running).toEqual(await real());
    expect(running.state).toBe('running');
    expect(inspects()).toBe(1);
    for (let i = 0; i < 20; i++) expect(await ok(te.engine.containerStatus(c))).toEqual(running);
    expect(inspects()).toBe(1);

    // Killed outside HCR: once dockerd has said so, the cache says so too.
    await docker.getContainer(name).kill();
    await waitFor('the exit event', () =>
      te.events.find((e) => e.type === 'container-exited' && e.containerId === c.id),
    );
    const exited = await ok(te.engine.containerStatus(c));
    expect(exited).toMatchObject({ state: 'exited', exitCode: 137, reason: 'Error' });
    expect(exited).toEqual(await real());

    // While the event stream is down nothing is served from before: the request goes to dockerd.
    await relay.down();
    await waitFor('unready health event', () => healthEvents(te.events).find((e) => !e.health.ready));
    expect((await te.engine.containerStatus(c))._unsafeUnwrapErr().code).toBe('Unavailable');
    await relay.up();
    await waitFor('ready health event', () => healthEvents(te.events).find((e) => e.health.ready), 30_000);
    te.events.length = 0;
    await ok(te.engine.removeSandbox(sb));
  });

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
