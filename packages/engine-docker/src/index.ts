import { ENGINE_API_VERSION, defineEngine } from '@hcr/core';
import { dockerConfigSchema, type DockerEngineConfig } from './config.js';
import { createDockerEngine } from './engine.js';

export { DockerEngine, createDockerEngine, toContainerStatus } from './engine.js';
export { dockerConfigFields, dockerConfigSchema, DEFAULT_PAUSE_BINARY, type DockerEngineConfig } from './config.js';
export { Label, dockerName } from './labels.js';

/** The docker engine's registration: `engine = "docker"` in HCR's config. */
export const registration = defineEngine<DockerEngineConfig>({
  apiVersion: ENGINE_API_VERSION,
  kind: 'docker',
  description: 'Pods as Docker containers (runc) over the Docker Engine API, in the pod network namespace HCR made',
  configSchema: dockerConfigSchema,
  create: createDockerEngine,
});

export default registration;
