/**
 * `docker save` archives, for `docker load` (Docker 20.10 reads this format,
 * not an OCI layout): `manifest.json`, the config as `<config hex>.json`
 * byte for byte — so dockerd's image id is our id — and one `layer.tar` per
 * layer. Layers are the stored blobs as they are: `docker load` detects
 * gzip and zstd itself (checked against dockerd 20.10.24), so nothing is
 * decompressed here and every entry's size is known before it is written.
 */
import { Readable } from 'node:stream';
import { pack, type Header, type Pack } from 'tar-stream';
import { toHcrError } from '../errors.js';
import type { ContentStore, ImageRecord } from './content-store.js';
import { chainIds, digestHex } from './digest.js';

/** The `manifest.json` entry of a `docker save` archive. */
export interface DockerSaveManifest {
  readonly Config: string;
  readonly RepoTags: readonly string[];
  readonly Layers: readonly string[];
}

/** A `docker save`-format archive of `image`, streamed from the content store. */
export function dockerArchive(store: ContentStore, image: ImageRecord): Readable {
  const out = pack();
  write(out, store, image).catch((e: unknown) => out.destroy(toHcrError(e, `docker archive of ${image.id}`)));
  // tar-stream produces a streamx stream; callers get a Node one, with backpressure and errors carried over.
  return Readable.from(out, { objectMode: false });
}

const EPOCH = new Date(0);

async function write(out: Pack, store: ContentStore, image: ImageRecord): Promise<void> {
  const configName = `${digestHex(image.id)}.json`;
  await addBuffer(out, { name: configName, mode: 0o644, mtime: EPOCH }, await store.readBlob(image.id));
  // Named by chain id: unique per position even when two layers have the same content.
  const chains = chainIds(image.layers.map((l) => l.diffId));
  const layerNames: string[] = [];
  for (const [i, layer] of image.layers.entries()) {
    const dir = digestHex(chains[i] ?? layer.diffId);
    const name = `${dir}/layer.tar`;
    await addBuffer(out, { name: `${dir}/`, type: 'directory', mode: 0o755, mtime: EPOCH }, Buffer.alloc(0));
    const size = await store.blobSize(layer.digest);
    await new Promise<void>((resolve, reject) => {
      const entry = out.entry({ name, size, mode: 0o644, mtime: EPOCH }, (e) => (e ? reject(e) : resolve()));
      const blob = store.openBlob(layer.digest);
      blob.on('error', (e) => {
        entry.destroy(e);
        reject(e);
      });
      blob.pipe(entry as unknown as NodeJS.WritableStream);
    });
    layerNames.push(name);
  }
  const manifest: DockerSaveManifest[] = [{ Config: configName, RepoTags: image.repoTags, Layers: layerNames }];
  await addBuffer(out, { name: 'manifest.json', mode: 0o644, mtime: EPOCH }, Buffer.from(JSON.stringify(manifest)));
  out.finalize();
}

function addBuffer(out: Pack, header: Partial<Header> & { name: string }, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    out.entry(header, data, (e) => (e ? reject(e) : resolve()));
  });
}
