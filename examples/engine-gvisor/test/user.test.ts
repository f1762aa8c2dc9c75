import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultSecurity } from '@hcr/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGroup, parsePasswd, resolveInRoot, resolveUser } from '../src/user.js';

const PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  '# a comment',
  'www-data:x:33:33:www-data:/var/www:/bin/false',
  'broken:line',
  'nobody:x:65534:65534:nobody:/nonexistent:/bin/false',
  '',
].join('\n');
const GROUP = [
  'root:x:0:',
  'adm:x:4:www-data',
  'www-data:x:33:',
  'staff:x:50:root,www-data',
  'nogroup:x:65534:',
  '',
].join('\n');

describe('image users', () => {
  let root: string;
  let outside: string;

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'hcr-gvisor-rootfs-'));
    outside = mkdtempSync(join(tmpdir(), 'hcr-gvisor-outside-'));
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc/passwd'), PASSWD);
    writeFileSync(join(root, 'etc/group'), GROUP);
  });

  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  it('parses passwd and group, skipping what libc skips', () => {
    expect(parsePasswd(PASSWD).map((p) => p.name)).toEqual(['root', 'www-data', 'nobody']);
    expect(parseGroup(GROUP).find((g) => g.name === 'staff')?.members).toEqual(['root', 'www-data']);
  });

  it('takes the image USER by name, with its primary and supplementary groups', async () => {
    expect(await resolveUser(root, defaultSecurity, 'www-data')).toEqual({
      uid: 33,
      gid: 33,
      additionalGids: [4, 50],
      home: '/var/www',
    });
  });

  it('takes numeric ids, and names a user the image does not know by number only', async () => {
    expect(await resolveUser(root, defaultSecurity, '1000:1000')).toEqual({
      uid: 1000,
      gid: 1000,
      additionalGids: [],
      home: '/',
    });
    expect(await resolveUser(root, defaultSecurity, '')).toMatchObject({ uid: 0, gid: 0, home: '/root' });
    expect(await resolveUser(root, defaultSecurity, 'nobody:staff')).toMatchObject({ uid: 65534, gid: 50 });
  });

  it('lets the CRI security context win over the image', async () => {
    const security = { ...defaultSecurity, runAsUser: 33, runAsGroup: 7, supplementalGroups: [100] };
    expect(await resolveUser(root, security, 'nobody')).toEqual({
      uid: 33,
      gid: 7,
      additionalGids: [4, 50, 100],
      home: '/var/www',
    });
    expect(await resolveUser(root, { ...defaultSecurity, runAsUsername: 'nobody' }, 'www-data')).toMatchObject({
      uid: 65534,
    });
  });

  it('refuses names the image does not have, with the field to fix', async () => {
    await expect(resolveUser(root, defaultSecurity, 'postgres')).rejects.toMatchObject({ code: 'InvalidArgument' });
    await expect(resolveUser(root, defaultSecurity, 'root:wheel')).rejects.toMatchObject({ code: 'InvalidArgument' });
  });

  it('resolves symlinks inside the root filesystem, never out of it', async () => {
    writeFileSync(join(outside, 'passwd'), 'evil:x:0:0::/:/bin/sh\n');
    const evil = mkdtempSync(join(tmpdir(), 'hcr-gvisor-evil-'));
    try {
      mkdirSync(join(evil, 'etc'));
      mkdirSync(join(evil, 'real'));
      // Absolute and climbing links are both taken relative to the image root, where the host file is not.
      symlinkSync(join(outside, 'passwd'), join(evil, 'etc/passwd'));
      symlinkSync('../../../../../../..' + join(outside, 'passwd'), join(evil, 'etc/group'));
      expect(await resolveInRoot(evil, '/etc/passwd')).toBeNull();
      expect(await resolveInRoot(evil, '/etc/group')).toBeNull();
      await expect(resolveUser(evil, defaultSecurity, 'evil')).rejects.toMatchObject({ code: 'InvalidArgument' });
      mkdirSync(join(evil, outside), { recursive: true });
      writeFileSync(join(evil, outside, 'passwd'), 'inside:x:7:7::/:/bin/sh\n');
      expect(await resolveInRoot(evil, '/etc/group')).toBe(join(evil, outside, 'passwd'));
      expect(await resolveUser(evil, defaultSecurity, 'inside')).toMatchObject({ uid: 7 });
      symlinkSync('/real', join(evil, 'link'));
      writeFileSync(join(evil, 'real/file'), 'x');
      expect(await resolveInRoot(evil, '/link/file')).toBe(join(evil, 'real/file'));
      symlinkSync('loop', join(evil, 'loop'));
      await expect(resolveInRoot(evil, '/loop')).rejects.toMatchObject({ code: 'InvalidArgument' });
    } finally {
      rmSync(evil, { recursive: true, force: true });
    }
  });
});
