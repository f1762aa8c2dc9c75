import type { Readable } from 'node:stream';
import type { ResultAsync } from 'neverthrow';
import type { HcrError } from './errors.js';
import type { EngineResult, RuntimeEngine } from './engine.js';
import type { Logger } from './logger.js';
import type { ImageInfo } from './types.js';

/**
 * The version of the engine API in this core. A plugin declares the version it
 * was written against; `hcr serve` refuses one that does not match.
 */
export const ENGINE_API_VERSION = 1;

/** A root filesystem prepared for one container. */
export interface PreparedRootfs {
  /** Mounted, writable root filesystem (overlay of the image's layers plus a private upper dir). */
  readonly path: string;
}

/** Image access for engines that need image contents on the host. */
export interface ImageProvider {
  /** Looks an image up by id or reference. */
  get(ref: string): EngineResult<ImageInfo>;
  /** Mounts a writable root filesystem of `imageId` for `key` (a container id). Idempotent. */
  prepareRootfs(imageId: string, key: string): EngineResult<PreparedRootfs>;
  /** Unmounts and deletes the root filesystem of `key`. Idempotent. */
  releaseRootfs(key: string): EngineResult<void>;
  /** A `docker save`-format archive of the image, tagged with its repo tags, for loading into dockerd. */
  dockerArchive(imageId: string): EngineResult<Readable>;
}

/** What core hands an engine when creating it. */
export interface EngineContext {
  /** Instance name from config. */
  readonly name: string;
  readonly logger: Logger;
  /** Volatile directory for this engine (sockets, pidfiles); survives an HCR restart, not a reboot. */
  readonly runtimeDir: string;
  /** Persistent directory for this engine. */
  readonly stateDir: string;
  readonly images: ImageProvider;
}

/** Validates an engine's config table. */
export interface ConfigSchema<Config> {
  /** Parses the raw TOML table; the error message names the bad key. */
  parse(raw: unknown): { ok: true; value: Config } | { ok: false; error: string };
  /** Documented keys with defaults, for `hcr config default` and the config reference. */
  readonly fields: readonly ConfigField[];
}

/** One documented config key. */
export interface ConfigField {
  readonly key: string;
  readonly type: 'string' | 'number' | 'boolean' | 'string[]';
  readonly default: string | number | boolean | readonly string[];
  readonly description: string;
}

/**
 * How an engine package makes itself known. Built-in engines and npm plugins
 * export exactly this, so HCR loads both the same way.
 */
export interface EngineRegistration<Config = unknown> {
  /** Core engine API version the plugin was written against ({@link ENGINE_API_VERSION}). */
  readonly apiVersion: number;
  /** Engine kind, referenced from config (`engine = "docker"`). */
  readonly kind: string;
  readonly description: string;
  readonly configSchema: ConfigSchema<Config>;
  create(config: Config, context: EngineContext): ResultAsync<RuntimeEngine, HcrError>;
}

/** Type helper for plugin authors: `export default defineEngine({...})`. */
export function defineEngine<Config>(registration: EngineRegistration<Config>): EngineRegistration<Config> {
  return registration;
}
