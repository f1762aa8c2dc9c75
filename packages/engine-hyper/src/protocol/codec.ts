import type { FieldDescriptor, StructDescriptor } from './descriptor.js';
import { descriptors, type MessageName, type Messages } from './wire.gen.js';

/** A payload that does not follow the field layout of its message. */
export class CodecError extends Error {
  override readonly name = 'CodecError';
}

const FIELD_HEADER = 6;

function descriptorOf(name: string): StructDescriptor {
  const d = descriptors[name];
  if (d === undefined) throw new CodecError(`no descriptor for ${name}`);
  return d;
}

function encodeScalar(f: FieldDescriptor, v: unknown): Buffer {
  switch (f.type) {
    case 'u32': {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(v as number);
      return b;
    }
    case 'i32': {
      const b = Buffer.alloc(4);
      b.writeInt32LE(v as number);
      return b;
    }
    case 'u64': {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(v as bigint);
      return b;
    }
    case 'bool':
      return Buffer.from([v === true ? 1 : 0]);
    case 'string':
      return Buffer.from(v as string, 'utf8');
    case 'bytes':
      return Buffer.from(v as Uint8Array);
    case 'struct':
      return encodeStruct(descriptorOf(f.struct ?? ''), v as Record<string, unknown>);
  }
}

function isDefault(f: FieldDescriptor, v: unknown): boolean {
  switch (f.type) {
    case 'u32':
    case 'i32':
      return v === 0;
    case 'u64':
      return v === 0n;
    case 'bool':
      return v === false;
    case 'string':
      return v === '';
    case 'bytes':
      return (v as Uint8Array).length === 0;
    case 'struct':
      return false;
  }
}

function encodeStruct(d: StructDescriptor, value: Record<string, unknown>): Buffer {
  const parts: Buffer[] = [];
  const push = (f: FieldDescriptor, v: unknown) => {
    const body = encodeScalar(f, v);
    const head = Buffer.alloc(FIELD_HEADER);
    head.writeUInt16LE(f.tag, 0);
    head.writeUInt32LE(body.length, 2);
    parts.push(head, body);
  };
  for (const f of d.fields) {
    const v = value[f.name];
    if (v === undefined) throw new CodecError(`${d.name}.${f.name} is missing`);
    if (f.repeated) {
      for (const item of v as readonly unknown[]) push(f, item);
    } else if (!isDefault(f, v)) {
      // Defaults are what a reader assumes for absent fields, so they need no bytes.
      push(f, v);
    }
  }
  return Buffer.concat(parts);
}

function defaultOf(f: FieldDescriptor): unknown {
  if (f.repeated) return [];
  switch (f.type) {
    case 'u32':
    case 'i32':
      return 0;
    case 'u64':
      return 0n;
    case 'bool':
      return false;
    case 'string':
      return '';
    case 'bytes':
      return Buffer.alloc(0);
    case 'struct':
      return decodeStruct(descriptorOf(f.struct ?? ''), Buffer.alloc(0));
  }
}

function decodeScalar(d: StructDescriptor, f: FieldDescriptor, b: Buffer): unknown {
  const want = { u32: 4, i32: 4, u64: 8, bool: 1 } as Record<string, number>;
  const size = want[f.type];
  if (size !== undefined && b.length !== size) {
    throw new CodecError(`${d.name}.${f.name}: ${f.type} field has ${b.length} bytes`);
  }
  switch (f.type) {
    case 'u32':
      return b.readUInt32LE(0);
    case 'i32':
      return b.readInt32LE(0);
    case 'u64':
      return b.readBigUInt64LE(0);
    case 'bool':
      return b[0] !== 0;
    case 'string':
      return b.toString('utf8');
    case 'bytes':
      return Buffer.from(b);
    case 'struct':
      return decodeStruct(descriptorOf(f.struct ?? ''), b);
  }
}

function decodeStruct(d: StructDescriptor, payload: Buffer): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of d.fields) out[f.name] = defaultOf(f);
  const byTag = new Map(d.fields.map((f) => [f.tag, f]));
  let pos = 0;
  while (pos < payload.length) {
    if (payload.length - pos < FIELD_HEADER) throw new CodecError(`${d.name}: truncated field header`);
    const tag = payload.readUInt16LE(pos);
    const len = payload.readUInt32LE(pos + 2);
    pos += FIELD_HEADER;
    if (len > payload.length - pos) throw new CodecError(`${d.name}: field ${tag} overruns the payload`);
    const body = payload.subarray(pos, pos + len);
    pos += len;
    const f = byTag.get(tag);
    if (f === undefined) continue; // a newer peer's field
    const v = decodeScalar(d, f, body);
    if (f.repeated) (out[f.name] as unknown[]).push(v);
    else out[f.name] = v;
  }
  return out;
}

/** Encodes a message body into a frame payload. */
export function encodeBody<N extends MessageName>(name: N, body: Messages[N]): Buffer {
  return encodeStruct(descriptorOf(name), body as unknown as Record<string, unknown>);
}

/** Decodes a frame payload; absent fields take their defaults, unknown tags are skipped. */
export function decodeBody<N extends MessageName>(name: N, payload: Buffer): Messages[N] {
  return decodeStruct(descriptorOf(name), payload) as unknown as Messages[N];
}
