import { randomBytes } from 'node:crypto';
import type { ImageInfo } from '@hcr/core';
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

const repo = `hcr.local/pause-test-${randomBytes(4).toString('hex')}`;
let te: TestEngine;
let busybox: ImageInfo;

beforeAll(async () => {
  ensurePulled(BUSYBOX);
  busybox = await imageInfo(BUSYBOX);
  te = await makeEngine({ pauseImage: repo });
});

afterAll(async () => {
  await te.engine.close();
  await expectNoLeftovers(te.name);
  for (const image of await docker.listImages({ filters: { reference: [repo] } })) {
    await docker.getImage(image.Id).remove({ force: true });
  }
});

describe('pause image and program', () => {
  it('imports the pause binary into dockerd when the image is missing, tagged by its digest', async () => {
    expect(await docker.listImages({ filters: { reference: [repo] } })).toEqual([]);
    const sb = sandboxRef();
    const created = await ok(te.engine.createSandbox(sb));
    const image = String(created.engineData['pauseImage']);
    expect(image).toMatch(new RegExp(`^${repo}:[0-9a-f]{16}$`));
    const info = await docker.getImage(image).inspect();
    expect(info.Config.Labels).toMatchObject({ 'io.hcr.kind': 'pause' });
    expect(info.Config.Entrypoint).toEqual(['/pause']);
    // A second engine (HCR restart) finds the image instead of importing it again.
    const again = await te.recreate();
    const sb2 = sandboxRef();
    expect((await ok(again.engine.createSandbox(sb2))).engineData['pauseImage']).toBe(image);
    expect((await docker.getImage(image).inspect()).Id).toBe(info.Id);
    for (const s of [sb, sb2]) await ok(te.engine.removeSandbox(s));
    await again.engine.close();
  });

  it('stops at once on SIGTERM and exits 0', async () => {
    const sb = sandboxRef();
    await ok(te.engine.createSandbox(sb));
    const started = Date.now();
    await ok(te.engine.stopSandbox(sb, 30));
    expect(Date.now() - started).toBeLessThan(3000);
    const info = await docker.getContainer(`hcr_sandbox_${sb.id}`).inspect();
    expect(info.State.ExitCode).toBe(0);
    const died = await waitFor('sandbox-died event', () =>
      te.events.find((e) => e.type === 'sandbox-died' && e.sandboxId === sb.id),
    );
    expect(died).toMatchObject({ message: 'infra container exited with code 0' });
    await ok(te.engine.removeSandbox(sb));
  });

  it('reaps orphans re-parented to it in a shared PID namespace', async () => {
    const sb = sandboxRef({ linux: { namespaces: { network: 'node', pid: 'pod', ipc: 'pod', targetId: '' } } });
    await ok(te.engine.createSandbox(sb));
    const c = containerRef(sb, busybox, {
      command: ['sleep', '3600'],
      security: { namespaces: { network: 'node', pid: 'pod', ipc: 'pod', targetId: '' } },
    });
    await ok(te.engine.createContainer(c));
    await ok(te.engine.startContainer(c));
    // The shell exits at once; its background children become children of pause (PID 1) and exit later.
    await ok(te.engine.execSync(c, ['sh', '-c', 'for i in 1 2 3 4 5; do sleep 0.2 & done; exit 0'], 5));
    await new Promise((r) => setTimeout(r, 800));
    const ps = await ok(te.engine.execSync(c, ['ps', '-o', 'pid,ppid,stat,args'], 5));
    expect(ps.stdout.toString()).not.toMatch(/\sZ\s/);
    expect(ps.stdout.toString()).not.toContain('sleep 0.2');
    await ok(te.engine.removeSandbox(sb));
  });

  it('reports a missing pause binary clearly, in health and on createSandbox', async () => {
    const broken = await makeEngine({ pauseBinary: '/nonexistent/pause', pauseImage: repo });
    expect(await ok(broken.engine.health())).toMatchObject({ ready: false, reason: 'PauseBinaryMissing' });
    const r = await broken.engine.createSandbox(sandboxRef());
    expect(r.isErr() && r.error.code).toBe('FailedPrecondition');
    if (r.isErr()) expect(r.error.message).toContain('setup-assets.sh');
    await broken.engine.close();
    await expectNoLeftovers(broken.name);
  });
});
