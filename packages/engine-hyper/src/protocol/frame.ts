import { crc32 } from 'node:zlib';
import { FRAME_HEADER_SIZE, FRAME_MAGIC, FRAME_MAX_PAYLOAD, messageNames } from './wire.gen.js';

/** One frame as read from or written to the agent channel. */
export interface Frame {
  readonly type: number;
  readonly id: number;
  readonly payload: Buffer;
}

/** Serialises a frame: header (magic, length, type, flags, id, CRC) then payload. */
export function encodeFrame(frame: Frame): Buffer {
  if (frame.payload.length > FRAME_MAX_PAYLOAD) {
    throw new RangeError(`agent frame payload of ${frame.payload.length} bytes exceeds ${FRAME_MAX_PAYLOAD}`);
  }
  const head = Buffer.alloc(FRAME_HEADER_SIZE);
  head.writeUInt32LE(FRAME_MAGIC, 0);
  head.writeUInt32LE(frame.payload.length, 4);
  head.writeUInt16LE(frame.type, 8);
  head.writeUInt16LE(0, 10);
  head.writeUInt32LE(frame.id, 12);
  head.writeUInt32LE(crc32(frame.payload, crc32(head.subarray(8, 16))), 16);
  return Buffer.concat([head, frame.payload]);
}

/**
 * Splits a byte stream into frames. Bytes that do not form a valid frame (a
 * peer that went away mid-frame leaves a torn one behind) are skipped up to
 * the next magic whose length and CRC check out; `skipped` counts them.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  /** Bytes discarded while resynchronising. */
  skipped = 0;

  /** Appends `chunk` and returns every complete frame now available. */
  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const frames: Frame[] = [];
    let pos = 0;
    for (;;) {
      const start = this.findMagic(pos);
      this.skipped += start - pos;
      pos = start;
      if (this.buf.length - pos < FRAME_HEADER_SIZE) break;
      const len = this.buf.readUInt32LE(pos + 4);
      // Cheap header checks first, so a stray magic inside torn bytes rarely makes us wait for a bogus length.
      const plausible =
        len <= FRAME_MAX_PAYLOAD &&
        this.buf.readUInt16LE(pos + 10) === 0 &&
        messageNames.has(this.buf.readUInt16LE(pos + 8));
      if (!plausible) {
        pos += 1;
        this.skipped += 1;
        continue;
      }
      if (this.buf.length - pos < FRAME_HEADER_SIZE + len) break;
      const payload = this.buf.subarray(pos + FRAME_HEADER_SIZE, pos + FRAME_HEADER_SIZE + len);
      const crc = crc32(payload, crc32(this.buf.subarray(pos + 8, pos + 16)));
      if (crc !== this.buf.readUInt32LE(pos + 16)) {
        pos += 1;
        this.skipped += 1;
        continue;
      }
      frames.push({
        type: this.buf.readUInt16LE(pos + 8),
        id: this.buf.readUInt32LE(pos + 12),
        payload: Buffer.from(payload),
      });
      pos += FRAME_HEADER_SIZE + len;
    }
    this.buf = this.buf.subarray(pos);
    return frames;
  }

  /** Forgets a partial frame (the peer reconnected). */
  reset(): void {
    this.buf = Buffer.alloc(0);
  }

  private findMagic(from: number): number {
    const magic = Buffer.alloc(4);
    magic.writeUInt32LE(FRAME_MAGIC, 0);
    const at = this.buf.indexOf(magic, from);
    // Keep a possible partial magic at the end for the next chunk.
    return at === -1 ? Math.max(from, this.buf.length - 3) : at;
  }
}
