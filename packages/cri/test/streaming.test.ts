// The streaming server's URLs and tokens, its handling of bad or vanishing
// clients, and TLS.
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { StreamingServer } from '../src/streaming/index.js';
import {
  ProcessBackend,
  type UpgradeRefused,
  WsChannelClient,
  exitCodeOf,
  selfSignedCert,
  spdyConnect,
  spdyRemoteCommand,
  waitFor,
} from './helpers/stream-clients.js';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hcr-streaming-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let backend: ProcessBackend;
let servers: StreamingServer[];

beforeEach(() => {
  backend = new ProcessBackend();
  servers = [];
});

afterEach(async () => {
  for (const server of servers) {
    await waitFor('sessions to end', () => server.activeSessions === 0);
    await server.stop();
  }
  const leftovers = backend.running().length;
  await backend.killAll();
  expect(leftovers, 'processes still running after the test').toBe(0);
});

async function started(options: ConstructorParameters<typeof StreamingServer>[0] = {}): Promise<StreamingServer> {
  const server = new StreamingServer(options, backend);
  await server.start();
  servers.push(server);
  return server;
}

function execUrl(server: StreamingServer, cmd: string[]): string {
  return server.execUrl({ containerId: 'c1', cmd, tty: false, stdin: false, stdout: true, stderr: true });
}

const OUT_ERR = { stdin: false, stdout: true, stderr: true, resize: false };

/** Status code of a plain (non-upgrade) request. */
function plainStatus(url: string, method = 'POST'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.once('error', reject);
    req.end();
  });
}

