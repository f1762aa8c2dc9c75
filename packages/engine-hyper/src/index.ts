import { defineEngine, ENGINE_API_VERSION } from '@hcr/core';
import { hyperConfigSchema, type HyperConfigTable } from './config.js';
import { HyperEngine } from './engine.js';

export { HyperEngine, HYPER_CAPABILITIES, podRoutes } from './engine.js';
export {
  DEFAULT_ASSETS_DIR,
  hyperConfigFields,
  hyperConfigSchema,
  resolveConfig,
  type HyperConfig,
  type HyperConfigTable,
  type KvmSetting,
} from './config.js';
export type { VmDriver, VmHandle, VmSpec, VmNic, VmShare, VmMemoryFile, Accel } from './vm/driver.js';
export { TemplateStore, TEMPLATE_MAC, type TemplateShape, type VmTemplate } from './template.js';
export { QemuDriver, qemuArgs, kernelCmdline } from './vm/qemu.js';
export type { AgentTransport } from './agent/transport.js';
export { UnixSocketTransport } from './agent/transport.js';
export { AgentClient } from './agent/client.js';
export { PROTOCOL_VERSION } from './protocol/wire.gen.js';

/** The hyper engine's registration: `kind = "hyper"` in HCR's config. */
export const registration = defineEngine<HyperConfigTable>({
  apiVersion: ENGINE_API_VERSION,
  kind: 'hyper',
  description: 'every pod in its own QEMU microVM with a guest agent; OCI images unchanged, shared over virtio-9p',
  configSchema: hyperConfigSchema,
  create: (config, context) => HyperEngine.create(config, context),
});

export default registration;
