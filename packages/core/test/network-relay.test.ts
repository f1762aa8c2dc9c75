import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRelay, relayComplaint } from '../src/network/connect.js';

// The relay that connect() runs inside a pod namespace, exercised here on the
// host's loopback against a server of our own: same process wiring, no root.
const socat = execFileSync('sh', ['-c', 'command -v socat'], { encoding: 'utf8' }).trim();

function relayTo(port: number, timeoutMs = 5_000) {
  return openRelay({
    file: socat,
    args: ['-d', '-d', '-t', '3600', 'STDIO', `TCP:127.0.0.1:${port}`],
    readyPattern: / N starting data transfer loop/,
    timeoutMs,
    target: `127.0.0.1:${port}`,
  });
}

async function readAll(stream: Duplex): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

describe('process-backed TCP relay', () => {
  let server: Server;
  let port: number;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    // Replies to a request only after the client has half-closed, and slowly.
    server = createServer({ allowHalfOpen: true }, (s) => {
      sockets.push(s);
      const got: Buffer[] = [];
      s.on('data', (c: Buffer) => got.push(c));
      s.on('end', () => setTimeout(() => s.end(`echo:${Buffer.concat(got).toString('utf8')}`), 700));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });

  it('carries a request, a half-close and a slow reply, then ends both ways', async () => {
    const stream = (await relayTo(port))._unsafeUnwrap();
    stream.end('hello');
    expect(await readAll(stream)).toBe('echo:hello');
    if (!stream.closed) await once(stream, 'close');
    expect(stream.writableFinished).toBe(true);
  });

  it('reports a refused connection as Unavailable instead of hanging', async () => {
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const free = (closed.address() as AddressInfo).port;
    closed.close();
    await once(closed, 'close');
    const e = (await relayTo(free))._unsafeUnwrapErr();
    expect(e.code).toBe('Unavailable');
    expect(e.message).toMatch(/^cannot connect to 127\.0\.0\.1:\d+: connect\(.*\): Connection refused$/);
  });

  it('kills the helper when the stream is destroyed', async () => {
    const accepted = once(server, 'connection') as Promise<[Socket]>;
    const stream = (await relayTo(port))._unsafeUnwrap();
    const [serverSide] = await accepted;
    stream.write('x');
    stream.destroy();
    // Only a dead socat closes the connection: the stream never ended its writable side.
    await once(serverSide, 'close');
    expect(stream.destroyed).toBe(true);
  });

  it('turns a missing helper into FailedPrecondition', async () => {
    const e = (
      await openRelay({
        file: '/nonexistent/socat',
        args: [],
        readyPattern: /never/,
        timeoutMs: 1_000,
        target: 'x',
      })
    )._unsafeUnwrapErr();
    expect(e.code).toBe('FailedPrecondition');
  });

  it('gives up on a helper that never says it is connected', async () => {
    const e = (
      await openRelay({ file: 'sleep', args: ['5'], readyPattern: /never/, timeoutMs: 200, target: 'sleepy' })
    )._unsafeUnwrapErr();
    expect([e.code, e.message]).toEqual(['DeadlineExceeded', 'connecting to sleepy took over 200 ms']);
  });

  it("quotes socat's own error line", () => {
    expect(
      relayComplaint(
        '2026/11/25 22:30:51 socat[1] E connect(5, AF=2 127.0.0.1:1, 16): Connection refused\n2026/11/25 22:30:51 socat[1] N exit(1)\n',
      ),
    ).toBe('connect(5, AF=2 127.0.0.1:1, 16): Connection refused');
    expect(relayComplaint('nsenter: cannot open /x: No such file or directory\n')).toBe(
      'nsenter: cannot open /x: No such file or directory',
    );
  });
});
