import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { AuthorityRewriter, isInvalidAuthority } from '../src/authority-proxy.js';

const require = createRequire(import.meta.url);
const hpack = require('hpack.js') as {
  compressor: { create(o: { table: { size: number } }): { write(h: object[]): void; read(): Buffer | null } };
  decompressor: {
    create(o: { table: { size: number } }): {
      write(b: Buffer): void;
      execute(): void;
      read(): { name: string; value: string } | null;
    };
  };
};

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const frame = (type: number, flags: number, id: number, payload: Buffer) => {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h.writeUInt8(type, 3);
  h.writeUInt8(flags, 4);
  h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
};

function headersOf(out: Buffer): { name: string; value: string }[][] {
  const dec = hpack.decompressor.create({ table: { size: 4096 } });
  const blocks: { name: string; value: string }[][] = [];
  let b = out.subarray(PREFACE.length);
  while (b.length >= 9) {
    const len = b.readUIntBE(0, 3);
    const type = b.readUInt8(3);
    if (type === 1) {
      dec.write(b.subarray(9, 9 + len));
      dec.execute();
      const hs: { name: string; value: string }[] = [];
      for (let h = dec.read(); h !== null; h = dec.read()) hs.push(h);
      blocks.push(hs);
    }
    b = b.subarray(9 + len);
  }
  return blocks;
}

describe(':authority rewriter', () => {
  it('knows which authorities nghttp2 refuses', () => {
    expect(isInvalidAuthority('/run/hcr/hcr.sock')).toBe(true);
    expect(isInvalidAuthority('')).toBe(true);
    expect(isInvalidAuthority('localhost')).toBe(false);
    expect(isInvalidAuthority('127.0.0.1:5000')).toBe(false);
  });

  it('rewrites a socket-path authority across split chunks and keeps other frames intact', () => {
    const comp = hpack.compressor.create({ table: { size: 4096 } });
    const block = (hs: object[]) => {
      comp.write(hs);
      return comp.read()!;
    };
    const h1 = block([
      { name: ':method', value: 'POST' },
      { name: ':authority', value: '/tmp/x.sock' },
      { name: ':path', value: '/runtime.v1.RuntimeService/Version' },
    ]);
    // A second request reuses the dynamic table entries the first one created.
    const h2 = block([
      { name: ':method', value: 'POST' },
      { name: ':authority', value: '/tmp/x.sock' },
      { name: ':path', value: '/runtime.v1.RuntimeService/Status' },
    ]);
    const settings = frame(4, 0, 0, Buffer.alloc(0));
    const data = frame(0, 1, 1, Buffer.from('payload'));
    // HEADERS split into HEADERS + CONTINUATION, with padding on the first.
    const padded = Buffer.concat([Buffer.from([2]), h1.subarray(0, 5), Buffer.alloc(2)]);
    const input = Buffer.concat([
      PREFACE,
      settings,
      frame(1, 0x8, 1, padded),
      frame(9, 0x4, 1, h1.subarray(5)),
      data,
      frame(1, 0x5, 3, h2),
    ]);
    const rw = new AuthorityRewriter();
    const out = Buffer.concat([
      rw.push(input.subarray(0, 7)),
      rw.push(input.subarray(7, 40)),
      rw.push(input.subarray(40)),
    ]);
    expect(out.subarray(0, PREFACE.length)).toEqual(PREFACE);
    expect(out.includes(settings)).toBe(true);
    expect(out.includes(data)).toBe(true);
    const blocks = headersOf(out);
    expect(blocks).toHaveLength(2);
    for (const b of blocks) expect(b.find((h) => h.name === ':authority')?.value).toBe('localhost');
    expect(blocks[1]?.find((h) => h.name === ':path')?.value).toBe('/runtime.v1.RuntimeService/Status');
  });
});
