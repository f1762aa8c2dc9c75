export { CniNetworkManager, type CniNetworkManagerOptions, NETWORK_NOT_READY_REASON } from './manager.js';
export { DEFAULT_CNI_OPTIONS, resolveCniOptions } from './options.js';
export { networkLeaks, type NetworkLeaks } from './leaks.js';
export {
  type NetworkConfList,
  type PluginConf,
  loadNetworkConfig,
  parseNetworkConfig,
  readNetworkConfigs,
} from './config.js';
export {
  type ConnectTapOptions,
  type PodInterfaceLink,
  type TapConnection,
  type TapLinkOptions,
  connectTapToPodInterface,
  disconnectTapFromPodInterface,
  netnsLinkNames,
  podInterfaceLink,
} from './tap.js';
