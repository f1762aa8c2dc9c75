import { defineConfig } from 'vitest/config';

// Unit tests (`*.test.ts`) use fakes and need no root; integration tests
// (`*.integration.test.ts`) drive real dockerd, QEMU, CNI and the gRPC socket,
// one file at a time (`pnpm test:integration` passes --no-file-parallelism):
// on 2 cores, parallel VM boots only make every file slower and flakier.
export default defineConfig({
  // Workspace packages resolve to their TypeScript sources; vitest runs tests
  // as SSR modules, which read `ssr.resolve` rather than `resolve`.
  resolve: { conditions: ['hcr-source'] },
  ssr: { resolve: { conditions: ['hcr-source'] } },
  test: {
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts', 'packages/*/test/**/*.test.ts', 'examples/*/test/**/*.test.ts'],
          exclude: ['**/*.integration.test.ts', '**/node_modules/**'],
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: [
            'packages/*/test/**/*.integration.test.ts',
            'examples/*/test/**/*.integration.test.ts',
            'test/**/*.integration.test.ts',
          ],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          pool: 'forks',
        },
      },
    ],
  },
});
