import { PassThrough, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { StdFrameParser, writeRespectingBackpressure, type StdStream } from './stdcopy.js';

function frame(type: number, payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const head = Buffer.alloc(8);
  head[0] = type;
  head.writeUInt32BE(body.length, 4);
  return Buffer.concat([head, body]);
}

async function parse(chunks: Buffer[]): Promise<[StdStream, string][]> {
  const out: [StdStream, string][] = [];
  const src = new PassThrough();
  const done = pipeline(
    src,
    new StdFrameParser((s, p) => {
      out.push([s, p.toString()]);
    }),
  );
  for (const c of chunks) src.write(c);
  src.end();
  await done;
  return out;
}

describe('StdFrameParser', () => {
  it('keeps frame boundaries and streams', async () => {
    const all = Buffer.concat([frame(1, 'out one\n'), frame(2, 'err'), frame(1, ''), frame(1, 'two')]);
    expect(await parse([all])).toEqual([
      ['stdout', 'out one\n'],
      ['stderr', 'err'],
      ['stdout', ''],
      ['stdout', 'two'],
    ]);
  });

  it('reassembles frames split across chunks at every offset', async () => {
    const all = Buffer.concat([frame(1, 'hello'), frame(2, 'world!')]);
    for (let cut = 1; cut < all.length; cut++) {
      expect(await parse([all.subarray(0, cut), all.subarray(cut)])).toEqual([
        ['stdout', 'hello'],
        ['stderr', 'world!'],
      ]);
    }
  });

  it('rejects a stream that is not multiplexed', async () => {
    await expect(parse([Buffer.from('plain tty output, no headers')])).rejects.toThrow(/malformed Docker stream/);
  });

  it('reports a truncated last frame', async () => {
    await expect(parse([frame(1, 'abcdef').subarray(0, 11)])).rejects.toThrow(/ended inside a frame/);
  });

  it('waits for the sink before parsing on', async () => {
    const seen: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const parser = new StdFrameParser(async (_s, p) => {
      seen.push(p.toString());
      if (seen.length === 1) await gate;
    });
    const src = new PassThrough();
    const done = pipeline(src, parser);
    src.end(Buffer.concat([frame(1, 'a'), frame(1, 'b')]));
    await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual(['a']);
    release();
    await done;
    expect(seen).toEqual(['a', 'b']);
  });
});

describe('writeRespectingBackpressure', () => {
  it('resolves when a full target drains', async () => {
    const chunks: Buffer[] = [];
    let next!: () => void;
    const slow = new Writable({
      highWaterMark: 4,
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        next = cb;
      },
    });
    const wait = writeRespectingBackpressure(slow, Buffer.from('12345678'));
    expect(wait).toBeInstanceOf(Promise);
    next();
    await wait;
    expect(Buffer.concat(chunks).toString()).toBe('12345678');
  });

  it('does not hang on a target that closes instead of draining', async () => {
    const stuck = new Writable({ highWaterMark: 1, write: () => undefined });
    const wait = writeRespectingBackpressure(stuck, Buffer.from('xx'));
    stuck.destroy();
    await wait;
    expect(writeRespectingBackpressure(stuck, Buffer.from('late'))).toBeUndefined();
  });
});
