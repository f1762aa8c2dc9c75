import { watch, type FSWatcher } from 'node:fs';
import { open, readFile, rename, writeFile } from 'node:fs/promises';
import { CriLogWriter, MAX_LOG_LINE } from '@hcr/core';
import type { ContainerFiles } from './layout.js';

const READ_CHUNK = 64 * 1024;

/**
 * Copies a VM's serial console (a file the monitor appends to) into the
 * container's CRI log, one record per line, and remembers how far it got in
 * a small offset file — so an HCR restart resumes exactly where the previous
 * process stopped, with no line lost or repeated. Only whole lines are
 * consumed while the VM runs; `\r\n` (serial line endings) becomes `\n`.
 */
export class ConsoleFollower {
  private offset = 0;
  private writer: CriLogWriter | null;
  private running: Promise<void> = Promise.resolve();
  private again = false;
  private closed = false;

  private constructor(
    private readonly files: ContainerFiles,
    logPath: string,
  ) {
    this.writer = logPath === '' ? null : new CriLogWriter(logPath);
  }

  /** Opens the CRI log and loads the saved console offset. */
  static async open(files: ContainerFiles, logPath: string): Promise<ConsoleFollower> {
    const f = new ConsoleFollower(files, logPath);
    try {
      f.offset = Number.parseInt(await readFile(files.consoleOffset, 'utf8'), 10) || 0;
    } catch {
      f.offset = 0;
    }
    return f;
  }

  /**
   * Copies what is new. With `final`, also a trailing line without newline
   * (as a partial record): the VM has ended and nothing will complete it.
   * Calls are serialised; a call during a copy schedules one more pass.
   */
  pump(final = false): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (final) {
      this.running = this.running.then(() => this.copy(true));
      return this.running;
    }
    this.again = true;
    this.running = this.running.then(async () => {
      if (!this.again) return;
      this.again = false;
      await this.copy(false);
    });
    return this.running;
  }

  /** Closes and reopens the CRI log (after the kubelet rotated it). */
  reopen(): void {
    this.writer?.reopen();
  }

  /** Stops following; the CRI log file is closed. */
  async close(): Promise<void> {
    await this.running;
    this.closed = true;
    this.writer?.close();
    this.writer = null;
  }

  private async copy(final: boolean): Promise<void> {
    let fh;
    try {
      fh = await open(this.files.console, 'r');
    } catch {
      return;
    }
    try {
      let pending: Buffer = Buffer.alloc(0);
      let readAt = this.offset;
      for (;;) {
        const buf = Buffer.alloc(READ_CHUNK);
        const { bytesRead } = await fh.read(buf, 0, READ_CHUNK, readAt);
        if (bytesRead === 0) break;
        readAt += bytesRead;
        pending =
          pending.length === 0 ? buf.subarray(0, bytesRead) : Buffer.concat([pending, buf.subarray(0, bytesRead)]);
        pending = this.emitLines(pending);
      }
      if (final && pending.length > 0) {
        this.writer?.write('stdout', pending);
        this.writer?.flush();
        this.offset += pending.length;
      }
      await this.saveOffset();
    } finally {
      await fh.close();
    }
  }

  // Writes every complete line of `data`; returns the incomplete rest. A line
  // longer than the CRI maximum goes out in partial records without waiting.
  private emitLines(data: Buffer): Buffer {
    let start = 0;
    for (let nl = data.indexOf(0x0a, start); nl !== -1; nl = data.indexOf(0x0a, start)) {
      const end = nl > start && data[nl - 1] === 0x0d ? nl - 1 : nl;
      this.writer?.write('stdout', Buffer.concat([data.subarray(start, end), Buffer.from('\n')]));
      this.offset += nl + 1 - start;
      start = nl + 1;
    }
    while (data.length - start > MAX_LOG_LINE) {
      this.writer?.write('stdout', data.subarray(start, start + MAX_LOG_LINE));
      this.writer?.flush();
      this.offset += MAX_LOG_LINE;
      start += MAX_LOG_LINE;
    }
    return data.subarray(start);
  }

  private async saveOffset(): Promise<void> {
    const tmp = `${this.files.consoleOffset}.tmp`;
    await writeFile(tmp, String(this.offset));
    await rename(tmp, this.files.consoleOffset);
  }
}

/**
 * Watches a container directory (console growth, the supervisor's exit file)
 * with inotify, plus a slow timer in case an event is missed.
 */
export function watchContainerDir(dir: string, onChange: () => void, safetyIntervalMs = 1000): () => void {
  let watcher: FSWatcher | null = null;
  try {
    watcher = watch(dir, { persistent: false }, () => onChange());
    watcher.on('error', () => undefined);
  } catch {
    watcher = null;
  }
  const timer = setInterval(onChange, safetyIntervalMs);
  timer.unref();
  return () => {
    watcher?.close();
    clearInterval(timer);
  };
}