describe('URLs and tokens', () => {
  it('issues distinct random URLs in kubelet form', async () => {
    const server = await started();
    const a = execUrl(server, ['true']);
    const b = server.attachUrl({ containerId: 'c1', tty: true, stdin: true, stdout: true, stderr: false });
    const c = server.portForwardUrl({ sandboxId: 'p1', ports: [80] });
    expect(a).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/exec\/[A-Za-z0-9_-]{43}$/);
    expect(b).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/attach\/[A-Za-z0-9_-]{43}$/);
    expect(c).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/portforward\/[A-Za-z0-9_-]{43}$/);
    expect(new Set([a, execUrl(server, ['true'])]).size).toBe(2);
  });

  it('answers a guessed token with 404 on every transport and runs nothing', async () => {
    const server = await started();
    const guessed = execUrl(server, ['true']).replace(/[^/]+$/, 'A'.repeat(43));
    const spdy = (await spdyConnect(guessed, ['v4.channel.k8s.io']).catch((e: unknown) => e)) as UpgradeRefused;
    const ws = (await WsChannelClient.connect(guessed, ['v5.channel.k8s.io']).catch(
      (e: unknown) => e,
    )) as UpgradeRefused;
    const plain = await plainStatus(guessed);
    expect([spdy.status, ws.status, plain.status]).toEqual([404, 404, 404]);
    expect(spdy.body).toContain('unknown, already used or expired');
    expect(backend.calls).toEqual([]);
  });

  it('serves a token once; reusing it gets 404', async () => {
    const server = await started();
    const url = execUrl(server, ['echo', 'once']);
    const first = await spdyRemoteCommand(url, OUT_ERR);
    expect((await first.result).stdout.toString()).toBe('once\n');
    const again = (await spdyConnect(url, ['v4.channel.k8s.io']).catch((e: unknown) => e)) as UpgradeRefused;
    expect(again.status).toBe(404);
    expect(backend.calls).toHaveLength(1);
  });

  it('expires tokens after tokenTtlMs', async () => {
    const server = await started({ tokenTtlMs: 50 });
    const url = execUrl(server, ['true']);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const late = (await WsChannelClient.connect(url, ['v5.channel.k8s.io']).catch((e: unknown) => e)) as UpgradeRefused;
    expect(late.status).toBe(404);
    expect(backend.calls).toEqual([]);
  });

  it('does not serve a token under another operation', async () => {
    const server = await started();
    const url = execUrl(server, ['true']).replace('/exec/', '/attach/');
    expect((await plainStatus(url)).status).toBe(404);
    expect((await plainStatus(url.replace('/attach/', '/exec/'))).status).toBe(404);
  });

  it('answers a plain request with a valid token with 400, using up the token', async () => {
    const server = await started();
    const url = execUrl(server, ['true']);
    const plain = await plainStatus(url);
    expect(plain.status).toBe(400);
    expect(plain.body).toContain('needs a connection upgrade');
    expect((await plainStatus(url)).status).toBe(404);
    expect((await plainStatus(url.replace(/\/exec\/.*/, '/metrics'))).status).toBe(404);
    expect((await plainStatus(execUrl(server, ['true']), 'DELETE')).status).toBe(405);
  });

  it('bounds the requests waiting for their client', async () => {
    const server = await started({ maxInFlight: 2 });
    execUrl(server, ['true']);
    execUrl(server, ['true']);
    expect(() => execUrl(server, ['true'])).toThrow(expect.objectContaining({ code: 'ResourceExhausted' }));
  });

  it('rejects requests CRI would reject', async () => {
    const server = await started();
    const base = { containerId: 'c1', cmd: ['sh'], tty: false, stdin: false, stdout: true, stderr: false };
    const invalid = expect.objectContaining({ code: 'InvalidArgument' });
    expect(() => server.execUrl({ ...base, tty: true, stderr: true })).toThrow(invalid);
    expect(() => server.execUrl({ ...base, stdout: false })).toThrow(invalid);
    expect(() => server.execUrl({ ...base, cmd: [] })).toThrow(invalid);
    expect(() => server.execUrl({ ...base, containerId: '' })).toThrow(invalid);
    expect(() => server.portForwardUrl({ sandboxId: 'p', ports: [0] })).toThrow(invalid);
    expect(() => server.portForwardUrl({ sandboxId: 'p', ports: [65536] })).toThrow(invalid);
    expect(() => server.portForwardUrl({ sandboxId: '', ports: [] })).toThrow(invalid);
  });

  it('issues no URL before start and after stop', async () => {
    const server = new StreamingServer({}, backend);
    expect(() => execUrl(server, ['true'])).toThrow(expect.objectContaining({ code: 'FailedPrecondition' }));
    await server.start();
    const url = execUrl(server, ['true']);
    await server.stop();
    expect(() => execUrl(server, ['true'])).toThrow(expect.objectContaining({ code: 'FailedPrecondition' }));
    await expect(plainStatus(url)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('needs an address to advertise when listening on a wildcard address', async () => {
    expect(() => new StreamingServer({ address: '0.0.0.0' }, backend)).toThrow(
      expect.objectContaining({ code: 'InvalidArgument' }),
    );
    const server = await started({ address: '::', advertiseAddress: '::1' });
    expect(execUrl(server, ['true'])).toMatch(/^http:\/\/\[::1\]:\d+\/exec\//);
  });

  it('reports a port in use as Unavailable', async () => {
    const taken = createServer().listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const port = (taken.address() as AddressInfo).port;
    try {
      await expect(new StreamingServer({ port }, backend).start()).rejects.toMatchObject({
        code: 'Unavailable',
        message: expect.stringContaining(`127.0.0.1:${port}`),
      });
    } finally {
      taken.close();
    }
  });
});

describe('bad and vanishing clients', () => {
  it('refuses an unknown upgrade protocol with 400', async () => {
    const server = await started();
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(execUrl(server, ['true']), {
        method: 'POST',
        headers: { Connection: 'Upgrade', Upgrade: 'h2c' },
      });
      req.once('response', (res) => resolve(res.statusCode ?? 0));
      req.once('error', reject);
      req.end();
    });
    expect(status).toBe(400);
    expect(backend.calls).toEqual([]);
  });

  it('drops a connection that sends garbage after the upgrade, and keeps serving', async () => {
    const server = await started();
    const url = new URL(execUrl(server, ['true']));
    const socket = connect({ host: '127.0.0.1', port: Number(url.port) });
    await once(socket, 'connect');
    socket.write(
      `POST ${url.pathname} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n` +
        'X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n',
    );
    const [head] = (await once(socket, 'data')) as [Buffer];
    expect(head.toString()).toMatch(/^HTTP\/1\.1 101 /);
    // A control frame of SPDY version 7.
    socket.write(Buffer.of(0x80, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00));
    socket.resume();
    await once(socket, 'close');
    expect(backend.calls).toEqual([]);
    const next = await spdyRemoteCommand(execUrl(server, ['echo', 'still here']), OUT_ERR);
    expect((await next.result).stdout.toString()).toBe('still here\n');
  });

  it('gives up on a client that does not open its streams in time', async () => {
    const server = await started({ streamCreationTimeoutMs: 200 });
    const client = await spdyConnect(execUrl(server, ['true']), ['v4.channel.k8s.io']);
    await client.open({ streamtype: 'error' });
    await client.closed;
    expect(backend.calls).toEqual([]);
  });

  it('stops the command when the SPDY client disconnects mid-stream', async () => {
    const server = await started();
    const session = await spdyRemoteCommand(execUrl(server, ['yes']), OUT_ERR, { mode: 'spdystream' });
    await new Promise<void>((resolve) => session.onStdout(() => resolve()));
    session.client.socket.destroy();
    await waitFor('the command to be killed', () => backend.running().length === 0);
    await waitFor('the session to end', () => server.activeSessions === 0);
    const next = await spdyRemoteCommand(execUrl(server, ['echo', 'next']), OUT_ERR);
    expect(exitCodeOf((await next.result).error)).toBe(0);
  });

  it('stops the command when the WebSocket client disconnects mid-stream', async () => {
    const server = await started();
    const client = await WsChannelClient.connect(execUrl(server, ['yes']), ['v5.channel.k8s.io']);
    await waitFor('output', () => client.messages.length > 2);
    client.ws.terminate();
    await waitFor('the command to be killed', () => backend.running().length === 0);
    await waitFor('the session to end', () => server.activeSessions === 0);
  });

  it('drops connections idle for idleTimeoutMs', async () => {
    const server = await started({ idleTimeoutMs: 300 });
    const spdy = await spdyRemoteCommand(execUrl(server, ['sleep', '60']), OUT_ERR);
    const ws = await WsChannelClient.connect(execUrl(server, ['sleep', '60']), ['v5.channel.k8s.io']);
    await spdy.client.closed;
    await ws.closed;
    await waitFor('the commands to be killed', () => backend.running().length === 0);
  });

  it('drops running sessions on stop', async () => {
    const server = await started();
    const session = await spdyRemoteCommand(execUrl(server, ['sleep', '60']), OUT_ERR);
    await waitFor('the command to start', () => backend.running().length === 1);
    await server.stop();
    await session.client.closed;
    expect(server.activeSessions).toBe(0);
    await waitFor('the command to be killed', () => backend.running().length === 0);
  });
});

