/**
 * Hostile CRI requests on the wire. Every unary RuntimeService and
 * ImageService request type gets a fast-check arbitrary derived from the
 * .proto by reflection, so new fields are fuzzed without anyone writing a
 * generator; field names steer values toward what is dangerous there (ids,
 * paths, names, image references, label maps).
 *
 * Strings are generated as raw bytes: the schema is loaded a second time
 * with every `string` field declared `bytes`. Both share wire type 2, so the
 * server decodes them as strings, and a test can send what a well-behaved
 * encoder never would (invalid UTF-8, lone surrogates, NUL).
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, join, normalize } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import protobuf from 'protobufjs';
import { protoPath } from '../../src/server.js';

/** One unary method of the CRI services. */
export interface WireMethod {
  readonly service: 'RuntimeService' | 'ImageService';
  readonly name: string;
  readonly path: string;
  readonly request: protobuf.Type;
  readonly response: protobuf.Type;
}

/** The CRI schema with strings as bytes, and its unary methods. */
export interface WireSchema {
  readonly methods: readonly WireMethod[];
  method(name: string): WireMethod;
}

/** Loads api.proto with `string` fields turned into `bytes` (same wire type, any content). */
export function loadWireSchema(): WireSchema {
  const text = readFileSync(join(protoPath(), 'runtime/v1/api.proto'), 'utf8')
    .replace(/^(\s*(?:repeated\s+)?)string(\s+\w+\s*=)/gm, '$1bytes$2')
    .replace(/map<string,\s*string>/g, 'map<string, bytes>');
  const root = protobuf.parse(text, { keepCase: false }).root;
  root.resolveAll();
  const methods: WireMethod[] = [];
  for (const service of ['RuntimeService', 'ImageService'] as const) {
    const svc = root.lookupService(`runtime.v1.${service}`);
    for (const m of Object.values(svc.methods)) {
      if (m.requestStream === true || m.responseStream === true) continue;
      methods.push({
        service,
        name: m.name,
        path: `/runtime.v1.${service}/${m.name}`,
        request: root.lookupType(m.requestType),
        response: root.lookupType(m.responseType),
      });
    }
  }
  const byName = new Map(methods.map((m) => [m.name, m]));
  return {
    methods,
    method(name) {
      const m = byName.get(name);
      if (m === undefined) throw new Error(`no unary CRI method ${name}`);
      return m;
    },
  };
}

/** What the arbitraries aim ids, paths and image references at. */
export interface FuzzTargets {
  /** A live pod and container the fuzz may query but never stop or remove. */
  readonly podId: string;
  readonly containerId: string;
  /** Images present in HCR (CreateContainer can get past the image check). */
  readonly images: readonly string[];
  /** The only place absolute paths may resolve to (CreateContainer creates missing mount sources). */
  readonly pathRoot: string;
}

const b = (s: string) => Buffer.from(s, 'utf8');

/** Strings that break naive code: separators, traversal, NUL, control and odd Unicode, lone surrogates. */
const nastyStrings = [
  '',
  ' ',
  '/',
  '.',
  '..',
  '../',
  '../../../../etc/passwd',
  'a/../../b',
  'a/b',
  'a\0b',
  '\0',
  '\n',
  'x\r\ny',
  '%2e%2e%2f',
  '\u202e',
  '\uFFFD',
  '\uD800',
  '💥',
  'a'.repeat(254),
  'CON',
  '$(touch /tmp/hcr-fuzz-pwned)',
  '`id`',
  '; rm -rf /',
  '{{.Name}}',
  'true',
  '-1',
];

/** Any bytes a string field might carry, biased toward the nasty ones. */
export function hostileBytes(maxLength = 64): fc.Arbitrary<Buffer> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...nastyStrings).map(b) },
    { weight: 3, arbitrary: fc.string({ maxLength, unit: 'binary' }).map(b) },
    { weight: 2, arbitrary: fc.uint8Array({ maxLength }).map((a) => Buffer.from(a)) },
    // Invalid UTF-8: a lone continuation byte, an overlong NUL, a truncated sequence.
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.string({ maxLength: 8 }), fc.constantFrom([0x80], [0xc0, 0x80], [0xe2, 0x82], [0xff, 0xfe]))
        .map(([s, bad]) => Buffer.concat([b(s), Buffer.from(bad)])),
    },
    { weight: 1, arbitrary: fc.integer({ min: 1024, max: 70_000 }).map((n) => Buffer.alloc(n, 0x61)) },
  );
}

