import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/errors.js';
import { normalizeReference, parseReference } from '../src/images/index.js';

const digest = `sha256:${'a'.repeat(64)}`;

describe('normalizeReference', () => {
  it.each([
    ['busybox', 'docker.io/library/busybox:latest'],
    ['busybox:1.36', 'docker.io/library/busybox:1.36'],
    ['library/busybox', 'docker.io/library/busybox:latest'],
    ['foo/bar', 'docker.io/foo/bar:latest'],
    ['foo/bar/baz:v1', 'docker.io/foo/bar/baz:v1'],
    ['docker.io/busybox', 'docker.io/library/busybox:latest'],
    ['index.docker.io/library/busybox:1', 'docker.io/library/busybox:1'],
    ['registry.k8s.io/pause:3.6', 'registry.k8s.io/pause:3.6'],
    ['127.0.0.1:5000/hcr-test/busybox', '127.0.0.1:5000/hcr-test/busybox:latest'],
    ['localhost/x', 'localhost/x:latest'],
    ['localhost:5000/x:tag', 'localhost:5000/x:tag'],
    ['[::1]:5000/x', '[::1]:5000/x:latest'],
    ['Example.com/x', 'Example.com/x:latest'],
    ['a.b-c/d__e.f_g--h', 'a.b-c/d__e.f_g--h:latest'],
    [`busybox@${digest}`, `docker.io/library/busybox@${digest}`],
    [`busybox:1.36@${digest}`, `docker.io/library/busybox:1.36@${digest}`],
    [`host:5000/x@${digest}`, `host:5000/x@${digest}`],
    ['localhost:5000', 'docker.io/library/localhost:5000'],
  ])('%s → %s', (input, expected) => {
    expect(normalizeReference(input)._unsafeUnwrap()).toBe(expected);
  });

  it.each([
    ['', /empty/],
    [' busybox', /whitespace/],
    ['Busybox', /lowercase/],
    ['docker.io/Foo/bar', /lowercase/],
    ['busybox:', /tag "" is invalid/],
    ['busybox:-x', /tag "-x" is invalid/],
    [`busybox:${'t'.repeat(129)}`, /tag/],
    ['busybox@sha256:abc', /not a sha256 digest/],
    [`busybox@sha512:${'a'.repeat(128)}`, /only sha256/],
    ['busybox@latest', /not a digest/],
    ['foo//bar', /repository name/],
    ['foo/bar_', /repository name/],
    ['-foo', /repository name/],
    ['host:port/x', /registry host/],
    [':tag', /repository name is empty/],
    ['a'.repeat(64), /image id/],
    [`docker.io/${'a'.repeat(250)}/b`, /longer than 255/],
  ])('rejects %j', (input, message) => {
    const r = parseReference(input);
    expect(r.isErr()).toBe(true);
    const e = r._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.InvalidArgument);
    expect(e.message).toMatch(message);
    expect(e.message).toContain(`"${input}"`);
  });
});

describe('parseReference', () => {
  it('splits domain, path, tag and digest without adding a default tag', () => {
    expect(parseReference(`busybox@${digest}`)._unsafeUnwrap()).toEqual({
      domain: 'docker.io',
      path: 'library/busybox',
      tag: null,
      digest,
    });
    expect(parseReference('127.0.0.1:5000/a/b:c')._unsafeUnwrap()).toEqual({
      domain: '127.0.0.1:5000',
      path: 'a/b',
      tag: 'c',
      digest: null,
    });
    expect(parseReference('busybox')._unsafeUnwrap().tag).toBeNull();
  });
});
