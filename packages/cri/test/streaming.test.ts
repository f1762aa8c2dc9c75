import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isHcrError } from '@hcr/core';
import { StreamingServer } from '../src/streaming/index.js';
import {
  ProcessBackend,
  UpgradeRefused,
  exitCodeOf,
  parseStatus,
  sha256,
  spdyConnect,
  spdyRemoteCommand,
  type SpdyClientMode,
} from './helpers/stream-clients.js';

const TEN_MIB = 10 * 1024 * 1024;

let dir: string;
let bigFile: string;
let bigHash: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hcr-streaming-'));
  const big = randomBytes(TEN_MIB + 12345);
  bigFile = join(dir, 'big.bin');
  bigHash = sha256(big);
  await writeFile(bigFile, big);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let backend: ProcessBackend;
let server: StreamingServer;

beforeEach(async () => {
  backend = new ProcessBackend();
  server = new StreamingServer({}, backend);
  await server.start();
});

afterEach(async () => {
  await server.stop();
  const leftovers = backend.running().length;
  await backend.killAll();
  expect(leftovers, 'processes still running after the test').toBe(0);
});

function execUrl(cmd: string[], streams: { stdin?: boolean; stderr?: boolean; tty?: boolean } = {}): string {
  const tty = streams.tty ?? false;
  return server.execUrl({
    containerId: 'c1',
    cmd,
    tty,
    stdin: streams.stdin ?? false,
    stdout: true,
    stderr: streams.stderr ?? !tty,
  });
}

describe.each<SpdyClientMode>(['spdy-transport', 'spdystream'])('exec over SPDY (%s client)', (mode) => {
  it('reports success with the v4 JSON status', async () => {
    const session = await spdyRemoteCommand(
      execUrl(['echo', 'hello']),
      { stdin: false, stdout: true, stderr: true, resize: false },
      { mode },
    );
    const result = await session.result;
    expect(session.client.protocol).toBe('v4.channel.k8s.io');
    expect(result.stdout.toString()).toBe('hello\n');
    expect(result.stderr.toString()).toBe('');
    expect(JSON.parse(result.error.toString())).toEqual({ metadata: {}, status: 'Success' });
    await session.client.closed;
  });

  it('keeps stderr apart and reports a non-zero exit code', async () => {
    const url = execUrl(['sh', '-c', 'echo out; echo err >&2; exit 3']);
    const session = await spdyRemoteCommand(url, { stdin: false, stdout: true, stderr: true, resize: false }, { mode });
    const result = await session.result;
    expect(result.stdout.toString()).toBe('out\n');
    expect(result.stderr.toString()).toBe('err\n');
    expect(exitCodeOf(result.error)).toBe(3);
    expect(parseStatus(result.error)).toMatchObject({ status: 'Failure', reason: 'NonZeroExitCode' });
  });

  it('pipes stdin until the client closes it', async () => {
    const session = await spdyRemoteCommand(
      execUrl(['cat'], { stdin: true }),
      { stdin: true, stdout: true, stderr: true, resize: false },
      { mode },
    );
    session.stdin?.write(Buffer.from('line one\n'));
    session.stdin?.write(Buffer.from('line two\n'));
    session.stdin?.end();
    const result = await session.result;
    expect(result.stdout.toString()).toBe('line one\nline two\n');
    expect(exitCodeOf(result.error)).toBe(0);
  });

  it('passes 10 MiB of output without loss or reordering', async () => {
    const session = await spdyRemoteCommand(
      execUrl(['cat', bigFile]),
      { stdin: false, stdout: true, stderr: true, resize: false },
      { mode },
    );
    const result = await session.result;
    expect(result.stdout.length).toBe(TEN_MIB + 12345);
    expect(sha256(result.stdout)).toBe(bigHash);
    expect(exitCodeOf(result.error)).toBe(0);
  });
});

describe('tokens', () => {
  it('issues distinct random single-use URLs', () => {
    const a = execUrl(['true']);
    const b = execUrl(['true']);
    expect(a).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/exec\/[A-Za-z0-9_-]{43}$/);
    expect(a).not.toBe(b);
  });

  it('answers a guessed token with 404 and runs nothing', async () => {
    const url = execUrl(['true']).replace(/[^/]+$/, 'A'.repeat(43));
    const refused = await spdyConnect(url, ['v4.channel.k8s.io']).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(UpgradeRefused);
    expect((refused as UpgradeRefused).status).toBe(404);
    expect(backend.calls).toEqual([]);
  });

  it('throws ResourceExhausted when too many URLs wait for their client', async () => {
    const small = new StreamingServer({ maxInFlight: 2 }, backend);
    await small.start();
    try {
      small.execUrl({ containerId: 'c', cmd: ['true'], tty: false, stdin: false, stdout: true, stderr: false });
      small.execUrl({ containerId: 'c', cmd: ['true'], tty: false, stdin: false, stdout: true, stderr: false });
      expect(() =>
        small.execUrl({ containerId: 'c', cmd: ['true'], tty: false, stdin: false, stdout: true, stderr: false }),
      ).toThrow(expect.objectContaining({ code: 'ResourceExhausted' }));
    } finally {
      await small.stop();
    }
  });
});

void once;
void isHcrError;
