import { Writable } from 'node:stream';

/** The standard stream a multiplexed Docker frame belongs to. */
export type StdStream = 'stdin' | 'stdout' | 'stderr';

/** Receives one frame; a returned promise holds back the next one (backpressure). */
export type FrameSink = (stream: StdStream, payload: Buffer) => void | Promise<void>;

const HEADER = 8;
const STREAMS: readonly StdStream[] = ['stdin', 'stdout', 'stderr'];

/** One frame of Docker's multiplexed stream. */
export interface StdFrame {
  readonly stream: StdStream;
  readonly payload: Buffer;
}

/**
 * Splits Docker's multiplexed stdout/stderr stream (non-TTY attach, exec and
 * logs) into frames: each is an 8-byte header — stream type, three zero
 * bytes, a big-endian payload length — then the payload.
 *
 * Unlike docker-modem's `demuxStream` it keeps frame boundaries: Docker sends
 * one log message per frame, which is how a timestamp is told from content.
 */
export class FrameSplitter {
  private pending: Buffer = Buffer.alloc(0);

  /** Adds bytes; returns the frames they complete, in order. Throws on a malformed header. */
  push(chunk: Buffer): StdFrame[] {
    let buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const frames: StdFrame[] = [];
    while (buf.length >= HEADER) {
      const stream = STREAMS[buf[0]!];
      if (stream === undefined || buf[1] !== 0 || buf[2] !== 0 || buf[3] !== 0) {
        throw new Error(`malformed Docker stream: bad frame header ${buf.subarray(0, HEADER).toString('hex')}`);
      }
      const length = buf.readUInt32BE(4);
      if (buf.length < HEADER + length) break;
      frames.push({ stream, payload: buf.subarray(HEADER, HEADER + length) });
      buf = buf.subarray(HEADER + length);
    }
    this.pending = buf;
    return frames;
  }

  /** At the end of the stream: nothing more to deliver (an unfinished frame is incomplete data and is dropped). */
  end(): StdFrame[] {
    this.pending = Buffer.alloc(0);
    return [];
  }

  /** Bytes of an unfinished frame held back. */
  get leftover(): number {
    return this.pending.length;
  }
}

/**
 * A Writable over {@link FrameSplitter} that honours backpressure from the
 * sink, so a slow consumer of a large exec output slows dockerd down instead
 * of buffering it all in memory.
 */
export class StdFrameParser extends Writable {
  private readonly splitter = new FrameSplitter();

  constructor(private readonly sink: FrameSink) {
    super();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    let frames: StdFrame[];
    try {
      frames = this.splitter.push(chunk);
    } catch (e) {
      callback(e as Error);
      return;
    }
    this.deliver(frames).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    const left = this.splitter.leftover;
    if (left === 0) callback();
    else callback(new Error(`Docker stream ended inside a frame (${left} bytes left over)`));
  }

  private async deliver(frames: StdFrame[]): Promise<void> {
    for (const f of frames) {
      const wait = this.sink(f.stream, f.payload);
      if (wait !== undefined) await wait;
    }
  }
}

/**
 * Writes `data` to `target`; when the target's buffer is full, returns a
 * promise that settles once it drains (or closes, so a consumer that went
 * away never stalls the producer forever). Data for a finished target is dropped.
 */
export function writeRespectingBackpressure(target: Writable, data: Buffer): Promise<void> | undefined {
  if (target.destroyed || target.writableEnded) return undefined;
  if (target.write(data)) return undefined;
  return new Promise((resolve) => {
    const done = (): void => {
      target.off('drain', done);
      target.off('close', done);
      target.off('error', done);
      resolve();
    };
    target.on('drain', done);
    target.on('close', done);
    target.on('error', done);
  });
}
