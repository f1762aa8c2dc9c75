import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type NetworkConfList, parseNetworkConfig } from './config.js';

/**
 * What HCR keeps about one pod's CNI attachment: the exact configuration and
 * parameters the ADD ran with and its result, so that CHECK and DEL repeat
 * them after a restart or after the config directory changed.
 */
export interface CniCacheEntry {
  readonly sandboxId: string;
  readonly ifName: string;
  readonly netnsPath: string | null;
  readonly args: readonly (readonly [string, string])[];
  readonly capabilityArgs: Readonly<Record<string, unknown>>;
  readonly config: NetworkConfList;
  /** The final ADD result; null while the ADD runs, or when it never finished. */
  readonly result: unknown;
}

/** What reading a cache file found. */
export type CacheRead =
  | { readonly kind: 'found'; readonly entry: CniCacheEntry }
  | { readonly kind: 'absent' }
  /** Present but unusable (e.g. written by an incompatible version); the reason says why. */
  | { readonly kind: 'unreadable'; readonly reason: string };

const KIND = 'hcr.cni-attachment/v1';

/** Path of a sandbox's cache file. */
export function cachePath(cacheDir: string, sandboxId: string): string {
  return join(cacheDir, `${sandboxId}.json`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Serialises an entry; the config is stored as a plain list so it survives changes to our types. */
export function encodeCacheEntry(entry: CniCacheEntry): string {
  const { config } = entry;
  return `${JSON.stringify(
    {
      kind: KIND,
      sandboxId: entry.sandboxId,
      ifName: entry.ifName,
      netnsPath: entry.netnsPath,
      args: entry.args,
      capabilityArgs: entry.capabilityArgs,
      config: {
        cniVersion: config.cniVersion,
        name: config.name,
        disableCheck: config.disableCheck,
        plugins: config.plugins,
      },
      configSource: config.source,
      result: entry.result,
    },
    null,
    2,
  )}\n`;
}

/** Parses a cache file's text, re-validating the stored config like one read from disk. */
export function decodeCacheEntry(text: string): CacheRead {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return { kind: 'unreadable', reason: `invalid JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (!isRecord(raw) || raw['kind'] !== KIND) return { kind: 'unreadable', reason: `not a ${KIND} record` };
  const args = raw['args'];
  if (
    typeof raw['sandboxId'] !== 'string' ||
    typeof raw['ifName'] !== 'string' ||
    !(raw['netnsPath'] === null || typeof raw['netnsPath'] === 'string') ||
    !Array.isArray(args) ||
    !args.every((a) => Array.isArray(a) && a.length === 2 && a.every((x) => typeof x === 'string')) ||
    !isRecord(raw['capabilityArgs']) ||
    !isRecord(raw['config'])
  ) {
    return { kind: 'unreadable', reason: 'missing or mistyped fields' };
  }
  const config = parseNetworkConfig(JSON.stringify(raw['config']), '');
  if (config.isErr()) return { kind: 'unreadable', reason: `stored config: ${config.error}` };
  const source = typeof raw['configSource'] === 'string' ? raw['configSource'] : '';
  return {
    kind: 'found',
    entry: {
      sandboxId: raw['sandboxId'],
      ifName: raw['ifName'],
      netnsPath: raw['netnsPath'],
      args: args as [string, string][],
      capabilityArgs: raw['capabilityArgs'],
      config: { ...config.value, source },
      result: raw['result'] ?? null,
    },
  };
}

/** Reads a sandbox's cache entry. */
export async function readCache(cacheDir: string, sandboxId: string): Promise<CacheRead> {
  let text: string;
  try {
    text = await readFile(cachePath(cacheDir, sandboxId), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' };
    throw e;
  }
  return decodeCacheEntry(text);
}

/**
 * Writes an entry crash-safely: a temp file is synced and renamed over the old
 * one, then the directory is synced, so a reader sees the old or the new entry.
 */
export async function writeCache(cacheDir: string, entry: CniCacheEntry): Promise<void> {
  await mkdir(cacheDir, { recursive: true, mode: 0o700 });
  const file = cachePath(cacheDir, entry.sandboxId);
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(encodeCacheEntry(entry));
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await syncDir(cacheDir);
}

/** Removes a sandbox's cache entry; absent is fine. */
export async function removeCache(cacheDir: string, sandboxId: string): Promise<void> {
  await rm(cachePath(cacheDir, sandboxId), { force: true });
  await syncDir(cacheDir).catch(() => undefined);
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
