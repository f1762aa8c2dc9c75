import { CriLogWriter, MAX_LOG_LINE, type LogStream, type Logger } from '@hcr/core';
import type { EngineState, LogCursorRecord } from './state.js';

/**
 * Writes one container's output to its CRI log as the agent streams it, and
 * remembers exactly how far the file reflects the container's output stream
 * so that a restarted HCR resumes without gaps or duplicates.
 *
 * The agent numbers output bytes per container. `written` is how far records
 * were fed to the CriLogWriter; the writer holds an unterminated line of
 * each stream in memory, lost in a crash, so for each stream `lineStart`
 * marks where that pending part began. A new connection asks the agent to
 * resume at the earliest of them; what arrives below `written` is fed again
 * only where it belongs to a stream's lost pending part.
 */
export class LogSink {
  private readonly writer: CriLogWriter | null;
  private written: bigint;
  /** Where each stream's part lost in a crash begins; null once the replay passed. */
  private readonly refeedFrom: Record<LogStream, bigint | null>;
  /** Where each stream's pending (unterminated) part begins in this process's writer. */
  private readonly lineStart: Record<LogStream, bigint | null> = { stdout: null, stderr: null };
  private readonly pending: Record<LogStream, number> = { stdout: 0, stderr: 0 };
  private readonly fed: Record<LogStream, boolean> = { stdout: false, stderr: false };

  constructor(
    readonly containerId: string,
    logPath: string,
    private readonly state: EngineState,
    private readonly logger: Logger,
  ) {
    this.writer = logPath === '' ? null : new CriLogWriter(logPath);
    const saved = state.getLogCursor(containerId);
    const parse = (v: string | null | undefined) => (v === null || v === undefined ? null : BigInt(v));
    this.written = saved === null ? 0n : BigInt(saved.written);
    this.refeedFrom = { stdout: parse(saved?.lineStart.stdout), stderr: parse(saved?.lineStart.stderr) };
  }

  /** How far the container's output stream has been fed to the log. */
  get writtenOffset(): bigint {
    return this.written;
  }

  /** Where the agent should resume this container's output. */
  resumeOffset(): bigint {
    let r = this.written;
    for (const v of [this.refeedFrom.stdout, this.refeedFrom.stderr]) if (v !== null && v < r) r = v;
    return r;
  }

  /** Feeds a chunk of output that starts at `offset` of the container's stream. */
  write(stream: LogStream, offset: bigint, data: Buffer, timeNs: bigint): void {
    const end = offset + BigInt(data.length);
    let start = offset;
    if (offset < this.written) {
      // A replay: only what the crashed writer still held of this stream is missing from the file.
      const from = this.refeedFrom[stream] ?? this.written;
      if (from > start) start = from;
    } else if (offset > this.written) {
      this.logger.warn(
        { containerId: this.containerId, lostBytes: String(offset - this.written) },
        'container output was lost while HCR was away (the agent buffer overflowed); the log has a gap',
      );
      this.writer?.flush(timeNs);
      this.pending.stdout = this.pending.stderr = 0;
      this.lineStart.stdout = this.lineStart.stderr = null;
    }
    // Chunks come in offset order: once one reaches `written`, the replay is over.
    if (end >= this.written) this.refeedFrom.stdout = this.refeedFrom.stderr = null;
    if (start < end) {
      const chunk = data.subarray(Number(start - offset));
      this.writer?.write(stream, chunk, timeNs);
      this.fed[stream] = true;
      this.track(stream, start, chunk);
      if (end > this.written) this.written = end;
    }
    this.save();
  }

  /** Writes an unterminated last line as a partial record (the container exited). */
  flushPartial(timeNs: bigint = BigInt(Date.now()) * 1_000_000n): void {
    this.writer?.flush(timeNs);
    this.pending.stdout = this.pending.stderr = 0;
    this.lineStart.stdout = this.lineStart.stderr = null;
    this.fed.stdout = this.fed.stderr = true;
    this.save();
  }

  /** Reopens the file after the kubelet rotated it. */
  reopen(): void {
    this.writer?.reopen();
  }

  /**
   * Writes the pending lines as partial records and closes the file. The
   * saved cursor then has nothing pending, so an engine created later (HCR
   * restarted gracefully) continues after them.
   */
  close(): void {
    this.flushPartial();
    this.writer?.close();
  }

  /** Mirrors how CriLogWriter buffers a stream, to know where its pending part starts. */
  private track(stream: LogStream, at: bigint, chunk: Buffer): void {
    const lastNl = chunk.lastIndexOf(0x0a);
    let pending = lastNl >= 0 ? 0 : this.pending[stream];
    const rest = chunk.length - (lastNl + 1);
    if (pending + rest > 0) pending = ((pending + rest - 1) % MAX_LOG_LINE) + 1;
    this.pending[stream] = pending;
    this.lineStart[stream] = pending > 0 ? at + BigInt(chunk.length) - BigInt(pending) : null;
  }

  private save(): void {
    const pendingAt = (s: LogStream) => (this.fed[s] ? this.lineStart[s] : this.refeedFrom[s]);
    const c: LogCursorRecord = {
      written: String(this.written),
      lineStart: { stdout: pendingAt('stdout')?.toString() ?? null, stderr: pendingAt('stderr')?.toString() ?? null },
    };
    this.state.putLogCursor(this.containerId, c);
  }
}
