// The image service against a fake OCI registry on loopback: resolution,
// auth, retries, mirrors, the content store and its garbage collection. No
// overlay mounts here (unpackOnPull: false); images.integration.test.ts
// covers unpacking against the real registry and dockerd.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { extract } from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/errors.js';
import { OciImageService, type OciImageServiceOptions } from '../src/images/index.js';
import type { PullProgress, RegistryAuth } from '../src/images/types.js';
import { type AuthMode, FakeRegistry } from './fixtures/images/fake-registry.js';
import { gzip, sha256, tarball } from './fixtures/images/tar.js';

const GZIP_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const AMD64 = { os: 'linux', architecture: 'amd64', variant: '' };

let root: string;
const registries: FakeRegistry[] = [];

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'hcr-images-unit-'));
});
afterEach(async () => {
  for (const r of registries.splice(0)) await r.close();
  rmSync(root, { recursive: true, force: true });
});

async function registry(auth?: AuthMode): Promise<FakeRegistry> {
  const r = await FakeRegistry.start(auth);
  registries.push(r);
  return r;
}

async function open(options: OciImageServiceOptions = {}): Promise<OciImageService> {
  const r = await OciImageService.open({
    root,
    unpackOnPull: false,
    platform: AMD64,
    registryBackoffMs: 5,
    ...options,
  });
  return r._unsafeUnwrap();
}

async function layer(files: Record<string, string>) {
  const tar = await tarball(Object.entries(files).map(([name, body]) => ({ name, body })));
  return { tar, blob: gzip(tar), mediaType: GZIP_LAYER };
}

function auth(over: Partial<RegistryAuth>): RegistryAuth {
  return { username: '', password: '', auth: '', serverAddress: '', identityToken: '', registryToken: '', ...over };
}

function blobFiles(): string[] {
  return readdirSync(join(root, 'blobs', 'sha256')).map((h) => `sha256:${h}`);
}

