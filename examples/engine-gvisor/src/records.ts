import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** What the engine remembers of a container, beyond what runsc keeps. */
export interface ContainerMeta {
  readonly sandboxId: string;
  /** Absolute CRI log path ('' = none); needed to resume copying output after an HCR restart. */
  readonly logPath: string;
  /** Where the image service mounted the root filesystem ('' until it did). */
  readonly rootfs: string;
}

/** When a container's first process started (runsc does not say). */
export interface StartRecord {
  /** Unix nanoseconds, as a decimal string (JSON has no bigint). */
  readonly startedAt: string;
}

/** How a container ended, written once by the engine that saw it end. */
export interface ExitRecord {
  readonly exitCode: number;
  /** Unix nanoseconds, as a decimal string. */
  readonly finishedAt: string;
  readonly reason: string;
  readonly message: string;
}

/** What the engine remembers of a sandbox. */
export interface SandboxMeta {
  /** The pod's cgroup, to tell operators where its limits live ('' = none). */
  readonly cgroupsPath: string;
}

/**
 * The engine's own records, one directory per sandbox and per container
 * under the engine's runtime directory (each container's directory also
 * holds its OCI bundle and log FIFOs). Files are replaced atomically so a
 * crash leaves either the old or the new record.
 */
export class Records {
  constructor(private readonly root: string) {}

  /** Directory of a sandbox (its OCI bundle). */
  sandboxDir(id: string): string {
    return join(this.root, 'sandboxes', id);
  }

  /** Directory of a container (its OCI bundle, FIFOs and records). */
  containerDir(id: string): string {
    return join(this.root, 'containers', id);
  }

  /** Ids of sandboxes with a directory. */
  async sandboxIds(): Promise<string[]> {
    return readdir(join(this.root, 'sandboxes')).catch(() => []);
  }

  /** Ids of containers with a directory. */
  async containerIds(): Promise<string[]> {
    return readdir(join(this.root, 'containers')).catch(() => []);
  }

  /** Writes `value` as `dir/name` atomically. */
  async put(dir: string, name: string, value: unknown): Promise<void> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, `.${name}.tmp`);
    await writeFile(tmp, JSON.stringify(value, null, 1), { mode: 0o600 });
    await rename(tmp, join(dir, name));
  }

  /** Reads `dir/name`; null when it does not exist. */
  async get<T>(dir: string, name: string): Promise<T | null> {
    const text = await readFile(join(dir, name), 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return null;
      throw e;
    });
    return text === null ? null : (JSON.parse(text) as T);
  }

  /** Deletes a directory and everything in it (idempotent). */
  async remove(dir: string): Promise<void> {
    await rm(dir, { recursive: true, force: true });
  }
}

/** File names of the records. */
export const RecordFile = {
  bundle: 'config.json',
  meta: 'meta.json',
  started: 'started.json',
  exit: 'exit.json',
} as const;
