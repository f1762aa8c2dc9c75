import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { PassThrough, Writable } from 'node:stream';
import type { ContainerRef, ImageInfo, SandboxRef, StreamIO, TerminalSize } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  HTTPD,
  containerRef,
  ensurePulled,
  expectNoLeftovers,
  imageInfo,
  makeEngine,
  makeNetns,
  ok,
  sandboxRef,
  waitFor,
  type TestEngine,
  type TestNetns,
} from './helpers.js';

let te: TestEngine;
let busybox: ImageInfo;
let httpd: ImageInfo;
let ns: TestNetns;
let pod: SandboxRef;
let box: ContainerRef;

beforeAll(async () => {
  ensurePulled(BUSYBOX);
  ensurePulled(HTTPD);
  busybox = await imageInfo(BUSYBOX);
  httpd = await imageInfo(HTTPD);
  te = await makeEngine();
  ns = makeNetns();
  pod = sandboxRef({ netns: ns });
  await ok(te.engine.createSandbox(pod));
  box = containerRef(pod, busybox, { command: ['sleep', '3600'] });
  await ok(te.engine.createContainer(box));
  await ok(te.engine.startContainer(box));
});

/** Processes whose command line mentions `needle` (port-forward helpers left running would show up here). */
function processesMentioning(needle: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmd.includes(needle)) found.push(`${pid}: ${cmd}`);
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

afterAll(async () => {
  expect(processesMentioning(`--net=${ns.path}`)).toEqual([]);
  await ok(te.engine.stopSandbox(pod, 0));
  await ok(te.engine.removeSandbox(pod));
  await te.engine.close();
  ns.remove();
  await expectNoLeftovers(te.name);
});

/** A Writable collecting what is written to it. */
function sink(): { stream: Writable; text: () => string; buffer: () => Buffer } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  return { stream, buffer: () => Buffer.concat(chunks), text: () => Buffer.concat(chunks).toString() };
}

function io(parts: Partial<StreamIO> & { resizes?: TerminalSize[] } = {}): StreamIO {
  const { resizes = [], ...rest } = parts;
  return {
    stdin: null,
    stdout: null,
    stderr: null,
    tty: false,
    onResize: (listener) => {
      // Deliver the terminal size the way a client does: shortly after the session starts.
      for (const size of resizes) setTimeout(() => listener(size), 100);
    },
    ...rest,
  };
}

describe('execSync', () => {
  it('separates stdout and stderr and reports the exit code', async () => {
    const r = await ok(te.engine.execSync(box, ['sh', '-c', 'echo out; echo err >&2; exit 7'], 10));
    expect(r).toMatchObject({ exitCode: 7 });
    expect(r.stdout.toString()).toBe('out\n');
    expect(r.stderr.toString()).toBe('err\n');
  });

  it('reports a missing executable as a failed command, not an engine error', async () => {
    const r = await ok(te.engine.execSync(box, ['/no/such/binary'], 10));
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout.toString() + r.stderr.toString()).toMatch(/no such file|not found/i);
  });

  it('times out with DeadlineExceeded and kills the command and its children', async () => {
    const started = Date.now();
    const r = await te.engine.execSync(box, ['sh', '-c', 'sleep 31; echo never'], 1);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(r.isErr() && r.error.code).toBe('DeadlineExceeded');
    await waitFor(
      'the timed-out command to be gone',
      async () => {
        const ps = await ok(te.engine.execSync(box, ['ps', '-o', 'args'], 10));
        return ps.stdout.toString().includes('sleep 31') ? undefined : true;
      },
      5000,
    );
  });

  it('caps what it keeps of a huge output', async () => {
    const capped = await makeEngine(
      { execSyncMaxOutputBytes: 1000 },
      { name: te.name, stateDir: te.stateDir, images: te.images },
    );
    const r = await ok(capped.engine.execSync(box, ['seq', '1', '100000'], 10));
    expect(r.exitCode).toBe(0);
    expect(r.stdout.length).toBe(1000);
    expect(r.stdout.toString().startsWith('1\n2\n3\n')).toBe(true);
    await capped.engine.close();
  });

  it('fails with NotFound for a container that is gone', async () => {
    const ghost = containerRef(pod, busybox);
    const r = await te.engine.execSync(ghost, ['true'], 5);
    expect(r.isErr() && r.error.code).toBe('NotFound');
  });
});

describe('exec streams', () => {
  it('passes stdin through and ends it with EOF', async () => {
    const stdin = new PassThrough();
    const out = sink();
    const running = ok(te.engine.exec(box, ['sh', '-c', 'cat; echo eof'], io({ stdin, stdout: out.stream })));
    stdin.write('hello ');
    stdin.end('world\n');
    expect(await running).toEqual({ exitCode: 0 });
    expect(out.text()).toBe('hello world\neof\n');
  });

  it('carries 10 MiB of output without loss or reordering', async () => {
    const out = sink();
    const err = sink();
    const n = 1_500_000;
    const r = await ok(
      te.engine.exec(box, ['sh', '-c', `seq 1 ${n}; echo done >&2`], io({ stdout: out.stream, stderr: err.stream })),
    );
    expect(r.exitCode).toBe(0);
    const expected = Array.from({ length: n }, (_, i) => `${i + 1}\n`).join('');
    expect(out.buffer().length).toBe(expected.length);
    expect(out.buffer().length).toBeGreaterThan(10 * 1024 * 1024);
    expect(createHash('sha256').update(out.buffer()).digest('hex')).toBe(
      createHash('sha256').update(expected).digest('hex'),
    );
    expect(err.text()).toBe('done\n');
  });

  it('slows dockerd down for a slow reader instead of dropping data', async () => {
    const chunks: Buffer[] = [];
    const slow = new Writable({
      highWaterMark: 1024,
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        setTimeout(cb, 1);
      },
    });
    const r = await ok(te.engine.exec(box, ['seq', '1', '50000'], io({ stdout: slow })));
    expect(r.exitCode).toBe(0);
    expect(Buffer.concat(chunks).toString().split('\n').slice(-3)).toEqual(['49999', '50000', '']);
  });

  it('runs with a TTY, applies resizes and reports the exit code', async () => {
    const out = sink();
    const r = await ok(
      te.engine.exec(
        box,
        ['sh', '-c', 'sleep 0.5; stty size; tty; exit 3'],
        io({ tty: true, stdout: out.stream, resizes: [{ width: 123, height: 45 }] }),
      ),
    );
    expect(r.exitCode).toBe(3);
    expect(out.text()).toMatch(/^45 123\r\n\/dev\/pts\/\d+\r\n$/);
  });
});

