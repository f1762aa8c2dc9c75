/**
 * Applies one OCI layer (a tar, possibly gzip or zstd compressed) onto a
 * directory, with OCI whiteout semantics and without ever letting an entry
 * write outside that directory.
 *
 * The directory is either an empty snapshot (first layer) or the merged view
 * of an overlay whose lower layers are the parent chain and whose upper dir
 * is the new snapshot. Whiteouts are therefore applied as plain deletions:
 * the kernel records them in the upper dir as overlayfs whiteouts and opaque
 * directories, copies up what a hard link or a metadata change touches, and
 * resolves implicit parents against the lower layers — the same per-layer
 * diffs containerd's overlay snapshotter keeps, without our own xattr or
 * device-node bookkeeping.
 *
 * Security: names are confined (`..` refused, leading `/` stripped), every
 * parent component is checked with lstat and a symbolic link there is refused
 * rather than followed, and files are created with O_EXCL|O_NOFOLLOW after
 * whatever was at their path is removed. Nothing else writes to the directory
 * while a layer is applied, so these checks cannot be raced.
 */
import { constants as fsc, createReadStream } from 'node:fs';
import { createHash } from 'node:crypto';
import {
  chmod,
  type FileHandle,
  link,
  lchown,
  lstat,
  lutimes,
  mkdir,
  open,
  readdir,
  rm,
  symlink,
  unlink,
  utimes,
} from 'node:fs/promises';
import { join } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';
import { extract, type Header } from 'tar-stream';
import { ErrorCode, errors, HcrError, isHcrError } from '../errors.js';
import type { Logger } from '../logger.js';
import { isErrno, run } from './fsutil.js';

/** What applying a layer measured. */
export interface ApplyResult {
  /** sha256 of the uncompressed tar: must equal the config's diff id. */
  readonly diffId: string;
  /** Uncompressed size in bytes. */
  readonly size: number;
}

/** Options of {@link applyLayer}. */
export interface ApplyOptions {
  /** Names the layer in errors and logs (its digest). */
  readonly layer: string;
  readonly logger: Logger;
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';

/** Opens a stored layer blob uncompressed, detecting gzip and zstd by their magic numbers rather than trusting media types. */
export async function openLayer(path: string): Promise<Readable> {
  const fh = await open(path, 'r');
  const magic = Buffer.alloc(4);
  try {
    await fh.read(magic, 0, 4, 0);
  } finally {
    await fh.close();
  }
  const raw = createReadStream(path);
  if (magic[0] === 0x1f && magic[1] === 0x8b) return chain(raw, createGunzip());
  if (magic.readUInt32LE(0) === 0xfd2fb528) return chain(raw, zstdStream());
  return raw;
}

function chain(source: Readable, transform: Transform): Readable {
  source.on('error', (e) => transform.destroy(e));
  transform.on('close', () => source.destroy());
  return source.pipe(transform);
}

/** A Transform around fzstd's streaming decompressor. */
function zstdStream(): Transform {
  const d = new ZstdDecompress();
  const out = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      try {
        d.push(chunk);
        cb();
      } catch (e) {
        cb(e instanceof Error ? e : new Error(String(e)));
      }
    },
    flush(cb) {
      try {
        d.push(new Uint8Array(0), true);
        cb();
      } catch (e) {
        cb(e instanceof Error ? e : new Error(String(e)));
      }
    },
  });
  // fzstd may reuse its window buffer; copy before handing the chunk on.
  d.ondata = (data) => out.push(Buffer.from(data));
  return out;
}

/** Applies the uncompressed layer tar `tarStream` onto `root`. */
export async function applyLayer(root: string, tarStream: Readable, options: ApplyOptions): Promise<ApplyResult> {
  const hash = createHash('sha256');
  let size = 0;
  const measure = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      size += chunk.byteLength;
      cb(null, chunk);
    },
  });
  const ex = extract();
  // tar-stream's streams are streamx, not Node streams: wire them by hand so every failure reaches the loop,
  // and remember the first, which says more than the "destroyed" errors that follow it.
  let streamError: Error | undefined;
  const failed = (e: Error) => {
    streamError ??= e;
    ex.destroy(e);
  };
  tarStream.on('error', failed);
  measure.on('error', failed);
  ex.on('error', (e: Error) => (streamError ??= e));
  tarStream.pipe(measure).pipe(ex as unknown as NodeJS.WritableStream);
  const applier = new Applier(root, options);
  try {
    // The loop ends once tar-stream has read every byte (it reads past the end-of-archive marker), so the
    // diff id covers the padding too.
    for await (const entry of ex) {
      await applier.apply(entry.header as TarHeader, entry as AsyncIterable<Buffer>);
      // Whatever the applier did not read (e.g. a whiteout's body) must be drained for the next header.
      entry.resume();
    }
    await applier.finish();
  } catch (e) {
    tarStream.destroy();
    measure.destroy();
    ex.destroy();
    if (streamError !== undefined && !isHcrError(streamError)) {
      throw new HcrError(
        ErrorCode.FailedPrecondition,
        `layer ${options.layer} is not a readable tar archive: ${streamError.message}`,
        { cause: streamError },
      );
    }
    throw e;
  }
  return { diffId: `sha256:${hash.digest('hex')}`, size };
}

