import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { createRequire } from 'node:module';

/*
 * Why this exists: CRI clients built on older grpc-go (crictl and critest
 * v1.26, many CSI tools) send the unix socket *path* as the HTTP/2 `:authority`
 * (e.g. `/run/hcr/hcr.sock`). nghttp2 — and so Node's http2 server under
 * @grpc/grpc-js — rejects a `/` in an authority as a malformed request and
 * resets the stream with PROTOCOL_ERROR, before any gRPC code runs. Node has
 * no switch to relax that check. So each accepted connection passes through
 * this small rewriter: client→server HEADERS blocks are decoded (hpack.js, the
 * HPACK implementation the SPDY stack already uses), an invalid `:authority`
 * becomes `localhost` (what newer kubelets send), and the block is re-encoded
 * as stateless literals. Every other frame, and the whole server→client
 * direction, passes through byte for byte.
 */

const require = createRequire(import.meta.url);
interface HpackDecompressor {
  write(b: Buffer): void;
  execute(): void;
  read(): { name: string; value: string } | null;
  updateTableSize(size: number): void;
}
const hpack = require('hpack.js') as { decompressor: { create(o: { table: { size: number } }): HpackDecompressor } };

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const FRAME_HEADERS = 0x1;
const FRAME_CONTINUATION = 0x9;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
/** Default SETTINGS_MAX_FRAME_SIZE; re-encoded blocks are split to fit it. */
const MAX_FRAME = 16384;

// Characters RFC 3986 allows in an authority (reg-name / IP-literal / port / userinfo).
const AUTHORITY_RE = /^[A-Za-z0-9\-._~!$&'()*+,;=:@[\]%]*$/;

/** True when nghttp2 would refuse this `:authority` value. */
export function isInvalidAuthority(value: string): boolean {
  return value === '' || !AUTHORITY_RE.test(value);
}

function hpackInt(value: number, prefixBits: number, firstByte: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [firstByte | value];
  const out = [firstByte | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

function hpackString(s: string): Buffer {
  const bytes = Buffer.from(s, 'latin1');
  return Buffer.concat([Buffer.from(hpackInt(bytes.length, 7, 0x00)), bytes]);
}

/** Encodes headers as "literal without indexing, new name" entries: no dynamic-table state on either side. */
export function encodeLiteralBlock(headers: readonly { name: string; value: string }[]): Buffer {
  const parts: Buffer[] = [];
  for (const h of headers) parts.push(Buffer.from([0x00]), hpackString(h.name), hpackString(h.value));
  return Buffer.concat(parts);
}

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head.writeUInt8(type, 3);
  head.writeUInt8(flags, 4);
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/**
 * Rewrites the client→server byte stream of one HTTP/2 connection, fixing
 * invalid `:authority` values. Feed it bytes with {@link push}; it returns the
 * bytes to forward.
 */
export class AuthorityRewriter {
  private buf: Buffer = Buffer.alloc(0);
  private prefaceSeen = false;
  private readonly decoder: HpackDecompressor = hpack.decompressor.create({ table: { size: 4096 } });
  private pending: { streamId: number; flags: number; block: Buffer[] } | null = null;

  /** Processes incoming bytes; returns what to forward (possibly empty while a frame is incomplete). */
  push(chunk: Buffer): Buffer {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Buffer[] = [];
    if (!this.prefaceSeen) {
      if (this.buf.length < PREFACE.length) return Buffer.alloc(0);
      out.push(this.buf.subarray(0, PREFACE.length));
      this.buf = this.buf.subarray(PREFACE.length);
      this.prefaceSeen = true;
    }
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) break;
      const type = this.buf.readUInt8(3);
      const flags = this.buf.readUInt8(4);
      const streamId = this.buf.readUInt32BE(5) & 0x7fffffff;
      const raw = this.buf.subarray(0, 9 + len);
      const payload = this.buf.subarray(9, 9 + len);
      this.buf = this.buf.subarray(9 + len);
      if (type === FRAME_HEADERS) {
        let p = payload;
        let pad = 0;
        if (flags & FLAG_PADDED) {
          pad = p.readUInt8(0);
          p = p.subarray(1);
        }
        if (flags & FLAG_PRIORITY) p = p.subarray(5);
        p = p.subarray(0, p.length - pad);
        this.pending = { streamId, flags, block: [p] };
        if (flags & FLAG_END_HEADERS) out.push(this.flushHeaders());
      } else if (type === FRAME_CONTINUATION && this.pending !== null) {
        this.pending.block.push(payload);
        if (flags & FLAG_END_HEADERS) out.push(this.flushHeaders());
      } else {
        out.push(raw);
      }
    }
    return Buffer.concat(out);
  }

  private flushHeaders(): Buffer {
    const p = this.pending;
    this.pending = null;
    if (p === null) return Buffer.alloc(0);
    this.decoder.write(Buffer.concat(p.block));
    this.decoder.execute();
    const headers: { name: string; value: string }[] = [];
    for (let h = this.decoder.read(); h !== null; h = this.decoder.read()) headers.push(h);
    for (const h of headers) if (h.name === ':authority' && isInvalidAuthority(h.value)) h.value = 'localhost';
    // The block was consumed by our decoder, so it is always re-encoded (statelessly) for the server.
    const block = encodeLiteralBlock(headers);
    const frames: Buffer[] = [];
    const endStream = p.flags & FLAG_END_STREAM;
    for (let off = 0, first = true; first || off < block.length; first = false) {
      const part = block.subarray(off, off + MAX_FRAME);
      off += MAX_FRAME;
      const last = off >= block.length;
      frames.push(
        frame(
          first ? FRAME_HEADERS : FRAME_CONTINUATION,
          (first ? endStream : 0) | (last ? FLAG_END_HEADERS : 0),
          p.streamId,
          part,
        ),
      );
    }
    return Buffer.concat(frames);
  }
}

/**
 * Wraps an accepted socket as a Duplex whose readable side has invalid
 * `:authority` values rewritten; writes go straight to the socket.
 */
export function rewriteAuthority(socket: Socket): Duplex {
  const rw = new AuthorityRewriter();
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.end(cb);
    },
    destroy(err, cb) {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  socket.on('data', (d: Buffer) => {
    let out: Buffer;
    try {
      out = rw.push(d);
    } catch (e) {
      socket.destroy(e as Error);
      return;
    }
    if (out.length > 0 && !duplex.push(out)) socket.pause();
  });
  socket.on('end', () => duplex.push(null));
  socket.on('error', (e) => duplex.destroy(e));
  socket.on('close', () => duplex.destroy());
  return duplex;
}
