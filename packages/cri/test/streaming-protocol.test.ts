// The streaming server's pure pieces: resize decoding, the token cache,
// sub-protocol negotiation and the error-channel status format.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { errors, type TerminalSize } from '@hcr/core';
import {
  ResizeDecoder,
  encodeStatus,
  errorStatus,
  exitCodeStatus,
  headerTokens,
  negotiate,
  successStatus,
} from '../src/streaming/protocol.js';
import { RequestCache, type StreamingRequest } from '../src/streaming/request-cache.js';

function decodeAll(chunks: readonly Buffer[]): { sizes: TerminalSize[]; invalid: string[] } {
  const sizes: TerminalSize[] = [];
  const invalid: string[] = [];
  const decoder = new ResizeDecoder(
    (s) => sizes.push(s),
    (r) => invalid.push(r),
  );
  for (const chunk of chunks) decoder.write(chunk);
  return { sizes, invalid };
}

describe('ResizeDecoder', () => {
  it('decodes client-go resize messages however the transport splits them', () => {
    const dimension = fc.integer({ min: 0, max: 0xffff });
    fc.assert(
      fc.property(
        fc.array(fc.record({ width: dimension, height: dimension }), { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (sizes, cuts) => {
          const text = Buffer.from(
            sizes.map((s) => `${JSON.stringify({ Width: s.width, Height: s.height })}\n`).join(''),
          );
          const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
          const chunks = [0, ...points].map((start, i) => text.subarray(start, [...points, text.length][i]));
          expect(decodeAll(chunks)).toEqual({ sizes, invalid: [] });
        },
      ),
    );
  });

  it('reports garbage and recovers at the next message', () => {
    const { sizes, invalid } = decodeAll([
      Buffer.from('not json'),
      Buffer.from('{"Width":"wide","Height":1}{"Width":80,"Height":24}'),
    ]);
    expect(sizes).toEqual([{ width: 80, height: 24 }]);
    expect(invalid).toHaveLength(2);
  });

  it('keeps no more than 4 KiB waiting for the end of an object', () => {
    const { invalid } = decodeAll([Buffer.from(`{"Width":${' '.repeat(5000)}`)]);
    expect(invalid).toEqual(['resize message larger than 4 KiB']);
  });
});

describe('RequestCache', () => {
  const exec: StreamingRequest = {
    kind: 'exec',
    containerId: 'c',
    cmd: ['sh'],
    tty: false,
    stdin: false,
    stdout: true,
    stderr: true,
  };

  it('hands a request out once, and not after its TTL', () => {
    let now = 0;
    const cache = new RequestCache(1000, 10, () => now);
    const a = cache.insert(exec);
    const b = cache.insert(exec);
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(cache.consume(a)).toBe(exec);
    expect(cache.consume(a)).toBeUndefined();
    now = 1000;
    expect(cache.consume(b)).toBeUndefined();
    expect(cache.consume('guess')).toBeUndefined();
  });

  it('makes room by dropping expired requests, and refuses beyond the bound', () => {
    let now = 0;
    const cache = new RequestCache(1000, 2, () => now);
    cache.insert(exec);
    now = 500;
    const kept = cache.insert(exec);
    expect(() => cache.insert(exec)).toThrow(expect.objectContaining({ code: 'ResourceExhausted' }));
    now = 1200;
    cache.insert(exec);
    expect(cache.size).toBe(2);
    expect(cache.consume(kept)).toBe(exec);
  });
});

describe('negotiation', () => {
  it('splits repeated and comma-separated header values', () => {
    expect(headerTokens(['v4.channel.k8s.io, v3.channel.k8s.io', ' channel.k8s.io '])).toEqual([
      'v4.channel.k8s.io',
      'v3.channel.k8s.io',
      'channel.k8s.io',
    ]);
    expect(headerTokens(undefined)).toEqual([]);
  });

  it("follows the client's order of preference", () => {
    expect(negotiate(['v3.channel.k8s.io', 'v4.channel.k8s.io'], ['v4.channel.k8s.io', 'v3.channel.k8s.io'])).toBe(
      'v3.channel.k8s.io',
    );
    expect(negotiate(['v9'], ['v4.channel.k8s.io'])).toBeUndefined();
  });
});

describe('status on the error channel', () => {
  it('is the metav1.Status JSON client-go decodes from v4 on', () => {
    expect(encodeStatus(successStatus(), 'json')?.toString()).toBe('{"metadata":{},"status":"Success"}');
    expect(JSON.parse(encodeStatus(exitCodeStatus(130), 'json')?.toString() ?? '')).toEqual({
      metadata: {},
      status: 'Failure',
      message: 'command terminated with non-zero exit code: exit status 130',
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: '130' }] },
    });
    expect(errorStatus(errors.unavailable('docker is down'), 'error executing command in container')).toMatchObject({
      status: 'Failure',
      reason: 'ServiceUnavailable',
      code: 503,
      message: 'error executing command in container: docker is down',
    });
  });

  it('is a bare failure message before v4, and nothing on success', () => {
    expect(encodeStatus(successStatus(), 'text')).toBeNull();
    expect(encodeStatus(exitCodeStatus(1), 'text')?.toString()).toBe(
      'command terminated with non-zero exit code: exit status 1',
    );
  });
});
