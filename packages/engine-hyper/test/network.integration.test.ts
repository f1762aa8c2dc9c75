/**
 * The pod network of a hyper pod: the guest carries the CNI interface's MAC
 * and IP behind a TAP joined to the veth with tc mirred, so a busybox httpd
 * in the VM answers HTTP by pod IP from the host and from another pod's
 * namespace on the same bridge; port-forward reaches it through the agent.
 * The VM is created before it knows the CNI result, as core does it.
 * Traffic goes only to loopback and to the pod IP of the pod made here.
 */
import { randomBytes } from 'node:crypto';
import { Duplex, PassThrough } from 'node:stream';
import type { SandboxRef } from '@hcr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HyperEngine } from '../src/engine.js';
import { run } from '../src/host/run.js';
import { TAP_NAME } from '../src/host/netns.js';
import { closeHarness, eventually, Harness, HTTPD, httpGet, ok, podSpec } from './helpers.js';

describe('hyper engine: pod network', () => {
  let h: Harness;
  let engine: HyperEngine;
  let pod: SandboxRef;
  let podIp: string;
  const clientNs = { id: randomBytes(32).toString('hex'), path: '' };

  beforeAll(async () => {
    h = await Harness.open();
    engine = await h.engine();
    await h.image(HTTPD);
    pod = await h.sandbox();
    podIp = pod.network.ips[0] ?? '';
    // As core runs it: the VM boots knowing only the namespace, then networkReady wires it to the CNI result.
    const netnsOnly = { ...pod.network, ips: [], interfaces: [], gateway: null, cniResult: {} };
    await ok(engine.createSandbox({ ...pod, network: netnsOnly }));
    await ok(engine.networkReady(pod));
    const c = await h.container(pod, HTTPD);
    await ok(engine.createContainer(c));
    await ok(engine.startContainer(c));
  });

  afterAll(async () => {
    // The harness goes even when teardown or the leak check fails, so a failed run leaves nothing.
    try {
      if (clientNs.path !== '') {
        await ok(h.network.detach(clientNs.id, clientNs.path, podSpec({ name: 'client' })));
        await ok(h.network.removeNetns(clientNs.path));
      }
      await ok(engine.stopSandbox(pod, 0));
      const netnsPath = pod.network.netnsPath ?? '';
      // The TAP is gone with the stopped VM, before core tears the namespace down.
      const links = await ok(run(['nsenter', `--net=${netnsPath}`, '--', 'ip', '-j', 'link', 'show']));
      expect((JSON.parse(links.stdout) as { ifname: string }[]).map((l) => l.ifname)).not.toContain(TAP_NAME);
      await h.dropNetwork(pod);
      await ok(engine.removeSandbox(pod));
      await engine.close();
      expect(await h.leaks()).toEqual([]);
    } finally {
      await closeHarness(h);
    }
  });

  it('gives the guest the CNI address and answers HTTP from the host by pod IP', async () => {
    expect(podIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    const body = await eventually(() => httpGet(podIp), 60_000, `HTTP from ${podIp}`);
    expect(body).toContain('hcr-test httpd OK');
  });

  it('answers HTTP from another pod namespace on the same bridge', async () => {
    clientNs.path = await ok(h.network.createNetns(clientNs.id));
    await ok(h.network.attach(clientNs.id, clientNs.path, podSpec({ name: 'client' })));
    const out = await ok(
      run(['nsenter', `--net=${clientNs.path}`, '--', 'curl', '-sS', '--max-time', '10', `http://${podIp}/`]),
    );
    expect(out.stdout).toContain('hcr-test httpd OK');
  });

  it('forwards a port through the agent to 127.0.0.1 in the guest', async () => {
    const toGuest = new PassThrough();
    const fromGuest = new PassThrough();
    const stream = Duplex.from({ readable: toGuest, writable: fromGuest });
    let response = '';
    fromGuest.on('data', (d: Buffer) => (response += d.toString()));
    const forwarded = engine.portForward(pod, 80, stream);
    toGuest.end('GET / HTTP/1.0\r\nHost: localhost\r\n\r\n');
    await ok(forwarded);
    expect(response).toMatch(/^HTTP\/1\.[01] 200/);
    expect(response).toContain('hcr-test httpd OK');

    const refused = await engine.portForward(
      pod,
      81,
      Duplex.from({ readable: new PassThrough(), writable: new PassThrough() }),
    );
    expect(refused.isErr() && refused.error.message).toMatch(/connect to 127\.0\.0\.1:81/);
  });
});
