/**
 * `@hcr/core/testing`: the engine conformance kit and spec builders, for engine
 * packages and plugin authors. Imports vitest, so it is a separate entry point.
 */
export * from './conformance.js';
export * from './specs.js';
