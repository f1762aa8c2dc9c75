import { accessSync, constants, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { err, ok, type Result } from 'neverthrow';

/** One plugin entry of a network configuration list, exactly as written (plus the `type` we rely on). */
export type PluginConf = Readonly<Record<string, unknown>> & { readonly type: string };

/** A validated CNI network configuration list. */
export interface NetworkConfList {
  readonly name: string;
  /** The CNI version every plugin of the list is run with. */
  readonly cniVersion: string;
  readonly disableCheck: boolean;
  readonly plugins: readonly PluginConf[];
  /** The file it came from ('' when it did not come from a file). */
  readonly source: string;
}

/** A config file that was passed over, and why. */
export interface SkippedConf {
  readonly file: string;
  readonly reason: string;
}

/** What {@link loadNetworkConfig} found in a config directory. */
export interface ConfigScan {
  /** The first valid configuration in lexical order, or null. */
  readonly config: NetworkConfList | null;
  /** Files before it (or all files, when none was valid) that could not be used. */
  readonly skipped: readonly SkippedConf[];
}

/** CNI versions whose ADD/DEL/CHECK protocol this runtime speaks. */
export const SUPPORTED_CNI_VERSIONS = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

/** File extensions libcni (and so every CNI runtime) reads from the config directory. */
export const CONF_EXTENSIONS = ['.conf', '.conflist', '.json'] as const;

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Compares two `x.y.z` versions numerically. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((p) => Number.parseInt(p, 10));
  const pb = b.split('.').map((p) => Number.parseInt(p, 10));
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// A type names a file in the plugin directories: it must not walk out of them.
function validType(t: unknown): t is string {
  return typeof t === 'string' && t !== '' && t !== '.' && t !== '..' && !t.includes('/') && !t.includes('\0');
}

/**
 * The version to run a list with: per spec, the highest of `cniVersion` and
 * `cniVersions` that the runtime supports.
 */
function selectVersion(raw: Record<string, unknown>): Result<string, string> {
  const offered: string[] = [];
  if (typeof raw['cniVersion'] === 'string') offered.push(raw['cniVersion']);
  if (Array.isArray(raw['cniVersions'])) {
    for (const v of raw['cniVersions']) if (typeof v === 'string') offered.push(v);
  }
  if (offered.length === 0) return err('no "cniVersion"');
  const usable = offered.filter((v) => (SUPPORTED_CNI_VERSIONS as readonly string[]).includes(v));
  if (usable.length === 0) {
    return err(`unsupported CNI version ${offered.join(', ')} (supported: ${SUPPORTED_CNI_VERSIONS.join(', ')})`);
  }
  return ok(usable.sort(compareVersions)[usable.length - 1] as string);
}

/**
 * Parses a config file's text. A `.conflist` is a list; any other file holds a
 * single plugin config and is wrapped into a one-plugin list, as libcni does.
 */
export function parseNetworkConfig(text: string, source: string): Result<NetworkConfList, string> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return err(`invalid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isRecord(raw)) return err('not a JSON object');
  const isList = extname(source) === '.conflist' || (source === '' && Array.isArray(raw['plugins']));
  const name = raw['name'];
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    return err(`"name" must start with a letter or digit followed by letters, digits, "_", "." or "-"`);
  }
  const version = selectVersion(raw);
  if (version.isErr()) return err(version.error);
  const entries: unknown[] = isList ? (Array.isArray(raw['plugins']) ? raw['plugins'] : []) : [raw];
  if (entries.length === 0) return err('no plugins in "plugins"');
  const plugins: PluginConf[] = [];
  for (const [i, p] of entries.entries()) {
    if (!isRecord(p)) return err(`plugins[${i}] is not an object`);
    if (!validType(p['type'])) return err(`plugins[${i}] has no valid "type"`);
    const ipam = p['ipam'];
    if (ipam !== undefined && (!isRecord(ipam) || !validType(ipam['type']))) {
      return err(`plugins[${i}] (${p['type']}) has an "ipam" without a valid "type"`);
    }
    plugins.push(p as PluginConf);
  }
  const disableCheck = raw['disableCheck'];
  return ok({
    name,
    cniVersion: version.value,
    // CNI 0.4 documented this field as a string; later versions as a boolean.
    disableCheck: disableCheck === true || disableCheck === 'true',
    plugins,
    source,
  });
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Every configuration file of a directory, in lexical order: the usable ones and the rest. */
export interface ConfigDirectory {
  readonly configs: readonly NetworkConfList[];
  readonly skipped: readonly SkippedConf[];
}

/**
 * Reads every CNI config file of `confDir` in lexical order (byte order, as
 * libcni sorts). Unusable files are reported, not fatal. Synchronous because
 * readiness is asked synchronously; the files are tiny.
 */
export function readNetworkConfigs(confDir: string): ConfigDirectory {
  let names: string[];
  try {
    names = readdirSync(confDir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { configs: [], skipped: code === 'ENOENT' ? [] : [{ file: confDir, reason: String(e) }] };
  }
  const configs: NetworkConfList[] = [];
  const skipped: SkippedConf[] = [];
  for (const name of names.sort(byteOrder)) {
    if (!(CONF_EXTENSIONS as readonly string[]).includes(extname(name))) continue;
    const file = join(confDir, name);
    let text: string;
    try {
      if (!statSync(file).isFile()) continue;
      text = readFileSync(file, 'utf8');
    } catch (e) {
      skipped.push({ file, reason: e instanceof Error ? e.message : String(e) });
      continue;
    }
    const parsed = parseNetworkConfig(text, file);
    if (parsed.isOk()) configs.push(parsed.value);
    else skipped.push({ file, reason: parsed.error });
  }
  return { configs, skipped };
}

/**
 * The configuration pods get: the first usable file of `confDir` in lexical
 * order, as the kubelet and containerd choose it.
 */
export function loadNetworkConfig(confDir: string): ConfigScan {
  const { configs, skipped } = readNetworkConfigs(confDir);
  const config = configs[0] ?? null;
  return { config, skipped: config === null ? skipped : skipped.filter((s) => byteOrder(s.file, config.source) < 0) };
}

/** Every binary a list needs: each plugin's `type` and each delegated IPAM `type`, in order, once. */
export function pluginTypes(conf: NetworkConfList): string[] {
  const types: string[] = [];
  for (const p of conf.plugins) {
    types.push(p.type);
    const ipam = p['ipam'];
    if (isRecord(ipam) && typeof ipam['type'] === 'string') types.push(ipam['type']);
  }
  return [...new Set(types)];
}

/** The first executable file named `type` in `binDirs`, or null. */
export function findPlugin(type: string, binDirs: readonly string[]): string | null {
  if (!validType(type)) return null;
  for (const dir of binDirs) {
    const candidate = join(dir, type);
    try {
      if (statSync(candidate).isFile()) {
        accessSync(candidate, constants.X_OK);
        return candidate;
      }
    } catch {
      // absent or not executable here: try the next directory
    }
  }
  return null;
}

/** The plugin binaries of `conf` that are missing from `binDirs`. */
export function missingPlugins(conf: NetworkConfList, binDirs: readonly string[]): string[] {
  return pluginTypes(conf).filter((t) => findPlugin(t, binDirs) === null);
}
