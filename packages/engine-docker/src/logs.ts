import {
  mkdirSync,
  openSync,
  readSync,
  closeSync,
  fstatSync,
  readFileSync,
  writeFileSync,
  renameSync,
  rmSync,
} from 'node:fs';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { CriLogWriter, parseCriLogLine, type Logger, type Nanos } from '@hcr/core';
import type Docker from 'dockerode';
import { isDockerNotFound } from './docker-errors.js';
import { FrameSplitter, type StdFrame, type StdStream } from './stdcopy.js';
import { parseRfc3339Nano, toDockerTimestamp } from './time.js';

/** Messages read from the end of a stopped container's log to find those not copied yet. */
const CATCH_UP_TAIL = 5000;

/** How much of a CRI log's end is read to find the last record's time. */
const TAIL_BYTES = 64 * 1024;

/** Time of the last complete record in a CRI log file; 0 when there is none. */
export function lastRecordTime(path: string): Nanos {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return 0n;
  }
  try {
    const size = fstatSync(fd).size;
    const length = Math.min(size, TAIL_BYTES);
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, size - length);
    // Only lines followed by a newline are complete records.
    const lines = buf.toString('utf8').split('\n').slice(0, -1);
    for (let i = lines.length - 1; i >= 0; i--) {
      const record = parseCriLogLine(lines[i]!);
      if (record === null) continue;
      const t = parseRfc3339Nano(record.time);
      if (t > 0n) return t;
    }
    return 0n;
  } finally {
    closeSync(fd);
  }
}

/** Reads a saved log cursor (Unix nanoseconds); 0 when absent. */
export function readCursor(path: string): Nanos {
  try {
    const text = readFileSync(path, 'utf8').trim();
    return /^\d+$/.test(text) ? BigInt(text) : 0n;
  } catch {
    return 0n;
  }
}

