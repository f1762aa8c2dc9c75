// The layer applier on crafted tarballs: file types and metadata, OCI
// whiteouts, compression detection, and — above all — that no entry can
// write outside the directory it is applied to. Runs as root (ownership,
// device nodes), like HCR itself.
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { decompress } from 'fzstd';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode, type HcrError } from '../src/errors.js';
import type { Logger, LogFields } from '../src/logger.js';
import { silentLogger } from '../src/logger.js';
import { applyLayer, openLayer } from '../src/images/unpack.js';
import { gzip, sha256, tarball, type TarEntry } from './fixtures/images/tar.js';

const ZSTD_FIXTURE = join(import.meta.dirname, 'fixtures', 'images', 'hello.tar.zst');

let base: string;
let root: string;
let outside: string;

beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), 'hcr-unpack-'));
  root = join(base, 'root');
  outside = join(base, 'outside');
  mkdirSync(root);
  mkdirSync(outside);
  writeFileSync(join(outside, 'victim'), 'untouched\n');
});
afterEach(() => {
  rmSync(base, { recursive: true, force: true });
});

async function apply(entries: readonly TarEntry[], logger: Logger = silentLogger) {
  return applyLayer(root, Readable.from([await tarball(entries)]), { layer: 'sha256:test', logger });
}

async function refused(entries: readonly TarEntry[], message: RegExp): Promise<void> {
  const e = (await apply(entries).then(
    () => null,
    (err: unknown) => err,
  )) as HcrError | null;
  expect(e, 'the layer must be refused').not.toBeNull();
  expect(e?.code).toBe(ErrorCode.InvalidArgument);
  expect(e?.message).toMatch(/layer sha256:test is unsafe: entry/);
  expect(e?.message).toMatch(message);
  expect(readdirSync(outside)).toEqual(['victim']);
  expect(readFileSync(join(outside, 'victim'), 'utf8')).toBe('untouched\n');
}

