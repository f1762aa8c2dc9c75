import { engineConformanceSuite } from '@hcr/core/testing';
import { gvisorHarness } from './harness.js';

// The plugin author's test suite: core's conformance kit against real runsc, the
// real CNI network manager and the real image service.
engineConformanceSuite({ name: 'gvisor', setup: gvisorHarness, timeoutSeconds: 60 });
