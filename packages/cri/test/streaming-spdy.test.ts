// Exec and attach over SPDY/3.1, driven by spdy-transport in client mode, both
// as itself and behaving like client-go's spdystream (no flow control, no
// request pseudo-headers), against real host processes.
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { StreamingServer } from '../src/streaming/index.js';
import {
  ProcessBackend,
  UpgradeRefused,
  exitCodeOf,
  parseStatus,
  sha256,
  spdyConnect,
  spdyRemoteCommand,
  waitFor,
  type SpdyClientMode,
} from './helpers/stream-clients.js';

const BIG = 10 * 1024 * 1024 + 12_345;

let dir: string;
let bigFile: string;
let big: Buffer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hcr-streaming-spdy-'));
  big = randomBytes(BIG);
  bigFile = join(dir, 'big.bin');
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
  await waitFor('sessions to end', () => server.activeSessions === 0);
  await server.stop();
  const leftovers = backend.running().length;
  await backend.killAll();
  expect(leftovers, 'processes still running after the test').toBe(0);
});

function execUrl(cmd: string[], streams: { stdin?: boolean; tty?: boolean; containerId?: string } = {}): string {
  const tty = streams.tty ?? false;
  return server.execUrl({
    containerId: streams.containerId ?? 'c1',
    cmd,
    tty,
    stdin: streams.stdin ?? false,
    stdout: true,
    stderr: !tty,
  });
}

const OUT_ERR = { stdin: false, stdout: true, stderr: true, resize: false };
const IN_OUT_ERR = { stdin: true, stdout: true, stderr: true, resize: false };

describe.each<SpdyClientMode>(['spdy-transport', 'spdystream'])('exec over SPDY, %s client', (mode) => {
  it('reports success with the v4 JSON status', async () => {
    const session = await spdyRemoteCommand(execUrl(['echo', 'hello']), OUT_ERR, { mode });
    const result = await session.result;
    expect(session.client.protocol).toBe('v4.channel.k8s.io');
    expect(result.stdout.toString()).toBe('hello\n');
    expect(result.stderr.toString()).toBe('');
    expect(JSON.parse(result.error.toString())).toEqual({ metadata: {}, status: 'Success' });
    await session.client.closed;
  });

  it('keeps stderr apart and reports a non-zero exit code as NonZeroExitCode', async () => {
    const session = await spdyRemoteCommand(execUrl(['sh', '-c', 'echo out; echo err >&2; exit 3']), OUT_ERR, {
      mode,
    });
    const result = await session.result;
    expect(result.stdout.toString()).toBe('out\n');
    expect(result.stderr.toString()).toBe('err\n');
    expect(parseStatus(result.error)).toMatchObject({
      status: 'Failure',
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: '3' }] },
    });
    expect(exitCodeOf(result.error)).toBe(3);
  });

  it('pipes stdin until the client closes it', async () => {
    const session = await spdyRemoteCommand(execUrl(['cat'], { stdin: true }), IN_OUT_ERR, { mode });
    session.stdin?.write(Buffer.from('line one\n'));
    session.stdin?.write(Buffer.from('line two\n'));
    session.stdin?.end();
    const result = await session.result;
    expect(result.stdout.toString()).toBe('line one\nline two\n');
    expect(exitCodeOf(result.error)).toBe(0);
  });

  it('passes 10 MiB of output without loss or reordering', async () => {
    const session = await spdyRemoteCommand(execUrl(['cat', bigFile]), OUT_ERR, { mode });
    const result = await session.result;
    expect(result.stdout.length).toBe(BIG);
    expect(sha256(result.stdout)).toBe(sha256(big));
    expect(exitCodeOf(result.error)).toBe(0);
  });

  it('passes 10 MiB through stdin and back', async () => {
    const session = await spdyRemoteCommand(execUrl(['cat'], { stdin: true }), IN_OUT_ERR, { mode });
    for (let offset = 0; offset < BIG; offset += 100_000) session.stdin?.write(big.subarray(offset, offset + 100_000));
    session.stdin?.end();
    const result = await session.result;
    expect(sha256(result.stdout)).toBe(sha256(big));
    expect(exitCodeOf(result.error)).toBe(0);
  });

  it('reports a backend failure in the status', async () => {
    const session = await spdyRemoteCommand(execUrl(['true'], { containerId: 'missing' }), OUT_ERR, { mode });
    const result = await session.result;
    expect(parseStatus(result.error)).toMatchObject({
      status: 'Failure',
      reason: 'NotFound',
      code: 404,
      message: 'error executing command in container: container "missing" not found',
    });
  });

  it('runs a TTY command and delivers terminal resizes', async () => {
    const url = execUrl(['sh', '-c', 'read go; stty size; echo to-stderr >&2'], { stdin: true, tty: true });
    const session = await spdyRemoteCommand(url, { stdin: true, stdout: true, stderr: false, resize: true }, { mode });
    session.resize(123, 45);
    await waitFor('the resize to reach the backend', () => backend.resizes.length === 1);
    session.stdin?.write(Buffer.from('go\n'));
    const result = await session.result;
    expect(backend.resizes).toEqual([{ width: 123, height: 45 }]);
    expect(backend.calls).toEqual([{ op: 'exec', containerId: 'c1', cmd: expect.any(Array), tty: true }]);
    // The terminal echoes input and merges stderr into stdout.
    expect(result.stdout.toString()).toContain('45 123\r\n');
    expect(result.stdout.toString()).toContain('to-stderr\r\n');
    expect(exitCodeOf(result.error)).toBe(0);
  });
});