const hex64 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a).toString('hex'));

function idArb(t: FuzzTargets): fc.Arbitrary<Buffer> {
  return fc.oneof(
    fc.constantFrom(t.podId, t.containerId, t.podId.slice(0, 12), t.containerId.slice(0, 1)).map(b),
    hex64.map(b),
    hostileBytes(80),
  );
}

function pathArb(t: FuzzTargets): fc.Arbitrary<Buffer> {
  const segment = fc.constantFrom('..', '.', 'a', 'log', '', 'x\0y', '\uFFFD', 'c.log', '...', ' ');
  return fc.oneof(
    fc.array(segment, { maxLength: 8 }).map((s) => b(`${t.pathRoot}/${s.join('/')}`)),
    fc.array(segment, { maxLength: 8 }).map((s) => b(s.join('/'))),
    fc.constantFrom('/', '/etc', '/proc/self', '/var/run/docker.sock', 'relative', '../../x', '/a/../../../etc').map(b),
    hostileBytes(),
  );
}

function imageArb(t: FuzzTargets): fc.Arbitrary<Buffer> {
  return fc.oneof(
    fc.constantFrom(...t.images).map(b),
    fc.constantFrom('busybox', 'sha256:' + '0'.repeat(64), 'a:b:c', 'UPPER/case', '127.0.0.1:5000/none:x').map(b),
    hostileBytes(),
  );
}

function int64Arb(signed: boolean): fc.Arbitrary<string> {
  const extremes = signed
    ? ['0', '1', '-1', '9223372036854775807', '-9223372036854775808', '9007199254740993', '-9007199254740993']
    : ['0', '1', '18446744073709551615', '9223372036854775808', '9007199254740993'];
  return fc.oneof(
    fc.constantFrom(...extremes),
    (signed ? fc.bigInt(-(1n << 63n), (1n << 63n) - 1n) : fc.bigInt(0n, (1n << 64n) - 1n)).map(String),
    fc.integer({ min: signed ? -100_000 : 0, max: 100_000 }).map(String),
  );
}

function scalarArb(type: string, field: string, t: FuzzTargets): fc.Arbitrary<unknown> {
  const lower = field.toLowerCase();
  switch (type) {
    case 'bytes':
      if (/^(podsandboxid|containerid|id|targetid)$/.test(lower)) return idArb(t);
      if (/(path|directory|dir)$/.test(lower)) return pathArb(t);
      if (lower === 'image' || lower === 'userspecifiedimage') return imageArb(t);
      return hostileBytes();
    case 'bool':
      return fc.boolean();
    case 'double':
    case 'float':
      return fc.double();
    case 'int32':
    case 'sint32':
    case 'sfixed32':
      return fc.oneof(fc.constantFrom(0, 1, -1, 65535, 65536, 2147483647, -2147483648), fc.integer());
    case 'uint32':
    case 'fixed32':
      return fc.oneof(fc.constantFrom(0, 1, 65535, 65536, 4294967295), fc.nat());
    case 'int64':
    case 'sint64':
    case 'sfixed64':
      return int64Arb(true);
    case 'uint64':
    case 'fixed64':
      return int64Arb(false);
    default:
      throw new Error(`no arbitrary for proto scalar type ${type}`);
  }
}

/**
 * A random message of `type`: each field present with probability `presence`,
 * nested messages down to `depth`, repeated and map fields short, sometimes
 * oversized.
 */
export function messageArb(
  type: protobuf.Type,
  t: FuzzTargets,
  presence = 0.5,
  depth = 4,
): fc.Arbitrary<Record<string, unknown>> {
  if (depth <= 0) return fc.constant({});
  const fields: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of type.fieldsArray) {
    fields[f.name] = fc.oneof(
      { weight: Math.round((1 - presence) * 100), arbitrary: fc.constant(null) },
      { weight: Math.round(presence * 100), arbitrary: fieldArb(f, t, presence, depth) },
    );
  }
  return fc.record(fields).map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== null)));
}

