/**
 * The one image service of HCR: pulls from OCI registries (with mirrors),
 * keeps blobs and image records in a crash-safe content store, unpacks layers
 * into overlayfs snapshots for the VM engines, and hands dockerd a
 * `docker save` archive. CRI's ImageService is a thin adapter over it.
 */
import { lstat, opendir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import { ErrorCode, errors, HcrError, isHcrError, toHcrError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import type { PreparedRootfs } from '../plugin.js';
import type { FilesystemUsage, ImageInfo } from '../types.js';
import { credentialsFrom } from './auth.js';
import { ContentStore, type ImageRecord, type LayerRecord } from './content-store.js';
import { chainIds } from './digest.js';
import { dockerArchive } from './docker-archive.js';
import {
  type Descriptor,
  hostPlatform,
  IMAGE_CONFIG_TYPES,
  imageKind,
  type ImageManifest,
  MediaType,
  mergeAnnotations,
  parseImageConfig,
  parseManifest,
  type Platform,
  selectPlatform,
} from './manifest.js';
import { overlayUnsafePath } from './mount.js';
import {
  formatReference,
  type ImageReference,
  normalizeReference,
  parseReference,
  referenceName,
  withDefaultTag,
} from './reference.js';
import { type Endpoint, type PullAuth, RegistryClient, type RegistryConfig } from './registry.js';
import { checkRootfsKey, Snapshotter, type SnapshotLayer } from './snapshots.js';
import { Mutex, RefCounts, SingleFlight } from './sync.js';
import type { ImageService, PullProgress, RegistryAuth } from './types.js';
import { openLayer } from './unpack.js';

/** Where images live when no root is configured. */
export const DEFAULT_IMAGE_ROOT = '/var/lib/hcr/images';

/** Settings of an {@link OciImageService}. */
export interface OciImageServiceOptions {
  /** Store directory (default {@link DEFAULT_IMAGE_ROOT}); must allow overlayfs upper dirs (not overlayfs itself). */
  readonly root?: string;
  /** Mirrors, insecure hosts and rewrites per registry host. */
  readonly registries?: RegistryConfig;
  readonly logger?: Logger;
  /** The platform picked from multi-platform images (default: this host's). */
  readonly platform?: Platform;
  /** Unpack layers when pulling (default true); otherwise at the first prepareRootfs. */
  readonly unpackOnPull?: boolean;
  /** References whose images report `pinned` (the pause image), exempt from kubelet image GC. */
  readonly pinned?: readonly string[];
  /** Layer downloads at once per pull (default 3). */
  readonly maxConcurrentDownloads?: number;
  /** How long an fsInfo measurement is reused, in ms (default 10000; the kubelet polls it). */
  readonly fsInfoMaxAgeMs?: number;
  /** Registry request attempts on transient failures (default 4). */
  readonly registryAttempts?: number;
  /** First retry delay in ms, doubled per attempt (default 250). */
  readonly registryBackoffMs?: number;
  /** How long a download may stall before it is retried, in ms (default 60000). */
  readonly registryIdleTimeoutMs?: number;
}

/** How a reference matched an image, which decides what `remove` takes away. */
type Match = { kind: 'id' } | { kind: 'tag'; tag: string } | { kind: 'digest'; digest: string };

/** An {@link ImageService} over OCI registries, a local content store and overlayfs. */
export class OciImageService implements ImageService {
  readonly #root: string;
  readonly #store: ContentStore;
  readonly #snapshots: Snapshotter;
  readonly #client: RegistryClient;
  readonly #logger: Logger;
  readonly #platform: Platform;
  readonly #unpackOnPull: boolean;
  readonly #pinned: ReadonlySet<string>;
  readonly #maxDownloads: number;
  /** Serialises metadata changes and garbage collection, and existence checks that must not race a collection. */
  readonly #lock = new Mutex();
  /** Blobs and snapshots in use by running pulls and prepares, which collection leaves alone. */
  readonly #holds = new RefCounts();
  readonly #downloads = new SingleFlight<void>();
  readonly #usageWalk = new SingleFlight<{ bytes: number; inodes: number }>();
  readonly #usageMaxAgeMs: number;
  #usage: { at: number; usage: { bytes: number; inodes: number } } | null = null;
  #images: ReadonlyMap<string, ImageRecord>;

  private constructor(
    root: string,
    store: ContentStore,
    snapshots: Snapshotter,
    client: RegistryClient,
    images: ReadonlyMap<string, ImageRecord>,
    options: OciImageServiceOptions,
    pinned: ReadonlySet<string>,
  ) {
    this.#root = root;
    this.#store = store;
    this.#snapshots = snapshots;
    this.#client = client;
    this.#images = images;
    this.#logger = options.logger ?? silentLogger;
    this.#platform = options.platform ?? hostPlatform();
    this.#unpackOnPull = options.unpackOnPull ?? true;
    this.#maxDownloads = Math.max(1, options.maxConcurrentDownloads ?? 3);
    this.#pinned = pinned;
    this.#usageMaxAgeMs = options.fsInfoMaxAgeMs ?? 10_000;
  }

  /**
   * Opens the store at `options.root`: discards what a crash left half-made
   * (downloads, unpacks) and collects blobs and snapshots no image references.
   */
  static open(options: OciImageServiceOptions = {}): ResultAsync<OciImageService, HcrError> {
    return ResultAsync.fromPromise(
      (async () => {
        const root = resolve(options.root ?? DEFAULT_IMAGE_ROOT);
        if (overlayUnsafePath(root)) {
          throw errors.invalidArgument(
            `image root "${root}" must not contain ',', ':', '\\' or spaces (overlayfs options)`,
            'root',
          );
        }
        const logger = (options.logger ?? silentLogger).child({ component: 'images' });
        const pinned = new Set<string>();
        for (const ref of options.pinned ?? []) {
          const n = normalizeReference(ref);
          if (n.isErr()) throw n.error.withContext('pinned images');
          pinned.add(n.value);
        }
        const client = new RegistryClient({
          config: options.registries ?? {},
          logger,
          ...(options.registryAttempts === undefined ? {} : { attempts: options.registryAttempts }),
          ...(options.registryBackoffMs === undefined ? {} : { backoffMs: options.registryBackoffMs }),
          ...(options.registryIdleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.registryIdleTimeoutMs }),
        });
        const store = await ContentStore.open(root);
        const snapshots = await Snapshotter.open(root, logger);
        const images = await store.loadImages();
        const service = new OciImageService(root, store, snapshots, client, images, { ...options, logger }, pinned);
        await service.#lock.lock(() => service.#collectGarbage());
        return service;
      })(),
      (e) => toHcrError(e, 'open image store'),
    );
  }

  pull(
    ref: string,
    options: { auth?: RegistryAuth; onProgress?: (p: PullProgress) => void } = {},
  ): ResultAsync<ImageInfo, HcrError> {
    return ResultAsync.fromPromise(this.#pull(ref, options), (e) => toHcrError(e, `pull ${ref}`));
  }

  list(): ResultAsync<readonly ImageInfo[], HcrError> {
    return ResultAsync.fromPromise(Promise.resolve([...this.#images.values()].map((r) => this.#info(r))), (e) =>
      toHcrError(e, 'list images'),
    );
  }

  status(ref: string): ResultAsync<ImageInfo | null, HcrError> {
    return ResultAsync.fromPromise(
      (async () => {
        const found = this.#lookup(ref);
        return found === null ? null : this.#info(found.image);
      })(),
      (e) => toHcrError(e, `image status ${ref}`),
    );
  }

  get(ref: string): ResultAsync<ImageInfo, HcrError> {
    return this.status(ref).andThen((info) =>
      info === null ? errAsync(errors.notFound(`image "${ref}" is not present; pull it first`)) : okAsync(info),
    );
  }

  remove(ref: string): ResultAsync<void, HcrError> {
    return ResultAsync.fromPromise(
      this.#lock.lock(async () => {
        const found = this.#lookup(ref);
        if (found === null) return;
        const { image, match } = found;
        const next = new Map(this.#images);
        let repoTags = image.repoTags;
        let repoDigests = image.repoDigests;
        if (match.kind === 'tag') repoTags = repoTags.filter((t) => t !== match.tag);
        if (match.kind === 'digest') repoDigests = repoDigests.filter((d) => d !== match.digest);
        // Digest references alone do not keep an image (docker's rule): it goes with its last tag.
        const keep =
          match.kind !== 'id' && (repoTags.length > 0 || (match.kind === 'digest' && repoDigests.length > 0));
        if (keep) next.set(image.id, { ...image, repoTags, repoDigests });
        else next.delete(image.id);
        await this.#store.saveImages(next);
        this.#images = next;
        this.#logger.info({ ref, image: image.id, deleted: !keep }, keep ? 'image reference removed' : 'image removed');
        if (!keep) await this.#collectGarbage();
      }),
      (e) => toHcrError(e, `remove image ${ref}`),
    );
  }

  fsInfo(): ResultAsync<readonly FilesystemUsage[], HcrError> {
    return ResultAsync.fromPromise(
      (async () => {
        // The kubelet asks every few seconds and a walk of a big store is not free: reuse a recent one.
        if (this.#usage === null || Date.now() - this.#usage.at > this.#usageMaxAgeMs) {
          const at = Date.now();
          const usage = await this.#usageWalk.run('walk', () => diskUsage(this.#root));
          this.#usage = { at, usage };
        }
        const { usage } = this.#usage;
        return [{ mountpoint: this.#root, usedBytes: usage.bytes, inodesUsed: usage.inodes }];
      })(),
      (e) => toHcrError(e, 'image filesystem usage'),
    );
  }

  prepareRootfs(imageId: string, key: string): ResultAsync<PreparedRootfs, HcrError> {
    return ResultAsync.fromPromise(
      (async () => {
        checkRootfsKey(key);
        const found = this.#lookup(imageId);
        if (found === null) throw errors.notFound(`image "${imageId}" is not present; pull it first`);
        const image = found.image;
        const chains = chainIds(image.layers.map((l) => l.diffId));
        const release = this.#holds.hold([...chains, ...image.layers.map((l) => l.digest)]);
        try {
          await this.#unpack(image, () => undefined);
          const path = await this.#lock.lock(() =>
            this.#snapshots.prepare(key, { imageId: image.id, chainIds: chains }),
          );
          return { path };
        } finally {
          release();
        }
      })(),
      (e) => toHcrError(e, `prepare rootfs ${key}`),
    );
  }

  releaseRootfs(key: string): ResultAsync<void, HcrError> {
    return ResultAsync.fromPromise(
      (async () => {
        await this.#snapshots.release(key);
        // Snapshots of an image removed while this rootfs used it can go now.
        await this.#lock.lock(() => this.#collectGarbage());
      })(),
      (e) => toHcrError(e, `release rootfs ${key}`),
    );
  }

  dockerArchive(imageId: string): ResultAsync<Readable, HcrError> {
    return ResultAsync.fromPromise(
      (async () => {
        const found = this.#lookup(imageId);
        if (found === null) throw errors.notFound(`image "${imageId}" is not present; pull it first`);
        return dockerArchive(this.#store, found.image);
      })(),
      (e) => toHcrError(e, `docker archive of ${imageId}`),
    );
  }

  #info(r: ImageRecord): ImageInfo {
    return {
      id: r.id,
      repoTags: r.repoTags,
      repoDigests: r.repoDigests,
      size: r.size,
      config: r.config,
      kind: r.kind,
      pinned: r.repoTags.some((t) => this.#pinned.has(t)),
    };
  }

  /**
   * Finds an image by full id (with or without `sha256:`), tag, digest
   * reference (`repo@sha256:…`) or, failing those, unambiguous id prefix.
   */
  #lookup(ref: string): { image: ImageRecord; match: Match } | null {
    const full = /^(?:sha256:)?([a-f0-9]{64})$/.exec(ref);
    if (full !== null) {
      const image = this.#images.get(`sha256:${full[1] ?? ''}`);
      if (image !== undefined) return { image, match: { kind: 'id' } };
    }
    const parsed = parseReference(ref);
    if (parsed.isOk()) {
      const r = withDefaultTag(parsed.value);
      const name = referenceName(r);
      for (const image of this.#images.values()) {
        if (r.digest !== null) {
          const digestRef = `${name}@${r.digest}`;
          if (image.repoDigests.includes(digestRef)) return { image, match: { kind: 'digest', digest: digestRef } };
        } else {
          const tag = formatReference(r);
          if (image.repoTags.includes(tag)) return { image, match: { kind: 'tag', tag } };
        }
      }
    }
    const prefix = /^(?:sha256:)?([a-f0-9]{1,64})$/.exec(ref);
    if (prefix !== null) {
      const want = `sha256:${prefix[1] ?? ''}`;
      const matches = [...this.#images.values()].filter((i) => i.id.startsWith(want));
      if (matches.length > 1) {
        throw errors.invalidArgument(
          `image id prefix "${ref}" is ambiguous: it matches ${matches.length} images`,
          'image',
        );
      }
      const image = matches[0];
      if (image !== undefined) return { image, match: { kind: 'id' } };
      return null;
    }
    if (parsed.isErr()) throw parsed.error;
    return null;
  }

  async #pull(
    ref: string,
    options: { auth?: RegistryAuth; onProgress?: (p: PullProgress) => void },
  ): Promise<ImageInfo> {
    const parsed = parseReference(ref);
    if (parsed.isErr()) throw parsed.error;
    const target = withDefaultTag(parsed.value);
    const canonical = formatReference(target);
    const name = referenceName(target);
    const report = options.onProgress ?? (() => undefined);
    const progress = (phase: PullProgress['phase'], layer = '', done = 0, total = 0) => {
      try {
        report({ ref: canonical, layer, done, total, phase });
      } catch (e) {
        this.#logger.warn({ ref: canonical, error: String(e) }, 'pull progress callback threw');
      }
    };
    const creds = credentialsFrom(options.auth);
    const auth: PullAuth | null = creds === null ? null : { creds, serverAddress: options.auth?.serverAddress ?? '' };
    const started = Date.now();
    progress('resolving');

    // Resolve: the reference's own manifest or index, from the first endpoint that has it.
    const endpoints = this.#client.endpoints(target.domain);
    const wanted = target.digest ?? target.tag ?? 'latest';
    const topHit = await firstOk(endpoints, (ep) => this.#client.fetchManifest(ep, target, wanted, auth), this.#logger);
    const top = topHit.value;
    // Later requests start at the endpoint that answered, falling back to the others.
    const order = [topHit.endpoint, ...endpoints.filter((e) => e !== topHit.endpoint)];
    const what = `image ${canonical}`;
    let doc = parseManifest(top.bytes, top.contentType, what);
    let manifestBytes = top.bytes;
    let manifestDigest = top.digest;
    let indexDigest: string | null = null;
    let indexAnnotations = {};
    if (doc.kind === 'index') {
      const chosen = selectPlatform(doc, this.#platform, what);
      indexDigest = top.digest;
      indexAnnotations = chosen.annotations;
      const hit = await firstOk(
        order,
        (ep) => this.#client.fetchManifest(ep, target, chosen.digest, auth),
        this.#logger,
      );
      doc = parseManifest(hit.value.bytes, hit.value.contentType, `${what} (${chosen.digest})`);
      if (doc.kind !== 'manifest')
        throw errors.failedPrecondition(`${what}: index entry ${chosen.digest} is itself an index`);
      manifestBytes = hit.value.bytes;
      manifestDigest = hit.value.digest;
    }
    const manifest: ImageManifest = doc;
    if (manifest.config.mediaType !== '' && !IMAGE_CONFIG_TYPES.has(manifest.config.mediaType)) {
      throw errors.failedPrecondition(
        `${what} is not a container image: its config has media type "${manifest.config.mediaType}"`,
      );
    }
    for (const l of manifest.layers) {
      if (l.mediaType === MediaType.DockerForeignLayer) {
        throw errors.failedPrecondition(
          `${what} has a foreign (Windows) layer ${l.digest}, which Linux engines cannot run`,
        );
      }
    }

    const id = manifest.config.digest;
    const held = [
      id,
      manifestDigest,
      ...(indexDigest === null ? [] : [indexDigest]),
      ...manifest.layers.map((l) => l.digest),
    ];
    const release = this.#holds.hold(held);
    try {
      // Manifests are stored too: they were verified against their digests on the way in.
      if (indexDigest !== null) await this.#store.putBlob(indexDigest, top.bytes);
      await this.#store.putBlob(manifestDigest, manifestBytes);
      await this.#fetchBlob(order, target, manifest.config, auth, () => undefined);
      const parsedConfig = parseImageConfig(
        await this.#store.readBlob(id),
        manifest.layers.length,
        `config ${id} of ${what}`,
      );
      const layers: LayerRecord[] = manifest.layers.map((l, i) => ({
        digest: l.digest,
        size: l.size,
        mediaType: l.mediaType,
        diffId: parsedConfig.diffIds[i] ?? '',
      }));
      const chains = chainIds(layers.map((l) => l.diffId));
      const releaseChains = this.#holds.hold(chains);
      try {
        await forEachLimited(manifest.layers, this.#maxDownloads, (l) =>
          this.#fetchBlob(order, target, l, auth, (done) => progress('downloading', l.digest, done, l.size)),
        );
        const annotations = mergeAnnotations(
          { ...indexAnnotations, ...manifest.annotations },
          parsedConfig.config.labels,
        );
        const record: ImageRecord = {
          id,
          repoTags: target.tag === null ? [] : [`${name}:${target.tag}`],
          repoDigests: [`${name}@${top.digest}`],
          manifestDigest,
          indexDigest,
          layers,
          config: { ...parsedConfig.config, annotations },
          kind: imageKind(annotations),
          size: layers.reduce((sum, l) => sum + l.size, 0),
          pulledAt: new Date().toISOString(),
        };
        if (this.#unpackOnPull) {
          await this.#unpack(record, (layer) => progress('unpacking', layer.digest, 0, layer.size));
        }
        const info = await this.#lock.lock(() => this.#commit(record));
        this.#logger.info(
          { ref: canonical, image: id, layers: layers.length, ms: Date.now() - started },
          'image pulled',
        );
        progress('done', '', record.size, record.size);
        return info;
      } finally {
        releaseChains();
      }
    } finally {
      release();
    }
  }

  /** Records a pulled image, moving its tag off any image that had it (that one stays, by id and digest). */
  async #commit(pulled: ImageRecord): Promise<ImageInfo> {
    const next = new Map(this.#images);
    for (const [id, other] of next) {
      if (id === pulled.id) continue;
      const repoTags = other.repoTags.filter((t) => !pulled.repoTags.includes(t));
      if (repoTags.length !== other.repoTags.length) next.set(id, { ...other, repoTags });
    }
    const existing = next.get(pulled.id);
    const merged: ImageRecord =
      existing === undefined
        ? pulled
        : {
            ...pulled,
            repoTags: union(existing.repoTags, pulled.repoTags),
            repoDigests: union(existing.repoDigests, pulled.repoDigests),
            // The first pull's manifest stays authoritative for the layers already recorded.
            manifestDigest: existing.manifestDigest,
            indexDigest: existing.indexDigest,
            layers: existing.layers,
          };
    next.set(pulled.id, merged);
    await this.#store.saveImages(next);
    this.#images = next;
    return this.#info(merged);
  }

  /** Downloads blob `desc` unless stored, once per digest however many pulls want it, from the first endpoint that has it. */
  async #fetchBlob(
    order: readonly Endpoint[],
    ref: ImageReference,
    desc: Descriptor,
    auth: PullAuth | null,
    onBytes: (done: number) => void,
  ): Promise<void> {
    // Checked under the lock: a collection running now could otherwise delete it right after.
    if (await this.#lock.lock(() => this.#store.hasBlob(desc.digest))) {
      onBytes(desc.size);
      return;
    }
    await this.#downloads.run(desc.digest, async () => {
      if (await this.#store.hasBlob(desc.digest)) return;
      let last = 0;
      const throttled = (done: number) => {
        const now = Date.now();
        if (done === desc.size || now - last >= 200) {
          last = now;
          onBytes(done);
        }
      };
      await firstOk(
        order,
        (ep) =>
          this.#client.downloadBlob(ep, ref, desc.digest, auth, (stream) =>
            this.#store.ingest(desc.digest, desc.size, stream, throttled),
          ),
        this.#logger,
      );
    });
  }

  /** Unpacks the image's missing snapshots from its stored blobs. */
  async #unpack(image: ImageRecord, onLayer: (layer: LayerRecord) => void): Promise<void> {
    const chains = chainIds(image.layers.map((l) => l.diffId));
    const layers: SnapshotLayer[] = image.layers.map((l, i) => ({
      chainId: chains[i] ?? '',
      diffId: l.diffId,
      digest: l.digest,
      open: () => openLayer(this.#store.blobPath(l.digest)),
    }));
    await this.#snapshots.ensure(layers, (i) => {
      const l = image.layers[i];
      if (l !== undefined) onLayer(l);
    });
  }

  /**
   * Deletes blobs and snapshots that no image, prepared rootfs or running
   * operation uses. Call with the lock held.
   */
  async #collectGarbage(): Promise<void> {
    const blobs = new Set<string>();
    const snapshots = new Set<string>();
    for (const image of this.#images.values()) {
      blobs.add(image.id);
      blobs.add(image.manifestDigest);
      if (image.indexDigest !== null) blobs.add(image.indexDigest);
      for (const l of image.layers) blobs.add(l.digest);
      for (const c of chainIds(image.layers.map((l) => l.diffId))) snapshots.add(c);
    }
    for (const lease of (await this.#snapshots.leases()).values()) for (const c of lease.chainIds) snapshots.add(c);
    let removedBlobs = 0;
    let removedSnapshots = 0;
    for (const d of await this.#store.listBlobs()) {
      if (blobs.has(d) || this.#holds.has(d)) continue;
      await this.#store.deleteBlob(d);
      removedBlobs++;
    }
    for (const c of await this.#snapshots.list()) {
      if (snapshots.has(c) || this.#holds.has(c)) continue;
      await this.#snapshots.remove(c);
      removedSnapshots++;
    }
    if (removedBlobs + removedSnapshots > 0) {
      this.#logger.info({ blobs: removedBlobs, snapshots: removedSnapshots }, 'garbage collected');
    }
  }
}

function union(a: readonly string[], b: readonly string[]): string[] {
  return [...new Set([...a, ...b])];
}

/**
 * Tries `fn` on each endpoint in order and returns the first success. When
 * all fail, the error lists every endpoint's failure; its class is NotFound
 * only if every endpoint said so, else the most actionable class seen.
 */
async function firstOk<T>(
  endpoints: readonly Endpoint[],
  fn: (ep: Endpoint) => Promise<T>,
  logger: Logger,
): Promise<{ value: T; endpoint: Endpoint }> {
  const failures: HcrError[] = [];
  for (const ep of endpoints) {
    try {
      return { value: await fn(ep), endpoint: ep };
    } catch (e) {
      const err = toHcrError(e);
      failures.push(err);
      if (endpoints.length > 1) logger.warn({ endpoint: ep.label, error: err.message }, 'registry endpoint failed');
    }
  }
  const only = failures[0];
  if (failures.length === 1 && only !== undefined) throw only;
  const rank: ErrorCode[] = [
    ErrorCode.InvalidArgument,
    ErrorCode.FailedPrecondition,
    ErrorCode.Unavailable,
    ErrorCode.NotFound,
  ];
  const code = rank.find((c) => failures.some((f) => isHcrError(f, c))) ?? ErrorCode.Unavailable;
  throw new HcrError(code, failures.map((f) => f.message).join('; '), { cause: failures[failures.length - 1] });
}

/** Runs `fn` over `items` with at most `limit` at a time; the first failure fails the whole. */
async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Bytes (allocated blocks) and inodes under `dir`, like `du`: hard links once, other filesystems (mounts) skipped. */
async function diskUsage(dir: string): Promise<{ bytes: number; inodes: number }> {
  const root = await lstat(dir);
  const linked = new Set<number>();
  let bytes = 0;
  let inodes = 0;
  const walk = async (path: string): Promise<void> => {
    const st = await lstat(path).catch(() => null);
    if (st === null || st.dev !== root.dev) return;
    if (st.nlink > 1 && !st.isDirectory()) {
      if (linked.has(st.ino)) return;
      linked.add(st.ino);
    }
    inodes++;
    bytes += st.blocks * 512;
    if (!st.isDirectory()) return;
    const d = await opendir(path).catch(() => null);
    if (d === null) return;
    for await (const entry of d) await walk(join(path, entry.name));
  };
  await walk(dir);
  return { bytes, inodes };
}
