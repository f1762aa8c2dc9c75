import { ENGINE_API_VERSION, defineEngine } from '@hcr/core';
import { gvisorConfigSchema, type GvisorEngineConfig } from './config.js';
import { createGvisorEngine } from './engine.js';

export { GvisorEngine, createGvisorEngine } from './engine.js';
export { gvisorConfigFields, gvisorConfigSchema, type GvisorEngineConfig } from './config.js';
export { pauseProgram } from './pause.js';

/**
 * The gvisor engine's registration: list this package (or its built
 * `dist/index.js`) under `plugins` in HCR's config and add an
 * `[engines.NAME]` table with `kind = "gvisor"`.
 */
export const registration = defineEngine<GvisorEngineConfig>({
  apiVersion: ENGINE_API_VERSION,
  kind: 'gvisor',
  description: 'Pods in gVisor sandboxes (runsc): one user-space kernel per pod, in the pod network namespace HCR made',
  configSchema: gvisorConfigSchema,
  create: createGvisorEngine,
});

export default registration;