/** Values for one field: a scalar, enum or message, or a list or map of them. */
function fieldArb(f: protobuf.Field, t: FuzzTargets, presence: number, depth: number): fc.Arbitrary<unknown> {
  f.resolve();
  const one = (): fc.Arbitrary<unknown> =>
    f.resolvedType instanceof protobuf.Type
      ? messageArb(f.resolvedType, t, presence, depth - 1)
      : f.resolvedType instanceof protobuf.Enum
        ? fc.oneof(fc.constantFrom(...Object.values(f.resolvedType.values)), fc.integer({ min: -5, max: 99 }))
        : scalarArb(f.type, f.name, t);
  if (f instanceof protobuf.MapField) {
    const key = fc.oneof(fc.constantFrom(...nastyStrings), fc.string({ maxLength: 40, unit: 'binary' }));
    return fc.oneof(
      { weight: 8, arbitrary: fc.dictionary(key, one(), { maxKeys: 6 }) },
      // Oversized: beyond MAX_METADATA_BYTES (256 KiB) in total.
      {
        weight: 1,
        arbitrary: fc
          .integer({ min: 5, max: 40 })
          .map((n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, Buffer.alloc(16_384, 0x62)]))),
      },
    );
  }
  if (f.repeated) return fc.array(one(), { maxLength: f.resolvedType instanceof protobuf.Type ? 3 : 6 });
  return one();
}

/** A path to one field of a request type, with an arbitrary for its value. */
interface Leaf {
  readonly path: readonly string[];
  readonly value: fc.Arbitrary<unknown>;
}

function leavesOf(type: protobuf.Type, t: FuzzTargets, depth: number, prefix: readonly string[]): Leaf[] {
  const out: Leaf[] = [];
  for (const f of type.fieldsArray) {
    f.resolve();
    const path = [...prefix, f.name];
    if (f.resolvedType instanceof protobuf.Type && !f.repeated && !(f instanceof protobuf.MapField) && depth > 1) {
      out.push(...leavesOf(f.resolvedType, t, depth - 1, path));
      // The whole sub-message too: empty or random.
      out.push({ path, value: fc.oneof(fc.constant({}), messageArb(f.resolvedType, t, 0.5, 2)) });
    } else {
      out.push({ path, value: fieldArb(f, t, 0.7, 3) });
    }
  }
  return out;
}

/**
 * Requests that differ from `base` in one to three fields anywhere in the
 * message tree: most get past the first checks and probe the deep ones.
 */
export function nearValidArb(
  type: protobuf.Type,
  base: Record<string, unknown>,
  t: FuzzTargets,
): fc.Arbitrary<Record<string, unknown>> {
  const leaves = leavesOf(type, t, 6, []);
  if (leaves.length === 0) return fc.constant(base);
  return fc
    .uniqueArray(fc.constantFrom(...leaves), { minLength: 1, maxLength: 3, selector: (l) => l.path.join('.') })
    .chain((picked) => fc.tuple(...picked.map((l) => l.value)).map((values) => ({ picked, values })))
    .map(({ picked, values }) => {
      let out = base;
      picked.forEach((l, i) => {
        const over: Record<string, unknown> = {};
        let cur = over;
        l.path.slice(0, -1).forEach((k) => {
          const next: Record<string, unknown> = {};
          cur[k] = next;
          cur = next;
        });
        cur[l.path[l.path.length - 1]!] = values[i];
        out = overlay(out, over);
      });
      return out;
    });
}

/** Deep-merges `over` into `base` (objects only; arrays and leaves are replaced). */
export function overlay(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const a = out[k];
    out[k] =
      isPlainObject(a) && isPlainObject(v)
        ? overlay(a as Record<string, unknown>, v as Record<string, unknown>)
        : (v as unknown);
  }
  return out;
}

