import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isAbsolute, resolve } from 'node:path';
import {
  CniNetworkManager,
  ENGINE_API_VERSION,
  OciImageService,
  RuntimeService,
  SqliteStateStore,
  type EngineRegistration,
  type ImageService,
  type Logger,
  type RuntimeEngine,
} from '@hcr/core';
import { registration as dockerRegistration } from '@hcr/engine-docker';
import { registration as hyperRegistration } from '@hcr/engine-hyper';
import { registration as unikernelRegistration } from '@hcr/engine-unikernel';
import type { HcrConfig } from './config.js';

/** The engines compiled into `hcr`; plugins register exactly the same way. */
export const BUILTIN_ENGINES: readonly EngineRegistration<unknown>[] = [
  dockerRegistration as EngineRegistration<unknown>,
  hyperRegistration as EngineRegistration<unknown>,
  unikernelRegistration as EngineRegistration<unknown>,
];

/** Everything `hcr serve` runs, composed from config. */
export interface Composition {
  readonly runtime: RuntimeService;
  readonly images: ImageService;
  readonly engines: ReadonlyMap<string, RuntimeEngine>;
  /** Engines that are configured but failed to start, with the reason. */
  readonly failedEngines: ReadonlyMap<string, string>;
  close(): Promise<void>;
}

/** Loads plugin packages named in config; each must default-export (or export `registration`) an EngineRegistration. */
export async function loadPlugins(specs: readonly string[], logger: Logger): Promise<EngineRegistration<unknown>[]> {
  const out: EngineRegistration<unknown>[] = [];
  for (const spec of specs) {
    const target = isAbsolute(spec) || spec.startsWith('.') ? pathToFileURL(resolve(spec)).href : spec;
    let mod: Record<string, unknown>;
    try {
      mod = (await import(target)) as Record<string, unknown>;
    } catch (e) {
      throw new Error(`plugin ${spec}: cannot be loaded: ${(e as Error).message}`, { cause: e });
    }
    const reg = (mod['registration'] ?? mod['default']) as Partial<EngineRegistration<unknown>> | undefined;
    checkRegistration(spec, reg);
    logger.info({ plugin: spec, kind: reg.kind }, 'engine plugin loaded');
    out.push(reg);
  }
  return out;
}

/** Refuses a plugin that is not a well-formed registration for this core's engine API. */
export function checkRegistration(
  spec: string,
  reg: Partial<EngineRegistration<unknown>> | undefined,
): asserts reg is EngineRegistration<unknown> {
  if (reg === undefined || typeof reg !== 'object') {
    throw new Error(`plugin ${spec}: exports no engine registration (expected a default export or "registration")`);
  }
  if (reg.apiVersion !== ENGINE_API_VERSION) {
    throw new Error(
      `plugin ${spec}: written for engine API version ${String(reg.apiVersion)}, but this HCR provides version ${ENGINE_API_VERSION}`,
    );
  }
  if (typeof reg.kind !== 'string' || reg.kind === '') throw new Error(`plugin ${spec}: registration has no kind`);
  if (typeof reg.create !== 'function') throw new Error(`plugin ${spec}: registration has no create function`);
  if (reg.configSchema === undefined || typeof reg.configSchema.parse !== 'function') {
    throw new Error(`plugin ${spec}: registration has no configSchema`);
  }
}

/**
 * Builds the runtime from config: state store, image service, pod network,
 * engines (built-in and plugins), and the RuntimeService over them, then
 * reconciles state with what the engines report.
 */
export async function compose(config: HcrConfig, logger: Logger): Promise<Composition> {
  mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
  mkdirSync(config.runtimeDir, { recursive: true, mode: 0o711 });
  const registrations = new Map<string, EngineRegistration<unknown>>();
  for (const r of [...BUILTIN_ENGINES, ...(await loadPlugins(config.plugins, logger))]) {
    if (registrations.has(r.kind)) throw new Error(`two engine registrations claim kind "${r.kind}"`);
    registrations.set(r.kind, r);
  }

  const opened = await OciImageService.open({
    root: config.images.root,
    registries: config.registries,
    logger,
  });
  if (opened.isErr()) throw new Error(`image store ${config.images.root}: ${opened.error.message}`);
  const images = opened.value;
  const network = new CniNetworkManager({
    confDir: config.cni.confDir,
    binDirs: config.cni.binDirs,
    netnsDir: join(config.runtimeDir, 'netns'),
    cacheDir: join(config.stateDir, 'cni'),
    logger,
  });

  const engines = new Map<string, RuntimeEngine>();
  const failed = new Map<string, string>();
  for (const [name, inst] of Object.entries(config.engines)) {
    if (!inst.enabled) continue;
    const reg = registrations.get(inst.kind);
    if (reg === undefined) {
      throw new Error(
        `engines.${name}: unknown engine kind "${inst.kind}" (known: ${[...registrations.keys()].join(', ')}; add a plugin package to "plugins")`,
      );
    }
    const parsed = reg.configSchema.parse(inst.options);
    if (!parsed.ok) throw new Error(`engines.${name}: ${parsed.error}`);
    const created = await reg.create(parsed.value, {
      name,
      logger: logger.child({ engine: name }),
      runtimeDir: join(config.runtimeDir, 'engines', name),
      stateDir: join(config.stateDir, 'engines', name),
      images,
    });
    if (created.isErr()) {
      // One engine's host being unable to run it must not take the others down.
      failed.set(name, created.error.message);
      logger.warn({ engine: name, err: created.error.message }, 'engine unavailable');
      continue;
    }
    engines.set(name, created.value);
  }

  const store = new SqliteStateStore(join(config.stateDir, 'state.db'));
  const runtime = new RuntimeService({
    store,
    network,
    images,
    engines,
    router: config.router,
    sandboxDir: join(config.runtimeDir, 'sandboxes'),
    logger: logger.child({ component: 'runtime' }),
  });
  await runtime.recover();
  return {
    runtime,
    images,
    engines,
    failedEngines: failed,
    async close() {
      runtime.close();
      for (const e of engines.values()) await e.close();
      store.close();
    },
  };
}
