// Port forwarding over SPDY, WebSocket channels and the SPDY-over-WebSocket
// tunnel, to real loopback servers.
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { StreamingServer } from '../src/streaming/index.js';
import {
  ProcessBackend,
  type UpgradeRefused,
  WsChannelClient,
  readAll,
  sha256,
  spdyConnect,
  spdyForward,
  startHttpTarget,
  waitFor,
  type SpdyClientMode,
} from './helpers/stream-clients.js';

const big = randomBytes(10 * 1024 * 1024 + 999);
let http: { port: number; close(): Promise<void> };
let blob: Server;
let blobPort: number;
let closedPort: number;

beforeAll(async () => {
  http = await startHttpTarget();
  // Sends `big` to whoever connects, then closes.
  blob = createServer((socket) => socket.end(big));
  blob.listen(0, '127.0.0.1');
  await once(blob, 'listening');
  blobPort = (blob.address() as AddressInfo).port;
  // A port nobody listens on.
  const probe = createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  closedPort = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
});

afterAll(async () => {
  await http.close();
  await new Promise((resolve) => blob.close(resolve));
});

let backend: ProcessBackend;
let server: StreamingServer;

beforeEach(async () => {
  backend = new ProcessBackend();
  server = new StreamingServer({ streamCreationTimeoutMs: 300 }, backend);
  await server.start();
});

afterEach(async () => {
  await waitFor('sessions to end', () => server.activeSessions === 0);
  await server.stop();
});

const GET = (path: string): string => `GET ${path} HTTP/1.0\r\nHost: pod\r\n\r\n`;

describe.each<SpdyClientMode>(['spdy-transport', 'spdystream'])('port forward over SPDY, %s client', (mode) => {
  it('forwards an HTTP request and its response', async () => {
    const client = await spdyConnect(
      server.portForwardUrl({ sandboxId: 'pod1', ports: [http.port] }),
      ['portforward.k8s.io'],
      {
        mode,
      },
    );
    expect(client.protocol).toBe('portforward.k8s.io');
    const { data, error } = await spdyForward(client, http.port, '0', GET('/first'));
    expect(data.toString()).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nhello from \/first\n$/);
    expect(error).toBe('');
    expect(backend.calls).toEqual([{ op: 'portForward', sandboxId: 'pod1', port: http.port }]);
    client.socket.end();
  });

  it('serves concurrent forwarded connections on one session', async () => {
    const client = await spdyConnect(server.portForwardUrl({ sandboxId: 'pod1', ports: [] }), ['portforward.k8s.io'], {
      mode,
    });
    const results = await Promise.all(
      ['/a', '/b', '/c', '/d'].map((path, i) => spdyForward(client, http.port, String(i), GET(path))),
    );
    expect(results.map((r) => r.data.toString().split('\r\n\r\n')[1])).toEqual([
      'hello from /a\n',
      'hello from /b\n',
      'hello from /c\n',
      'hello from /d\n',
    ]);
    const blobResult = await spdyForward(client, blobPort, '9', '');
    expect(sha256(blobResult.data)).toBe(sha256(big));
    client.socket.end();
  });

  it('reports on the error stream when the port cannot be reached', async () => {
    const client = await spdyConnect(server.portForwardUrl({ sandboxId: 'pod1', ports: [] }), ['portforward.k8s.io'], {
      mode,
    });
    const { data, error } = await spdyForward(client, closedPort, '0', GET('/'));
    expect(data.length).toBe(0);
    expect(error).toContain(
      `error forwarding port ${closedPort} to pod sandbox pod1: cannot connect to port ${closedPort}`,
    );
    client.socket.end();
  });
});

