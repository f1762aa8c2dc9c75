// Exec and attach over WebSocket (kubelet's channel protocols), driven by the
// ws client against real host processes.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { StreamingServer } from '../src/streaming/index.js';
import {
  ProcessBackend,
  UpgradeRefused,
  WsChannelClient,
  exitCodeOf,
  parseStatus,
  sha256,
  waitFor,
} from './helpers/stream-clients.js';

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const ERROR = 3;
const RESIZE = 4;

const BIG = 10 * 1024 * 1024 + 54_321;

let dir: string;
let bigFile: string;
let big: Buffer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hcr-streaming-ws-'));
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

describe('exec over WebSocket v5.channel.k8s.io', () => {
  it('greets on stdout, pipes stdin until the close signal, and reports success', async () => {
    const client = await WsChannelClient.connect(execUrl(['cat'], { stdin: true }), ['v5.channel.k8s.io']);
    expect(client.ws.protocol).toBe('v5.channel.k8s.io');
    client.send(STDIN, 'one\n');
    client.send(STDIN, 'two\n');
    client.closeChannel(STDIN);
    expect(await client.closed).toBe(1000);
    expect(client.messages[0]).toEqual({ channel: STDOUT, payload: Buffer.alloc(0) });
    expect(client.channel(STDOUT).toString()).toBe('one\ntwo\n');
    expect(JSON.parse(client.channel(ERROR).toString())).toEqual({ metadata: {}, status: 'Success' });
  });

  it('passes 10 MiB of output without loss or reordering', async () => {
    const client = await WsChannelClient.connect(execUrl(['cat', bigFile]), ['v5.channel.k8s.io']);
    await client.closed;
    expect(sha256(client.channel(STDOUT))).toBe(sha256(big));
    expect(exitCodeOf(client.channel(ERROR))).toBe(0);
  });

  it('passes 10 MiB through stdin and back', async () => {
    const client = await WsChannelClient.connect(execUrl(['cat'], { stdin: true }), ['v5.channel.k8s.io']);
    for (let offset = 0; offset < BIG; offset += 32 * 1024)
      client.send(STDIN, big.subarray(offset, offset + 32 * 1024));
    client.closeChannel(STDIN);
    await client.closed;
    expect(sha256(client.channel(STDOUT))).toBe(sha256(big));
  });

  it('stops reading while the command does not consume stdin', async () => {
    const url = execUrl(['sh', '-c', 'read first; sleep 1; cat >/dev/null; echo done'], { stdin: true });
    const client = await WsChannelClient.connect(url, ['v5.channel.k8s.io']);
    client.send(STDIN, 'go\n');
    const chunk = Buffer.alloc(64 * 1024, 0x62);
    for (let i = 0; i < 512; i++) client.send(STDIN, chunk);
    client.closeChannel(STDIN);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(client.ws.bufferedAmount).toBeGreaterThan(16 * 1024 * 1024);
    await client.closed;
    expect(client.channel(STDOUT).toString()).toBe('done\n');
  });

  it('runs a TTY command and delivers terminal resizes from channel 4', async () => {
    const url = execUrl(['sh', '-c', 'read go; stty size'], { stdin: true, tty: true });
    const client = await WsChannelClient.connect(url, ['v5.channel.k8s.io']);
    client.send(RESIZE, JSON.stringify({ Width: 100, Height: 30 }));
    await waitFor('the resize to reach the backend', () => backend.resizes.length === 1);
    client.send(STDIN, 'go\n');
    await client.closed;
    expect(backend.resizes).toEqual([{ width: 100, height: 30 }]);
    expect(client.channel(STDOUT).toString()).toContain('30 100\r\n');
    expect(client.channel(STDERR).length).toBe(0);
  });

  it('reports a backend failure in the status', async () => {
    const client = await WsChannelClient.connect(execUrl(['true'], { containerId: 'missing' }), ['v5.channel.k8s.io']);
    await client.closed;
    expect(parseStatus(client.channel(ERROR))).toMatchObject({ status: 'Failure', reason: 'NotFound', code: 404 });
  });
});

describe('older WebSocket dialects', () => {
  it('v4.channel.k8s.io keeps stderr apart and reports the exit code', async () => {
    const client = await WsChannelClient.connect(execUrl(['sh', '-c', 'echo out; echo err >&2; exit 42']), [
      'v4.channel.k8s.io',
    ]);
    await client.closed;
    expect(client.ws.protocol).toBe('v4.channel.k8s.io');
    expect(client.channel(STDOUT).toString()).toBe('out\n');
    expect(client.channel(STDERR).toString()).toBe('err\n');
    expect(exitCodeOf(client.channel(ERROR))).toBe(42);
  });

  it('v4.base64.channel.k8s.io encodes every message as text', async () => {
    const client = await WsChannelClient.connect(execUrl(['sh', '-c', 'printf "\\001\\377"; exit 1']), [
      'v4.base64.channel.k8s.io',
    ]);
    await client.closed;
    expect(client.channel(STDOUT)).toEqual(Buffer.of(1, 255));
    expect(exitCodeOf(client.channel(ERROR))).toBe(1);
  });

  it('channel.k8s.io reports failure as a plain message and success as nothing', async () => {
    const failed = await WsChannelClient.connect(execUrl(['sh', '-c', 'exit 5']), ['channel.k8s.io']);
    await failed.closed;
    expect(failed.channel(ERROR).toString()).toBe('command terminated with non-zero exit code: exit status 5');
    const ok = await WsChannelClient.connect(execUrl(['true']), ['base64.channel.k8s.io']);
    await ok.closed;
    expect(ok.channel(ERROR).length).toBe(0);
  });

  it('serves a client that offers no sub-protocol as binary channel.k8s.io', async () => {
    const client = await WsChannelClient.connect(execUrl(['echo', 'plain']), []);
    await client.closed;
    expect(client.ws.protocol).toBe('');
    expect(client.channel(STDOUT).toString()).toBe('plain\n');
  });

  it('refuses unsupported sub-protocols with 403 and runs nothing', async () => {
    const refused = await WsChannelClient.connect(execUrl(['true']), ['v9.channel.k8s.io']).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(UpgradeRefused);
    expect((refused as UpgradeRefused).status).toBe(403);
    expect((refused as UpgradeRefused).body).toContain('v5.channel.k8s.io');
    expect(backend.calls).toEqual([]);
  });
});

describe('attach over WebSocket', () => {
  it("connects to the container's stdio", async () => {
    backend.startContainer('ctr', ['cat']);
    const url = server.attachUrl({ containerId: 'ctr', tty: false, stdin: true, stdout: true, stderr: true });
    const client = await WsChannelClient.connect(url, ['v5.channel.k8s.io']);
    client.send(STDIN, 'ping\n');
    await waitFor('the echo', () => client.channel(STDOUT).toString() === 'ping\n');
    client.closeChannel(STDIN);
    await client.closed;
    expect(JSON.parse(client.channel(ERROR).toString())).toEqual({ metadata: {}, status: 'Success' });
  });
});
