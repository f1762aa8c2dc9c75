import { Writable } from 'node:stream';

/** The standard stream a multiplexed Docker frame belongs to. */
export type StdStream = 'stdin' | 'stdout' | 'stderr';

/** Receives one frame; a returned promise holds back the next one (backpressure). */
export type FrameSink = (stream: StdStream, payload: Buffer) => void | Promise<void>;

const HEADER = 8;
const STREAMS: readonly StdStream[] = ['stdin', 'stdout', 'stderr'];

/**
 * Parses Docker's multiplexed stdout/stderr stream (non-TTY attach, exec and
 * logs): each frame is an 8-byte header — stream type, three zero bytes, a
 * big-endian payload length — then the payload.
 *
 * Unlike docker-modem's `demuxStream` it keeps frame boundaries (Docker sends
 * one log message per frame, which is how a timestamp is told from content)
 * and it honours backpressure from the sink, so a slow consumer of a large
 * exec output slows dockerd down instead of buffering it all in memory.
 */
export class StdFrameParser extends Writable {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly sink: FrameSink) {
    super();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    this.deliver().then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.pending.length === 0) callback();
    else callback(new Error(`Docker stream ended inside a frame (${this.pending.length} bytes left over)`));
  }

  private async deliver(): Promise<void> {
    while (this.pending.length >= HEADER) {
      const type = this.pending[0]!;
      const stream = STREAMS[type];
      if (stream === undefined || this.pending[1] !== 0 || this.pending[2] !== 0 || this.pending[3] !== 0) {
        throw new Error(
          `malformed Docker stream: bad frame header ${this.pending.subarray(0, HEADER).toString('hex')}`,
        );
      }
      const length = this.pending.readUInt32BE(4);
      if (this.pending.length < HEADER + length) return;
      const payload = this.pending.subarray(HEADER, HEADER + length);
      this.pending = this.pending.subarray(HEADER + length);
      const wait = this.sink(stream, payload);
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
