// The image service against the real local registry (127.0.0.1:5000, filled
// by test/fixtures/build-images.sh), real overlayfs mounts and the real
// dockerd. Traffic goes only to loopback: names of other registries
// (registry.k8s.io, docker.io, registry.hcr.test) are served through mirrors
// on 127.0.0.1, and their own endpoint is a local recorder that must stay
// unused.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
  existsSync,
} from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { extract } from 'tar-stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/errors.js';
import { OciImageService, type OciImageServiceOptions, type RegistryConfig } from '../src/images/index.js';
import { FakeRegistry } from './fixtures/images/fake-registry.js';
import { RegistryProxy, UpstreamRecorder } from './fixtures/images/proxy.js';
import { gzip, tarball, type TarEntry } from './fixtures/images/tar.js';

const DOCKER = '/usr/bin/docker';
const REGISTRY = '127.0.0.1:5000';
const LAYERS = `${REGISTRY}/hcr-test/layers:latest`;
const BUSYBOX = `${REGISTRY}/hcr-test/busybox:latest`;
const CHILD = join(import.meta.dirname, 'fixtures', 'images', 'pull-child.ts');
const RUN_ID = randomBytes(4).toString('hex');

const base = mkdtempSync('/var/tmp/hcr-images-it-');
let upstream: UpstreamRecorder;
const cleanups: (() => Promise<void> | void)[] = [];
const children = new Set<ChildProcess>();

function run(file: string, args: string[], input?: Buffer): string {
  return execFileSync(file, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], ...(input ? { input } : {}) });
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

/** Polls `check` every 2 ms until it holds (true) or `ms` pass (false). */
async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  return check();
}

let rootCount = 0;
function newRoot(): string {
  return join(base, `root-${rootCount++}`);
}

async function open(root: string, options: OciImageServiceOptions = {}): Promise<OciImageService> {
  return (await OciImageService.open({ root, ...options }))._unsafeUnwrap();
}

/** Registry config that sends `hosts` to `mirror` and their own endpoint to the recorder. */
function mirrored(mirror: string, ...hosts: string[]): RegistryConfig {
  return Object.fromEntries(hosts.map((h) => [h, { mirrors: [mirror], server: upstream.url }]));
}

beforeAll(async () => {
  run(DOCKER, ['info', '--format', '{{.ServerVersion}}']);
  execFileSync('curl', ['-fsS', '-o', '/dev/null', `http://${REGISTRY}/v2/`]);
  upstream = await UpstreamRecorder.start();
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await upstream.close();
  // Nothing of ours may stay mounted; the store directories go with the base.
  expect(mountsUnder(base)).toEqual([]);
  rmSync(base, { recursive: true, force: true });
  expect(run(DOCKER, ['ps', '-aq', '--filter', `name=hcr-images-it-${RUN_ID}`]).trim()).toBe('');
  expect(upstream.requests).toEqual([]);
});

/** A comparable description of one file system entry. */
interface Node {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  sha?: string;
  target?: string;
  mtime?: number;
  rdev?: string;
}

/** Paths docker adds to every container (its init layer and mount points), not part of the image. */
const DOCKER_ADDED = /^(\.dockerenv|etc\/(hosts|hostname|resolv\.conf|mtab)|dev(\/.*)?|proc(\/.*)?|sys(\/.*)?)$/;

