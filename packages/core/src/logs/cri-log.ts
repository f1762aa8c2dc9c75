import { mkdirSync, openSync, closeSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Nanos } from '../types.js';

/** The output stream a log line came from. */
export type LogStream = 'stdout' | 'stderr';

/**
 * When output was produced: a `Date`, or Unix nanoseconds when the source has
 * that precision (Docker's log timestamps do, and an engine resuming a log
 * after a restart needs the exact time of the last record it wrote).
 */
export type LogTime = Date | Nanos;

/** Longest line written as one record; longer lines are split into `P` records. */
export const MAX_LOG_LINE = 16 * 1024;

/**
 * Writes container output in the CRI log format the kubelet and `crictl logs`
 * read: `<RFC3339Nano time> <stream> <F|P> <content>\n`, one record per line,
 * `P` for a partial record (a line longer than {@link MAX_LOG_LINE}, or output
 * cut off without a newline at close).
 *
 * Writes are synchronous appends so that a record is on disk in order even when
 * stdout and stderr interleave; {@link reopen} supports log rotation. A caller
 * that receives output in batches can {@link cork} the writer to turn a batch
 * into one append instead of one per record.
 */
export class CriLogWriter {
  private fd: number | null;
  private corked: Buffer[] | null = null;
  private readonly pending: Record<LogStream, Buffer[]> = { stdout: [], stderr: [] };
  private readonly pendingLength: Record<LogStream, number> = { stdout: 0, stderr: 0 };

  /** Opens (creating parent dirs) `path` for appending. */
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, 'a', 0o640);
  }

  /** Adds output from `stream`; complete lines are written at once. */
  write(stream: LogStream, chunk: Buffer, time: LogTime = new Date()): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl === -1) break;
      this.pushPending(stream, chunk.subarray(start, nl), time);
      this.emit(stream, 'F', time);
      start = nl + 1;
    }
    if (start < chunk.length) this.pushPending(stream, chunk.subarray(start), time);
  }

  /** Writes any unterminated output as a partial record. */
  flush(time: LogTime = new Date()): void {
    for (const stream of ['stdout', 'stderr'] as const) {
      if (this.pendingLength[stream] > 0) this.emit(stream, 'P', time);
    }
  }

  /** Holds records in memory until {@link uncork}, which appends them all at once, in order. */
  cork(): void {
    this.corked ??= [];
  }

  /** Appends the records held since {@link cork}. */
  uncork(): void {
    const held = this.corked;
    this.corked = null;
    if (held !== null && held.length > 0 && this.fd !== null) writeSync(this.fd, Buffer.concat(held));
  }

  /** Closes and reopens the file (after the kubelet rotated it). */
  reopen(): void {
    this.uncork();
    if (this.fd !== null) closeSync(this.fd);
    mkdirSync(dirname(this.path), { recursive: true });
    this.fd = openSync(this.path, 'a', 0o640);
  }

  /** Flushes partial output and closes the file. */
  close(): void {
    this.flush();
    this.uncork();
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private pushPending(stream: LogStream, part: Buffer, time: LogTime): void {
    let rest = part;
    while (this.pendingLength[stream] + rest.length > MAX_LOG_LINE) {
      const take = MAX_LOG_LINE - this.pendingLength[stream];
      this.pending[stream].push(rest.subarray(0, take));
      this.pendingLength[stream] += take;
      this.emit(stream, 'P', time);
      rest = rest.subarray(take);
    }
    if (rest.length > 0) {
      this.pending[stream].push(Buffer.from(rest));
      this.pendingLength[stream] += rest.length;
    }
  }

  private emit(stream: LogStream, tag: 'F' | 'P', time: LogTime): void {
    const content = Buffer.concat(this.pending[stream]);
    this.pending[stream] = [];
    this.pendingLength[stream] = 0;
    if (this.fd === null) return;
    const stamp =
      typeof time === 'bigint' ? formatRfc3339Nano(new Date(Number(time / 1_000_000n)), time) : formatRfc3339Nano(time);
    const record = Buffer.concat([Buffer.from(`${stamp} ${stream} ${tag} `), content, NEWLINE]);
    if (this.corked !== null) this.corked.push(record);
    else writeSync(this.fd, record);
  }
}

const NEWLINE = Buffer.from('\n');

// Consecutive records mostly fall in the same second: reuse its formatted date and time.
let cachedSecond = Number.NaN;
let cachedPrefix = '';

/** Formats a time as RFC 3339 with nanoseconds, as Go's `time.RFC3339Nano` in UTC. */
export function formatRfc3339Nano(time: Date, nanos?: bigint): string {
  const ms = time.getTime();
  const second = Math.floor(ms / 1000);
  if (second !== cachedSecond) {
    cachedPrefix = time.toISOString().slice(0, 19); // 2026-11-25T22:18:05
    cachedSecond = second;
  }
  const frac =
    nanos === undefined
      ? String((ms - second * 1000) * 1_000_000).padStart(9, '0')
      : String(Number(nanos % 1_000_000_000n)).padStart(9, '0');
  return `${cachedPrefix}.${frac}Z`;
}

/** One parsed CRI log record. */
export interface CriLogRecord {
  readonly time: string;
  readonly stream: LogStream;
  readonly partial: boolean;
  readonly content: string;
}

/** Parses one CRI log line (without its newline); null when malformed. */
export function parseCriLogLine(line: string): CriLogRecord | null {
  const m = /^(\S+) (stdout|stderr) ([FP]) (.*)$/s.exec(line);
  if (m === null) return null;
  return { time: m[1]!, stream: m[2] as LogStream, partial: m[3] === 'P', content: m[4]! };
}
