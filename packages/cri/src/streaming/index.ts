// The Kubernetes streaming server (exec, attach, port-forward) of the CRI shim.
export { StreamingServer } from './server.js';
export type { StreamingServerOptions, ExecUrlRequest, AttachUrlRequest, PortForwardUrlRequest } from './server.js';
export type { StreamingBackend } from './backend.js';