async function exportTree(image: string): Promise<{ nodes: Map<string, Node>; links: string[][] }> {
  const name = `hcr-images-it-${RUN_ID}-${randomBytes(3).toString('hex')}`;
  const id = run(DOCKER, ['create', '--name', name, image]).trim();
  try {
    const child = spawn(DOCKER, ['export', id], { stdio: ['ignore', 'pipe', 'inherit'] });
    const nodes = new Map<string, Node>();
    const linkTargets = new Map<string, string>();
    const ex = extract();
    child.stdout.pipe(ex as unknown as NodeJS.WritableStream);
    for await (const entry of ex) {
      const h = entry.header;
      const path = h.name.replace(/\/$/, '').replace(/^\.\//, '');
      const hash = createHash('sha256');
      for await (const c of entry) hash.update(c as Uint8Array);
      if (path === '' || DOCKER_ADDED.test(path)) continue;
      const meta = { mode: h.mode & 0o7777, uid: h.uid, gid: h.gid };
      if (h.type === 'link') {
        linkTargets.set(path, h.linkname.replace(/^\.\//, ''));
        continue;
      }
      const node: Node = { type: h.type, ...meta };
      if (h.type === 'file')
        Object.assign(node, { sha: hash.digest('hex'), mtime: Math.floor(h.mtime.getTime() / 1000) });
      if (h.type === 'symlink') node.target = h.linkname;
      if (h.type === 'character-device' || h.type === 'block-device') node.rdev = `${h.devmajor}:${h.devminor}`;
      nodes.set(path, node);
    }
    // Hard links become copies of their target, and groups to compare with inode sharing.
    const groups = new Map<string, string[]>();
    for (const [path, target] of linkTargets) {
      const t = nodes.get(target);
      if (t === undefined) throw new Error(`docker export: hard link ${path} to unknown ${target}`);
      nodes.set(path, { ...t });
      groups.set(target, [...(groups.get(target) ?? [target]), path]);
    }
    return { nodes, links: [...groups.values()].map((g) => g.sort()).sort() };
  } finally {
    run(DOCKER, ['rm', '-f', id]);
  }
}

function walkTree(root: string): { nodes: Map<string, Node>; links: string[][] } {
  const nodes = new Map<string, Node>();
  const byInode = new Map<number, string[]>();
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel))) {
      const path = rel === '' ? name : `${rel}/${name}`;
      const abs = join(root, path);
      const st = lstatSync(abs);
      const meta = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
      if (st.isDirectory()) {
        nodes.set(path, { type: 'directory', ...meta });
        walk(path);
      } else if (st.isSymbolicLink()) {
        nodes.set(path, { type: 'symlink', ...meta, target: readlinkSync(abs) });
      } else if (st.isFile()) {
        const sha = createHash('sha256').update(readFileSync(abs)).digest('hex');
        nodes.set(path, { type: 'file', ...meta, sha, mtime: Math.floor(st.mtimeMs / 1000) });
        if (st.nlink > 1) byInode.set(st.ino, [...(byInode.get(st.ino) ?? []), path]);
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        const type = st.isCharacterDevice() ? 'character-device' : 'block-device';
        nodes.set(path, { type, ...meta, rdev: `${Math.floor(st.rdev / 256)}:${st.rdev % 256}` });
      } else if (st.isFIFO()) {
        nodes.set(path, { type: 'fifo', ...meta });
      }
    }
  };
  walk('');
  return { nodes, links: [...byInode.values()].map((g) => g.sort()).sort() };
}