describe('attach', () => {
  it('attaches to stdin and stdout of a container started with stdin', async () => {
    const c = containerRef(pod, busybox, {
      command: ['sh', '-c', 'read line; echo "got $line"; echo bye >&2'],
      stdin: true,
      stdinOnce: true,
    });
    await ok(te.engine.createContainer(c));
    await ok(te.engine.startContainer(c));
    const stdin = new PassThrough();
    const out = sink();
    const err = sink();
    const attached = ok(te.engine.attach(c, io({ stdin, stdout: out.stream, stderr: err.stream })));
    stdin.write('ping\n');
    await attached;
    expect(out.text()).toBe('got ping\n');
    expect(err.text()).toBe('bye\n');
    const st = await waitFor('exit', async () => {
      const s = await ok(te.engine.containerStatus(c));
      return s.state === 'exited' ? s : undefined;
    });
    expect(st.exitCode).toBe(0);
    await ok(te.engine.removeContainer(c));
  });

  it('attaches to a TTY container and resizes its terminal', async () => {
    const c = containerRef(pod, busybox, { command: ['sh'], stdin: true, tty: true });
    await ok(te.engine.createContainer(c));
    await ok(te.engine.startContainer(c));
    const stdin = new PassThrough();
    const out = sink();
    const attached = ok(
      te.engine.attach(c, io({ tty: true, stdin, stdout: out.stream, resizes: [{ width: 77, height: 22 }] })),
    );
    await new Promise((r) => setTimeout(r, 400));
    stdin.write('stty size; exit 0\n');
    await attached;
    expect(out.text()).toContain('22 77');
    await ok(te.engine.removeContainer(c));
  });
});

/** A connected pair of sockets on loopback: `a` is handed to the engine, the test talks through `b`. */
async function socketPair(): Promise<{ a: Socket; b: Socket; close: () => void }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const b = connect(port, '127.0.0.1');
  const a = await accepted;
  server.close();
  return { a, b, close: () => (a.destroy(), b.destroy()) };
}

async function httpGet(through: Socket): Promise<string> {
  through.write('GET / HTTP/1.0\r\nHost: pod\r\n\r\n');
  const chunks: Buffer[] = [];
  for await (const c of through) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

describe('port-forward', () => {
  it('reaches a port on the pod loopback through the pod netns', async () => {
    const web = containerRef(pod, httpd);
    await ok(te.engine.createContainer(web));
    await ok(te.engine.startContainer(web));
    await waitFor('httpd to listen', async () => {
      const r = await ok(te.engine.execSync(box, ['sh', '-c', 'netstat -ltn | grep -q ":80 "'], 5));
      return r.exitCode === 0 ? true : undefined;
    });
    const { a, b } = await socketPair();
    const forwarding = ok(te.engine.portForward(pod, 80, a));
    const response = await httpGet(b);
    expect(response).toMatch(/^HTTP\/1\.[01] 200/);
    expect(response).toContain('hcr-test httpd OK');
    await forwarding;
    // A second connection, closed by the client before the pod answers: the helper goes away with it.
    const second = await socketPair();
    const aborted = ok(te.engine.portForward(pod, 80, second.a));
    second.close();
    await aborted;
    await ok(te.engine.stopContainer(web, 0));
    await ok(te.engine.removeContainer(web));
  });

  it('fails with Unavailable when nothing listens on the port', async () => {
    const { a, close } = await socketPair();
    const r = await te.engine.portForward(pod, 1, a);
    expect(r.isErr() && r.error.code).toBe('Unavailable');
    if (r.isErr()) expect(r.error.message).toMatch(/port 1 .*refused/i);
    close();
  });

  it('connects directly for a host-network pod', async () => {
    const hostPod = sandboxRef();
    await ok(te.engine.createSandbox(hostPod));
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const web = containerRef(hostPod, busybox, {
      command: [
        'sh',
        '-c',
        `mkdir -p /tmp/www && echo host-pod-ok > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:${port} -h /tmp/www`,
      ],
    });
    await ok(te.engine.createContainer(web));
    await ok(te.engine.startContainer(web));
    await waitFor('httpd to listen', async () => {
      const r = await ok(te.engine.execSync(web, ['sh', '-c', `netstat -ltn | grep -q ":${port} "`], 5));
      return r.exitCode === 0 ? true : undefined;
    });
    const { a, b } = await socketPair();
    const forwarding = ok(te.engine.portForward(hostPod, port, a));
    expect(await httpGet(b)).toContain('host-pod-ok');
    await forwarding;
    await ok(te.engine.stopSandbox(hostPod, 0));
    await ok(te.engine.removeSandbox(hostPod));
  });
});
