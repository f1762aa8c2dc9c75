import { appendFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCriLogLine } from '@hcr/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConsoleFollower } from './console.js';
import { containerFiles, type ContainerFiles } from './layout.js';

describe('ConsoleFollower', () => {
  let dir = '';
  let files: ContainerFiles;
  let log = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'console-'));
    files = containerFiles(dir, 'c');
    await mkdir(files.dir, { recursive: true });
    log = join(dir, 'c.log');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const records = async () =>
    (await readFile(log, 'utf8'))
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => parseCriLogLine(l)!);

  it('copies whole lines, strips serial \\r, and keeps a partial line for later', async () => {
    const f = await ConsoleFollower.open(files, log);
    await appendFile(files.console, 'one\r\ntwo\npar');
    await f.pump();
    await appendFile(files.console, 'tial\n');
    await f.pump();
    await f.close();
    expect((await records()).map((r) => [r.content, r.partial])).toEqual([
      ['one', false],
      ['two', false],
      ['partial', false],
    ]);
  });

  it('resumes from the saved offset after a restart, with nothing lost or repeated', async () => {
    const first = await ConsoleFollower.open(files, log);
    await appendFile(files.console, 'a\nb\n');
    await first.pump();
    await first.close();
    await appendFile(files.console, 'c\nunterminated');
    const second = await ConsoleFollower.open(files, log);
    await second.pump(true);
    await second.close();
    expect((await records()).map((r) => [r.content, r.partial])).toEqual([
      ['a', false],
      ['b', false],
      ['c', false],
      ['unterminated', true],
    ]);
  });

  it('splits a line longer than the CRI maximum into partial records without waiting for its end', async () => {
    const f = await ConsoleFollower.open(files, log);
    await appendFile(files.console, 'x'.repeat(40 * 1024));
    await f.pump();
    await f.close();
    const r = await records();
    expect(r.length).toBe(2);
    expect(r.every((x) => x.partial)).toBe(true);
  });
});