describe('unpacking', () => {
  it('prepares a root filesystem identical to docker export of the same multi-layer image', async () => {
    const svc = await open(newRoot());
    const info = (await svc.pull(LAYERS))._unsafeUnwrap();
    const key = `layers-${RUN_ID}`;
    const { path } = (await svc.prepareRootfs(info.id, key))._unsafeUnwrap();
    cleanups.push(async () => void (await svc.releaseRootfs(key))._unsafeUnwrap());

    const ours = walkTree(path);
    const docker = await exportTree(LAYERS);
    for (const p of [...ours.nodes.keys()]) if (DOCKER_ADDED.test(p)) ours.nodes.delete(p);
    // Directory mtimes differ by design (docker's are those of its own unpack); compare everything else.
    expect(Object.fromEntries([...ours.nodes].sort())).toEqual(Object.fromEntries([...docker.nodes].sort()));
    expect(ours.links).toEqual(docker.links);
    // The fixture's own expectations, as a sanity check that the comparison saw the interesting parts.
    expect(ours.nodes.get('data/mode-4755')?.mode).toBe(0o4755);
    expect(ours.nodes.get('data/opaque/new.txt')?.type).toBe('file');
    expect(ours.nodes.has('data/delete-me.txt')).toBe(false);
    expect(ours.nodes.has('usr/share/hcr-fixture')).toBe(false);
    expect(ours.links.some((g) => g.includes('data/hardlink-a'))).toBe(true);
  });

  it('shares layer snapshots between images, keeps rootfs writes private, and collects snapshots once unused', async () => {
    const root = newRoot();
    const svc = await open(root);
    const busybox = (await svc.pull(BUSYBOX))._unsafeUnwrap();
    const layers = (await svc.pull(LAYERS))._unsafeUnwrap();
    const snapshots = () => readdirSync(join(root, 'snapshots')).filter((n) => /^[a-f0-9]{64}$/.test(n));
    // hcr-test/layers is hcr-test/busybox plus four layers: six snapshots, not eight.
    expect(snapshots()).toHaveLength(6);

    const a = `a-${RUN_ID}`;
    const b = `b-${RUN_ID}`;
    const pa = (await svc.prepareRootfs(busybox.id, a))._unsafeUnwrap().path;
    // Idempotent: the same path, mounted once.
    expect((await svc.prepareRootfs(busybox.id, a))._unsafeUnwrap().path).toBe(pa);
    expect(mountsUnder(join(root, 'rootfs', a))).toEqual([pa]);
    const other = (await svc.prepareRootfs(layers.id, a))._unsafeUnwrapErr();
    expect(other.code).toBe(ErrorCode.AlreadyExists);
    expect((await svc.prepareRootfs(busybox.id, '../escape'))._unsafeUnwrapErr().code).toBe(ErrorCode.InvalidArgument);

    writeFileSync(join(pa, 'etc/written-by-a'), 'a');
    rmSync(join(pa, 'bin/ls'));
    const pb = (await svc.prepareRootfs(busybox.id, b))._unsafeUnwrap().path;
    expect(existsSync(join(pb, 'etc/written-by-a'))).toBe(false);
    expect(existsSync(join(pb, 'bin/ls'))).toBe(true);
    expect(readFileSync(join(root, 'rootfs', a, 'upper', 'etc/written-by-a'), 'utf8')).toBe('a');

    // Removing the image keeps what a prepared rootfs still uses.
    (await svc.remove(busybox.id))._unsafeUnwrap();
    expect((await svc.status(BUSYBOX))._unsafeUnwrap()).toBeNull();
    expect(snapshots()).toHaveLength(6); // busybox's two are layers' two bottom ones anyway
    (await svc.remove(LAYERS))._unsafeUnwrap();
    expect(snapshots()).toHaveLength(2);
    expect(readFileSync(join(pb, 'bin/busybox')).length).toBeGreaterThan(0);

    (await svc.releaseRootfs(a))._unsafeUnwrap();
    expect(snapshots()).toHaveLength(2);
    (await svc.releaseRootfs(b))._unsafeUnwrap();
    (await svc.releaseRootfs(b))._unsafeUnwrap();
    expect(snapshots()).toHaveLength(0);
    expect(readdirSync(join(root, 'snapshots', 'l'))).toEqual([]);
    expect(mountsUnder(root)).toEqual([]);
    expect(readdirSync(join(root, 'rootfs'))).toEqual([]);
    expect(readdirSync(join(root, 'blobs', 'sha256'))).toEqual([]);
  });
});

