/**
 * Unpacked layers and the root filesystems mounted from them.
 *
 * Each layer is a snapshot `snapshots/<chainid>/fs` holding only that layer's
 * diff in overlayfs form (whiteouts as 0/0 character devices, opaque
 * directories by xattr), made by applying the layer tar to an overlay of its
 * parent chain (see unpack.ts). A root filesystem is one more overlay: the
 * chain as lower dirs plus an upper and work dir private to its key under
 * `rootfs/<key>/`. Layers are shared by every image and container that has
 * them, and preparing a root filesystem copies nothing.
 *
 * Mounts name lower dirs through short links `snapshots/l/<16 hex>`, so that
 * images with many layers fit the kernel's one page of mount options.
 *
 * A snapshot is built under `snapshots/.tmp-*` and renamed into place once
 * complete and synced; `rootfs/<key>/lease.json` names the snapshots a root
 * filesystem uses, so garbage collection keeps them while it exists.
 */
import { randomBytes } from 'node:crypto';
import { chmod, lchown, lstat, mkdir, readdir, readFile, readlink, rename, rm, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { errors } from '../errors.js';
import type { Logger } from '../logger.js';
import { digestHex } from './digest.js';
import { atomicWriteFile, fsyncDir, isErrno, run } from './fsutil.js';
import { mountOverlay, mountPoints, unmount } from './mount.js';
import { SingleFlight, KeyedMutex } from './sync.js';
import { applyLayer } from './unpack.js';

/** One layer to unpack. */
export interface SnapshotLayer {
  readonly chainId: string;
  readonly diffId: string;
  /** The blob digest, for messages. */
  readonly digest: string;
  /** Opens the layer's uncompressed tar. */
  open(): Promise<Readable>;
}

/** What a prepared root filesystem records about itself. */
export interface Lease {
  readonly imageId: string;
  readonly chainIds: readonly string[];
}

const EMPTY_LOWER = 'empty';
const LINKS_DIR = 'l';
const LINK_HEX_CHARS = 16;
const TMP_PREFIX = '.tmp-';
const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Refuses keys that are not plain names: a key becomes a directory name. */
export function checkRootfsKey(key: string): void {
  if (!KEY_RE.test(key)) {
    throw errors.invalidArgument(
      `rootfs key "${key}" must be 1-128 characters of letters, digits, '_', '.', '-', starting with a letter or digit`,
      'key',
    );
  }
}

/** Snapshots and root filesystems under one image store. */
export class Snapshotter {
  readonly #dir: string;
  readonly #rootfsDir: string;
  readonly #logger: Logger;
  readonly #flight = new SingleFlight<void>();
  readonly #keys = new KeyedMutex();

  private constructor(root: string, logger: Logger) {
    this.#dir = join(root, 'snapshots');
    this.#rootfsDir = join(root, 'rootfs');
    this.#logger = logger;
  }

  /** Opens the snapshot store under `root`, unmounting and deleting what an interrupted unpack left. */
  static async open(root: string, logger: Logger): Promise<Snapshotter> {
    const s = new Snapshotter(root, logger);
    await mkdir(join(s.#dir, EMPTY_LOWER), { recursive: true });
    await mkdir(join(s.#dir, LINKS_DIR), { recursive: true });
    await mkdir(s.#rootfsDir, { recursive: true });
    const prefix = `${s.#dir}/${TMP_PREFIX}`;
    for (const mp of (await mountPoints()).filter((m) => m.startsWith(prefix)).reverse()) await unmount(mp);
    for (const name of await readdir(s.#dir)) {
      if (name.startsWith(TMP_PREFIX)) await rm(join(s.#dir, name), { recursive: true, force: true });
    }
    // Links whose snapshot is gone (a crash between the two deletes) would only confuse a reader.
    for (const name of await readdir(join(s.#dir, LINKS_DIR))) {
      const link = join(s.#dir, LINKS_DIR, name);
      if (name.startsWith(TMP_PREFIX) || !(await exists(link))) await rm(link, { force: true });
    }
    return s;
  }

  #path(chainId: string): string {
    return join(this.#dir, digestHex(chainId, 'chain id'));
  }

  /** True when the snapshot of `chainId` is complete. */
  async has(chainId: string): Promise<boolean> {
    try {
      return (await lstat(join(this.#path(chainId), 'fs'))).isDirectory();
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return false;
      throw e;
    }
  }

  /**
   * Makes sure every layer of `layers` (bottom first) has its snapshot,
   * unpacking the missing ones in order; concurrent callers share the work
   * per chain id. `onLayer` is told before each layer is unpacked.
   */
  async ensure(layers: readonly SnapshotLayer[], onLayer: (index: number) => void = () => undefined): Promise<void> {
    for (let i = 0; i < layers.length; i++) {
      const layer = layers[i];
      if (layer === undefined || (await this.has(layer.chainId))) continue;
      onLayer(i);
      await this.#flight.run(layer.chainId, async () => {
        if (!(await this.has(layer.chainId))) await this.#create(layers.slice(0, i + 1));
      });
    }
  }

  /** Unpacks the last of `chain` on top of the others, which exist. */
  async #create(chain: readonly SnapshotLayer[]): Promise<void> {
    const layer = chain[chain.length - 1];
    if (layer === undefined) return;
    const parents = chain.slice(0, -1).reverse();
    const tmp = join(this.#dir, `${TMP_PREFIX}${randomBytes(8).toString('hex')}`);
    const fs = join(tmp, 'fs');
    const started = Date.now();
    try {
      await mkdir(fs, { recursive: true });
      const top = parents[0];
      if (top !== undefined) await copyRootAttributes(join(this.#path(top.chainId), 'fs'), fs);
      let target = fs;
      if (top !== undefined) {
        target = join(tmp, 'merged');
        await mkdir(join(tmp, 'work'));
        await mkdir(target);
        await mountOverlay({
          lowers: await this.#lowerNames(parents.map((p) => p.chainId)),
          upper: fs,
          work: join(tmp, 'work'),
          target,
          cwd: this.#dir,
        });
      }
      let result;
      try {
        result = await applyLayer(target, await layer.open(), { layer: layer.digest, logger: this.#logger });
      } finally {
        if (target !== fs) await unmount(target);
      }
      if (result.diffId !== layer.diffId) {
        throw errors.failedPrecondition(
          `layer ${layer.digest} unpacks to ${result.diffId}, but the image config says ${layer.diffId}: the image is corrupt`,
        );
      }
      await rm(join(tmp, 'work'), { recursive: true, force: true });
      await rm(join(tmp, 'merged'), { recursive: true, force: true });
      // The snapshot must be on disk before its name says it is complete.
      await run('sync', ['-f', fs]);
      await rename(tmp, this.#path(layer.chainId));
      await fsyncDir(this.#dir);
      this.#logger.debug(
        { layer: layer.digest, chainId: layer.chainId, bytes: result.size, ms: Date.now() - started },
        'layer unpacked',
      );
    } catch (e) {
      await unmount(join(tmp, 'merged')).catch(() => undefined);
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /**
   * Short names for the `fs` dirs of `chainIds`, relative to the snapshot
   * dir: `l/<16 hex>`, a symbolic link to `../<chain hex>/fs` (overlayfs
   * resolves it at mount time). Full paths would fit only ~55 layers into
   * the one page of mount options; these fit 200, more than an image may have.
   */
  async #lowerNames(chainIds: readonly string[]): Promise<string[]> {
    const names: string[] = [];
    for (const chainId of chainIds) {
      const hex = digestHex(chainId, 'chain id');
      const name = join(LINKS_DIR, hex.slice(0, LINK_HEX_CHARS));
      const target = `../${hex}/fs`;
      const path = join(this.#dir, name);
      let current: string | null = null;
      try {
        current = await readlink(path);
      } catch (e) {
        if (!isErrno(e, 'ENOENT')) throw e;
      }
      if (current === null) {
        const tmp = join(this.#dir, LINKS_DIR, `${TMP_PREFIX}${randomBytes(6).toString('hex')}`);
        await symlink(target, tmp);
        await rename(tmp, path);
      } else if (current !== target) {
        // Two chain ids sharing 64 bits: astronomically unlikely, but never mount the wrong layer.
        throw errors.internal(`snapshot link ${path} points to ${current}, not ${target}`);
      }
      names.push(name);
    }
    return names;
  }

  /** Chain ids of every complete snapshot. */
  async list(): Promise<string[]> {
    const names = await readdir(this.#dir);
    return names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  /** Deletes the snapshot of `chainId`; succeeds when it is already gone. */
  async remove(chainId: string): Promise<void> {
    const path = this.#path(chainId);
    await rm(join(this.#dir, LINKS_DIR, digestHex(chainId).slice(0, LINK_HEX_CHARS)), { force: true });
    // Renamed first, so that a crash mid-delete never leaves a half snapshot under a complete name.
    const doomed = join(this.#dir, `${TMP_PREFIX}rm-${randomBytes(8).toString('hex')}`);
    try {
      await rename(path, doomed);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return;
      throw e;
    }
    await rm(doomed, { recursive: true, force: true });
  }

  /**
   * Mounts the writable root filesystem `key` over `chainIds` (bottom first)
   * and returns its path. Idempotent for the same image; refuses a key that
   * is prepared for another image.
   */
  async prepare(key: string, lease: Lease): Promise<string> {
    checkRootfsKey(key);
    return this.#keys.lock(key, async () => {
      const dir = join(this.#rootfsDir, key);
      const merged = join(dir, 'merged');
      const existing = await this.#readLease(key);
      if (existing !== null && existing.imageId !== lease.imageId) {
        throw errors.alreadyExists(`rootfs "${key}" is already prepared for image ${existing.imageId}`);
      }
      if ((await mountPoints()).includes(merged)) return merged;
      for (const c of lease.chainIds) {
        if (!(await this.has(c))) throw errors.notFound(`snapshot ${c} of image ${lease.imageId} is missing`);
      }
      await mkdir(join(dir, 'upper'), { recursive: true });
      await mkdir(join(dir, 'work'), { recursive: true });
      await mkdir(merged, { recursive: true });
      // Written before mounting: garbage collection must see the lease before anything depends on it.
      await atomicWriteFile(join(dir, 'lease.json'), JSON.stringify(lease));
      const top = lease.chainIds[lease.chainIds.length - 1];
      if (existing === null && top !== undefined)
        await copyRootAttributes(join(this.#path(top), 'fs'), join(dir, 'upper'));
      const lowers =
        lease.chainIds.length === 0 ? [EMPTY_LOWER] : await this.#lowerNames([...lease.chainIds].reverse());
      await mountOverlay({
        lowers,
        upper: join(dir, 'upper'),
        work: join(dir, 'work'),
        target: merged,
        cwd: this.#dir,
      });
      return merged;
    });
  }

  /** Unmounts and deletes root filesystem `key`; succeeds when it is already gone. */
  async release(key: string): Promise<void> {
    checkRootfsKey(key);
    await this.#keys.lock(key, async () => {
      const dir = join(this.#rootfsDir, key);
      await unmount(join(dir, 'merged'));
      await rm(dir, { recursive: true, force: true });
    });
  }

  async #readLease(key: string): Promise<Lease | null> {
    try {
      return JSON.parse(await readFile(join(this.#rootfsDir, key, 'lease.json'), 'utf8')) as Lease;
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return null;
      throw e;
    }
  }

  /** The leases of every prepared root filesystem, by key. */
  async leases(): Promise<Map<string, Lease>> {
    const out = new Map<string, Lease>();
    for (const key of await readdir(this.#rootfsDir)) {
      const lease = await this.#readLease(key);
      if (lease !== null) out.set(key, lease);
    }
    return out;
  }
}

/** Gives a new upper dir its parent's root owner and mode: overlayfs shows the upper root's, not the lower's. */
async function copyRootAttributes(from: string, to: string): Promise<void> {
  const st = await lstat(from);
  await lchown(to, st.uid, st.gid);
  await chmod(to, st.mode & 0o7777);
}

/** True when `path` exists, following symbolic links. */
async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return false;
    throw e;
  }
}
