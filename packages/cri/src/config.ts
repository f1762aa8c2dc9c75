import { readFileSync } from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { err, ok, type Result } from 'neverthrow';
import type { RouterConfig, RoutingRule } from '@hcr/core';

/** Registry host settings (mirrors, plain HTTP), in the spirit of containerd's hosts.toml. */
export interface RegistryHostConfig {
  readonly mirrors: readonly string[];
  readonly insecure: boolean;
  readonly rewrite: Readonly<Record<string, string>>;
  /** Replaces the host's own endpoint (e.g. to keep an air-gapped node from ever contacting it). */
  readonly server?: string;
}

/** One configured engine instance. */
export interface EngineInstanceConfig {
  /** Registration kind (`docker`, `hyper`, `unikernel`, or a plugin's kind). */
  readonly kind: string;
  /** Engine-specific keys, validated by the engine's schema. */
  readonly options: Readonly<Record<string, unknown>>;
  /** When false the engine is configured but not started. */
  readonly enabled: boolean;
}

/** The whole `hcr serve` configuration. */
export interface HcrConfig {
  readonly socket: string;
  readonly stateDir: string;
  readonly runtimeDir: string;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** gRPC max message size in bytes (both directions). */
  readonly maxMessageBytes: number;
  readonly streaming: {
    readonly address: string;
    readonly port: number;
    readonly tokenTtlSeconds: number;
    readonly tlsCert: string;
    readonly tlsKey: string;
  };
  readonly metrics: { readonly address: string; readonly port: number };
  readonly cni: { readonly confDir: string; readonly binDirs: readonly string[] };
  readonly images: { readonly root: string; readonly pauseImage: string };
  readonly registries: Readonly<Record<string, RegistryHostConfig>>;
  readonly engines: Readonly<Record<string, EngineInstanceConfig>>;
  /** npm packages (or paths) exporting an engine registration. */
  readonly plugins: readonly string[];
  readonly router: RouterConfig;
}

/** The configuration `hcr config default` prints; every key documented. */
export const DEFAULT_CONFIG_TOML = `# HCR configuration (TOML). Every key is optional; shown values are the defaults.
socket = "/run/hcr/hcr.sock"
state_dir = "/var/lib/hcr"
runtime_dir = "/run/hcr"
log_level = "info"            # debug | info | warn | error
max_message_bytes = 16777216  # gRPC message size limit, both directions
plugins = []                  # out-of-tree engines: npm packages (or paths) exporting an EngineRegistration

[streaming]                   # exec / attach / port-forward URLs
address = "127.0.0.1"
port = 0                      # 0 = ephemeral
token_ttl_seconds = 60
tls_cert = ""                 # PEM paths; both set = https
tls_key = ""

[metrics]                     # Prometheus /metrics; port 0 = off
address = "127.0.0.1"
port = 0

[cni]
conf_dir = "/etc/cni/net.d"
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]

[images]
root = "/var/lib/hcr/images"

[router]
default_engine = "docker"
defer_binding = true          # pods nothing pins pick their engine from the first image
unikernel_engine = "unikernel"
# [[router.rules]]
# engine = "hyper"
# namespaces = ["untrusted"]
# labels = { tier = "sandboxed" }

# RuntimeClass handlers -> engines (like containerd's [plugins.cri.containerd.runtimes.NAME])
[runtimes.docker]
engine = "docker"
[runtimes.runc]
engine = "docker"
[runtimes.hyper]
engine = "hyper"
[runtimes.unikernel]
engine = "unikernel"

# Engine instances: the table name is the instance name, kind picks the implementation.
[engines.docker]
kind = "docker"
[engines.hyper]
kind = "hyper"
[engines.unikernel]
kind = "unikernel"

# Registry mirrors: pulls of HOST/... try each mirror in order, then HOST itself.
# [registries."registry.k8s.io"]
# mirrors = ["http://127.0.0.1:5000"]
# server = "http://127.0.0.1:5000"   # replace the host itself (air-gapped: never contact it)
# [registries."127.0.0.1:5000"]
# insecure = true
`;

type Table = Record<string, unknown>;

/** Reads and validates a config file; a missing file means all defaults. */
export function loadConfig(path: string | null): Result<HcrConfig, string> {
  let text = DEFAULT_CONFIG_TOML;
  if (path !== null) {
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      return err(`cannot read config ${path}: ${(e as Error).message}`);
    }
  }
  return parseConfig(text, path ?? '<defaults>');
}

/** Parses and validates config text. Errors name the file and the key. */
export function parseConfig(text: string, source: string): Result<HcrConfig, string> {
  let raw: Table;
  try {
    raw = parseToml(text) as Table;
  } catch (e) {
    return err(`${source}: invalid TOML: ${(e as Error).message}`);
  }
  try {
    return ok(build(raw));
  } catch (e) {
    return err(`${source}: ${(e as Error).message}`);
  }
}

const TOP_KEYS = new Set([
  'socket',
  'state_dir',
  'runtime_dir',
  'log_level',
  'max_message_bytes',
  'streaming',
  'metrics',
  'cni',
  'images',
  'router',
  'runtimes',
  'engines',
  'registries',
  'plugins',
]);

