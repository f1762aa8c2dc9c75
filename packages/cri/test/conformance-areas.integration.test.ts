// The behaviours critest checks, in the areas cri-docker.integration.test.ts does
// not reach, against the real socket on the docker engine: streaming with real
// SPDY and WebSocket clients, the image service's reference kinds and user
// fields, several containers in a pod, host and pod namespaces, users and
// groups, masked/read-only paths, no_new_privs, seccomp, sysctls, port
// mapping and mount propagation. CI runs this suite; critest itself is run by
// test/conformance/run.sh (see docs/conformance.md).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { status } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { containerConfig, cri, podConfig, rejectsWith } from './helpers/cri.js';
import { BUSYBOX, HTTPD, REGISTRY, leaks, repoRoot, startShim, type TestShim } from './helpers/shim.js';
import {
  WsChannelClient,
  exitCodeOf,
  parseStatus,
  spdyConnect,
  spdyForward,
  spdyRemoteCommand,
} from './helpers/stream-clients.js';

/** Repository in the local registry that holds the images this suite derives from busybox. */
const DERIVED_REPO = 'hcr-test/conformance-derived';

type Cri = ReturnType<typeof cri>;
type Pod = { id: string; config: object };

describe('critest areas over the CRI socket (docker engine)', () => {
  let shim: TestShim;
  let c: Cri;
  let logDir: string;
  const pods = new Set<string>();
  const cleanups: (() => void)[] = [];

  const runPod = async (overrides: Record<string, unknown> = {}): Promise<Pod> => {
    const config = podConfig({ logDirectory: logDir, ...overrides });
    const id = await c.runp(config);
    pods.add(id);
    return { id, config };
  };
  const runContainer = async (pod: Pod, overrides: Record<string, unknown> = {}, image = BUSYBOX) => {
    const id = await c.create(pod.id, containerConfig(image, { command: ['sleep', '3600'], ...overrides }), pod.config);
    await c.start(id);
    return id;
  };
  const sh = async (containerId: string, script: string) => {
    const r = await c.execSync(containerId, ['sh', '-c', script]);
    return { out: r.stdout.toString(), err: r.stderr.toString(), code: r.exitCode };
  };
  const securityContext = (sc: Record<string, unknown>) => ({ linux: { securityContext: sc } });

  beforeAll(async () => {
    shim = await startShim();
    c = cri(shim);
    logDir = mkdtempSync(join(tmpdir(), 'hcr-conformance-logs-'));
    await c.pull(BUSYBOX);
    await c.pull(HTTPD);
  }, 300_000);

  afterEach(async () => {
    for (const id of pods) {
      await c.rmp(id);
      pods.delete(id);
    }
    for (const cleanup of cleanups.splice(0).reverse()) cleanup();
    expect(leaks(shim)).toEqual([]);
  }, 120_000);

  afterAll(async () => {
    await shim?.stop();
    if (logDir) rmSync(logDir, { recursive: true, force: true });
  }, 60_000);

  describe('streaming', () => {
    const execUrl = async (containerId: string, cmd: string[], opts: { tty: boolean; stdin: boolean }) =>
      (
        await c.rt<{ url: string }>('Exec', {
          containerId,
          cmd,
          tty: opts.tty,
          stdin: opts.stdin,
          stdout: true,
          stderr: !opts.tty,
        })
      ).url;

    it('execs without a terminal or stdin over SPDY: separate stdout/stderr and the exit code', async () => {
      const cid = await runContainer(await runPod());
      const url = await execUrl(cid, ['sh', '-c', 'echo to-out; echo to-err >&2; exit 3'], {
        tty: false,
        stdin: false,
      });
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\//);
      const cmd = await spdyRemoteCommand(url, { stdin: false, stdout: true, stderr: true, resize: false });
      const result = await cmd.result;
      expect(result.stdout.toString()).toBe('to-out\n');
      expect(result.stderr.toString()).toBe('to-err\n');
      expect(exitCodeOf(result.error)).toBe(3);
      cmd.client.socket.destroy();
    });

    it('execs with a terminal and stdin: input reaches the shell, resizes reach the terminal', async () => {
      const cid = await runContainer(await runPod());
      const url = await execUrl(cid, ['sh'], { tty: true, stdin: true });
      const cmd = await spdyRemoteCommand(url, { stdin: true, stdout: true, stderr: false, resize: true });
      let seen = '';
      cmd.onStdout((chunk) => (seen += chunk.toString()));
      cmd.resize(123, 45);
      await waitUntil('the terminal to answer', async () => {
        cmd.stdin?.write(Buffer.from('stty size; echo "sum=$((20+22))"\n'));
        await sleep(300);
        return /45 123/.test(seen) && seen.includes('sum=42');
      });
      cmd.stdin?.write(Buffer.from('exit 5\n'));
      const result = await cmd.result;
      expect(exitCodeOf(result.error)).toBe(5);
      cmd.client.socket.destroy();
    });

    it('execs over a WebSocket (v4.channel.k8s.io) like newer clients do', async () => {
      const cid = await runContainer(await runPod());
      const url = await execUrl(cid, ['sh', '-c', 'echo ws-out; exit 0'], { tty: false, stdin: false });
      const ws = await WsChannelClient.connect(url, ['v4.channel.k8s.io']);
      await ws.closed;
      expect(ws.channel(1).toString()).toBe('ws-out\n');
      expect(parseStatus(ws.channel(3)).status).toBe('Success');
    });

    it('attaches to a running container: stdin in, stdout out, and the container ends with stdin', async () => {
      const pod = await runPod();
      const cid = await runContainer(pod, { command: ['sh'], stdin: true, stdinOnce: true, tty: false });
      const url = (
        await c.rt<{ url: string }>('Attach', { containerId: cid, stdin: true, tty: false, stdout: true, stderr: true })
      ).url;
      const attach = await spdyRemoteCommand(url, { stdin: true, stdout: true, stderr: true, resize: false });
      let seen = '';
      attach.onStdout((chunk) => (seen += chunk.toString()));
      attach.stdin?.write(Buffer.from('echo attached-$((6*7))\n'));
      await waitUntil('attach output', async () => seen.includes('attached-42'));
      attach.stdin?.end();
      await attach.result;
      attach.client.socket.destroy();
      await c.waitState(cid, 'CONTAINER_EXITED');
    });

    it('forwards a port of the pod (port-forward over SPDY)', async () => {
      const pod = await runPod();
      await runContainer(pod, { command: [] }, HTTPD);
      const url = (await c.rt<{ url: string }>('PortForward', { podSandboxId: pod.id, port: [80] })).url;
      const client = await spdyConnect(url, ['portforward.k8s.io']);
      let answer = '';
      await waitUntil('the forwarded web server', async () => {
        const r = await spdyForward(client, 80, String(Date.now()), 'GET / HTTP/1.0\r\n\r\n');
        answer = r.data.toString();
        return /^HTTP\/1\.[01] 200 /.test(answer);
      });
      expect(answer).toContain('hcr-test httpd OK');
      client.socket.destroy();
    });

    it('forwards a port of a host-network pod', async () => {
      const port = await freePort();
      const ns = namespaces({ network: 'NODE' });
      const pod = await runPod(ns.pod);
      await runContainer(pod, { command: ['httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', '/etc'], ...ns.container });
      const url = (await c.rt<{ url: string }>('PortForward', { podSandboxId: pod.id, port: [port] })).url;
      const client = await spdyConnect(url, ['portforward.k8s.io']);
      let answer = '';
      await waitUntil('the forwarded host-network server', async () => {
        answer = (await spdyForward(client, port, String(Date.now()), 'GET /passwd HTTP/1.0\r\n\r\n')).data.toString();
        return /^HTTP\/1\.[01] 200 /.test(answer);
      });
      expect(answer).toContain('root:x:0:0');
      client.socket.destroy();
    });
  });

  describe('image service', () => {
    it('resolves an image by name:tag, name@digest and ID (with or without sha256:); a digest pull has no tags', async () => {
      const digest = await deriveImage(DERIVED_REPO, 'refs', { marker: 'refs' });
      const byTag = `${REGISTRY}/${DERIVED_REPO}:refs`;
      const byDigest = `${REGISTRY}/${DERIVED_REPO}@${digest}`;
      cleanups.push(() => void c.img('RemoveImage', { image: { image: byDigest } }).catch(() => undefined));

      const pulled = await c.pull(byDigest);
      const first = (await c.img<{ image: Image }>('ImageStatus', { image: { image: byDigest } })).image;
      expect(first.id).toBe(pulled.imageRef);
      expect(first.repoTags).toEqual([]);
      expect(first.repoDigests).toEqual([byDigest]);

      await c.pull(byTag);
      const status = (await c.img<{ image: Image }>('ImageStatus', { image: { image: byTag } })).image;
      expect(status.id).toBe(pulled.imageRef);
      expect(status.repoTags).toEqual([byTag]);
      expect(status.repoDigests).toEqual([byDigest]);
      expect(Number(status.size)).toBeGreaterThan(0);
      for (const ref of [status.id, status.id.replace(/^sha256:/, ''), byDigest, ...status.repoTags]) {
        expect((await c.img<{ image: Image }>('ImageStatus', { image: { image: ref } })).image, ref).toEqual(status);
      }

      await c.img('RemoveImage', { image: { image: status.id } });
      for (const ref of [byTag, byDigest, status.id]) {
        const after = await c.img<{ image?: Image | null }>('ImageStatus', { image: { image: ref } });
        expect(after.image ?? null, ref).toBeNull();
      }
      // Removing what is not there succeeds (kubelet's image GC relies on it).
      await c.img('RemoveImage', { image: { image: byTag } });
    });

    it('lists one image under three tags and three images under three tags', async () => {
      await deriveImage(DERIVED_REPO, 'same-1', { marker: 'same' });
      await deriveImage(DERIVED_REPO, 'same-2', { marker: 'same' });
      await deriveImage(DERIVED_REPO, 'same-3', { marker: 'same' });
      await deriveImage(DERIVED_REPO, 'diff-1', { marker: 'diff-1' });
      await deriveImage(DERIVED_REPO, 'diff-2', { marker: 'diff-2' });
      const same = ['same-1', 'same-2', 'same-3'].map((t) => `${REGISTRY}/${DERIVED_REPO}:${t}`);
      const diff = [`${REGISTRY}/${DERIVED_REPO}:diff-1`, `${REGISTRY}/${DERIVED_REPO}:diff-2`, BUSYBOX];
      const sameIds = new Set<string>();
      for (const ref of same) sameIds.add((await c.pull(ref)).imageRef);
      const diffIds = new Set<string>();
      for (const ref of diff) diffIds.add((await c.pull(ref)).imageRef);
      expect(sameIds.size).toBe(1);
      expect(diffIds.size).toBe(3);
      const [sameId] = sameIds;
      cleanups.push(() => {
        for (const ref of [sameId, ...diff.slice(0, 2)]) {
          void c.img('RemoveImage', { image: { image: ref } }).catch(() => undefined);
        }
      });

      const images = (await c.img<{ images: Image[] }>('ListImages', {})).images;
      expect([...(images.find((i) => i.id === sameId)?.repoTags ?? [])].sort()).toEqual(same);
      for (const ref of diff) {
        const listed = images.filter((i) => i.repoTags.includes(ref));
        expect(listed, ref).toHaveLength(1);
      }
      const filtered = await c.img<{ images: Image[] }>('ListImages', { filter: { image: { image: same[1] } } });
      expect(filtered.images.map((i) => i.id)).toEqual([sameId]);
    });

    it('reports the image user as a uid or a user name', async () => {
      const cases: { user: string; uid: number | null; username: string }[] = [
        { user: '1002', uid: 1002, username: '' },
        { user: 'www-data', uid: null, username: 'www-data' },
        { user: '1003:1004', uid: 1003, username: '' },
        { user: 'www-data:1004', uid: null, username: 'www-data' },
      ];
      for (const { user, uid, username } of cases) {
        const tag = `user-${user.replace(':', '-')}`;
        await deriveImage(DERIVED_REPO, tag, { user });
        const ref = `${REGISTRY}/${DERIVED_REPO}:${tag}`;
        await c.pull(ref);
        cleanups.push(() => void c.img('RemoveImage', { image: { image: ref } }).catch(() => undefined));
        const image = (await c.img<{ image: Image }>('ImageStatus', { image: { image: ref } })).image;
        // Exactly one of uid and username is set (CRI's Image message).
        expect(image.uid === null || image.uid === undefined ? null : Number(image.uid.value), user).toBe(uid);
        expect(image.username, user).toBe(username);
      }
    });
  });

  describe('several containers in one pod', () => {
    it('execs in each, keeps a log per container and shares the pod network', async () => {
      const pod = await runPod();
      const server = await runContainer(pod, {
        command: ['sh', '-c', 'echo server-started; exec httpd -f -p 8080 -h /etc'],
        logPath: 'server.log',
      });
      const client = await runContainer(pod, {
        command: ['sh', '-c', 'echo client-started; exec sleep 3600'],
        logPath: 'client.log',
      });
      expect((await sh(server, 'echo in-server')).out).toBe('in-server\n');
      expect((await sh(client, 'echo in-client')).out).toBe('in-client\n');
      let page = '';
      await waitUntil('the server over the pod loopback', async () => {
        page = (await sh(client, 'wget -q -O - http://127.0.0.1:8080/passwd')).out;
        return page.includes('root:x:0:0');
      });
      const logOf = (name: string) => readFileSync(join(logDir, name), 'utf8');
      await waitUntil('both logs', async () => /stdout F server-started/.test(logOf('server.log')));
      await waitUntil('both logs', async () => /stdout F client-started/.test(logOf('client.log')));
      expect(logOf('server.log')).not.toContain('client-started');
      expect(logOf('client.log')).not.toContain('server-started');
    });
  });

  describe('namespaces', () => {
    const hostNetNs = () => execFileSync('readlink', ['/proc/self/ns/net'], { encoding: 'utf8' }).trim();

    it('joins the host network namespace only with hostNetwork', async () => {
      const ns = namespaces({ network: 'NODE' });
      const host = await runContainer(await runPod(ns.pod), ns.container);
      expect((await sh(host, 'readlink /proc/self/ns/net')).out.trim()).toBe(hostNetNs());
      const pod = await runContainer(await runPod());
      const podNs = (await sh(pod, 'readlink /proc/self/ns/net')).out.trim();
      expect(podNs).toMatch(/^net:\[\d+\]$/);
      expect(podNs).not.toBe(hostNetNs());
    });

    it('sees host processes only with hostPID', async () => {
      const sleeper = spawn('sleep', ['300'], { stdio: 'ignore' });
      cleanups.push(() => sleeper.kill('SIGKILL'));
      const ns = namespaces({ pid: 'NODE' });
      const hostPid = await runContainer(await runPod(ns.pod), ns.container);
      expect((await sh(hostPid, `cat /proc/${sleeper.pid}/cmdline | tr '\\0' ' '`)).out).toBe('sleep 300 ');
      const own = await runContainer(await runPod());
      expect((await sh(own, `test -e /proc/${sleeper.pid}`)).code).not.toBe(0);
    });

    it('shares SysV IPC with the host only with hostIPC', async () => {
      const made = execFileSync('ipcmk', ['-M', '4096'], { encoding: 'utf8' });
      const shmid = /(\d+)/.exec(made)?.[1] ?? '';
      expect(shmid).not.toBe('');
      cleanups.push(() => execFileSync('ipcrm', ['-m', shmid]));
      const listed = `awk 'NR > 1 { print $2 }' /proc/sysvipc/shm`;
      const ns = namespaces({ ipc: 'NODE' });
      const hostIpc = await runContainer(await runPod(ns.pod), ns.container);
      expect((await sh(hostIpc, listed)).out.split('\n')).toContain(shmid);
      const own = await runContainer(await runPod());
      expect((await sh(own, listed)).out.split('\n')).not.toContain(shmid);
    });

    it('shares one PID namespace per pod with pid POD, and gives each container its own with CONTAINER', async () => {
      const comms = 'cat /proc/[0-9]*/comm';
      const pod = namespaces({ pid: 'POD' });
      const shared = await runPod(pod.pod);
      await runContainer(shared, { command: ['httpd', '-f', '-p', '8080'], ...pod.container });
      const peer = await runContainer(shared, pod.container);
      expect((await sh(peer, comms)).out.split('\n')).toContain('httpd');

      const container = namespaces({ pid: 'CONTAINER' });
      const own = await runPod(container.pod);
      await runContainer(own, { command: ['httpd', '-f', '-p', '8080'], ...container.container });
      const alone = await runContainer(own, container.container);
      expect((await sh(alone, comms)).out.split('\n')).not.toContain('httpd');
      expect((await sh(alone, 'cat /proc/1/comm')).out.trim()).toBe('sleep');
    });
  });

  describe('users and groups', () => {
    it('applies RunAsUser, RunAsGroup, RunAsUserName and SupplementalGroups', async () => {
      const pod = await runPod();
      const ids = 'echo $(id -u) $(id -g) / $(id -G)';
      const asUser = await runContainer(pod, securityContext({ runAsUser: { value: '1234' } }));
      expect((await sh(asUser, 'id -u')).out).toBe('1234\n');
      const asGroup = await runContainer(
        pod,
        securityContext({ runAsUser: { value: '1234' }, runAsGroup: { value: '5678' } }),
      );
      expect((await sh(asGroup, ids)).out).toMatch(/^1234 5678 \//);
      const byName = await runContainer(pod, securityContext({ runAsUsername: 'nobody' }));
      expect((await sh(byName, 'id -u; id -un')).out).toBe('65534\nnobody\n');
      const supplemental = await runContainer(
        pod,
        securityContext({ runAsUser: { value: '1234' }, supplementalGroups: ['4001', '4002'] }),
      );
      const groups = (await sh(supplemental, 'id -G')).out.trim().split(' ');
      expect(groups).toEqual(expect.arrayContaining(['4001', '4002']));
    });

    it("keeps the groups /etc/group gives the image's user and adds SupplementalGroups", async () => {
      const passwd = readFileSync(join(repoRoot, 'test/fixtures/images/busybox/rootfs/etc/passwd'), 'utf8');
      const group = readFileSync(join(repoRoot, 'test/fixtures/images/busybox/rootfs/etc/group'), 'utf8');
      await deriveImage(DERIVED_REPO, 'predefined-group', {
        user: '1000',
        files: {
          'etc/passwd': `${passwd}default-user:x:1000:1000::/tmp:/bin/sh\n`,
          'etc/group': `${group}default-user:x:1000:\nimage-group:x:50000:default-user\n`,
        },
      });
      const ref = `${REGISTRY}/${DERIVED_REPO}:predefined-group`;
      await c.pull(ref);
      cleanups.push(() => void c.img('RemoveImage', { image: { image: ref } }).catch(() => undefined));
      const cid = await runContainer(await runPod(), securityContext({ supplementalGroups: ['4001'] }), ref);
      const groups = (await sh(cid, 'id -u; id -G')).out.trim().split('\n');
      expect(groups[0]).toBe('1000');
      expect(groups[1]?.split(' ')).toEqual(expect.arrayContaining(['1000', '50000', '4001']));
    });

    it('refuses RunAsGroup without RunAsUser', async () => {
      const pod = await runPod();
      await rejectsWith(
        c.create(pod.id, containerConfig(BUSYBOX, securityContext({ runAsGroup: { value: '5678' } })), pod.config),
        status.INVALID_ARGUMENT,
      );
    });
  });

  describe('security context', () => {
    it('masks MaskedPaths and makes ReadonlyPaths read-only', async () => {
      const cid = await runContainer(
        await runPod(),
        securityContext({
          maskedPaths: ['/usr/share/hcr-fixture/README', '/usr/share/hcr-fixture/sub'],
          readonlyPaths: ['/var/tmp'],
        }),
      );
      expect((await sh(cid, 'cat /usr/share/hcr-fixture/README | wc -c')).out.trim()).toBe('0');
      expect((await sh(cid, 'ls -A /usr/share/hcr-fixture/sub')).out).toBe('');
      const write = await sh(cid, 'touch /var/tmp/x');
      expect(write.code).not.toBe(0);
      expect(write.err).toMatch(/Read-only file system/);
      expect((await sh(cid, 'touch /tmp/x && echo ok')).out).toBe('ok\n');
    });

    it('adds ALL capabilities (as many as a privileged container gets) and drops ALL', async () => {
      const caps = async (cid: string, field: 'CapEff' | 'CapBnd') => {
        const hex = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, 'm').exec(
          (await sh(cid, 'cat /proc/self/status')).out,
        )?.[1];
        return BigInt(`0x${hex ?? 'x'}`);
      };
      // Nothing can exceed HCR's own bounding set, which may lack some (CAP_SYS_RESOURCE here).
      const hostBounding = BigInt(
        `0x${/^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]}`,
      );
      const CAP_SYS_ADMIN = 1n << 21n;
      const pod = await runPod();
      const all = await caps(
        await runContainer(pod, securityContext({ capabilities: { addCapabilities: ['ALL'] } })),
        'CapEff',
      );
      const privileged = await caps(await runContainer(pod, securityContext({ privileged: true })), 'CapEff');
      expect(all & CAP_SYS_ADMIN).toBe(CAP_SYS_ADMIN);
      expect(all & ~hostBounding).toBe(0n);
      expect(all).toBe(privileged);
      const none = await runContainer(pod, securityContext({ capabilities: { dropCapabilities: ['ALL'] } }));
      expect(await caps(none, 'CapBnd')).toBe(0n);
      expect(await caps(none, 'CapEff')).toBe(0n);
    });

    it('sets no_new_privs only when NoNewPrivs is true', async () => {
      const pod = await runPod();
      const on = await runContainer(pod, securityContext({ noNewPrivs: true }));
      const off = await runContainer(pod, securityContext({ noNewPrivs: false }));
      expect((await sh(on, 'grep NoNewPrivs /proc/self/status')).out).toMatch(/NoNewPrivs:\s+1/);
      expect((await sh(off, 'grep NoNewPrivs /proc/self/status')).out).toMatch(/NoNewPrivs:\s+0/);
    });

    it('applies RuntimeDefault, Unconfined and Localhost seccomp profiles', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'hcr-seccomp-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      const profile = join(dir, 'block-sethostname.json');
      writeFileSync(
        profile,
        JSON.stringify({
          defaultAction: 'SCMP_ACT_ALLOW',
          syscalls: [{ names: ['sethostname'], action: 'SCMP_ACT_ERRNO' }],
        }),
      );
      const pod = await runPod();
      const withAdmin = (seccomp: Record<string, unknown>) =>
        securityContext({ seccomp, capabilities: { addCapabilities: ['SYS_ADMIN'] } });
      const filterMode = 'grep Seccomp: /proc/self/status';

      const runtimeDefault = await runContainer(pod, securityContext({ seccomp: { profileType: 'RuntimeDefault' } }));
      expect((await sh(runtimeDefault, filterMode)).out).toMatch(/Seccomp:\s+2/);

      const unconfined = await runContainer(pod, withAdmin({ profileType: 'Unconfined' }));
      expect((await sh(unconfined, filterMode)).out).toMatch(/Seccomp:\s+0/);
      expect((await sh(unconfined, 'hostname unconfined-name && hostname')).out).toBe('unconfined-name\n');

      const blocked = await runContainer(pod, withAdmin({ profileType: 'Localhost', localhostRef: profile }));
      expect((await sh(blocked, filterMode)).out).toMatch(/Seccomp:\s+2/);
      const denied = await sh(blocked, 'hostname blocked-name');
      expect(denied.code).not.toBe(0);
      expect(denied.err).toMatch(/Operation not permitted/);

      // The legacy path field: localhost/<path>, and nothing without a known prefix.
      const legacy = await runContainer(
        pod,
        securityContext({
          seccompProfilePath: `localhost/${profile}`,
          capabilities: { addCapabilities: ['SYS_ADMIN'] },
        }),
      );
      expect((await sh(legacy, 'hostname legacy-name')).code).not.toBe(0);
      await rejectsWith(
        c.create(pod.id, containerConfig(BUSYBOX, securityContext({ seccompProfilePath: profile })), pod.config),
        status.INVALID_ARGUMENT,
      );
    });

    it('sets safe and unsafe namespaced sysctls of the pod', async () => {
      const pod = await runPod({
        linux: {
          sysctls: {
            'kernel.shm_rmid_forced': '1',
            'kernel.msgmax': '12345',
            'net.ipv4.ip_local_port_range': '30000 40000',
          },
          securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
        },
      });
      const cid = await runContainer(pod);
      const read =
        'cat /proc/sys/kernel/shm_rmid_forced /proc/sys/kernel/msgmax /proc/sys/net/ipv4/ip_local_port_range';
      expect((await sh(cid, read)).out.split('\n').map((l) => l.replace(/\s+/g, ' '))).toEqual([
        '1',
        '12345',
        '30000 40000',
        '',
      ]);
    });
  });

  describe('port mapping', () => {
    it('publishes a container port on a host port (reached on loopback)', async () => {
      const hostPort = await freePort();
      const pod = await runPod({ portMappings: [{ protocol: 'TCP', containerPort: 80, hostPort }] });
      await runContainer(pod, { command: [] }, HTTPD);
      const body = await httpGetEventually(`http://127.0.0.1:${hostPort}/`);
      expect(body).toContain('hcr-test httpd OK');
    });

    it('serves a container port on the pod IP without a host port', async () => {
      const pod = await runPod({ portMappings: [{ protocol: 'TCP', containerPort: 80 }] });
      await runContainer(pod, { command: [] }, HTTPD);
      const ip = (await c.podStatus(pod.id)).status.network.ip;
      expect(await httpGetEventually(`http://${ip}:80/`)).toContain('hcr-test httpd OK');
    });
  });

  describe('mount propagation', () => {
    /** critest's layout: a bind-mounted source dir with the given propagation, and a dir to mount into it later. */
    const hostLayout = (propagation: 'rprivate' | 'rshared') => {
      const base = mkdtempSync(join(tmpdir(), 'hcr-propagation-'));
      const source = join(base, 'mnt');
      const mountPoint = join(source, 'from-host');
      const flagDir = join(base, 'flag');
      mkdirSync(mountPoint, { recursive: true });
      mkdirSync(flagDir);
      writeFileSync(join(flagDir, 'flag-file'), '');
      execFileSync('mount', ['--rbind', source, source]);
      execFileSync('mount', [`--make-${propagation}`, source]);
      cleanups.push(() => {
        // Which of these are mount points depends on the case; umount skips the others.
        for (const m of [join(source, 'from-container'), mountPoint, source]) {
          spawnSync('umount', ['--lazy', m], { stdio: 'ignore' });
        }
        rmSync(base, { recursive: true, force: true });
      });
      return { source, mountPoint, flagDir };
    };
    const cases = [
      { propagation: 'PROPAGATION_PRIVATE', host: 'rprivate', toContainer: false, toHost: false },
      { propagation: 'PROPAGATION_HOST_TO_CONTAINER', host: 'rshared', toContainer: true, toHost: false },
      { propagation: 'PROPAGATION_BIDIRECTIONAL', host: 'rshared', toContainer: true, toHost: true },
    ] as const;

    for (const { propagation, host, toContainer, toHost } of cases) {
      it(`${propagation}: host → container ${toContainer}, container → host ${toHost}`, async () => {
        const { source, mountPoint, flagDir } = hostLayout(host);
        const pod = await runPod();
        const cid = await runContainer(pod, {
          mounts: [{ hostPath: source, containerPath: source, propagation }],
          ...securityContext({ privileged: true }),
        });
        const mounts = (
          await c.rt<{ status: { mounts: { hostPath: string; propagation: string }[] } }>('ContainerStatus', {
            containerId: cid,
          })
        ).status.mounts;
        expect(mounts).toEqual([expect.objectContaining({ hostPath: source, propagation })]);

        execFileSync('mount', ['--bind', flagDir, mountPoint]);
        const inContainer = (await sh(cid, `ls -A ${mountPoint}`)).out;
        expect(inContainer === 'flag-file\n').toBe(toContainer);

        const fromContainer = join(source, 'from-container');
        const mounted = await sh(cid, `mkdir -p ${fromContainer} && mount --bind /etc ${fromContainer}`);
        expect(mounted.err).toBe('');
        expect(readdirSync(fromContainer).includes('passwd')).toBe(toHost);
      });
    }
  });
});