describe('pull, list and status', () => {
  it('pulls an OCI image and finds it by tag, digest reference, id and id prefix', async () => {
    const reg = await registry();
    const l1 = await layer({ 'etc/hello': 'hello\n' });
    const l2 = await layer({ 'bin/tool': '#!/bin/sh\n' });
    const { manifest, config } = reg.addImage('team/app', 'v1', { layers: [l1, l2], labels: { a: 'b' }, cmd: ['run'] });
    const svc = await open();
    const progress: PullProgress[] = [];

    const info = (await svc.pull(`${reg.host}/team/app:v1`, { onProgress: (p) => progress.push(p) }))._unsafeUnwrap();

    expect(info).toEqual({
      id: config.digest,
      repoTags: [`${reg.host}/team/app:v1`],
      repoDigests: [`${reg.host}/team/app@${manifest.digest}`],
      size: l1.blob.length + l2.blob.length,
      config: {
        entrypoint: [],
        cmd: ['run'],
        env: ['PATH=/bin'],
        workingDir: '/',
        user: '',
        exposedPorts: [],
        labels: { a: 'b' },
        annotations: { a: 'b' },
      },
      kind: 'oci',
      pinned: false,
    });
    expect(progress[0]?.phase).toBe('resolving');
    expect(progress.at(-1)).toMatchObject({ phase: 'done', done: info.size, total: info.size });
    expect(
      progress
        .filter((p) => p.phase === 'downloading' && p.done === p.total)
        .map((p) => p.layer)
        .sort(),
    ).toEqual([sha256(l1.blob), sha256(l2.blob)].sort());
    const hex = config.digest.slice('sha256:'.length);
    for (const ref of [
      `${reg.host}/team/app:v1`,
      `${reg.host}/team/app@${manifest.digest}`,
      config.digest,
      hex,
      hex.slice(0, 12),
      `sha256:${hex.slice(0, 5)}`,
    ]) {
      expect((await svc.status(ref))._unsafeUnwrap()?.id, ref).toBe(config.digest);
    }
    expect((await svc.status(`${reg.host}/team/app:v2`))._unsafeUnwrap()).toBeNull();
    expect((await svc.status('busybox'))._unsafeUnwrap()).toBeNull();
    expect((await svc.get('busybox'))._unsafeUnwrapErr().code).toBe(ErrorCode.NotFound);
    expect((await svc.status('Bad:Ref'))._unsafeUnwrapErr().code).toBe(ErrorCode.InvalidArgument);
    expect((await svc.list())._unsafeUnwrap()).toEqual([info]);
    expect(blobFiles().sort()).toEqual([manifest.digest, config.digest, sha256(l1.blob), sha256(l2.blob)].sort());

    // A new service on the same root sees the same image.
    const again = await open();
    expect((await again.list())._unsafeUnwrap()).toEqual([info]);
  });

  it('reads Docker schema 2 and selects linux/amd64 from an index, recording the index digest', async () => {
    const reg = await registry();
    const arm = reg.addImage('multi', undefined, { layers: [await layer({ arm: 'arm' })], architecture: 'arm64' });
    const amd = reg.addImage('multi', undefined, { layers: [await layer({ amd: 'amd' })], style: 'docker' });
    const index = reg.addManifest(
      'multi',
      {
        schemaVersion: 2,
        mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json',
        manifests: [
          { ...arm.manifest, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
          { ...amd.manifest, platform: { os: 'linux', architecture: 'amd64' } },
        ],
      },
      'application/vnd.docker.distribution.manifest.list.v2+json',
      'latest',
    );
    const svc = await open();
    const info = (await svc.pull(`${reg.host}/multi`))._unsafeUnwrap();
    expect(info.id).toBe(amd.config.digest);
    expect(info.repoDigests).toEqual([`${reg.host}/multi@${index.digest}`]);
    expect(blobFiles()).toContain(index.digest);
    expect(blobFiles()).not.toContain(arm.config.digest);

    const riscv = await open({ platform: { os: 'linux', architecture: 'riscv64', variant: '' } });
    const e = (await riscv.pull(`${reg.host}/multi@${index.digest}`))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.NotFound);
    expect(e.message).toMatch(/no image for linux\/riscv64 \(it offers: linux\/arm64\/v8, linux\/amd64\)/);
  });

  it('marks unikernel images from config labels or manifest annotations, config winning', async () => {
    const reg = await registry();
    const urunc = {
      'com.urunc.unikernel.unikernelType': 'unikraft',
      'com.urunc.unikernel.hypervisor': 'qemu',
      'com.urunc.unikernel.binary': '/unikernel/app',
    };
    const byLabel = reg.addImage('uk', 'label', { layers: [await layer({ 'unikernel/app': 'elf' })], labels: urunc });
    reg.addImage('uk', 'annotation', {
      layers: [await layer({ 'unikernel/app': 'elf2' })],
      annotations: { ...urunc, 'com.urunc.unikernel.hypervisor': 'firecracker', other: 'x' },
      labels: { 'com.urunc.unikernel.hypervisor': 'qemu' },
    });
    reg.addImage('uk', 'partial', {
      layers: [await layer({ x: 'x' })],
      labels: { 'com.urunc.unikernel.binary': '/x' },
    });
    const svc = await open();
    const label = (await svc.pull(`${reg.host}/uk:label`))._unsafeUnwrap();
    expect(label.id).toBe(byLabel.config.digest);
    expect(label.kind).toBe('unikernel');
    const annotated = (await svc.pull(`${reg.host}/uk:annotation`))._unsafeUnwrap();
    expect(annotated.kind).toBe('unikernel');
    expect(annotated.config.annotations).toMatchObject({ 'com.urunc.unikernel.hypervisor': 'qemu', other: 'x' });
    expect((await svc.pull(`${reg.host}/uk:partial`))._unsafeUnwrap().kind).toBe('oci');
  });

  it('reports the pause image pinned', async () => {
    const reg = await registry();
    reg.addImage('pause', '3.9', { layers: [await layer({ pause: '' })] });
    const svc = await open({ pinned: [`${reg.host}/pause:3.9`] });
    expect((await svc.pull(`${reg.host}/pause:3.9`))._unsafeUnwrap().pinned).toBe(true);
  });
});

