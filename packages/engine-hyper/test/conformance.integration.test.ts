/**
 * Core's engine conformance kit against the real hyper engine: real QEMU
 * (TCG), the real guest assets, core's image service and CNI network.
 */
import { engineConformanceSuite } from '@hcr/core/testing';
import { BUSYBOX, closeHarness, Harness } from './helpers.js';

engineConformanceSuite({
  name: 'hyper',
  timeoutSeconds: 90,
  async setup() {
    const h = await Harness.open();
    const engine = await h.engine();
    return {
      engine,
      images: h.images,
      network: h.network,
      workload: {
        image: BUSYBOX,
        longRunning: { command: ['sleep', '3600'], args: [] },
        echo: (text) => ({ command: ['echo', text], args: [] }),
        exitWith: (code) => ({ command: ['sh', '-c', `exit ${code}`], args: [] }),
      },
      leaks: () => h.leaks(),
      async close() {
        await engine.close();
        await closeHarness(h);
      },
    };
  },
});
