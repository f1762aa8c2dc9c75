/**
 * OCI image-spec and Docker schema 2 documents: validated parsing of manifests,
 * indexes (manifest lists), image configs, and platform selection.
 */
import { errors } from '../errors.js';
import type { ImageConfig, ImageInfo, StringMap } from '../types.js';
import { isSha256Digest } from './digest.js';

/** Media types HCR understands. */
export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  DockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  DockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

/** Config media types of runnable images; other artifacts (Helm charts, signatures, …) are refused. */
export const IMAGE_CONFIG_TYPES: ReadonlySet<string> = new Set([
  'application/vnd.oci.image.config.v1+json',
  'application/vnd.docker.container.image.v1+json',
]);

/** What a registry is asked for, best first: every manifest and index kind HCR can read. */
export const MANIFEST_ACCEPT = [
  MediaType.OciIndex,
  MediaType.DockerManifestList,
  MediaType.OciManifest,
  MediaType.DockerManifest,
].join(', ');

/** Manifests larger than this are refused (containerd's limit), so a hostile registry cannot exhaust memory. */
export const MANIFEST_MAX_BYTES = 4 << 20;

/** The urunc annotations that make an image a unikernel image. */
export const UNIKERNEL_ANNOTATIONS = [
  'com.urunc.unikernel.unikernelType',
  'com.urunc.unikernel.hypervisor',
  'com.urunc.unikernel.binary',
] as const;

/** A content descriptor. */
export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly annotations: StringMap;
  readonly platform: Platform | null;
}

/** An OS/architecture pair (OCI platform). */
export interface Platform {
  readonly os: string;
  readonly architecture: string;
  /** CPU variant (`v8` for arm64); '' when none. */
  readonly variant: string;
}

/** A single-platform image manifest. */
export interface ImageManifest {
  readonly kind: 'manifest';
  readonly mediaType: string;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
  readonly annotations: StringMap;
}

/** A multi-platform index / manifest list. */
export interface ImageIndex {
  readonly kind: 'index';
  readonly mediaType: string;
  readonly manifests: readonly Descriptor[];
}

/** The parts of an image config HCR uses. */
export interface ParsedConfig {
  readonly config: Omit<ImageConfig, 'annotations'>;
  readonly diffIds: readonly string[];
  readonly platform: Platform;
}

/** The platform of this host, in OCI terms. */
export function hostPlatform(): Platform {
  const architecture = (
    {
      x64: 'amd64',
      arm64: 'arm64',
      arm: 'arm',
      ia32: '386',
      ppc64: 'ppc64le',
      s390x: 's390x',
      riscv64: 'riscv64',
    } as Record<string, string>
  )[process.arch];
  return {
    os: 'linux',
    architecture: architecture ?? process.arch,
    variant: process.arch === 'arm64' ? 'v8' : '',
  };
}

/** `linux/amd64` or `linux/arm64/v8`. */
export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter((s) => s !== '').join('/');
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringMap(v: unknown): Record<string, string> {
  if (!isObject(v)) return {};
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) if (typeof val === 'string') out[k] = val;
  return out;
}

function stringList(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : [];
}

function bad(what: string, why: string): never {
  throw errors.failedPrecondition(`${what} is malformed: ${why}`);
}