describe('registry errors', () => {
  it('reports an unknown repository or tag as NotFound and a closed port as Unavailable', async () => {
    const reg = await registry();
    reg.addImage('known', 'v1', { layers: [await layer({ a: 'a' })] });
    const svc = await open();
    const missingTag = (await svc.pull(`${reg.host}/known:v2`))._unsafeUnwrapErr();
    expect(missingTag.code).toBe(ErrorCode.NotFound);
    expect(missingTag.message).toMatch(/manifest known:v2 on 127\.0\.0\.1:\d+ not found \(MANIFEST_UNKNOWN/);
    expect((await svc.pull(`${reg.host}/unknown`))._unsafeUnwrapErr().code).toBe(ErrorCode.NotFound);

    const closed = await registry();
    const host = closed.host;
    await closed.close();
    registries.splice(registries.indexOf(closed), 1);
    const down = (await svc.pull(`${host}/x`))._unsafeUnwrapErr();
    expect(down.code).toBe(ErrorCode.Unavailable);
    expect(down.message).toMatch(/ECONNREFUSED/);
    expect((await svc.list())._unsafeUnwrap()).toEqual([]);
  });

  it('retries 5xx answers, reset connections and truncated downloads', async () => {
    const reg = await registry();
    const l = await layer({ big: 'x'.repeat(100_000) });
    const { config } = reg.addImage('flaky', 'v1', { layers: [l] });
    reg.fail(/\/manifests\//, 2, 'status500');
    reg.fail(/\/blobs\//, 1, 'reset');
    reg.fail(new RegExp(`/blobs/${sha256(l.blob)}`), 1, 'truncate');
    const svc = await open();
    expect((await svc.pull(`${reg.host}/flaky:v1`))._unsafeUnwrap().id).toBe(config.digest);
    expect(reg.count(/\/manifests\//)).toBe(3);
    expect(readdirSync(join(root, 'ingest'))).toEqual([]);
  });

  it('gives up with Unavailable when a registry keeps failing, and lists nothing', async () => {
    const reg = await registry();
    reg.addImage('broken', 'v1', { layers: [await layer({ a: 'a' })] });
    reg.fail(/\/blobs\//, 100, 'status500');
    const svc = await open({ registryAttempts: 3 });
    const e = (await svc.pull(`${reg.host}/broken:v1`))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.Unavailable);
    expect(e.message).toMatch(/HTTP 500 \(UNKNOWN: injected failure\) \(gave up after 3 attempts\)/);
    expect(reg.count(/\/blobs\//)).toBe(3);
    expect((await svc.list())._unsafeUnwrap()).toEqual([]);
  });

  it('refuses a blob that does not match its digest and keeps nothing of it', async () => {
    const reg = await registry();
    const l = await layer({ a: 'a' });
    reg.addImage('corrupt', 'v1', { layers: [l] });
    reg.corruptBlob(sha256(l.blob), Buffer.from(l.blob).fill(0x41));
    const svc = await open();
    const e = (await svc.pull(`${reg.host}/corrupt:v1`))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.FailedPrecondition);
    expect(e.message).toMatch(/hashes to sha256:[a-f0-9]{64}: corrupt download/);
    expect(blobFiles()).not.toContain(sha256(l.blob));
    expect(readdirSync(join(root, 'ingest'))).toEqual([]);
    expect((await svc.list())._unsafeUnwrap()).toEqual([]);
  });

  it('refuses schema 1 manifests and manifests whose digest is not the one asked for', async () => {
    const reg = await registry();
    reg.addManifest(
      'old',
      { schemaVersion: 1, name: 'old', tag: 'v1', fsLayers: [] },
      'application/vnd.docker.distribution.manifest.v1+prettyjws',
      'v1',
    );
    const svc = await open();
    const e = (await svc.pull(`${reg.host}/old:v1`))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.FailedPrecondition);
    expect(e.message).toMatch(/schema 1/);
  });
});

describe('artifacts', () => {
  it('refuses a manifest whose config is not an image config', async () => {
    const reg = await registry();
    const config = reg.addBlob(Buffer.from('{}'), 'application/vnd.cncf.helm.config.v1+json');
    const mediaType = 'application/vnd.oci.image.manifest.v1+json';
    reg.addManifest('chart', { schemaVersion: 2, mediaType, config, layers: [] }, mediaType, 'v1');
    const svc = await open();
    const e = (await svc.pull(`${reg.host}/chart:v1`))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.FailedPrecondition);
    expect(e.message).toMatch(
      /is not a container image: its config has media type "application\/vnd.cncf.helm.config.v1\+json"/,
    );
  });
});

describe('authentication', () => {
  it('fetches an anonymous bearer token and reuses it for every request of the pull', async () => {
    const reg = await registry({ kind: 'bearer', user: null, password: '' });
    const { config } = reg.addImage('private/app', 'v1', {
      layers: [await layer({ a: 'a' }), await layer({ b: 'b' })],
    });
    const svc = await open();
    expect((await svc.pull(`${reg.host}/private/app:v1`))._unsafeUnwrap().id).toBe(config.digest);
    expect(reg.tokenRequests).toHaveLength(1);
    expect(reg.tokenRequests[0]?.path).toMatch(/service=fake-registry&scope=repository%3Aprivate%2Fapp%3Apull/);
    expect(reg.tokenRequests[0]?.authorization).toBe('');
    // One 401 to learn the challenge, then everything with the token.
    expect(reg.requests.filter((r) => r.authorization === '')).toHaveLength(1);
  });

  it('sends basic credentials (also from a base64 auth field) to the token server', async () => {
    const reg = await registry({ kind: 'bearer', user: 'alice', password: 's3cret:with:colons' });
    reg.addImage('private/app', 'v1', { layers: [await layer({ a: 'a' })] });
    const svc = await open();
    const anonymous = (await svc.pull(`${reg.host}/private/app:v1`))._unsafeUnwrapErr();
    expect(anonymous.code).toBe(ErrorCode.FailedPrecondition);
    expect(anonymous.message).toMatch(/refused anonymous access \(HTTP 401\)/);

    const wrong = (
      await svc.pull(`${reg.host}/private/app:v1`, { auth: auth({ username: 'alice', password: 'nope' }) })
    )._unsafeUnwrapErr();
    expect(wrong.code).toBe(ErrorCode.FailedPrecondition);
    expect(wrong.message).toMatch(/refused the credentials/);

    const encoded = Buffer.from('alice:s3cret:with:colons').toString('base64');
    expect((await svc.pull(`${reg.host}/private/app:v1`, { auth: auth({ auth: encoded }) })).isOk()).toBe(true);
  });

  it('answers a basic challenge, and reports a refusal without credentials as NotFound', async () => {
    const reg = await registry({ kind: 'basic', user: 'bob', password: 'pw' });
    reg.addImage('app', 'v1', { layers: [await layer({ a: 'a' })] });
    const svc = await open();
    const e = (await svc.pull(`${reg.host}/app:v1`))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.NotFound);
    expect(e.message).toMatch(/does not exist or needs credentials/);
    expect((await svc.pull(`${reg.host}/app:v1`, { auth: auth({ username: 'bob', password: 'pw' }) })).isOk()).toBe(
      true,
    );
    const refused = (
      await svc.pull(`${reg.host}/app:v1`, { auth: auth({ username: 'bob', password: 'x' }) })
    )._unsafeUnwrapErr();
    expect(refused.code).toBe(ErrorCode.FailedPrecondition);
  });
});

describe('mirrors', () => {
  it('tries mirrors in order with rewrites, keeps the original name, and never sends the pull credentials to a mirror', async () => {
    const upstream = await registry({ kind: 'basic', user: 'u', password: 'p' });
    const emptyMirror = await registry();
    const mirror = await registry();
    const { config } = mirror.addImage('mirrored/team/app', 'v1', { layers: [await layer({ a: 'a' })] });
    const svc = await open({
      registries: {
        'registry.example.test': {
          mirrors: [emptyMirror.url, `${mirror.url}/`],
          rewrite: { '^team/(.*)$': 'mirrored/team/$1' },
          server: upstream.url,
        },
      },
    });
    const info = (
      await svc.pull('registry.example.test/team/app:v1', {
        auth: auth({ username: 'u', password: 'p', serverAddress: 'registry.example.test' }),
      })
    )._unsafeUnwrap();
    expect(info.id).toBe(config.digest);
    expect(info.repoTags).toEqual(['registry.example.test/team/app:v1']);
    expect(emptyMirror.requests.map((r) => r.path)).toEqual(['/v2/mirrored/team/app/manifests/v1']);
    expect(upstream.requests).toEqual([]);
    for (const r of [...emptyMirror.requests, ...mirror.requests]) expect(r.authorization).toBe('');
  });

  it('falls back to the host itself when no mirror has the image, with its original path and the credentials', async () => {
    const upstream = await registry({ kind: 'basic', user: 'u', password: 'p' });
    const mirror = await registry();
    const { config } = upstream.addImage('team/app', 'v1', { layers: [await layer({ a: 'a' })] });
    const svc = await open({
      registries: {
        'registry.example.test': { mirrors: [mirror.url], rewrite: { '^team/': 'other/' }, server: upstream.url },
      },
    });
    const info = (
      await svc.pull('registry.example.test/team/app:v1', { auth: auth({ username: 'u', password: 'p' }) })
    )._unsafeUnwrap();
    expect(info.id).toBe(config.digest);
    expect(mirror.requests.map((r) => r.path)).toEqual(['/v2/other/app/manifests/v1']);
    expect(upstream.requests.every((r) => r.path.startsWith('/v2/team/app/'))).toBe(true);
  });

  it('names every endpoint when all fail', async () => {
    const mirror = await registry();
    const upstream = await registry();
    const svc = await open({
      registries: { 'registry.example.test': { mirrors: [mirror.url], server: upstream.url } },
    });
    const e = (await svc.pull('registry.example.test/app:v1'))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.NotFound);
    expect(e.message).toContain(`mirror ${mirror.url}`);
    expect(e.message).toContain(`registry.example.test (${upstream.url})`);
  });

  it('rejects a bad registry configuration when the service opens', async () => {
    const bad = await OciImageService.open({ root, registries: { 'x.test': { rewrite: { '(': 'y' } } } });
    expect(bad._unsafeUnwrapErr().code).toBe(ErrorCode.InvalidArgument);
    const ftp = await OciImageService.open({ root, registries: { 'x.test': { mirrors: ['ftp://mirror'] } } });
    expect(ftp._unsafeUnwrapErr().message).toMatch(/must be an http or https URL/);
  });
});

describe('content store', () => {
  it('downloads each blob once for concurrent pulls of images sharing layers', async () => {
    const reg = await registry();
    const shared = await layer({ shared: 'y'.repeat(200_000) });
    reg.addImage('a', 'v1', { layers: [shared, await layer({ a: 'a' })] });
    reg.addImage('b', 'v1', { layers: [shared, await layer({ b: 'b' })] });
    const svc = await open();
    const results = await Promise.all([
      svc.pull(`${reg.host}/a:v1`),
      svc.pull(`${reg.host}/a:v1`),
      svc.pull(`${reg.host}/b:v1`),
    ]);
    for (const r of results) expect(r.isOk()).toBe(true);
    expect(reg.count(new RegExp(`/blobs/${sha256(shared.blob)}$`))).toBe(1);
    expect((await svc.list())._unsafeUnwrap()).toHaveLength(2);
  });

  it('untags by tag, deletes by id, and collects only blobs no image references', async () => {
    const reg = await registry();
    const shared = await layer({ shared: 's' });
    const own = await layer({ own: 'o' });
    const a = reg.addImage('a', 'v1', { layers: [shared, own] });
    reg.tag('a', 'v2', a.manifest.digest);
    const b = reg.addImage('b', 'v1', { layers: [shared] });
    const svc = await open();
    await svc.pull(`${reg.host}/a:v1`);
    const a2 = (await svc.pull(`${reg.host}/a:v2`))._unsafeUnwrap();
    expect(a2.repoTags).toEqual([`${reg.host}/a:v1`, `${reg.host}/a:v2`]);
    await svc.pull(`${reg.host}/b:v1`);

    (await svc.remove(`${reg.host}/a:v1`))._unsafeUnwrap();
    expect((await svc.status(a.config.digest))._unsafeUnwrap()?.repoTags).toEqual([`${reg.host}/a:v2`]);
    expect(blobFiles()).toContain(sha256(own.blob));

    (await svc.remove(a.config.digest.slice(7, 19)))._unsafeUnwrap();
    expect((await svc.status(a.config.digest))._unsafeUnwrap()).toBeNull();
    expect(blobFiles()).not.toContain(sha256(own.blob));
    expect(blobFiles()).not.toContain(a.manifest.digest);
    expect(blobFiles()).toContain(sha256(shared.blob));
    expect(blobFiles().sort()).toEqual([b.config.digest, b.manifest.digest, sha256(shared.blob)].sort());

    // Removing what is gone succeeds; the last tag takes the image with it.
    (await svc.remove(`${reg.host}/a:v1`))._unsafeUnwrap();
    (await svc.remove(`${reg.host}/b:v1`))._unsafeUnwrap();
    expect((await svc.list())._unsafeUnwrap()).toEqual([]);
    expect(blobFiles()).toEqual([]);
    expect((await svc.remove('Not A Ref'))._unsafeUnwrapErr().code).toBe(ErrorCode.InvalidArgument);
  });

  it('moves a tag to the image pulled under it; the old image stays, reachable by id and digest', async () => {
    const reg = await registry();
    const old = reg.addImage('app', 'latest', { layers: [await layer({ v: '1' })] });
    const svc = await open();
    await svc.pull(`${reg.host}/app`);
    const fresh = reg.addImage('app', 'latest', { layers: [await layer({ v: '2' })] });
    await svc.pull(`${reg.host}/app`);
    expect((await svc.status(`${reg.host}/app:latest`))._unsafeUnwrap()?.id).toBe(fresh.config.digest);
    const stale = (await svc.status(old.config.digest))._unsafeUnwrap();
    expect(stale?.repoTags).toEqual([]);
    expect(stale?.repoDigests).toEqual([`${reg.host}/app@${old.manifest.digest}`]);
    expect((await svc.status(`${reg.host}/app@${old.manifest.digest}`))._unsafeUnwrap()?.id).toBe(old.config.digest);
  });

  it('refuses an ambiguous id prefix', async () => {
    const reg = await registry();
    const svc = await open();
    // Pull images until two ids share their first hex digit (at most 17).
    const firstDigits = new Set<string>();
    let shared: string | undefined;
    for (let i = 0; shared === undefined; i++) {
      const { config } = reg.addImage('many', `t${i}`, { layers: [await layer({ i: String(i) })] });
      (await svc.pull(`${reg.host}/many:t${i}`))._unsafeUnwrap();
      const digit = config.digest.charAt(7);
      if (firstDigits.has(digit)) shared = digit;
      firstDigits.add(digit);
    }
    const e = (await svc.status(shared))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.InvalidArgument);
    expect(e.message).toMatch(/ambiguous: it matches 2 images/);
  });

  it('cleans a crashed download and unreferenced blobs on open, and refuses a corrupt metadata file', async () => {
    const reg = await registry();
    reg.addImage('app', 'v1', { layers: [await layer({ a: 'a' })] });
    const svc = await open();
    await svc.pull(`${reg.host}/app:v1`);
    writeFileSync(join(root, 'ingest', 'partial-download'), 'half');
    const orphan = `${'0'.repeat(63)}1`;
    writeFileSync(join(root, 'blobs', 'sha256', orphan), 'orphan');
    const reopened = await open();
    expect(readdirSync(join(root, 'ingest'))).toEqual([]);
    expect(existsSync(join(root, 'blobs', 'sha256', orphan))).toBe(false);
    expect((await reopened.list())._unsafeUnwrap()).toHaveLength(1);

    writeFileSync(join(root, 'metadata.json'), '{ truncated');
    const e = (await OciImageService.open({ root }))._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.Internal);
    expect(e.message).toMatch(/metadata.json is not valid JSON/);
  });

  it('reports the usage of the store directory', async () => {
    const reg = await registry();
    const l = await layer({ big: 'z'.repeat(300_000) });
    reg.addImage('app', 'v1', { layers: [l] });
    const svc = await open({ fsInfoMaxAgeMs: 0 });
    const before = (await svc.fsInfo())._unsafeUnwrap();
    await svc.pull(`${reg.host}/app:v1`);
    const after = (await svc.fsInfo())._unsafeUnwrap();
    expect(after[0]?.mountpoint).toBe(root);
    expect((after[0]?.usedBytes ?? 0) - (before[0]?.usedBytes ?? 0)).toBeGreaterThanOrEqual(l.blob.length);
    expect((after[0]?.inodesUsed ?? 0) - (before[0]?.inodesUsed ?? 0)).toBe(4); // manifest, config, layer, metadata.json
  });
});

