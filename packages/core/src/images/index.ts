/** The image service: references, registry access, content store, snapshots. */
export {
  DEFAULT_TAG,
  DOCKER_HUB_DOMAIN,
  formatReference,
  type ImageReference,
  normalizeReference,
  parseReference,
  referenceName,
  withDefaultTag,
} from './reference.js';
export type { RegistryConfig, RegistryHostConfig } from './registry.js';
export { hostPlatform, type Platform, UNIKERNEL_ANNOTATIONS } from './manifest.js';
export { DEFAULT_IMAGE_ROOT, OciImageService, type OciImageServiceOptions } from './service.js';
