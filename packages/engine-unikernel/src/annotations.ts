import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errors, type HcrError, type ImageConfig, type StringMap } from '@hcr/core';
import { err, ok, type Result } from 'neverthrow';

/** Prefix of every urunc annotation. */
export const URUNC_PREFIX = 'com.urunc.unikernel.';

/** The urunc annotation keys this engine reads (urunc's `pkg/unikontainers` names). */
export const UruncKey = {
  unikernelType: 'com.urunc.unikernel.unikernelType',
  hypervisor: 'com.urunc.unikernel.hypervisor',
  binary: 'com.urunc.unikernel.binary',
  cmdline: 'com.urunc.unikernel.cmdline',
  initrd: 'com.urunc.unikernel.initrd',
  block: 'com.urunc.unikernel.block',
  blkMntPoint: 'com.urunc.unikernel.blkMntPoint',
  unikernelVersion: 'com.urunc.unikernel.unikernelVersion',
  mountRootfs: 'com.urunc.unikernel.mountRootfs',
} as const;

/** File at the image root that urunc reads when the annotations are missing; its values are base64. */
export const URUNC_JSON = 'urunc.json';

/** Unikernel frameworks this engine knows how to boot (urunc's names). */
export const unikernelTypes = ['linux', 'unikraft', 'rumprun', 'mirage'] as const;
/** One of {@link unikernelTypes}. */
export type UnikernelType = (typeof unikernelTypes)[number];

/** Monitors (urunc calls them hypervisors) an image may ask for. */
export const monitorNames = ['qemu', 'firecracker', 'hvt', 'spt'] as const;
/** One of {@link monitorNames}. */
export type MonitorName = (typeof monitorNames)[number];

/** A validated unikernel configuration, values decoded. */
export interface UnikernelConfig {
  readonly type: UnikernelType;
  readonly monitor: MonitorName;
  /** Absolute path of the kernel inside the image. */
  readonly binary: string;
  /** The application's command line from the image ('' when absent). */
  readonly cmdline: string;
  /** Absolute path of the initrd inside the image ('' when absent). */
  readonly initrd: string;
  /** Absolute path of a block image inside the image ('' when absent). */
  readonly block: string;
  readonly blkMntPoint: string;
  readonly version: string;
  readonly mountRootfs: boolean;
  /** Where the configuration came from, for messages. */
  readonly source: 'annotations' | 'urunc.json';
}

/** The raw, undecoded urunc values of one source. */
export type RawUruncValues = Partial<Record<keyof typeof UruncKey, string>>;

/**
 * Type/monitor pairs urunc supports; a pair outside this table is refused
 * with the two values named, as urunc does.
 */
const supportedPairs: Readonly<Record<MonitorName, readonly UnikernelType[]>> = {
  qemu: ['linux', 'unikraft', 'mirage'],
  firecracker: ['linux', 'unikraft'],
  hvt: ['rumprun', 'mirage'],
  spt: ['rumprun', 'mirage'],
};

const MAX_VALUE_LENGTH = 4096;
// Paths end up in the monitor's argv: accept only what a path in an image needs.
const PATH_CHARS = /^[A-Za-z0-9._/-]+$/;

/** Collects urunc values from image annotations, falling back to labels (`docker build` LABELs). */
export function uruncValuesFromImage(config: Pick<ImageConfig, 'annotations' | 'labels'>): RawUruncValues {
  const out: Record<string, string> = {};
  for (const [field, key] of Object.entries(UruncKey)) {
    const v = config.annotations[key] ?? config.labels[key];
    if (v !== undefined) out[field] = v;
  }
  return out;
}

/** Whether `values` carry the keys urunc requires (type, hypervisor, binary). */
export function hasRequiredKeys(values: RawUruncValues): boolean {
  return !!values.unikernelType && !!values.hypervisor && !!values.binary;
}

/** Whether an image's annotations or labels mark it as a unikernel image. */
export function isUnikernelImage(config: Pick<ImageConfig, 'annotations' | 'labels'>): boolean {
  return hasRequiredKeys(uruncValuesFromImage(config));
}

/**
 * Parses the contents of an image's `urunc.json`: a JSON object keyed by the
 * full annotation names whose values are base64 (urunc's bima/bunny write
 * them so), optionally prefixed `b64:`.
 */
export function parseUruncJson(text: string): Result<RawUruncValues, HcrError> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return err(errors.invalidArgument(`${URUNC_JSON} is not valid JSON: ${(e as Error).message}`, URUNC_JSON));
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    return err(
      errors.invalidArgument(`${URUNC_JSON} must hold a JSON object of annotation names to values`, URUNC_JSON),
    );
  }
  const map = doc as Record<string, unknown>;
  const out: Record<string, string> = {};
  for (const [field, key] of Object.entries(UruncKey)) {
    const v = map[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string') {
      return err(
        errors.invalidArgument(`${URUNC_JSON}: ${key} must be a base64 string, got ${JSON.stringify(v)}`, key),
      );
    }
    const decoded = decodeBase64Value(v);
    if (decoded === null) {
      return err(errors.invalidArgument(`${URUNC_JSON}: ${key}=${JSON.stringify(v)} is not valid base64`, key));
    }
    out[field] = decoded;
  }
  return ok(out);
}

function decodeBase64Value(v: string): string | null {
  const body = v.startsWith('b64:') ? v.slice(4) : v;
  if (body === '') return '';
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 !== 0) return null;
  const bytes = Buffer.from(body, 'base64');
  const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  return text.includes('\uFFFD') ? null : text;
}

