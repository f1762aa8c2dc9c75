import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/errors.js';
import { credentialsFrom, parseChallenges, serverAddressHost } from '../src/images/auth.js';

const none = { username: '', password: '', auth: '', serverAddress: '', identityToken: '', registryToken: '' };

describe('parseChallenges', () => {
  it('reads a Docker Hub style bearer challenge', () => {
    expect(
      parseChallenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"',
      ),
    ).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.docker.io/token',
          service: 'registry.docker.io',
          scope: 'repository:library/busybox:pull',
        },
      },
    ]);
  });

  it('reads several challenges, unquoted values, escapes and odd spacing', () => {
    expect(
      parseChallenges('Basic realm="a \\"quoted\\" realm", Bearer  realm=https://t/token ,  error=insufficient_scope'),
    ).toEqual([
      { scheme: 'basic', params: { realm: 'a "quoted" realm' } },
      { scheme: 'bearer', params: { realm: 'https://t/token', error: 'insufficient_scope' } },
    ]);
    expect(parseChallenges('')).toEqual([]);
  });
});

describe('credentialsFrom', () => {
  it('prefers username/password and decodes the base64 auth field otherwise', () => {
    expect(credentialsFrom(undefined)).toBeNull();
    expect(credentialsFrom(none)).toBeNull();
    expect(
      credentialsFrom({ ...none, username: 'u', password: 'p', auth: Buffer.from('x:y').toString('base64') }),
    ).toMatchObject({
      username: 'u',
      password: 'p',
    });
    expect(credentialsFrom({ ...none, auth: Buffer.from('user:pa:ss').toString('base64') })).toMatchObject({
      username: 'user',
      password: 'pa:ss',
    });
    expect(credentialsFrom({ ...none, identityToken: 'refresh' })).toMatchObject({ identityToken: 'refresh' });
  });

  it('refuses an auth field that is not user:password', () => {
    expect(() => credentialsFrom({ ...none, auth: Buffer.from('no-colon').toString('base64') })).toThrow(
      expect.objectContaining({ code: ErrorCode.InvalidArgument }),
    );
  });
});

describe('serverAddressHost', () => {
  it.each([
    ['https://index.docker.io/v1/', 'index.docker.io'],
    ['registry.example.test:5000', 'registry.example.test:5000'],
    ['http://127.0.0.1:5000', '127.0.0.1:5000'],
    ['', ''],
  ])('%s → %s', (address, host) => {
    expect(serverAddressHost(address)).toBe(host);
  });
});