describe('dockerArchive', () => {
  it('is a docker save archive: config bytes under the id, stored layers as they are, repo tags', async () => {
    const reg = await registry();
    const l1 = await layer({ a: 'a' });
    const l2 = {
      tar: await tarball([{ name: 'b', body: 'b' }]),
      blob: Buffer.alloc(0),
      mediaType: 'application/vnd.oci.image.layer.v1.tar',
    };
    const plain = { ...l2, blob: l2.tar };
    const { config } = reg.addImage('app', 'v1', { layers: [l1, plain] });
    const svc = await open();
    await svc.pull(`${reg.host}/app:v1`);
    const archive = (await svc.dockerArchive(`${reg.host}/app:v1`))._unsafeUnwrap();
    const files = new Map<string, Buffer>();
    const ex = extract();
    archive.pipe(ex as unknown as NodeJS.WritableStream);
    for await (const entry of ex) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(Buffer.from(c as Uint8Array));
      files.set(entry.header.name, Buffer.concat(chunks));
    }
    const hex = config.digest.slice(7);
    const manifest = JSON.parse(files.get('manifest.json')?.toString() ?? '[]') as {
      Config: string;
      RepoTags: string[];
      Layers: string[];
    }[];
    expect(manifest).toHaveLength(1);
    expect(manifest[0]?.Config).toBe(`${hex}.json`);
    expect(manifest[0]?.RepoTags).toEqual([`${reg.host}/app:v1`]);
    expect(sha256(files.get(`${hex}.json`) ?? Buffer.alloc(0))).toBe(config.digest);
    const layers = (manifest[0]?.Layers ?? []).map((n) => files.get(n));
    expect(layers[0]?.equals(l1.blob)).toBe(true);
    expect(layers[1]?.equals(plain.blob)).toBe(true);
    expect((await svc.dockerArchive('sha256:' + '0'.repeat(64)))._unsafeUnwrapErr().code).toBe(ErrorCode.NotFound);
  });
});

describe('metadata durability', () => {
  it('writes image records atomically as one JSON document', async () => {
    const reg = await registry();
    reg.addImage('app', 'v1', { layers: [await layer({ a: 'a' })] });
    const svc = await open();
    await svc.pull(`${reg.host}/app:v1`);
    const meta = JSON.parse(readFileSync(join(root, 'metadata.json'), 'utf8')) as { version: number; images: object };
    expect(meta.version).toBe(1);
    expect(Object.keys(meta.images)).toHaveLength(1);
    expect(readdirSync(root).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
  });
});