/** tar-stream's header plus the PAX records it keeps. */
type TarHeader = Omit<Header, 'pax'> & { pax?: Record<string, string> | null };

class Applier {
  /** Paths (relative, '/'-joined) this layer created or changed. */
  readonly #unpacked = new Set<string>();
  /** Ancestors of those paths: an opaque directory must keep them. */
  readonly #ancestors = new Set<string>();
  /** Directory times, set last since creating children changes them. */
  readonly #dirTimes = new Map<string, { atime: Date; mtime: Date }>();
  #xattrsSkipped = 0;

  constructor(
    readonly root: string,
    readonly options: ApplyOptions,
  ) {}

  #unsafe(entry: string, why: string): Error {
    return errors.invalidArgument(
      `layer ${this.options.layer} is unsafe: entry "${entry}" ${why}; refusing to unpack it`,
    );
  }

  /** Splits a tar name into components: leading '/' and '.' dropped, '..' refused. */
  #components(name: string, entry: string): string[] {
    const comps = name.split('/').filter((c) => c !== '' && c !== '.');
    if (comps.includes('..')) throw this.#unsafe(entry, "has a '..' component");
    return comps;
  }

  #markUnpacked(rel: string): void {
    this.#unpacked.add(rel);
    for (let i = rel.lastIndexOf('/'); i > 0; i = rel.lastIndexOf('/', i - 1)) this.#ancestors.add(rel.slice(0, i));
  }

  /**
   * The absolute path of directory `comps` under root, checking each
   * component with lstat: a missing one is created (0755, root) when
   * `create`, else null is returned; a symbolic link or non-directory is refused.
   */
  async #dir(comps: readonly string[], entry: string, create: boolean): Promise<string | null> {
    let cur = this.root;
    for (let i = 0; i < comps.length; i++) {
      cur = join(cur, comps[i] ?? '');
      const st = await lstatOrNull(cur);
      const rel = comps.slice(0, i + 1).join('/');
      if (st === null) {
        if (!create) return null;
        await mkdir(cur, 0o755);
        this.#markUnpacked(rel);
      } else if (st.isSymbolicLink()) {
        throw this.#unsafe(entry, `lies under the symbolic link "${rel}", which unpacking never follows`);
      } else if (!st.isDirectory()) {
        throw this.#unsafe(entry, `lies under "${rel}", which is not a directory`);
      }
    }
    return cur;
  }

  async apply(h: TarHeader, body: AsyncIterable<Buffer>): Promise<void> {
    const entry = h.name;
    const comps = this.#components(h.name, entry);
    const base = comps[comps.length - 1];
    const parentComps = comps.slice(0, -1);

    // Names starting with .wh. are reserved (OCI image-spec); under such a directory lies aufs bookkeeping.
    if (parentComps.some((c) => c.startsWith(WHITEOUT_PREFIX))) {
      this.options.logger.debug(
        { layer: this.options.layer, entry },
        'skipping entry under a whiteout-prefixed directory',
      );
      return;
    }
    // Whiteouts are recognised by name whatever their type: docker writes some as hard links with a stale target.
    if (base !== undefined && base.startsWith(WHITEOUT_PREFIX)) {
      await this.#whiteout(parentComps, base, entry);
      return;
    }
    if (h.pax !== undefined && h.pax !== null && Object.keys(h.pax).some((k) => k.startsWith('SCHILY.xattr.'))) {
      this.#xattrsSkipped++;
    }

    const type: string = h.type ?? 'file';
    if (base === undefined) {
      // The layer root itself ("./"): only its metadata can change.
      if (type !== 'directory') throw this.#unsafe(entry, 'replaces the root directory with a non-directory');
      await this.#setMetadata(this.root, h, 'directory');
      return;
    }
    const parent = await this.#dir(parentComps, entry, true);
    if (parent === null) throw errors.internal(`could not create the parent of ${entry}`);
    const path = join(parent, base);
    const rel = comps.join('/');
    const existing = await lstatOrNull(path);

    // An existing entry is replaced, except a directory by a directory (which merges).
    if (existing !== null && !(type === 'directory' && existing.isDirectory())) {
      if (existing.isDirectory()) await rm(path, { recursive: true, force: true });
      else await unlink(path);
    }

    switch (type) {
      case 'directory':
        if (existing === null || !existing.isDirectory()) await mkdir(path, 0o700);
        break;
      case 'file':
      case 'contiguous-file': {
        const fh = await open(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
        try {
          for await (const chunk of body) await writeAll(fh, chunk);
        } finally {
          await fh.close();
        }
        break;
      }
      case 'symlink':
        await symlink(h.linkname ?? '', path);
        break;
      case 'link': {
        const target = await this.#linkTarget(h.linkname ?? '', entry);
        await link(target, path);
        // A hard link shares its target's inode: its metadata is the target's.
        this.#markUnpacked(rel);
        return;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        const kind =
          type === 'fifo'
            ? ['p']
            : [type === 'character-device' ? 'c' : 'b', String(h.devmajor ?? 0), String(h.devminor ?? 0)];
        await run('mknod', ['-m', '0600', path, ...kind]);
        break;
      }
      default:
        this.options.logger.warn({ layer: this.options.layer, entry, type }, 'skipping tar entry of unsupported type');
        return;
    }
    this.#markUnpacked(rel);
    await this.#setMetadata(path, h, type);
  }

  /** Owner, then mode (chown clears setuid bits), then times (deferred for directories). */
  async #setMetadata(path: string, h: TarHeader, type: string): Promise<void> {
    const uid = paxInt(h, 'uid') ?? h.uid ?? 0;
    const gid = paxInt(h, 'gid') ?? h.gid ?? 0;
    await lchown(path, uid, gid);
    if (type !== 'symlink') await chmod(path, (h.mode ?? 0o644) & 0o7777);
    const mtime = paxTime(h, 'mtime') ?? h.mtime ?? new Date(0);
    const atime = paxTime(h, 'atime') ?? mtime;
    if (type === 'directory') this.#dirTimes.set(path, { atime, mtime });
    else if (type === 'symlink') await lutimes(path, atime, mtime);
    else await utimes(path, atime, mtime);
  }

  /** The path a hard link entry points at: confined like a name, and never reached through a symbolic link. */
  async #linkTarget(linkname: string, entry: string): Promise<string> {
    const comps = this.#components(linkname, entry);
    const base = comps[comps.length - 1];
    if (base === undefined) throw this.#unsafe(entry, 'is a hard link to the root directory');
    const dir = await this.#dir(comps.slice(0, -1), entry, false);
    const target = dir === null ? null : join(dir, base);
    const st = target === null ? null : await lstatOrNull(target);
    if (target === null || st === null)
      throw this.#unsafe(entry, `is a hard link to "${linkname}", which does not exist`);
    if (st.isDirectory()) throw this.#unsafe(entry, `is a hard link to the directory "${linkname}"`);
    return target;
  }

  /** `.wh.<name>` deletes name from the layers below; `.wh..wh..opq` hides everything below in its directory. */
  async #whiteout(parentComps: string[], base: string, entry: string): Promise<void> {
    if (base !== OPAQUE_MARKER && base.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) return; // aufs metadata, meaningless here
    const dir = await this.#dir(parentComps, entry, false);
    if (dir === null) return;
    const parentRel = parentComps.join('/');
    if (base === OPAQUE_MARKER) {
      await this.#purge(dir, parentRel);
      return;
    }
    const name = base.slice(WHITEOUT_PREFIX.length);
    if (name === '' || name === '.' || name === '..') throw this.#unsafe(entry, 'is a whiteout without a valid name');
    const rel = parentRel === '' ? name : `${parentRel}/${name}`;
    // A whiteout hides lower layers only, never what its own layer adds (OCI image-spec).
    if (this.#unpacked.has(rel)) return;
    await rm(join(dir, name), { recursive: true, force: true });
  }

  /** Removes from `dir` everything this layer did not put there. */
  async #purge(dir: string, rel: string): Promise<void> {
    for (const name of await readdir(dir)) {
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const child = join(dir, name);
      if (this.#unpacked.has(childRel) || this.#ancestors.has(childRel)) {
        const st = await lstat(child);
        if (st.isDirectory()) await this.#purge(child, childRel);
      } else {
        await rm(child, { recursive: true, force: true });
      }
    }
  }

  async finish(): Promise<void> {
    for (const [path, t] of this.#dirTimes) await utimes(path, t.atime, t.mtime);
    if (this.#xattrsSkipped > 0) {
      this.options.logger.warn(
        { layer: this.options.layer, entries: this.#xattrsSkipped },
        'layer entries carry extended attributes (e.g. file capabilities); HCR does not apply them',
      );
    }
  }
}

async function lstatOrNull(path: string) {
  try {
    return await lstat(path);
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return null;
    throw e;
  }
}

function paxInt(h: TarHeader, key: string): number | undefined {
  const v = h.pax?.[key];
  if (v === undefined || !/^\d+$/.test(v)) return undefined;
  return Number(v);
}

function paxTime(h: TarHeader, key: string): Date | undefined {
  const v = h.pax?.[key];
  if (v === undefined || !/^-?\d+(\.\d+)?$/.test(v)) return undefined;
  return new Date(Number(v) * 1000);
}

async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  for (let off = 0; off < chunk.byteLength;) {
    const { bytesWritten } = await fh.write(chunk, off);
    off += bytesWritten;
  }
}
