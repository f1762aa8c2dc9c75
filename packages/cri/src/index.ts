/**
 * `@hcr/cri`: the CRI v1 adapter that composes HCR's core and engines into the
 * `hcr` shim. Embedders normally use `@hcr/core` directly; this entry exposes
 * the pieces the shim is made of.
 */
export {
  CriServer,
  loadCriProto,
  loadHcrProto,
  protoPath,
  HCR_VERSION,
  type CriServerOptions,
  type StreamingUrls,
} from './server.js';
export { criClient, watchPull, type CriClient, type PullWatch } from './client.js';
export { PullProgressHub, type PullEventView } from './pull-progress.js';
export { compose, loadPlugins, checkRegistration, BUILTIN_ENGINES, type Composition } from './compose.js';
export { loadConfig, parseConfig, DEFAULT_CONFIG_TOML, type HcrConfig } from './config.js';
export { startShim, createLogger, type RunningShim } from './serve.js';
export { grpcCode, toServiceError } from './grpc-status.js';