describe('TLS', () => {
  it('serves https URLs over SPDY and WebSocket', async () => {
    const { cert, key, ca } = await selfSignedCert(dir);
    const server = await started({ tls: { cert, key } });
    const url = execUrl(server, ['echo', 'secure']);
    expect(url).toMatch(/^https:\/\//);
    const spdy = await spdyRemoteCommand(url, OUT_ERR, { tls: { ca } });
    expect((await spdy.result).stdout.toString()).toBe('secure\n');
    const ws = await WsChannelClient.connect(execUrl(server, ['echo', 'secure']), ['v5.channel.k8s.io'], {
      tls: { ca },
    });
    await ws.closed;
    expect(ws.channel(1).toString()).toBe('secure\n');
  });

  it('also takes the PEM text itself', async () => {
    const { cert, key, ca } = await selfSignedCert(dir);
    const server = await started({ tls: { cert: await readFile(cert, 'utf8'), key: await readFile(key, 'utf8') } });
    const ws = await WsChannelClient.connect(execUrl(server, ['echo', 'inline']), ['v5.channel.k8s.io'], {
      tls: { ca },
    });
    await ws.closed;
    expect(ws.channel(1).toString()).toBe('inline\n');
  });

  it('reports unreadable or unusable key material as InvalidArgument', async () => {
    const garbage = new StreamingServer(
      { tls: { cert: '-----BEGIN CERTIFICATE-----\nxx', key: '-----BEGIN PRIVATE KEY-----\nyy' } },
      backend,
    );
    await expect(garbage.start()).rejects.toMatchObject({
      code: 'InvalidArgument',
      message: expect.stringContaining('not usable'),
    });
    const server = new StreamingServer({ tls: { cert: join(dir, 'nope.crt'), key: join(dir, 'nope.key') } }, backend);
    await expect(server.start()).rejects.toMatchObject({
      code: 'InvalidArgument',
      message: expect.stringContaining('nope.crt'),
    });
  });
});
