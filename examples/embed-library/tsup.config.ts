import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { main: 'src/main.ts', 'run-pod': 'src/run-pod.ts' },
  format: ['esm'],
  dts: false,
  sourcemap: true,
  clean: true,
  target: 'node20',
});