describe('many layers', () => {
  it('unpacks and mounts an image of 120 layers (short lower-dir links keep the mount options in one page)', async () => {
    const reg = await FakeRegistry.start();
    cleanups.push(() => reg.close());
    const layers = [];
    for (let i = 0; i < 120; i++) {
      const entries: TarEntry[] = [{ name: `layer-${i}`, body: `${i}\n`, uid: 0, gid: 0 }];
      if (i > 0) entries.push({ name: `.wh.layer-${i - 1}`, uid: 0, gid: 0 });
      const tar = await tarball(entries);
      layers.push({ tar, blob: gzip(tar), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
    }
    reg.addImage('tall', 'v1', { layers });
    const root = newRoot();
    const svc = await open(root);
    const info = (await svc.pull(`${reg.host}/tall:v1`))._unsafeUnwrap();
    const key = `tall-${RUN_ID}`;
    const { path } = (await svc.prepareRootfs(info.id, key))._unsafeUnwrap();
    cleanups.push(async () => void (await svc.releaseRootfs(key))._unsafeUnwrap());
    expect(readdirSync(path)).toEqual(['layer-119']);
    expect(readFileSync(join(path, 'layer-119'), 'utf8')).toBe('119\n');
    expect(readdirSync(join(root, 'snapshots', 'l'))).toHaveLength(120);
  });
});

describe('lazy unpacking', () => {
  it('unpacks at the first prepareRootfs when pulls do not', async () => {
    const root = newRoot();
    const svc = await open(root, { unpackOnPull: false });
    const info = (await svc.pull(BUSYBOX))._unsafeUnwrap();
    const snapshots = () => readdirSync(join(root, 'snapshots')).filter((n) => /^[a-f0-9]{64}$/.test(n));
    expect(snapshots()).toEqual([]);
    const key = `lazy-${RUN_ID}`;
    const { path } = (await svc.prepareRootfs(info.id, key))._unsafeUnwrap();
    cleanups.push(async () => void (await svc.releaseRootfs(key))._unsafeUnwrap());
    expect(snapshots()).toHaveLength(2);
    expect(run('chroot', [path, '/bin/sh', '-c', 'echo hello from $(id -un)']).trim()).toBe('hello from root');
  });
});

describe('pulling', () => {
  it('pulls registry.k8s.io and docker.io names through a mirror and lists them under their own names', async () => {
    const proxy = await RegistryProxy.start(REGISTRY);
    cleanups.push(() => proxy.close());
    const svc = await open(newRoot(), { registries: mirrored(proxy.url, 'registry.k8s.io', 'docker.io') });
    const k8s = (await svc.pull('registry.k8s.io/hcr-test/busybox:latest'))._unsafeUnwrap();
    const hub = (await svc.pull('hcr-test/busybox'))._unsafeUnwrap();
    expect(k8s.id).toBe(hub.id);
    expect(hub.repoTags).toEqual(['registry.k8s.io/hcr-test/busybox:latest', 'docker.io/hcr-test/busybox:latest']);
    expect((await svc.status('docker.io/hcr-test/busybox:latest'))._unsafeUnwrap()?.id).toBe(hub.id);
    expect((await svc.status('registry.k8s.io/hcr-test/busybox'))._unsafeUnwrap()?.id).toBe(hub.id);
    expect(proxy.count(/^GET \/v2\/hcr-test\/busybox\/manifests\/latest$/)).toBe(2);
    expect(upstream.requests).toEqual([]);
  });

  it('downloads each blob once for concurrent pulls sharing layers', async () => {
    const proxy = await RegistryProxy.start(REGISTRY);
    cleanups.push(() => proxy.close());
    const svc = await open(newRoot(), { registries: mirrored(proxy.url, 'registry.hcr.test') });
    const results = await Promise.all([
      svc.pull('registry.hcr.test/hcr-test/layers:latest'),
      svc.pull('registry.hcr.test/hcr-test/layers:latest'),
      svc.pull('registry.hcr.test/hcr-test/busybox:latest'),
    ]);
    for (const r of results) expect(r.isOk()).toBe(true);
    const blobGets = proxy.requests.filter((r) => /^GET .*\/blobs\/sha256:/.test(r));
    const perDigest = new Map<string, number>();
    for (const r of blobGets) {
      const d = /sha256:[a-f0-9]{64}/.exec(r)?.[0] ?? '';
      perDigest.set(d, (perDigest.get(d) ?? 0) + 1);
    }
    // 6 layers + 2 configs; busybox's two layers are layers' two bottom ones.
    expect(perDigest.size).toBe(8);
    expect([...perDigest.values()].every((n) => n === 1)).toBe(true);
    expect((await svc.list())._unsafeUnwrap()).toHaveLength(2);
  });

  it('never lists a partial image after a pull is killed, and the next pull completes', async () => {
    const root = newRoot();
    const proxy = await RegistryProxy.start(REGISTRY, 256 * 1024);
    cleanups.push(() => proxy.close());
    const ref = 'registry.hcr.test/hcr-test/layers:latest';
    // The busybox binaries: the layer that takes longest to unpack.
    const secondLayer = (
      JSON.parse(
        run('curl', [
          '-fsS',
          '-H',
          'Accept: application/vnd.docker.distribution.manifest.v2+json',
          `http://${REGISTRY}/v2/hcr-test/layers/manifests/latest`,
        ]),
      ) as { layers: { digest: string }[] }
    ).layers[1]?.digest;

    const killWhen = async (
      stop: (event: { phase: string; layer: string; done: number }) => boolean | Promise<boolean>,
    ) => {
      const child = spawn(process.execPath, ['--import', 'tsx', CHILD, root, proxy.url, upstream.url, ref], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      children.add(child);
      const exited = new Promise<NodeJS.Signals | null>((resolve) =>
        child.on('exit', (_code, signal) => resolve(signal)),
      );
      let killed = false;
      for await (const line of createInterface({ input: child.stdout })) {
        const event = JSON.parse(line) as { phase: string; layer: string; done: number };
        expect(event.phase, 'the pull finished before it could be killed').not.toBe('exit');
        if (await stop(event)) {
          child.kill('SIGKILL');
          killed = true;
          break;
        }
      }
      expect(killed).toBe(true);
      expect(await exited).toBe('SIGKILL');
      children.delete(child);
    };

    // Killed mid-download: blobs partly in ingest/.
    await killWhen((e) => e.phase === 'downloading' && e.done > 300 * 1024);
    expect(readdirSync(join(root, 'ingest')).length).toBeGreaterThan(0);
    let svc = await open(root);
    expect((await svc.list())._unsafeUnwrap()).toEqual([]);
    expect((await svc.status(ref))._unsafeUnwrap()).toBeNull();
    expect(readdirSync(join(root, 'ingest'))).toEqual([]);

    // Killed mid-unpack, while the second layer is applied through a temporary overlay mount.
    proxy.throttle(null);
    const tmpMount = () => mountsUnder(join(root, 'snapshots')).some((m) => m.includes('/.tmp-'));
    await killWhen(async (e) => e.phase === 'unpacking' && e.layer === secondLayer && (await waitFor(tmpMount, 5000)));
    expect(tmpMount()).toBe(true);
    svc = await open(root);
    expect((await svc.list())._unsafeUnwrap()).toEqual([]);
    expect(mountsUnder(root)).toEqual([]);
    expect(readdirSync(join(root, 'snapshots')).filter((n) => n.startsWith('.tmp-'))).toEqual([]);

    svc = await open(root, { registries: mirrored(proxy.url, 'registry.hcr.test') });
    const info = (await svc.pull(ref))._unsafeUnwrap();
    expect(info.repoTags).toEqual([ref]);
    const reopened = await open(root);
    expect((await reopened.list())._unsafeUnwrap().map((i) => i.id)).toEqual([info.id]);
  });
});

describe('dockerArchive', () => {
  it('loads into dockerd with the same image id and the repo tags', async () => {
    const proxy = await RegistryProxy.start(REGISTRY);
    cleanups.push(() => proxy.close());
    const svc = await open(newRoot(), { registries: mirrored(proxy.url, 'registry.hcr.test') });
    const tag = 'registry.hcr.test/hcr-test/layers:latest';
    const info = (await svc.pull(tag))._unsafeUnwrap();
    const archive = (await svc.dockerArchive(info.id))._unsafeUnwrap();
    const chunks: Buffer[] = [];
    for await (const c of archive) chunks.push(c as Buffer);
    cleanups.push(() => void run(DOCKER, ['rmi', tag]));
    expect(run(DOCKER, ['load'], Buffer.concat(chunks))).toContain(`Loaded image: ${tag}`);
    const [id, tags] = run(DOCKER, ['image', 'inspect', '-f', '{{.Id}} {{json .RepoTags}}', tag]).trim().split(' ');
    expect(id).toBe(info.id);
    expect(JSON.parse(tags ?? '[]')).toContain(tag);
  });
});