function build(raw: Table): HcrConfig {
  for (const k of Object.keys(raw)) if (!TOP_KEYS.has(k)) throw new Error(`unknown key "${k}"`);
  const streaming = table(raw, 'streaming');
  const metrics = table(raw, 'metrics');
  const cni = table(raw, 'cni');
  const images = table(raw, 'images');
  const router = table(raw, 'router');
  const logLevel = str(raw, 'log_level', 'info');
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) {
    throw new Error(`log_level must be one of debug, info, warn, error (got "${logLevel}")`);
  }

  const enginesRaw = table(raw, 'engines', { docker: { kind: 'docker' } });
  const engines: Record<string, EngineInstanceConfig> = {};
  for (const [name, v] of Object.entries(enginesRaw)) {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`engines.${name} must be a table`);
    const { kind, enabled, ...options } = v as Table;
    if (kind !== undefined && typeof kind !== 'string') throw new Error(`engines.${name}.kind must be a string`);
    if (enabled !== undefined && typeof enabled !== 'boolean')
      throw new Error(`engines.${name}.enabled must be a boolean`);
    engines[name] = { kind: kind ?? name, options, enabled: enabled ?? true };
  }

  const handlers: Record<string, string> = {};
  for (const [name, v] of Object.entries(table(raw, 'runtimes'))) {
    const engine = (v as Table | null)?.['engine'];
    if (typeof engine !== 'string') throw new Error(`runtimes.${name}.engine must name an engine`);
    if (engines[engine] === undefined) {
      throw new Error(
        `runtimes.${name}.engine = "${engine}" is not an engine in [engines] (${Object.keys(engines).join(', ')})`,
      );
    }
    handlers[name] = engine;
  }

  const defaultEngine = str(router, 'default_engine', 'docker', 'router.');
  if (engines[defaultEngine] === undefined) {
    throw new Error(`router.default_engine = "${defaultEngine}" is not an engine in [engines]`);
  }
  const rulesRaw = router['rules'] ?? [];
  if (!Array.isArray(rulesRaw)) throw new Error('router.rules must be an array of tables');
  const rules: RoutingRule[] = rulesRaw.map((r: unknown, i) => {
    const t = r as Table;
    const engine = t['engine'];
    if (typeof engine !== 'string' || engines[engine] === undefined) {
      throw new Error(`router.rules[${i}].engine must name an engine in [engines]`);
    }
    const rule: { engine: string; namespaces?: readonly string[]; labels?: Record<string, string> } = { engine };
    if (t['namespaces'] !== undefined) rule.namespaces = strArray(t, 'namespaces', [], `router.rules[${i}].`);
    if (t['labels'] !== undefined) rule.labels = t['labels'] as Record<string, string>;
    return rule;
  });
  const unikernelEngine = str(router, 'unikernel_engine', 'unikernel', 'router.');

  const registries: Record<string, RegistryHostConfig> = {};
  for (const [host, v] of Object.entries(table(raw, 'registries'))) {
    const t = v as Table;
    registries[host] = {
      mirrors: strArray(t, 'mirrors', [], `registries."${host}".`),
      insecure: bool(t, 'insecure', false, `registries."${host}".`),
      rewrite: (t['rewrite'] as Record<string, string> | undefined) ?? {},
      ...(t['server'] !== undefined ? { server: str(t, 'server', '', `registries."${host}".`) } : {}),
    };
  }

  return {
    socket: str(raw, 'socket', '/run/hcr/hcr.sock'),
    stateDir: str(raw, 'state_dir', '/var/lib/hcr'),
    runtimeDir: str(raw, 'runtime_dir', '/run/hcr'),
    logLevel: logLevel as HcrConfig['logLevel'],
    maxMessageBytes: num(raw, 'max_message_bytes', 16 * 1024 * 1024),
    streaming: {
      address: str(streaming, 'address', '127.0.0.1', 'streaming.'),
      port: num(streaming, 'port', 0, 'streaming.'),
      tokenTtlSeconds: num(streaming, 'token_ttl_seconds', 60, 'streaming.'),
      tlsCert: str(streaming, 'tls_cert', '', 'streaming.'),
      tlsKey: str(streaming, 'tls_key', '', 'streaming.'),
    },
    metrics: { address: str(metrics, 'address', '127.0.0.1', 'metrics.'), port: num(metrics, 'port', 0, 'metrics.') },
    cni: {
      confDir: str(cni, 'conf_dir', '/etc/cni/net.d', 'cni.'),
      binDirs: strArray(cni, 'bin_dirs', ['/usr/lib/cni', '/opt/cni/bin'], 'cni.'),
    },
    images: {
      root: str(images, 'root', '/var/lib/hcr/images', 'images.'),
      pauseImage: str(images, 'pause_image', '', 'images.'),
    },
    registries,
    engines,
    plugins: [...strArray(raw, 'plugins', [])],
    router: {
      handlers,
      defaultEngine,
      rules,
      deferBinding: bool(router, 'defer_binding', true, 'router.'),
      unikernelEngine: engines[unikernelEngine] === undefined ? null : unikernelEngine,
    },
  };
}

function table(t: Table, key: string, fallback: Table = {}): Table {
  const v = t[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`"${key}" must be a table`);
  return v as Table;
}

function str(t: Table, key: string, fallback: string, prefix = ''): string {
  const v = t[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'string') throw new Error(`${prefix}${key} must be a string`);
  return v;
}

function num(t: Table, key: string, fallback: number, prefix = ''): number {
  const v = t[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    throw new Error(`${prefix}${key} must be a non-negative number`);
  return v;
}

function bool(t: Table, key: string, fallback: boolean, prefix = ''): boolean {
  const v = t[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') throw new Error(`${prefix}${key} must be true or false`);
  return v;
}

function strArray(t: Table, key: string, fallback: readonly string[], prefix = ''): readonly string[] {
  const v = t[key];
  if (v === undefined) return fallback;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string'))
    throw new Error(`${prefix}${key} must be an array of strings`);
  return v as string[];
}
