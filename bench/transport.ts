// `pnpm bench transport`: WebRTC mesh figures per link, one JSON line per measurement
// (bench/README.md "## transport"):
//   echo     frames/s and MiB/s for 100 B and 16 KiB frames sent to an echoing peer; each
//            frame crosses the link both ways, so the figure is per direction while the
//            other direction carries the same load;
//   rtt      round-trip p50/p99 of one 100 B frame at a time.
// Links: Node↔Node (this process and a child process, node-datachannel) and
// Chromium↔Chromium (two tabs of one headless Chromium), through the real signaling server.
// Re-runs itself inside the private network namespace (scripts/netns-run.sh).
import { spawnSync } from 'node:child_process';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { SignalingChannel } from '../packages/transport/src/signaling-channel.ts';
import { SignalingClient } from '../packages/transport/src/signaling-client.ts';
import { createNodeWebRtcMesh } from '../packages/transport/src/webrtc.node.ts';
import { Cluster, inPage } from '../packages/transport/test/cluster-harness.ts';
import { MeshProbe } from '../packages/transport/test/mesh-helpers.ts';
import { waitFor } from '../packages/transport/test/support.ts';

if (process.env.MESHKV_NETNS !== '1') {
  const self = fileURLToPath(import.meta.url);
  const netns = fileURLToPath(new URL('../scripts/netns-run.sh', import.meta.url));
  const run = spawnSync(netns, [process.execPath, '--import', 'tsx', self], { stdio: 'inherit' });
  process.exit(run.status ?? 1);
}

const WORKLOADS = [
  { frameBytes: 100, count: 50_000 },
  { frameBytes: 16 * 1024, count: 4_000 },
];
const RTT_SAMPLES = 2_000;
const MIB = 1024 * 1024;

interface Target {
  timeEchoes(frameBytes: number, count: number): Promise<number>;
  roundTrips(frameBytes: number, samples: number): Promise<number[]>;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function measure(link: string, target: Target): Promise<void> {
  await target.roundTrips(100, 100); // warm-up: link up, JIT
  for (const { frameBytes, count } of WORKLOADS) {
    const elapsedMs = await target.timeEchoes(frameBytes, count);
    const framesPerSec = (count / elapsedMs) * 1000;
    console.log(
      JSON.stringify({
        bench: 'transport',
        link,
        kind: 'echo',
        frameBytes,
        frames: count,
        elapsedMs: Math.round(elapsedMs),
        framesPerSec: Math.round(framesPerSec),
        mibPerSec: Number(((framesPerSec * frameBytes) / MIB).toFixed(2)),
      }),
    );
  }
  const times = (await target.roundTrips(100, RTT_SAMPLES)).sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      bench: 'transport',
      link,
      kind: 'rtt',
      frameBytes: 100,
      samples: RTT_SAMPLES,
      p50Ms: Number(percentile(times, 50).toFixed(3)),
      p99Ms: Number(percentile(times, 99).toFixed(3)),
    }),
  );
}

console.log(
  JSON.stringify({
    bench: 'transport',
    cpus: availableParallelism(),
    loadavg1: Number(loadavg()[0]!.toFixed(2)),
    node: process.version,
  }),
);
const cluster = new Cluster();
try {
  await cluster.startSignaling();
  await cluster.startNodePeer('bench-echo');
  const client = await SignalingClient.connect({
    url: cluster.url,
    token: cluster.token,
    clusterId: cluster.clusterId,
    nodeId: 'bench-local',
    kind: 'node',
  });
  const mesh = createNodeWebRtcMesh({
    localId: client.nodeId,
    signal: new SignalingChannel(client),
  });
  const local = new MeshProbe(mesh, false);
  local.sendPatterns('bench-echo', [1]);
  await waitFor(() => local.isUp('bench-echo'), 'Node link up');
  await measure('node-node', {
    timeEchoes: (frameBytes, count) => local.timeEchoes('bench-echo', frameBytes, count),
    roundTrips: (frameBytes, samples) => local.roundTrips('bench-echo', frameBytes, samples),
  });
  await mesh.close();
  await client.close();

  await cluster.openPage('bench-tab-echo', true);
  const page = await cluster.openPage('bench-tab', false);
  await measure('chromium-chromium', {
    timeEchoes: (frameBytes, count) =>
      inPage<number>(page, 'timeEchoes', 'bench-tab-echo', frameBytes, count),
    roundTrips: (frameBytes, samples) =>
      inPage<number[]>(page, 'roundTrips', 'bench-tab-echo', frameBytes, samples),
  });
} finally {
  await cluster.close();
}