/** Reads `<rootfs>/urunc.json`; `null` when the file does not exist. */
export async function readUruncJson(rootfs: string): Promise<Result<RawUruncValues | null, HcrError>> {
  let text: string;
  try {
    text = await readFile(join(rootfs, URUNC_JSON), 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return ok(null);
    return err(errors.invalidArgument(`cannot read ${URUNC_JSON} from the image: ${(e as Error).message}`, URUNC_JSON));
  }
  return parseUruncJson(text);
}

/**
 * Validates raw values into a {@link UnikernelConfig}. Every refusal names
 * the annotation key and the offending value, so the image author can fix it.
 */
export function validateUruncValues(
  values: RawUruncValues,
  source: UnikernelConfig['source'],
): Result<UnikernelConfig, HcrError> {
  const bad = (field: keyof typeof UruncKey, why: string) =>
    err(
      errors.invalidArgument(
        `unikernel image: ${UruncKey[field]}=${JSON.stringify(values[field] ?? '')} ${why}` +
          (source === 'urunc.json' ? ` (from ${URUNC_JSON})` : ''),
        UruncKey[field],
      ),
    );
  for (const field of Object.keys(UruncKey) as (keyof typeof UruncKey)[]) {
    const v = values[field];
    if (v !== undefined && v.length > MAX_VALUE_LENGTH) return bad(field, `is longer than ${MAX_VALUE_LENGTH} bytes`);
  }
  for (const field of ['unikernelType', 'hypervisor', 'binary'] as const) {
    if (!values[field]) return bad(field, 'is required');
  }

  const type = values.unikernelType!;
  if (!(unikernelTypes as readonly string[]).includes(type)) {
    return bad('unikernelType', `is not a supported unikernel type (supported: ${unikernelTypes.join(', ')})`);
  }
  const monitor = values.hypervisor!;
  if (!(monitorNames as readonly string[]).includes(monitor)) {
    return bad('hypervisor', `is not a supported monitor (supported: ${monitorNames.join(', ')})`);
  }
  const pairOk = supportedPairs[monitor as MonitorName].includes(type as UnikernelType);
  if (!pairOk) {
    return bad(
      'hypervisor',
      `cannot run unikernel type "${type}" (${monitor} runs: ${supportedPairs[monitor as MonitorName].join(', ')})`,
    );
  }

  for (const field of ['binary', 'initrd', 'block'] as const) {
    const why = pathProblem(values[field] ?? '', true);
    if (why !== null) return bad(field, why);
  }
  const mnt = values.blkMntPoint ?? '';
  const mntWhy = pathProblem(mnt, false);
  if (mntWhy !== null) return bad('blkMntPoint', mntWhy);
  if (mnt !== '' && !values.block) return bad('blkMntPoint', `is set but ${UruncKey.block} is not`);

  const mountRootfs = parseBool(values.mountRootfs ?? '');
  if (mountRootfs === null) return bad('mountRootfs', 'is not a boolean (true/false/1/0)');

  const version = values.unikernelVersion ?? '';
  if (version !== '' && !/^[A-Za-z0-9._+-]+$/.test(version)) {
    return bad('unikernelVersion', 'is not a version string');
  }
  const cmdline = values.cmdline ?? '';
  if (/[\0\r\n]/.test(cmdline)) return bad('cmdline', 'contains a NUL or line break');

  return ok({
    type: type as UnikernelType,
    monitor: monitor as MonitorName,
    binary: values.binary!,
    cmdline,
    initrd: values.initrd ?? '',
    block: values.block ?? '',
    blkMntPoint: mnt,
    version,
    mountRootfs,
    source,
  });
}

/**
 * Finds an image's unikernel configuration: complete annotations/labels
 * first, else `urunc.json` at the root of its prepared filesystem (as urunc).
 * An image with neither is refused, naming what is missing.
 */
export async function loadUnikernelConfig(
  image: { readonly name: string; readonly config: Pick<ImageConfig, 'annotations' | 'labels'> },
  rootfs: string,
): Promise<Result<UnikernelConfig, HcrError>> {
  const fromImage = uruncValuesFromImage(image.config);
  if (hasRequiredKeys(fromImage)) return validateUruncValues(fromImage, 'annotations');
  const json = await readUruncJson(rootfs);
  if (json.isErr()) return err(json.error);
  if (json.value !== null) return validateUruncValues(json.value, 'urunc.json');
  if (Object.keys(fromImage).length > 0) return validateUruncValues(fromImage, 'annotations');
  return err(
    errors.invalidArgument(
      `image ${image.name} is not a unikernel image: it has no ${UruncKey.unikernelType}, ${UruncKey.hypervisor} ` +
        `and ${UruncKey.binary} annotations or labels and no /${URUNC_JSON}`,
      UruncKey.binary,
    ),
  );
}

function pathProblem(v: string, rejectRoot: boolean): string | null {
  if (v === '') return null;
  if (!PATH_CHARS.test(v)) return 'may only contain letters, digits and . _ / -';
  if (!v.startsWith('/')) return 'must be an absolute path inside the image';
  const segments = v.split('/').slice(1);
  if (segments.some((s) => s === '..' || s === '.' || (s === '' && v !== '/')))
    return 'must be a clean path (no //, . or ..)';
  if (v === '/' && rejectRoot) return 'must name a file, not /';
  return null;
}

function parseBool(v: string): boolean | null {
  // The forms Go's strconv.ParseBool accepts, since urunc reads the value with it.
  if (['', '0', 'f', 'F', 'false', 'FALSE', 'False'].includes(v)) return false;
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v)) return true;
  return null;
}

/** Annotation map helper for messages and tests: the urunc values of `values` keyed by full name. */
export function toAnnotations(values: RawUruncValues): StringMap {
  const out: Record<string, string> = {};
  for (const [field, v] of Object.entries(values)) {
    if (v !== undefined) out[UruncKey[field as keyof typeof UruncKey]] = v;
  }
  return out;
}
