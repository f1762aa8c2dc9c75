import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCriLogLine, silentLogger, type LogStream } from '@hcr/core';
import { afterEach, describe, expect, it } from 'vitest';
import { LogSink } from './logs.js';
import type { Process } from './protocol/wire.gen.js';
import { NO_SECCOMP } from './seccomp.js';
import { EngineState } from './state.js';

const process: Process = {
  args: ['true'],
  env: [],
  cwd: '/',
  uid: 0,
  gid: 0,
  additionalGids: [],
  tty: false,
  stdin: false,
  rows: 0,
  cols: 0,
  noNewPrivileges: false,
  capabilities: [],
  username: '',
  seccomp: NO_SECCOMP,
};

interface Rec {
  readonly stream: LogStream;
  readonly offset: bigint;
  readonly data: Buffer;
}

/** Numbers chunks the way the agent does: one offset counter across both streams. */
function records(chunks: readonly [LogStream, string][]): Rec[] {
  let offset = 0n;
  return chunks.map(([stream, text]) => {
    const r = { stream, offset, data: Buffer.from(text) };
    offset += BigInt(r.data.length);
    return r;
  });
}

/** What the agent sends when the host resumes at `from`: the tail of the record holding it, then the rest. */
function replay(recs: readonly Rec[], from: bigint): Rec[] {
  return recs
    .filter((r) => r.offset + BigInt(r.data.length) > from)
    .map((r) => (r.offset >= from ? r : { ...r, offset: from, data: r.data.subarray(Number(from - r.offset)) }));
}

/** Each stream's text as the CRI log file tells it. */
function readBack(path: string): Record<LogStream, string> {
  const out: Record<LogStream, string> = { stdout: '', stderr: '' };
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line === '') continue;
    const rec = parseCriLogLine(line);
    if (rec === null) throw new Error(`bad log line: ${line}`);
    out[rec.stream] += rec.content + (rec.partial ? '' : '\n');
  }
  return out;
}

describe('LogSink', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const setup = () => {
    const dir = mkdtempSync(join(tmpdir(), 'hcr-logsink-'));
    dirs.push(dir);
    const state = new EngineState(join(dir, 'state'));
    // Cursors are kept only for containers the engine has a record of.
    state.putContainer({ id: 'c', sandboxId: 's', logPath: '', stdin: false, stdinOnce: false, tty: false, process });
    return { state, log: join(dir, 'c.log') };
  };

  const chunks: [LogStream, string][] = [
    ['stdout', 'one\ntw'],
    ['stderr', 'err-a'],
    ['stdout', 'o\nthree'],
    ['stderr', '-b\nerr-c\n'],
    ['stdout', ' and more\n'],
    ['stdout', 'tail without newline'],
  ];
  const expected = { stdout: 'one\ntwo\nthree and more\ntail without newline', stderr: 'err-a-b\nerr-c\n' };

  it('writes every byte once with no restart', () => {
    const { state, log } = setup();
    const sink = new LogSink('c', log, state, silentLogger);
    for (const r of records(chunks)) sink.write(r.stream, r.offset, r.data, 1n);
    sink.close();
    expect(readBack(log)).toEqual(expected);
  });

  it('resumes after a crash at any point without gaps or duplicates', () => {
    const recs = records(chunks);
    for (let k = 0; k <= recs.length; k++) {
      const { state, log } = setup();
      const first = new LogSink('c', log, state, silentLogger);
      for (const r of recs.slice(0, k)) first.write(r.stream, r.offset, r.data, 1n);
      // A crash: `first` is dropped as it is; its pending lines were only in memory.
      const second = new LogSink('c', log, state, silentLogger);
      for (const r of replay(recs, second.resumeOffset())) second.write(r.stream, r.offset, r.data, 2n);
      second.close();
      expect(readBack(log), `crash after ${k} chunks`).toEqual(expected);
    }
  });

  it('survives two crashes in a row, the second during the replay', () => {
    const recs = records(chunks);
    const { state, log } = setup();
    const a = new LogSink('c', log, state, silentLogger);
    for (const r of recs.slice(0, 3)) a.write(r.stream, r.offset, r.data, 1n);
    const b = new LogSink('c', log, state, silentLogger);
    const again = replay(recs, b.resumeOffset());
    for (const r of again.slice(0, 1)) b.write(r.stream, r.offset, r.data, 2n);
    const c = new LogSink('c', log, state, silentLogger);
    for (const r of replay(recs, c.resumeOffset())) c.write(r.stream, r.offset, r.data, 3n);
    c.close();
    expect(readBack(log)).toEqual(expected);
  });

  it('keeps no cursor for a removed container', () => {
    const { state, log } = setup();
    const sink = new LogSink('c', log, state, silentLogger);
    state.deleteContainer('c');
    sink.write('stdout', 0n, Buffer.from('late\n'), 1n);
    sink.close();
    expect(state.getLogCursor('c')).toBeNull();
  });

  it('notes a gap and keeps going when the agent dropped output', () => {
    const { state, log } = setup();
    const sink = new LogSink('c', log, state, silentLogger);
    sink.write('stdout', 0n, Buffer.from('before\npart'), 1n);
    sink.write('stdout', 100n, Buffer.from('after\n'), 1n);
    sink.close();
    expect(readBack(log).stdout).toBe('before\npart' + 'after\n');
    expect(readFileSync(log, 'utf8')).toMatch(/stdout P part\n/);
  });
});