describe('port forward over SPDY: request rules', () => {
  it('refuses a port the CRI request did not name', async () => {
    const client = await spdyConnect(server.portForwardUrl({ sandboxId: 'pod1', ports: [http.port] }), [
      'portforward.k8s.io',
    ]);
    const { error } = await spdyForward(client, blobPort, '0', '');
    expect(error).toBe(`port ${blobPort} was not requested for forwarding (requested: ${http.port})`);
    expect(backend.calls).toEqual([]);
    client.socket.end();
  });

  it('pairs streams of old clients without requestID by stream id, as kubelet', async () => {
    const client = await spdyConnect(server.portForwardUrl({ sandboxId: 'pod1', ports: [] }), ['portforward.k8s.io']);
    const error = await client.open({ streamtype: 'error', port: String(http.port) });
    error.end();
    const data = await client.open({ streamtype: 'data', port: String(http.port) });
    const response = readAll(data);
    data.write(Buffer.from(GET('/legacy')));
    data.end();
    expect((await response).toString()).toContain('hello from /legacy');
    client.socket.end();
  });

  it('reports a pair that never completes on its error stream', async () => {
    const client = await spdyConnect(server.portForwardUrl({ sandboxId: 'pod1', ports: [] }), ['portforward.k8s.io']);
    const error = await client.open({ streamtype: 'error', port: String(http.port), requestid: '7' });
    expect((await readAll(error)).toString()).toBe('timed out waiting for the data and error streams of request 7');
    expect(backend.calls).toEqual([]);
    client.socket.end();
  });

  it('refuses streams with a bad port or stream type', async () => {
    const client = await spdyConnect(server.portForwardUrl({ sandboxId: 'pod1', ports: [] }), ['portforward.k8s.io']);
    await expect(client.open({ streamtype: 'data', port: '0', requestid: '1' })).rejects.toThrow(/refused/);
    await expect(client.open({ streamtype: 'data', port: 'http', requestid: '1' })).rejects.toThrow(/refused/);
    await expect(client.open({ streamtype: 'stdout', port: '80', requestid: '1' })).rejects.toThrow(/refused/);
    client.socket.end();
  });

  it('refuses remote-command sub-protocols', async () => {
    const url = server.portForwardUrl({ sandboxId: 'pod1', ports: [] });
    const refused = (await spdyConnect(url, ['v4.channel.k8s.io']).catch((e: unknown) => e)) as UpgradeRefused;
    expect(refused.status).toBe(403);
    expect(refused.headers['x-accepted-stream-protocol-versions']).toBe('portforward.k8s.io');
  });
});

describe('port forward over WebSocket channels', () => {
  it('opens each channel with the port and forwards the data channel', async () => {
    const url = server.portForwardUrl({ sandboxId: 'pod1', ports: [http.port, blobPort] });
    const client = await WsChannelClient.connect(url, ['v4.channel.k8s.io']);
    client.send(0, GET('/ws'));
    expect(await client.closed).toBe(1000);
    const port = (n: number): Buffer => Buffer.of(n & 0xff, n >> 8);
    for (const channel of [0, 1]) expect(client.channel(channel).subarray(0, 2)).toEqual(port(http.port));
    for (const channel of [2, 3]) expect(client.channel(channel).subarray(0, 2)).toEqual(port(blobPort));
    expect(client.channel(0).subarray(2).toString()).toContain('hello from /ws');
    expect(sha256(client.channel(2).subarray(2))).toBe(sha256(big));
    expect(client.channel(1).length).toBe(2);
  });

  it('speaks base64 and takes the ports from the query when CRI named none', async () => {
    const url = `${server.portForwardUrl({ sandboxId: 'pod1', ports: [] })}?port=${closedPort}`;
    const client = await WsChannelClient.connect(url, ['v4.base64.channel.k8s.io']);
    await client.closed;
    expect(client.channel(1).subarray(2).toString()).toContain(`cannot connect to port ${closedPort}`);
  });

  it('needs ports from somewhere', async () => {
    const refused = (await WsChannelClient.connect(server.portForwardUrl({ sandboxId: 'pod1', ports: [] }), [
      'v4.channel.k8s.io',
    ]).catch((e: unknown) => e)) as UpgradeRefused;
    expect(refused.status).toBe(400);
    expect(refused.body).toContain('"port" is required');
  });
});

describe("port forward: kubectl's SPDY-over-WebSocket tunnel", () => {
  it('is refused with 403, so client-go falls back to SPDY', async () => {
    const url = server.portForwardUrl({ sandboxId: 'pod1', ports: [http.port] });
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(url, {
        headers: {
          Connection: 'Upgrade',
          Upgrade: 'websocket',
          'Sec-WebSocket-Version': '13',
          'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
          'Sec-WebSocket-Protocol': 'SPDY/3.1+portforward.k8s.io',
        },
      });
      req.once('response', (res) => resolve(res.statusCode ?? 0));
      req.once('upgrade', () => reject(new Error('upgraded')));
      req.once('error', reject);
      req.end();
    });
    expect(status).toBe(403);
    expect(backend.calls).toEqual([]);
  });
});
