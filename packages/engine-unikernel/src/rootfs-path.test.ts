import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveInRoot } from './rootfs-path.js';

describe('resolveInRoot', () => {
  let root = '';
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'rootfs-'));
    await mkdir(join(root, 'boot'));
    await writeFile(join(root, 'boot/kernel'), 'k');
    await symlink('/boot/kernel', join(root, 'abs-link'));
    await symlink('../../../../etc/passwd', join(root, 'boot/escape'));
    await symlink('loop', join(root, 'loop'));
    await symlink('kernel', join(root, 'boot/rel-link'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('follows symlinks as if the rootfs were /', async () => {
    expect(await resolveInRoot(root, '/boot/kernel')).toEqual({ ok: true, hostPath: join(root, 'boot/kernel') });
    expect(await resolveInRoot(root, '/abs-link')).toEqual({ ok: true, hostPath: join(root, 'boot/kernel') });
    expect(await resolveInRoot(root, '/boot/rel-link')).toEqual({ ok: true, hostPath: join(root, 'boot/kernel') });
  });

  it('never leaves the rootfs, and reports missing files, directories and loops', async () => {
    expect(await resolveInRoot(root, '/boot/escape')).toEqual({ ok: false, reason: 'not-found' });
    expect(await resolveInRoot(root, '/boot')).toEqual({ ok: false, reason: 'not-a-file' });
    expect(await resolveInRoot(root, '/loop')).toEqual({ ok: false, reason: 'symlink-loop' });
    expect(await resolveInRoot(root, '/nope')).toEqual({ ok: false, reason: 'not-found' });
  });
});