/** An image as ImageStatus/ListImages return it. */
interface Image {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  size: string;
  uid?: { value: string } | null;
  username: string;
}

/**
 * Pod and container overrides for the given namespace modes (the rest: network
 * POD, pid CONTAINER, ipc POD). Like the kubelet, the modes go into both the
 * pod's and each container's security context.
 */
function namespaces(modes: { network?: string; pid?: string; ipc?: string }) {
  const linux = { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD', ...modes } } };
  return { pod: { linux }, container: { linux } };
}

function sleep(ms: number) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it holds, for services that take a moment to come up. */
async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

/** A TCP port nothing listens on right now. */
async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

/** GETs `url` until it answers 200 and returns the body. */
async function httpGetEventually(url: string): Promise<string> {
  let body = '';
  await waitUntil(url, async () => {
    const res = await new Promise<{ code: number; body: string }>((resolve, reject) => {
      const req = get(url, { timeout: 2000 }, (r) => {
        let data = '';
        r.on('data', (d: Buffer) => (data += d.toString()));
        r.on('end', () => resolve({ code: r.statusCode ?? 0, body: data }));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
    });
    body = res.body;
    return res.code === 200;
  });
  return body;
}

const MANIFEST_TYPES = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
];

const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function registry(path: string, init: RequestInit = {}): Promise<Response> {
  const res = await fetch(`http://${REGISTRY}${path}`, init);
  if (!res.ok) throw new Error(`registry ${init.method ?? 'GET'} ${path}: HTTP ${res.status} ${await res.text()}`);
  return res;
}

async function uploadBlob(repo: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const start = await registry(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  const location = new URL(start.headers.get('location') ?? '', `http://${REGISTRY}`);
  location.searchParams.set('digest', digest);
  await registry(location.pathname + location.search, {
    method: 'PUT',
    body: data,
    headers: { 'Content-Type': 'application/octet-stream' },
  });
  return digest;
}

/** One uncompressed tar of regular files (ustar, root-owned, mtime 0), so equal contents give equal digests. */
function tarOf(files: Readonly<Record<string, string>>): Buffer {
  const blocks: Buffer[] = [];
  for (const [name, text] of Object.entries(files)) {
    const body = Buffer.from(text);
    const header = Buffer.alloc(512);
    const field = (value: string, offset: number, length: number) => header.write(value, offset, length, 'ascii');
    const octal = (n: number, length: number) => n.toString(8).padStart(length - 1, '0');
    field(name, 0, 100);
    field(octal(0o644, 8), 100, 8);
    field(octal(0, 8), 108, 8);
    field(octal(0, 8), 116, 8);
    field(octal(body.length, 12), 124, 12);
    field(octal(0, 12), 136, 12);
    field('        ', 148, 8);
    field('0', 156, 1);
    field('ustar\x0000', 257, 8);
    let sum = 0;
    for (const byte of header) sum += byte;
    field(`${octal(sum, 7)}\0`, 148, 8);
    blocks.push(header, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/**
 * Pushes `REGISTRY/repo:tag`: the busybox test image with its config's User
 * set, a marker label (distinct images), and/or one more layer holding `files`.
 * Done at the registry API level, so the images exist without a build tool.
 */
async function deriveImage(
  repo: string,
  tag: string,
  change: { user?: string; marker?: string; files?: Readonly<Record<string, string>> },
): Promise<string> {
  const [baseRepo, baseTag] = BUSYBOX.slice(REGISTRY.length + 1).split(':') as [string, string];
  const manifest = (await (
    await registry(`/v2/${baseRepo}/manifests/${baseTag}`, { headers: { Accept: MANIFEST_TYPES.join(', ') } })
  ).json()) as {
    mediaType?: string;
    config: { mediaType: string; digest: string; size: number };
    layers: { mediaType: string; digest: string; size: number }[];
  };
  const config = (await (await registry(`/v2/${baseRepo}/blobs/${manifest.config.digest}`)).json()) as {
    config: { User?: string; Labels?: Record<string, string> | null };
    rootfs: { diff_ids: string[] };
    history?: { created_by: string }[];
  };
  for (const layer of manifest.layers) {
    const mount = `/v2/${repo}/blobs/uploads/?mount=${layer.digest}&from=${baseRepo}`;
    const res = await fetch(`http://${REGISTRY}${mount}`, { method: 'POST' });
    if (res.status !== 201) {
      const blob = Buffer.from(await (await registry(`/v2/${baseRepo}/blobs/${layer.digest}`)).arrayBuffer());
      await uploadBlob(repo, blob);
    }
  }
  if (change.user !== undefined) config.config.User = change.user;
  if (change.marker !== undefined) config.config.Labels = { ...config.config.Labels, 'hcr.test.marker': change.marker };
  const layers = [...manifest.layers];
  if (change.files !== undefined) {
    const tar = tarOf(change.files);
    const gz = gzipSync(tar);
    config.rootfs.diff_ids.push(sha256(tar));
    config.history?.push({ created_by: 'conformance-areas.integration.test.ts' });
    layers.push({
      mediaType: manifest.layers[0]?.mediaType ?? 'application/vnd.docker.image.rootfs.diff.tar.gzip',
      digest: await uploadBlob(repo, gz),
      size: gz.length,
    });
  }
  const configBlob = Buffer.from(JSON.stringify(config));
  const newManifest = Buffer.from(
    JSON.stringify({
      ...manifest,
      config: { ...manifest.config, digest: await uploadBlob(repo, configBlob), size: configBlob.length },
      layers,
    }),
  );
  await registry(`/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    body: newManifest,
    headers: { 'Content-Type': manifest.mediaType ?? MANIFEST_TYPES[0] ?? '' },
  });
  return sha256(newManifest);
}