describe('applyLayer', () => {
  it('unpacks every entry type with its mode, owner and times, and measures the diff id', async () => {
    const mtime = new Date('2020-02-02T02:02:02Z');
    const entries: TarEntry[] = [
      { name: 'bin/', type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime },
      { name: 'bin/tool', body: '#!/bin/sh\n', mode: 0o4755, uid: 0, gid: 0, mtime },
      { name: 'bin/sgid', body: 'g', mode: 0o2711, uid: 0, gid: 50 },
      { name: 'data/owned', body: 'mine\n', mode: 0o640, uid: 1234, gid: 5678, mtime },
      { name: 'data/sticky/', type: 'directory', mode: 0o1777, mtime },
      { name: 'data/private/', type: 'directory', mode: 0o700, uid: 1234, gid: 5678 },
      { name: 'data/link-rel', type: 'symlink', linkname: '../bin/tool', uid: 1234, gid: 5678 },
      { name: 'data/link-abs', type: 'symlink', linkname: '/etc/passwd' },
      { name: 'data/hard', type: 'link', linkname: 'bin/tool' },
      { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/loop9', type: 'block-device', devmajor: 7, devminor: 9, mode: 0o660 },
      { name: 'run/fifo', type: 'fifo', mode: 0o620 },
    ];
    const tar = await tarball(entries);
    const result = await applyLayer(root, Readable.from([tar]), { layer: 'sha256:test', logger: silentLogger });

    expect(result).toEqual({ diffId: sha256(tar), size: tar.length });
    const st = (p: string) => lstatSync(join(root, p));
    expect(st('bin/tool').mode & 0o7777).toBe(0o4755);
    expect(st('bin/sgid').mode & 0o7777).toBe(0o2711);
    expect(st('bin/sgid').gid).toBe(50);
    expect(st('bin/tool').mtime.getTime()).toBe(mtime.getTime());
    expect(st('bin').mtime.getTime()).toBe(mtime.getTime());
    expect(st('data/sticky').mode & 0o7777).toBe(0o1777);
    expect(st('data/sticky').mtime.getTime()).toBe(mtime.getTime());
    expect([st('data/owned').uid, st('data/owned').gid, st('data/owned').mode & 0o7777]).toEqual([1234, 5678, 0o640]);
    expect([st('data/private').uid, st('data/private').mode & 0o7777]).toEqual([1234, 0o700]);
    expect(readlinkSync(join(root, 'data/link-rel'))).toBe('../bin/tool');
    expect(readlinkSync(join(root, 'data/link-abs'))).toBe('/etc/passwd');
    expect(st('data/link-rel').uid).toBe(1234);
    expect(st('data/hard').ino).toBe(st('bin/tool').ino);
    expect(st('dev/null').isCharacterDevice()).toBe(true);
    expect(st('dev/null').rdev).toBe(0x103);
    expect(st('dev/null').mode & 0o7777).toBe(0o666);
    expect(st('dev/loop9').isBlockDevice()).toBe(true);
    expect(st('run/fifo').isFIFO()).toBe(true);
    expect(st('run/fifo').mode & 0o7777).toBe(0o620);
    // Implicit parents (no entry of their own) are created 0755 and owned by root.
    expect([st('data').mode & 0o7777, st('data').uid]).toEqual([0o755, 0]);
  });

  it('applies whiteouts and opaque directories to what the layers below put there', async () => {
    await apply([
      { name: 'gone', body: 'x' },
      { name: 'gone-dir/deep/file', body: 'x' },
      { name: 'opaque/old', body: 'old' },
      { name: 'opaque/sub/old', body: 'old' },
      { name: 'kept', body: 'kept' },
      { name: 'file-then-dir', body: 'file' },
      { name: 'dir-then-file/child', body: 'child' },
    ]);
    await apply([
      { name: '.wh.gone' },
      { name: '.wh.gone-dir' },
      { name: 'opaque/', type: 'directory' },
      { name: 'opaque/.wh..wh..opq' },
      { name: 'opaque/sub/new', body: 'new' },
      { name: 'added', body: 'added' },
      // A whiteout never hides what its own layer adds (OCI image-spec).
      { name: '.wh.added' },
      { name: '.wh.never-existed' },
      { name: 'missing-dir/.wh.x' },
      { name: 'file-then-dir/', type: 'directory', mode: 0o711 },
      { name: 'dir-then-file', body: 'now a file' },
      // aufs bookkeeping is meaningless here and ignored.
      { name: '.wh..wh.plnk/1.2' },
    ]);
    expect(readdirSync(root).sort()).toEqual(['added', 'dir-then-file', 'file-then-dir', 'kept', 'opaque']);
    expect(readdirSync(join(root, 'opaque'))).toEqual(['sub']);
    expect(readdirSync(join(root, 'opaque/sub'))).toEqual(['new']);
    expect(lstatSync(join(root, 'file-then-dir')).mode & 0o7777).toBe(0o711);
    expect(readFileSync(join(root, 'dir-then-file'), 'utf8')).toBe('now a file');
  });

  it('replaces what is in the way instead of writing through it', async () => {
    await apply([
      { name: 'was-link', type: 'symlink', linkname: join(outside, 'victim') },
      { name: 'was-dir/inner', body: 'x' },
    ]);
    await apply([
      { name: 'was-link', body: 'replaced' },
      { name: 'was-dir', type: 'symlink', linkname: outside },
    ]);
    expect(lstatSync(join(root, 'was-link')).isFile()).toBe(true);
    expect(readFileSync(join(outside, 'victim'), 'utf8')).toBe('untouched\n');
    expect(readlinkSync(join(root, 'was-dir'))).toBe(outside);
  });

  it('strips leading slashes: absolute names stay inside', async () => {
    await apply([
      { name: '/abs/file', body: 'in' },
      { name: '//double/./file', body: 'in' },
      { name: './', type: 'directory', mode: 0o751 },
    ]);
    expect(readFileSync(join(root, 'abs/file'), 'utf8')).toBe('in');
    expect(readFileSync(join(root, 'double/file'), 'utf8')).toBe('in');
    expect(lstatSync(root).mode & 0o7777).toBe(0o751);
  });

  describe('refuses entries that would escape', () => {
    it('through ..', async () => {
      await refused([{ name: '../outside/victim', body: 'pwned' }], /has a '\.\.' component/);
      await refused([{ name: 'a/../../outside/x', body: 'pwned' }], /'\.\.'/);
      await refused([{ name: '..', type: 'directory' }], /'\.\.'/);
    });

    it('through a symbolic link to a directory outside, created in the same layer', async () => {
      await refused(
        [
          { name: 'evil', type: 'symlink', linkname: outside },
          { name: 'evil/victim', body: 'pwned' },
        ],
        /lies under the symbolic link "evil", which unpacking never follows/,
      );
      await refused(
        [
          { name: 'up', type: 'symlink', linkname: '..' },
          { name: 'up/outside/new', body: 'pwned' },
        ],
        /symbolic link "up"/,
      );
    });

    it('through a symbolic link a lower layer left', async () => {
      await apply([{ name: 'usr/lib', type: 'symlink', linkname: outside }]);
      await refused([{ name: 'usr/lib/x/y', body: 'pwned' }], /symbolic link "usr\/lib"/);
      await refused([{ name: 'usr/lib/.wh.victim' }], /symbolic link "usr\/lib"/);
      await refused([{ name: 'usr/lib/.wh..wh..opq' }], /symbolic link "usr\/lib"/);
    });

    it('through hard links to files outside', async () => {
      await refused([{ name: 'hl', type: 'link', linkname: '../outside/victim' }], /'\.\.'/);
      await refused([{ name: 'hl', type: 'link', linkname: join(outside, 'victim') }], /which does not exist/);
      await refused(
        [
          { name: 'etc', type: 'symlink', linkname: outside },
          { name: 'hl', type: 'link', linkname: 'etc/victim' },
        ],
        /symbolic link "etc"/,
      );
      await refused(
        [
          { name: 'd/', type: 'directory' },
          { name: 'hl', type: 'link', linkname: 'd' },
        ],
        /hard link to the directory "d"/,
      );
      // A hard link to a symbolic link links the link itself, which still points nowhere it can write.
      await apply([
        { name: 'sl', type: 'symlink', linkname: join(outside, 'victim') },
        { name: 'hl', type: 'link', linkname: 'sl' },
      ]);
      expect(lstatSync(join(root, 'hl')).isSymbolicLink()).toBe(true);
      expect(readFileSync(join(outside, 'victim'), 'utf8')).toBe('untouched\n');
    });

    it('by replacing the root with a non-directory', async () => {
      await refused([{ name: './', type: 'symlink', linkname: outside }], /replaces the root directory/);
    });
  });

  it('ignores extended attributes, saying so in the log', async () => {
    const warnings: LogFields[] = [];
    const logger: Logger = { ...silentLogger, warn: (fields) => void warnings.push(fields), child: () => logger };
    await apply([{ name: 'ping', body: 'elf', pax: { 'SCHILY.xattr.user.hcr': 'x' } }], logger);
    expect(readFileSync(join(root, 'ping'), 'utf8')).toBe('elf');
    expect(warnings).toEqual([{ layer: 'sha256:test', entries: 1 }]);
  });

  it('fails on a truncated archive', async () => {
    const tar = await tarball([{ name: 'f', body: 'x'.repeat(4096) }]);
    const cut = applyLayer(root, Readable.from([tar.subarray(0, 1024)]), {
      layer: 'sha256:test',
      logger: silentLogger,
    });
    await expect(cut).rejects.toMatchObject({
      code: ErrorCode.FailedPrecondition,
      message: expect.stringMatching(/layer sha256:test is not a readable tar archive: Unexpected end of data/),
    });
  });
});

describe('openLayer', () => {
  it('detects gzip, zstd and uncompressed layers by their magic numbers', async () => {
    const tar = await tarball([{ name: 'hello.txt', body: 'plain and gzip' }]);
    writeFileSync(join(base, 'plain'), tar);
    writeFileSync(join(base, 'gz'), gzip(tar));
    for (const name of ['plain', 'gz']) {
      const r = await applyLayer(join(root), await openLayer(join(base, name)), { layer: name, logger: silentLogger });
      expect(r.diffId).toBe(sha256(tar));
    }
    const zstTar = decompress(readFileSync(ZSTD_FIXTURE));
    const r = await applyLayer(root, await openLayer(ZSTD_FIXTURE), { layer: 'zstd', logger: silentLogger });
    expect(r).toEqual({ diffId: sha256(zstTar), size: zstTar.length });
    expect(readFileSync(join(root, 'd/hello.txt'), 'utf8')).toBe('hello from a zstd layer\n'.repeat(50));
  });

  it('fails on a corrupt compressed layer', async () => {
    const gz = gzip(await tarball([{ name: 'f', body: 'x'.repeat(10_000) }]));
    gz.fill(0, 20, 60);
    writeFileSync(join(base, 'bad.gz'), gz);
    await expect(
      applyLayer(root, await openLayer(join(base, 'bad.gz')), { layer: 'bad', logger: silentLogger }),
    ).rejects.toThrow();
  });
});
