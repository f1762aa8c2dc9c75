import { runPodAndReadLogs } from './run-pod.js';

// Usage: pnpm start [IMAGE]   (default: the local test busybox)
const image = process.argv[2] ?? '127.0.0.1:5000/hcr-test/busybox:latest';
const r = await runPodAndReadLogs({ image });
console.log(`pod IP ${r.podIp}, exit code ${r.exitCode}`);
for (const line of r.lines) console.log(`log: ${line}`);
