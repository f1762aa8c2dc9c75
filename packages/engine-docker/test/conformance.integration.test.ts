import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CniNetworkManager, OciImageService, silentLogger } from '@hcr/core';
import { engineConformanceSuite } from '@hcr/core/testing';
import registration from '../src/index.js';
import { BUSYBOX, leftovers } from './helpers.js';

const run = promisify(execFile);

// Core's conformance kit against the real engine, with core's real image service (images reach dockerd as
// `docker save` archives when dockerd lacks them) and the real CNI network manager (pods on the default bridge).
engineConformanceSuite({
  name: 'docker',
  timeoutSeconds: 60,
  setup: async () => {
    // Not under /tmp: the image store's snapshots need a filesystem that is not overlayfs.
    const dir = await mkdtemp('/var/tmp/hcr-docker-conformance-');
    const images = (await OciImageService.open({ root: join(dir, 'images'), logger: silentLogger }))._unsafeUnwrap();
    const network = new CniNetworkManager({ netnsDir: join(dir, 'netns'), cacheDir: join(dir, 'cni') });
    const config = registration.configSchema.parse({});
    if (!config.ok) throw new Error(config.error);
    const name = `docker-conformance-${randomBytes(3).toString('hex')}`;
    const engine = (
      await registration.create(config.value, {
        name,
        logger: silentLogger,
        runtimeDir: join(dir, 'run'),
        stateDir: join(dir, 'state'),
        images,
      })
    )._unsafeUnwrap();
    return {
      engine,
      images,
      network,
      workload: {
        image: BUSYBOX,
        longRunning: { command: ['sleep', '3600'], args: [] },
        echo: (text: string) => ({ command: ['echo', text], args: [] }),
        exitWith: (code: number) => ({ command: ['sh', '-c', `exit ${code}`], args: [] }),
      },
      leaks: async () => (await leftovers(name)).map((c) => `docker container ${c}`),
      async close() {
        await engine.close();
        // The network manager makes its netns dir a mount point (as `ip netns` does).
        await run('umount', ['--lazy', join(dir, 'netns')]).catch(() => undefined);
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
});
