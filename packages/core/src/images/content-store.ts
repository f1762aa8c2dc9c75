/**
 * The content store: blobs by digest (`blobs/sha256/<hex>`) plus one metadata
 * file of image records, all written crash-safely. A download goes to
 * `ingest/` and is renamed into place only after its digest checked out; the
 * metadata names an image only after all its blobs are in place, so a crash
 * at any point never lists a partial image. `ingest/` is emptied on open.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { errors } from '../errors.js';
import type { ImageConfig, ImageInfo } from '../types.js';
import { atomicWriteFile, fsyncDir, isErrno } from './fsutil.js';
import { digestHex, sha256Digest } from './digest.js';

/** One layer of an image as stored. */
export interface LayerRecord {
  /** Digest of the blob as the registry serves it (compressed). */
  readonly digest: string;
  readonly size: number;
  readonly mediaType: string;
  /** Digest of the uncompressed tar (config `rootfs.diff_ids`). */
  readonly diffId: string;
}

/** Everything the store remembers about one image (keyed by its id, the config digest). */
export interface ImageRecord {
  readonly id: string;
  readonly repoTags: readonly string[];
  readonly repoDigests: readonly string[];
  /** The single-platform manifest the layers come from. */
  readonly manifestDigest: string;
  /** The index the manifest was selected from, when the reference named one. */
  readonly indexDigest: string | null;
  readonly layers: readonly LayerRecord[];
  readonly config: ImageConfig;
  readonly kind: ImageInfo['kind'];
  /** Sum of compressed layer sizes, as containerd reports it. */
  readonly size: number;
  /** ISO time of the last pull that touched the record. */
  readonly pulledAt: string;
}

/** The metadata file's contents. */
interface Metadata {
  readonly version: 1;
  readonly images: Readonly<Record<string, ImageRecord>>;
}

const METADATA_VERSION = 1;

/** Blobs and image records under one root directory. */
export class ContentStore {
  readonly #blobs: string;
  readonly #ingest: string;
  readonly #metadataPath: string;

  private constructor(readonly root: string) {
    this.#blobs = join(root, 'blobs', 'sha256');
    this.#ingest = join(root, 'ingest');
    this.#metadataPath = join(root, 'metadata.json');
  }

  /** Opens (creating) the store at `root` and discards downloads a crash left behind. */
  static async open(root: string): Promise<ContentStore> {
    const store = new ContentStore(root);
    await mkdir(store.#blobs, { recursive: true });
    await rm(store.#ingest, { recursive: true, force: true });
    await mkdir(store.#ingest, { recursive: true });
    return store;
  }

  /** Path of blob `digest`. */
  blobPath(digest: string): string {
    return join(this.#blobs, digestHex(digest));
  }

  /** True when blob `digest` is stored. */
  async hasBlob(digest: string): Promise<boolean> {
    try {
      return (await stat(this.blobPath(digest))).isFile();
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return false;
      throw e;
    }
  }

  /** Size in bytes of stored blob `digest`. */
  async blobSize(digest: string): Promise<number> {
    return (await stat(this.blobPath(digest))).size;
  }

  /** Reads a (small) blob whole: manifests and configs. */
  async readBlob(digest: string): Promise<Buffer> {
    try {
      return await readFile(this.blobPath(digest));
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw errors.notFound(`blob ${digest} is not in the content store`);
      throw e;
    }
  }

  /** A stream of blob `digest`. */
  openBlob(digest: string): Readable {
    return createReadStream(this.blobPath(digest));
  }

  /** Stores `bytes` as blob `digest` after checking that they hash to it. */
  async putBlob(digest: string, bytes: Uint8Array): Promise<void> {
    const actual = sha256Digest(bytes);
    if (actual !== digest) throw errors.failedPrecondition(`content for ${digest} hashes to ${actual}`);
    if (await this.hasBlob(digest)) return;
    await atomicWriteFile(this.blobPath(digest), bytes, 0o444);
  }

  /**
   * Writes `source` as blob `digest`, hashing while streaming; the blob
   * appears only when size and digest match. `onBytes` reports progress.
   */
  async ingest(digest: string, size: number, source: Readable, onBytes: (done: number) => void): Promise<void> {
    const hex = digestHex(digest);
    const tmp = join(this.#ingest, `${hex}-${randomBytes(6).toString('hex')}`);
    const hash = createHash('sha256');
    let done = 0;
    const fh = await open(tmp, 'wx', 0o444);
    try {
      try {
        for await (const chunk of source as AsyncIterable<Buffer>) {
          done += chunk.byteLength;
          if (done > size) {
            throw errors.failedPrecondition(`blob ${digest} is larger than the ${size} bytes its descriptor says`);
          }
          hash.update(chunk);
          await writeAll(fh, chunk);
          onBytes(done);
        }
        if (done !== size) {
          throw errors.failedPrecondition(`blob ${digest} ended after ${done} of ${size} bytes`);
        }
        const actual = `sha256:${hash.digest('hex')}`;
        if (actual !== digest) throw errors.failedPrecondition(`blob ${digest} hashes to ${actual}: corrupt download`);
        await fh.sync();
      } finally {
        source.destroy();
        await fh.close();
      }
      await rename(tmp, this.blobPath(digest));
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    await fsyncDir(this.#blobs);
  }

  /** Digests of every stored blob. */
  async listBlobs(): Promise<string[]> {
    const names = await readdir(this.#blobs);
    return names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  /** Deletes blob `digest`; succeeds when it is already gone. */
  async deleteBlob(digest: string): Promise<void> {
    await rm(this.blobPath(digest), { force: true });
  }

  /** The stored image records. */
  async loadImages(): Promise<Map<string, ImageRecord>> {
    let text: string;
    try {
      text = await readFile(this.#metadataPath, 'utf8');
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return new Map();
      throw e;
    }
    let meta: Metadata;
    try {
      meta = JSON.parse(text) as Metadata;
    } catch (e) {
      // Only a bug or a foreign hand can corrupt a file written by rename; refuse rather than forget images.
      throw errors.internal(`image metadata ${this.#metadataPath} is not valid JSON; move it away to start empty`, e);
    }
    if (meta.version !== METADATA_VERSION) {
      throw errors.failedPrecondition(
        `image metadata ${this.#metadataPath} has version ${String(meta.version)}; this HCR reads version ${METADATA_VERSION}`,
      );
    }
    return new Map(Object.entries(meta.images));
  }

  /** Replaces the stored image records, atomically. */
  async saveImages(images: ReadonlyMap<string, ImageRecord>): Promise<void> {
    const meta: Metadata = { version: METADATA_VERSION, images: Object.fromEntries(images) };
    await atomicWriteFile(this.#metadataPath, `${JSON.stringify(meta, null, 1)}\n`);
  }
}

async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  for (let off = 0; off < chunk.byteLength;) {
    const { bytesWritten } = await fh.write(chunk, off);
    off += bytesWritten;
  }
}
