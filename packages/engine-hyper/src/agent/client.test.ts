import { Duplex } from 'node:stream';
import { ErrorCode, okAsync } from '@hcr/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { encodeBody } from '../protocol/codec.js';
import { encodeFrame, FrameDecoder } from '../protocol/frame.js';
import { MessageType, messageNames, type MessageName, type Messages } from '../protocol/wire.gen.js';
import { AgentClient, STALLED_REQUEST_TIMEOUT_MS } from './client.js';

/** The agent's end of a connection: sees the host's requests, sends frames back. */
function fakeAgent() {
  const requests: { name: MessageName; id: number }[] = [];
  const decoder = new FrameDecoder();
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      for (const f of decoder.push(chunk)) {
        const name = messageNames.get(f.type);
        if (name !== undefined) requests.push({ name, id: f.id });
      }
      cb();
    },
  });
  const frame = <N extends MessageName>(name: N, id: number, body: Messages[N]) =>
    encodeFrame({ type: MessageType[name], id, payload: encodeBody(name, body) });
  return { stream, requests, frame, send: (...frames: Buffer[]) => stream.push(Buffer.concat(frames)) };
}

async function connect(agent: ReturnType<typeof fakeAgent>): Promise<AgentClient> {
  const r = await AgentClient.connect({ description: 'fake', connect: () => okAsync(agent.stream) }, 1000);
  if (r.isErr()) throw r.error;
  return r.value;
}

const hello: Messages['HelloReply'] = {
  protocolVersion: 1,
  agentVersion: 'test',
  kernelRelease: '6.1',
  uptimeNs: 0n,
  podConfigured: false,
  containers: [],
  features: [],
};
const output = (offset: bigint): Messages['Output'] => ({
  containerId: 'c1',
  stream: 1,
  offset,
  data: Buffer.from('x\n'),
  time: 0n,
});

afterEach(() => {
  vi.useRealTimers();
});

describe('AgentClient', () => {
  it('drops container output sent before the Hello reply (it follows the previous connection) but not after it', async () => {
    const agent = fakeAgent();
    const client = await connect(agent);
    const seen: bigint[] = [];
    client.on('Output', (o) => seen.push(o.offset));
    const reply = client.request('Hello', { hostTime: 0n, resume: [], entropy: Buffer.alloc(0) });
    await new Promise((r) => setImmediate(r));
    const id = agent.requests[0]?.id ?? 0;
    // Stale output, then the reply and this connection's output in the same chunk.
    agent.send(
      agent.frame('Output', 0, output(900n)),
      agent.frame('HelloReply', id, hello),
      agent.frame('Output', 0, output(100n)),
    );
    expect((await reply).isOk()).toBe(true);
    expect(seen).toEqual([100n]);
    client.close();
  });

  it('bounds requests to an agent that let one time out without a word, until it sends anything', async () => {
    vi.useFakeTimers();
    const agent = fakeAgent();
    const client = await connect(agent);
    const first = client.request('ListContainers', {}, 60_000);
    await vi.advanceTimersByTimeAsync(60_000);
    const e = await first;
    expect(e.isErr() && e.error.code).toBe(ErrorCode.DeadlineExceeded);
    expect(client.stalled).not.toBeNull();

    const second = client.request('ListContainers', {}, 60_000);
    await vi.advanceTimersByTimeAsync(STALLED_REQUEST_TIMEOUT_MS);
    const e2 = await second;
    expect(e2.isErr() && e2.error.message).toMatch(/within 5000 ms; nothing heard from it for 65 s/);

    const third = client.request('ListContainers', {}, 60_000);
    await vi.advanceTimersByTimeAsync(1);
    agent.send(agent.frame('ListContainersReply', agent.requests[2]?.id ?? 0, { containers: [] }));
    expect((await third).isOk()).toBe(true);
    expect(client.stalled).toBeNull();
    client.close();
  });
});