function isPlainObject(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

/** Encodes a request (strings as Buffers or strings) with the bytes-view schema. */
export function encode(type: protobuf.Type, value: Record<string, unknown>): Buffer {
  const msg = type.fromObject(asBytes(type, value));
  return Buffer.from(type.encode(msg).finish());
}

/** A request with the strings of its `bytes` (formerly `string`) fields turned into UTF-8 bytes. */
export function asBytes(type: protobuf.Type, value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const f = type.fields[k];
    if (f === undefined) {
      out[k] = v;
      continue;
    }
    f.resolve();
    const one = (x: unknown): unknown =>
      f.resolvedType instanceof protobuf.Type && isPlainObject(x)
        ? asBytes(f.resolvedType, x as Record<string, unknown>)
        : f.type === 'bytes' && typeof x === 'string'
          ? Buffer.from(x, 'utf8')
          : x;
    out[k] =
      f instanceof protobuf.MapField && isPlainObject(v)
        ? Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([mk, mv]) => [mk, one(mv)]))
        : Array.isArray(v)
          ? v.map(one)
          : one(v);
  }
  return out;
}

/** Byte-level damage to an encoded message: flips, inserts, deletions, truncation, garbage. */
export const byteMutations = fc.array(
  fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({
      kind: fc.constant('insert' as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
    }),
    fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 8 }) }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 32 }) }),
  ),
  { minLength: 1, maxLength: 4 },
);

/** Applies {@link byteMutations} to a buffer. */
export function mutateBytes(buf: Buffer, mutations: MutationList): Buffer {
  let out = Buffer.from(buf);
  for (const m of mutations) {
    const at = out.length === 0 ? 0 : ('at' in m ? m.at : 0) % (out.length + 1);
    switch (m.kind) {
      case 'flip':
        if (out.length > 0) out[at % out.length] = (out[at % out.length] ?? 0) ^ (1 << m.bit);
        break;
      case 'insert':
        out = Buffer.concat([out.subarray(0, at), Buffer.from(m.bytes), out.subarray(at)]);
        break;
      case 'delete':
        out = Buffer.concat([out.subarray(0, at), out.subarray(at + m.n)]);
        break;
      case 'truncate':
        out = out.subarray(0, at);
        break;
      case 'append':
        out = Buffer.concat([out, Buffer.from(m.bytes)]);
        break;
    }
  }
  return out;
}

/** A list of byte mutations as generated by {@link byteMutations}. */
export type MutationList = typeof byteMutations extends fc.Arbitrary<infer T> ? T : never;

/** The answer to one raw call: its status code and details, and the decoded response when OK. */
export interface WireAnswer {
  readonly code: grpc.status;
  readonly details: string;
  readonly response: Record<string, unknown> | null;
}

/** A gRPC client that sends pre-encoded bytes, with limits above the server's (to reach its checks). */
export class RawCriClient {
  private readonly client: grpc.Client;

  constructor(socket: string, maxMessageBytes = 64 * 1024 * 1024) {
    this.client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure(), {
      'grpc.max_send_message_length': maxMessageBytes,
      'grpc.max_receive_message_length': maxMessageBytes,
    });
  }

  /** Sends `body` to `method` and resolves with whatever status comes back (never rejects). */
  call(method: WireMethod, body: Buffer, deadlineMs = 60_000): Promise<WireAnswer> {
    return new Promise((resolve) => {
      this.client.makeUnaryRequest(
        method.path,
        (x: Buffer) => x,
        (x: Buffer) => x,
        body,
        new grpc.Metadata(),
        { deadline: Date.now() + deadlineMs },
        (e: grpc.ServiceError | null, res?: Buffer) => {
          if (e !== null) resolve({ code: e.code, details: e.details, response: null });
          else
            resolve({
              code: grpc.status.OK,
              details: '',
              response: utf8Strings(
                method.response.toObject(method.response.decode(res ?? Buffer.alloc(0)), { longs: String }),
              ) as Record<string, unknown>,
            });
        },
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

/** A decoded bytes-view message with its byte fields read back as UTF-8 text. */
export function utf8Strings(v: unknown): unknown {
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return Buffer.from(v).toString('utf8');
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(utf8Strings);
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, utf8Strings(x)]));
}

/** Maps an absolute path that would resolve outside `root` into it (the fuzz must not touch the host). */
export function confine(value: unknown, root: string): unknown {
  if (!Buffer.isBuffer(value)) return value;
  const s = value.toString('utf8');
  if (!isAbsolute(s) || s.includes('\0')) return value;
  const n = normalize(s);
  return n === root || n.startsWith(`${root}/`) ? value : Buffer.from(`${root}/confined${n}`);
}
