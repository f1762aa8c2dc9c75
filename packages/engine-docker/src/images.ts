import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { errors, type HcrError, type ImageProvider } from '@hcr/core';
import type Docker from 'dockerode';
import { pack } from 'tar-stream';
import { fromDocker, isDockerNotFound } from './docker-errors.js';
import { Label } from './labels.js';
import { PAUSE_PATH } from './spec.js';

/**
 * Reads a Docker progress stream (load, import) to its end and fails with the
 * first error message in it: dockerd answers 200 and reports failures inside
 * the stream.
 */
export async function drainProgress(stream: Readable): Promise<string[]> {
  let text = '';
  for await (const chunk of stream) text += (chunk as Buffer).toString('utf8');
  const messages: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let obj: { error?: string; errorDetail?: { message?: string }; stream?: string; status?: string };
    try {
      obj = JSON.parse(line) as typeof obj;
    } catch {
      messages.push(line.trim());
      continue;
    }
    const error = obj.errorDetail?.message ?? obj.error;
    if (error !== undefined) throw new Error(error);
    const msg = obj.stream ?? obj.status;
    if (msg !== undefined) messages.push(msg.trim());
  }
  return messages;
}

/**
 * Makes sure images are in dockerd before containers use them: by id, loading
 * the image service's `docker save` archive when dockerd lacks it. Ids known
 * to be present are remembered; concurrent requests for one image share a load.
 */
export class DockerImageCache {
  private readonly present = new Set<string>();
  private readonly loading = new Map<string, Promise<void>>();

  constructor(
    private readonly docker: Docker,
    private readonly provider: ImageProvider,
  ) {}

  /** Ensures image `id` (`sha256:…`) exists in dockerd. */
  ensure(id: string): Promise<void> {
    if (this.present.has(id)) return Promise.resolve();
    let pending = this.loading.get(id);
    if (pending === undefined) {
      pending = this.load(id).finally(() => this.loading.delete(id));
      this.loading.set(id, pending);
    }
    return pending;
  }

  /** Forgets that `id` is present (dockerd said "no such image" after all). */
  forget(id: string): void {
    this.present.delete(id);
  }

  private async load(id: string): Promise<void> {
    if (await this.exists(id)) {
      this.present.add(id);
      return;
    }
    const archive = await this.provider.dockerArchive(id).match(
      (a) => a,
      (e: HcrError) => {
        throw e.withContext(`image ${id} is not in dockerd and its archive is unavailable`);
      },
    );
    try {
      await drainProgress((await this.docker.loadImage(archive, { quiet: true })) as unknown as Readable);
    } catch (e) {
      throw fromDocker(e, `load image ${id} into dockerd`);
    }
    if (!(await this.exists(id)))
      throw errors.internal(`loaded the archive of image ${id}, but dockerd has no image with that id afterwards`);
    this.present.add(id);
  }

  private async exists(ref: string): Promise<boolean> {
    try {
      await this.docker.getImage(ref).inspect();
      return true;
    } catch (e) {
      if (isDockerNotFound(e)) return false;
      throw fromDocker(e, `inspect image ${ref}`);
    }
  }
}

/**
 * The pause image: the static pause binary imported into dockerd as a
 * one-file image, tagged with a digest of the binary so a rebuilt pause never
 * hides behind a stale image. No registry is involved.
 */
export class PauseImage {
  private ref: Promise<string> | null = null;

  constructor(
    private readonly docker: Docker,
    private readonly binary: string,
    private readonly repository: string,
  ) {}

  /** The image reference, importing it first when dockerd lacks it. */
  ensure(): Promise<string> {
    this.ref ??= this.importIfMissing().catch((e: unknown) => {
      this.ref = null;
      throw e;
    });
    return this.ref;
  }

  private async importIfMissing(): Promise<string> {
    let content: Buffer;
    try {
      content = await readFile(this.binary);
    } catch (e) {
      throw errors.failedPrecondition(
        `pause binary ${this.binary} is missing (${(e as Error).message}); build it with packages/engine-docker/scripts/setup-assets.sh or set pauseBinary`,
      );
    }
    const tag = createHash('sha256').update(content).digest('hex').slice(0, 16);
    const ref = `${this.repository}:${tag}`;
    try {
      await this.docker.getImage(ref).inspect();
      return ref;
    } catch (e) {
      if (!isDockerNotFound(e)) throw fromDocker(e, `inspect pause image ${ref}`);
    }
    const tar = pack();
    tar.entry(
      { name: PAUSE_PATH.slice(1), mode: 0o755, uid: 0, gid: 0, size: content.length, mtime: new Date(0) },
      content,
    );
    tar.finalize();
    try {
      const stream = await this.docker.importImage(
        tar as unknown as Readable,
        {
          repo: this.repository,
          tag,
          changes: [`ENTRYPOINT ["${PAUSE_PATH}"]`, `LABEL ${Label.kind}=pause`],
        } as object,
      );
      await drainProgress(stream as unknown as Readable);
    } catch (e) {
      throw fromDocker(e, `import pause image ${ref} from ${this.binary}`);
    }
    return ref;
  }
}