describe('SPDY flow control towards a client without it', () => {
  it('stops reading while the command does not consume stdin (TCP backpressure, no server buffering)', async () => {
    const url = execUrl(['sh', '-c', 'read first; sleep 1; cat >/dev/null; echo done'], { stdin: true });
    const session = await spdyRemoteCommand(url, IN_OUT_ERR, { mode: 'spdystream' });
    const payload = Buffer.alloc(32 * 1024 * 1024, 0x61);
    session.stdin?.write(Buffer.from('go\n'));
    session.stdin?.write(payload);
    session.stdin?.end();
    await new Promise((resolve) => setTimeout(resolve, 500));
    // What the server did not read is still queued on the client side.
    const queued = session.client.conn._spdyState.framer.readableLength + session.client.socket.writableLength;
    expect(queued).toBeGreaterThan(16 * 1024 * 1024);
    const result = await session.result;
    expect(result.stdout.toString()).toBe('done\n');
  });
});

describe('SPDY sub-protocols', () => {
  it('serves v3 with a plain-text error stream and resize', async () => {
    const url = execUrl(['sh', '-c', 'echo hi; exit 2']);
    const failed = await spdyRemoteCommand(url, OUT_ERR, { protocols: ['v3.channel.k8s.io'] });
    expect(failed.client.protocol).toBe('v3.channel.k8s.io');
    const result = await failed.result;
    expect(result.stdout.toString()).toBe('hi\n');
    expect(result.error.toString()).toBe('command terminated with non-zero exit code: exit status 2');

    const ok = await spdyRemoteCommand(execUrl(['true']), OUT_ERR, { protocols: ['v3.channel.k8s.io'] });
    expect((await ok.result).error.length).toBe(0);
  });

  it('serves v2 and v1 (no resize stream)', async () => {
    for (const protocol of ['v2.channel.k8s.io', 'channel.k8s.io']) {
      const url = execUrl(['sh', '-c', 'echo $0', 'x'], { stdin: true, tty: true });
      const session = await spdyRemoteCommand(
        url,
        { stdin: true, stdout: true, stderr: false, resize: false },
        { protocols: [protocol] },
      );
      session.stdin?.end();
      const result = await session.result;
      expect(session.client.protocol).toBe(protocol);
      expect(result.stdout.toString()).toContain('x');
      expect(result.error.length).toBe(0);
    }
  });

  it('picks the first protocol the client offers that it supports', async () => {
    const client = await spdyConnect(execUrl(['true']), [
      'v9.channel.k8s.io',
      'v2.channel.k8s.io',
      'v4.channel.k8s.io',
    ]);
    expect(client.protocol).toBe('v2.channel.k8s.io');
    client.socket.destroy();
  });

  it('refuses a client without a common protocol, naming the accepted ones', async () => {
    const refused = await spdyConnect(execUrl(['true']), ['v9.channel.k8s.io']).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(UpgradeRefused);
    const { status, headers, body } = refused as UpgradeRefused;
    expect(status).toBe(403);
    expect(headers['x-accepted-stream-protocol-versions']).toContain('v4.channel.k8s.io');
    expect(body).toContain('unable to negotiate protocol');
    expect(backend.calls).toEqual([]);
  });

  it('requires X-Stream-Protocol-Version', async () => {
    const refused = (await spdyConnect(execUrl(['true']), []).catch((e: unknown) => e)) as UpgradeRefused;
    expect(refused.status).toBe(400);
    expect(refused.body).toContain('X-Stream-Protocol-Version is required');
  });
});

describe('attach over SPDY', () => {
  it("connects to the container's stdio and reports success when it ends", async () => {
    const container = backend.startContainer('ctr', ['cat']);
    const url = server.attachUrl({ containerId: 'ctr', tty: false, stdin: true, stdout: true, stderr: true });
    const session = await spdyRemoteCommand(url, IN_OUT_ERR, { mode: 'spdystream' });
    const echoed = new Promise<void>((resolve) => session.onStdout((c) => c.toString().includes('ping') && resolve()));
    session.stdin?.write(Buffer.from('ping\n'));
    await echoed;
    session.stdin?.end();
    const result = await session.result;
    expect(result.stdout.toString()).toBe('ping\n');
    expect(JSON.parse(result.error.toString())).toEqual({ metadata: {}, status: 'Success' });
    expect(container.exitCode).toBe(0);
  });

  it('detaches without stopping the container when the client goes away', async () => {
    const container = backend.startContainer('ctr', ['cat']);
    const url = server.attachUrl({ containerId: 'ctr', tty: false, stdin: true, stdout: true, stderr: true });
    const session = await spdyRemoteCommand(url, IN_OUT_ERR);
    const echoed = new Promise<void>((resolve) => session.onStdout(() => resolve()));
    session.stdin?.write(Buffer.from('hello\n'));
    await echoed;
    session.client.socket.destroy();
    await waitFor('the session to end', () => server.activeSessions === 0);
    expect(container.exitCode).toBe(null);
    container.stdin?.end();
    await once(container, 'exit');
  });
});