function parseJson(bytes: Uint8Array, what: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    return bad(what, `not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!isObject(v)) return bad(what, 'not a JSON object');
  return v;
}

function parsePlatform(v: unknown): Platform | null {
  if (!isObject(v)) return null;
  const os = v['os'];
  const architecture = v['architecture'];
  if (typeof os !== 'string' || typeof architecture !== 'string') return null;
  const variant = v['variant'];
  return { os, architecture, variant: typeof variant === 'string' ? variant : '' };
}

function parseDescriptor(v: unknown, what: string): Descriptor {
  if (!isObject(v)) return bad(what, 'descriptor is not an object');
  const { mediaType, digest, size } = v;
  if (typeof digest !== 'string' || !isSha256Digest(digest)) {
    return bad(what, `descriptor digest ${JSON.stringify(digest)} is not a sha256 digest`);
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    return bad(what, `descriptor ${digest} has invalid size ${JSON.stringify(size)}`);
  }
  return {
    mediaType: typeof mediaType === 'string' ? mediaType : '',
    digest,
    size,
    annotations: stringMap(v['annotations']),
    platform: parsePlatform(v['platform']),
  };
}

/**
 * Parses a manifest or index. `contentType` is the registry's Content-Type;
 * when it is missing or generic the document's own `mediaType` (or shape)
 * decides, as containerd does.
 */
export function parseManifest(bytes: Uint8Array, contentType: string, what: string): ImageManifest | ImageIndex {
  const doc = parseJson(bytes, what);
  const declared = typeof doc['mediaType'] === 'string' ? doc['mediaType'] : '';
  const header = contentType.split(';')[0]?.trim() ?? '';
  let mediaType = declared !== '' ? declared : header;
  if (mediaType === '' || mediaType === 'application/json' || mediaType === 'application/octet-stream') {
    mediaType = Array.isArray(doc['manifests']) ? MediaType.OciIndex : MediaType.OciManifest;
  }
  if (
    mediaType === MediaType.DockerSchema1 ||
    mediaType === MediaType.DockerSchema1Signed ||
    doc['schemaVersion'] === 1
  ) {
    throw errors.failedPrecondition(
      `${what} uses Docker image manifest schema 1, which HCR does not support (deprecated since 2017); push the image again with a current client`,
    );
  }
  if (doc['schemaVersion'] !== 2) return bad(what, `schemaVersion is ${JSON.stringify(doc['schemaVersion'])}, not 2`);
  if (mediaType === MediaType.OciIndex || mediaType === MediaType.DockerManifestList) {
    const manifests = doc['manifests'];
    if (!Array.isArray(manifests)) return bad(what, 'index has no "manifests" list');
    return { kind: 'index', mediaType, manifests: manifests.map((m) => parseDescriptor(m, what)) };
  }
  if (mediaType === MediaType.OciManifest || mediaType === MediaType.DockerManifest) {
    const layers = doc['layers'];
    if (!Array.isArray(layers)) return bad(what, 'manifest has no "layers" list');
    return {
      kind: 'manifest',
      mediaType,
      config: parseDescriptor(doc['config'], what),
      layers: layers.map((l) => parseDescriptor(l, what)),
      annotations: stringMap(doc['annotations']),
    };
  }
  throw errors.failedPrecondition(`${what} has media type "${mediaType}", which is not an image manifest or index`);
}

/**
 * The manifest of an index for `want`: exact os/architecture, and the variant
 * when both sides name one (an entry without variant fits any, like
 * containerd's matcher); the first match wins, as the spec orders by preference.
 */
export function selectPlatform(index: ImageIndex, want: Platform, what: string): Descriptor {
  const candidates = index.manifests.filter(
    (m) =>
      m.platform !== null &&
      m.platform.os === want.os &&
      m.platform.architecture === want.architecture &&
      (want.variant === '' || m.platform.variant === '' || m.platform.variant === want.variant),
  );
  const exact = candidates.find((m) => m.platform?.variant === want.variant);
  const chosen = exact ?? candidates[0];
  if (chosen === undefined) {
    const offered = index.manifests.map((m) => (m.platform === null ? '?' : formatPlatform(m.platform)));
    throw errors.notFound(
      `${what} has no image for ${formatPlatform(want)} (it offers: ${offered.length > 0 ? offered.join(', ') : 'nothing'})`,
    );
  }
  return chosen;
}

/** Parses an image config (OCI or Docker, same shape) and checks it against its manifest's layer count. */
export function parseImageConfig(bytes: Uint8Array, layerCount: number, what: string): ParsedConfig {
  const doc = parseJson(bytes, what);
  const rootfs = doc['rootfs'];
  if (!isObject(rootfs) || !Array.isArray(rootfs['diff_ids'])) return bad(what, 'it has no rootfs.diff_ids');
  const diffIds = rootfs['diff_ids'].map((d) => {
    if (typeof d !== 'string' || !isSha256Digest(d))
      return bad(what, `diff id ${JSON.stringify(d)} is not a sha256 digest`);
    return d;
  });
  if (diffIds.length !== layerCount) {
    return bad(what, `it lists ${diffIds.length} diff ids but the manifest has ${layerCount} layers`);
  }
  const c = isObject(doc['config']) ? doc['config'] : {};
  const exposed = isObject(c['ExposedPorts']) ? Object.keys(c['ExposedPorts']) : [];
  const platform = parsePlatform(doc) ?? { os: '', architecture: '', variant: '' };
  return {
    config: {
      entrypoint: stringList(c['Entrypoint']),
      cmd: stringList(c['Cmd']),
      env: stringList(c['Env']),
      workingDir: typeof c['WorkingDir'] === 'string' ? c['WorkingDir'] : '',
      user: typeof c['User'] === 'string' ? c['User'] : '',
      exposedPorts: exposed,
      labels: stringMap(c['Labels']),
    },
    diffIds,
    platform,
  };
}

/** Manifest annotations and config labels merged, config winning (as urunc reads them). */
export function mergeAnnotations(manifestAnnotations: StringMap, configLabels: StringMap): StringMap {
  return { ...manifestAnnotations, ...configLabels };
}

/** `unikernel` when all urunc annotations are present and non-empty. */
export function imageKind(annotations: StringMap): ImageInfo['kind'] {
  return UNIKERNEL_ANNOTATIONS.every((k) => (annotations[k] ?? '') !== '') ? 'unikernel' : 'oci';
}