function writeCursor(path: string, cursor: Nanos): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${cursor}\n`);
  renameSync(tmp, path);
}

/** Removes a saved log cursor; absent is fine. */
export function removeCursor(path: string): void {
  rmSync(path, { force: true });
}

/** What a {@link LogFollower} copies, and from where. */
export interface LogFollowerOptions {
  readonly docker: Docker;
  /** Docker id or name of the container. */
  readonly dockerRef: string;
  readonly logPath: string;
  readonly tty: boolean;
  /** File that remembers the time of the last record copied, across log rotation and HCR restarts. */
  readonly cursorFile: string;
  /** Resume after the last record already in the log (recovery) instead of copying from the start. */
  readonly resume: boolean;
  readonly logger: Logger;
  /** Pause between attempts when dockerd cannot be read. */
  readonly retryMs?: number;
}

/**
 * Copies a container's output from dockerd's json-file log (the logs API,
 * following, with timestamps) into its CRI log file.
 *
 * dockerd keeps the output while HCR is away, so nothing is lost across an
 * HCR restart: a new follower resumes just after the last record time found
 * in the log (or the saved cursor, if the log was rotated meanwhile).
 * {@link done} settles once the container has stopped and all its output is
 * in the file, so whoever reports the exit can wait for that first.
 */
export class LogFollower {
  /** Settles when all output of the stopped container is in the file, or the follower was stopped. */
  readonly done: Promise<void>;
  private readonly writer: CriLogWriter;
  private cursor: Nanos;
  /** The cursor this copier started from: messages up to it were written by an earlier copier. */
  private readonly resumedAt: Nanos;
  /**
   * Messages this copier wrote, by time and stream. dockerd copies stdout and
   * stderr separately, so the json-file log is not in time order: the catch-up
   * after a stop must skip what was written, not everything up to the cursor.
   */
  private readonly written = new Set<string>();
  private stopped = false;
  private abort: AbortController | null = null;
  /** Lets {@link run} go: copying starts only once the container was started. */
  private readonly begin: () => void;

  /** Opens the log file (so an unwritable path fails here, before the container starts). */
  constructor(private readonly opts: LogFollowerOptions) {
    this.writer = new CriLogWriter(opts.logPath);
    this.cursor = opts.resume ? maxNanos(lastRecordTime(opts.logPath), readCursor(opts.cursorFile)) : 0n;
    this.resumedAt = this.cursor;
    let begin!: () => void;
    const started = new Promise<void>((resolve) => (begin = resolve));
    this.done = started.then(() => this.run());
    this.begin = begin;
  }

  /** Starts copying (after the container was started). */
  start(): this {
    this.begin();
    return this;
  }

  /** Reopens the CRI log after the kubelet rotated it. */
  reopen(): void {
    writeCursor(this.opts.cursorFile, this.cursor);
    this.writer.reopen();
  }

  /** Stops copying without waiting for the container (engine shutdown); the cursor is saved. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    this.begin();
    await this.done;
  }

  private async run(): Promise<void> {
    const retryMs = this.opts.retryMs ?? 1000;
    const container = this.opts.docker.getContainer(this.opts.dockerRef);
    try {
      while (!this.stopped) {
        try {
          const info = await container.inspect();
          if (info.State.Running || info.State.Restarting) {
            await this.followOnce(container);
            continue;
          }
          // dockerd (20.10) ends a follow as soon as the container stops, even when the reader is still behind:
          // once it has stopped, read what remains after the cursor (the log no longer grows).
          await this.catchUp(container);
          this.writer.flush(this.cursor > 0n ? this.cursor : new Date());
          break;
        } catch (e) {
          if (this.stopped) break;
          if (isDockerNotFound(e)) {
            this.writer.flush();
            break;
          }
          this.opts.logger.warn(
            { err: String(e), container: this.opts.dockerRef },
            'container log copy interrupted; retrying',
          );
          await sleep(retryMs);
        }
      }
    } finally {
      this.writer.close();
      try {
        writeCursor(this.opts.cursorFile, this.cursor);
      } catch (e) {
        this.opts.logger.warn({ err: String(e), file: this.opts.cursorFile }, 'cannot save the log cursor');
      }
    }
  }

  /**
   * Copies the messages of a stopped container after the cursor. dockerd reads
   * a `tail` backwards from the end of the log, while `since` makes it decode
   * the whole log from the start; so the tail is tried first and the full read
   * is used only when the missing part is longer than the tail.
   */
  private async catchUp(container: Docker.Container): Promise<void> {
    const raw = (await container.logs({
      follow: false,
      stdout: true,
      stderr: true,
      timestamps: true,
      tail: CATCH_UP_TAIL,
    })) as unknown as Buffer | string;
    const buf = Buffer.isBuffer(raw) ? raw : Buffer.from(raw, 'utf8');
    const split = this.opts.tty ? new TtyLineSplitter() : new FrameSplitter();
    const messages = [...split.push(buf), ...split.end()];
    const first = messages[0];
    if (messages.length >= CATCH_UP_TAIL && first !== undefined && messageTime(first.payload) > this.cursor) {
      await this.followOnce(container);
      return;
    }
    this.writer.cork();
    try {
      for (const m of messages) {
        const t = messageTime(m.payload);
        if (t > this.resumedAt && !this.written.has(`${t}/${m.stream}`)) this.record(m.stream, m.payload);
      }
    } finally {
      this.writer.uncork();
    }
  }

  /** Copies from the cursor until dockerd ends the stream (the container stopped, or dockerd went away). */
  private async followOnce(container: Docker.Container): Promise<void> {
    this.abort = new AbortController();
    const stream = (await container.logs({
      follow: true,
      stdout: true,
      stderr: true,
      timestamps: true,
      // Docker's `since` is inclusive; the record at the cursor is already in the file.
      since: toDockerTimestamp(this.cursor === 0n ? 0n : this.cursor + 1n),
      abortSignal: this.abort.signal,
    } as Docker.ContainerLogsOptions & { follow: true })) as unknown as Readable;
    // Each network chunk holds many messages: append their records to the file in one write.
    const split = this.opts.tty ? new TtyLineSplitter() : new FrameSplitter();
    for await (const chunk of stream) {
      const messages = split.push(chunk as Buffer);
      this.writer.cork();
      try {
        for (const m of messages) this.record(m.stream, m.payload);
      } finally {
        this.writer.uncork();
      }
    }
    for (const m of split.end()) this.record(m.stream, m.payload);
  }

  /** One Docker log message: `<RFC3339Nano> <content>`. */
  private record(stream: StdStream, message: Buffer): void {
    if (stream === 'stdin') return;
    const time = messageTime(message);
    const content = time > 0n ? message.subarray(message.indexOf(0x20) + 1) : message;
    this.writer.write(stream, content, time > 0n ? time : new Date());
    if (time > this.cursor) this.cursor = time;
    this.written.add(`${time}/${stream}`);
    // Forget the oldest key, never all of them: a tail message the catch-up finds was written, if at all,
    // among the last CATCH_UP_TAIL (this copier writes a prefix of the log, in log order).
    if (this.written.size > MAX_WRITTEN_KEYS) this.written.delete(this.written.values().next().value!);
  }
}

/** Bound on the keys a copier remembers: the catch-up only looks at the last {@link CATCH_UP_TAIL} messages. */
const MAX_WRITTEN_KEYS = 2 * CATCH_UP_TAIL;

/**
 * A TTY container's logs are one raw stream with no frames; each message is
 * `<timestamp> <content>` and (for every complete line) ends with a newline.
 */
class TtyLineSplitter {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): StdFrame[] {
    let data = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const lines: StdFrame[] = [];
    for (let nl = data.indexOf(0x0a); nl !== -1; nl = data.indexOf(0x0a)) {
      lines.push({ stream: 'stdout', payload: data.subarray(0, nl + 1) });
      data = data.subarray(nl + 1);
    }
    this.pending = data;
    return lines;
  }

  /** The last message when it had no newline. */
  end(): StdFrame[] {
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    return rest.length === 0 ? [] : [{ stream: 'stdout', payload: rest }];
  }
}

/** The timestamp Docker put before a log message (0 when there is none). */
function messageTime(message: Buffer): Nanos {
  const space = message.indexOf(0x20);
  return space > 0 ? parseRfc3339Nano(message.subarray(0, space).toString('latin1')) : 0n;
}

function maxNanos(a: Nanos, b: Nanos): Nanos {
  return a > b ? a : b;
}
