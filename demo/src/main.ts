/**
 * The demo page (README.md): joins this tab to the cluster as a node (@meshkv/node/browser),
 * wires the console and the fault controls, and refreshes the cluster view once a second
 * from the registry, this node, the other tabs and the Node peers (cluster-view.ts).
 */
import type { NodeStatus } from '@meshkv/node';
import { type BrowserNode, startBrowserNode } from '@meshkv/node/browser';
import {
  clusterView,
  type KnownStatus,
  type RegistryStatus,
  TokenPositions,
} from './cluster-view.ts';
import { type OpKind, RecentOps } from './recent-ops.ts';
import {
  colours,
  escapeHtml,
  groupsTable,
  membersTable,
  movesList,
  nodeLegend,
  opsTable,
  partitionsTable,
  ringSvg,
} from './render.ts';

/** The signaling server's answer to a loopback page (signaling/README.md "HTTP"). */
interface DemoConfig {
  readonly clusterId: string;
  readonly signalingUrl: string;
  readonly token: string;
}

const REFRESH_MS = 1_000;
/** A status not heard again within this is dropped (a closed tab, a stopped peer). */
const STATUS_STALE_MS = 5_000;
/** A peer's /status that takes longer is abandoned for this round. */
const PEER_STATUS_TIMEOUT_MS = 2_000;
/** Node peers polled for their status (the first ones in registry order). */
const MAX_POLLED_PEERS = 32;
/** Statuses of other tabs kept (each tab posts its own once a second). */
const MAX_TAB_STATUSES = 100;
/** Result lines kept in the console. */
const MAX_RESULTS = 50;
/** Characters of a value shown in a result. */
const MAX_SHOWN_VALUE_CHARS = 200;
const LOAD_OPERATIONS = 200;
const LOAD_CONCURRENCY = 8;
const LOAD_KEYS = 50;

type NodeState = 'joining' | 'running' | 'crashed' | 'stopping' | 'leaving' | 'left' | 'failed';

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found as T;
}

const ui = {
  selfLine: element<HTMLParagraphElement>('self-line'),
  crash: element<HTMLButtonElement>('crash'),
  restart: element<HTMLButtonElement>('restart'),
  isolate: element<HTMLButtonElement>('isolate'),
  leave: element<HTMLButtonElement>('leave'),
  openAnother: element<HTMLButtonElement>('open-another'),
  drop: element<HTMLInputElement>('drop'),
  dropValue: element<HTMLOutputElement>('drop-value'),
  faultResult: element<HTMLParagraphElement>('fault-result'),
  form: element<HTMLFormElement>('op-form'),
  op: element<HTMLSelectElement>('op'),
  key: element<HTMLInputElement>('key'),
  value: element<HTMLInputElement>('value'),
  valueField: element<HTMLLabelElement>('value-field'),
  consistency: element<HTMLSelectElement>('consistency'),
  consistencyField: element<HTMLLabelElement>('consistency-field'),
  ack: element<HTMLSelectElement>('ack'),
  ackField: element<HTMLLabelElement>('ack-field'),
  timeout: element<HTMLInputElement>('timeout'),
  load: element<HTMLButtonElement>('load'),
  results: element<HTMLTableSectionElement>('results').querySelector('tbody')!,
  opsTable: element<HTMLDivElement>('ops-table'),
  q: element<HTMLSpanElement>('q'),
  n: element<HTMLSpanElement>('n'),
  ring: element<HTMLElement>('ring'),
  nodeLegend: element<HTMLUListElement>('node-legend'),
  members: element<HTMLDivElement>('members'),
  moves: element<HTMLDivElement>('moves'),
  partitions: element<HTMLDivElement>('partitions'),
  groupsNode: element<HTMLSelectElement>('groups-node'),
  groups: element<HTMLDivElement>('groups'),
};

let browserNode: BrowserNode | null = null;
let selfId: string | undefined;
let nodeState: NodeState = 'joining';
let nodeProblem = '';
let isolated = false;
let registry: RegistryStatus | null = null;
let tokens: TokenPositions | null = null;
const statuses = new Map<string, KnownStatus>();
const peerFetches = new Set<string>();
const recentOps = new RecentOps();
let channel: BroadcastChannel | null = null;
let groupsNodeOptions = '';
let loadRunning = false;

// ---------------------------------------------------------------------------------------
// Start

async function start(): Promise<void> {
  wireControls();
  refreshControls();
  setInterval(() => void refresh(), REFRESH_MS);
  let config: DemoConfig;
  try {
    const answer = await fetch('/demo-config.json', { cache: 'no-store' });
    if (!answer.ok) throw new Error(`/demo-config.json answered ${answer.status}`);
    config = (await answer.json()) as DemoConfig;
  } catch (error) {
    fail(
      `cannot read the cluster configuration (${message(error)}): open the page from the address meshkv start printed, on this machine`,
    );
    return;
  }
  channel = new BroadcastChannel(`meshkv-demo:${config.clusterId}`);
  channel.onmessage = (event: MessageEvent<{ status?: NodeStatus }>) => {
    const status = event.data?.status;
    if (status === undefined || typeof status.nodeId !== 'string' || status.nodeId === selfId)
      return;
    if (!statuses.has(status.nodeId) && statuses.size >= MAX_TAB_STATUSES) return;
    statuses.set(status.nodeId, { status, source: 'another tab', receivedAtMs: performance.now() });
  };
  try {
    // The page's own origin is the signaling server (it served this page).
    browserNode = await startBrowserNode({
      signalingUrl: location.origin,
      token: config.token,
      clusterId: config.clusterId,
    });
    selfId = browserNode.nodeId;
    nodeState = 'running';
    document.title = `meshkv demo · node ${selfId}`;
  } catch (error) {
    fail(`this tab could not join the cluster: ${describeError(error)}`);
    return;
  }
  refreshControls();
  await refresh();
}

function fail(problem: string): void {
  nodeState = 'failed';
  nodeProblem = problem;
  refreshControls();
}

// ---------------------------------------------------------------------------------------
// Fault controls

function wireControls(): void {
  ui.crash.addEventListener('click', () =>
    fault('crashed', async (node) => {
      nodeState = 'stopping';
      // Stopped either way: a crash that failed half-way is still one (Restart is offered).
      await node.crash().finally(() => {
        nodeState = 'crashed';
      });
    }),
  );
  ui.restart.addEventListener('click', () =>
    fault('restarted', async (node) => {
      nodeState = 'joining';
      try {
        await node.restart();
      } catch (error) {
        nodeState = 'crashed';
        throw error;
      }
      node.setIsolated(isolated);
      nodeState = 'running';
    }),
  );
  ui.isolate.addEventListener('click', () =>
    fault(isolated ? 'reconnected to the mesh' : 'isolated from every other node', async (node) => {
      isolated = !isolated;
      node.setIsolated(isolated);
    }),
  );
  ui.leave.addEventListener('click', () =>
    fault('left the cluster: its replicas were handed to other nodes', async (node) => {
      nodeState = 'leaving';
      try {
        await node.leave();
      } finally {
        nodeState = 'left';
        statuses.delete(selfId ?? '');
      }
    }),
  );
  ui.openAnother.addEventListener('click', () => {
    window.open(location.href, '_blank', 'noopener');
  });
  ui.drop.addEventListener('input', () => {
    ui.dropValue.value = `${ui.drop.value} %`;
    browserNode?.setDropPercent(Number(ui.drop.value));
  });
  ui.drop.addEventListener('change', () => {
    ui.faultResult.textContent = `Dropping ${ui.drop.value} % of this node's messages.`;
  });
  ui.op.addEventListener('change', refreshConsoleFields);
  refreshConsoleFields();
  ui.form.addEventListener('submit', (event) => {
    event.preventDefault();
    void runFromForm();
  });
  ui.load.addEventListener('click', () => void runLoad());
}

async function fault(done: string, action: (node: BrowserNode) => Promise<void>): Promise<void> {
  const node = browserNode;
  if (node === null) return;
  ui.faultResult.textContent = 'Working…';
  refreshControls();
  try {
    await action(node);
    ui.faultResult.textContent = `This node ${done}.`;
  } catch (error) {
    ui.faultResult.textContent = `Failed: ${describeError(error)}`;
  }
  refreshControls();
  await refresh();
}

/** Replicas this tab's node still hosts (a leave ends when none is left). */
function replicasHere(): number {
  return browserNode === null ? 0 : browserNode.node.status().groups.length;
}

function refreshControls(): void {
  const running = nodeState === 'running';
  ui.crash.disabled = !running;
  ui.restart.disabled = nodeState !== 'crashed';
  ui.isolate.disabled = !running;
  ui.isolate.setAttribute('aria-pressed', String(isolated));
  ui.isolate.textContent = isolated ? 'Reconnect' : 'Isolate';
  ui.leave.disabled = !running;
  ui.drop.disabled = !running;
  ui.load.disabled = !running || loadRunning;
  const id = selfId === undefined ? '' : ` <code>${escapeHtml(selfId)}</code>`;
  const what: Record<NodeState, string> = {
    joining: 'joining the cluster…',
    running: isolated ? 'running, isolated from the mesh' : 'running',
    crashed: 'crashed (its data is kept: Restart brings it back)',
    stopping: 'stopping…',
    leaving: `leaving: handing its replicas to other nodes (${replicasHere()} still here)…`,
    left: 'left the cluster (open another node to join again)',
    failed: escapeHtml(nodeProblem),
  };
  const line = `This tab is node${id}: <strong class="node-${nodeState}">${what[nodeState]}</strong>`;
  // A live region: rewritten only when it changes, or screen readers repeat it every second.
  if (ui.selfLine.innerHTML !== line) ui.selfLine.innerHTML = line;
}

function refreshConsoleFields(): void {
  const op = ui.op.value as OpKind;
  ui.valueField.hidden = op !== 'put';
  ui.ackField.hidden = op !== 'put';
  ui.consistencyField.hidden = op !== 'get';
}

// ---------------------------------------------------------------------------------------
// Console

interface OpOutcome {
  readonly text: string;
  readonly latencyMs: number;
  readonly error: string | null;
}

async function runOp(
  kind: OpKind,
  key: string,
  value: string,
  options: { ack: string; consistency: string; deadlineMs: number },
): Promise<OpOutcome> {
  const node = browserNode;
  const startedMs = performance.now();
  let text: string;
  let error: string | null = null;
  try {
    if (node === null || nodeState !== 'running') {
      throw Object.assign(new Error(`this tab's node is ${nodeState}`), { code: 'NOT_RUNNING' });
    }
    const mesh = node.node;
    if (kind === 'put') {
      text = String(
        await mesh.put(key, value, {
          ack: options.ack === 'all' ? 'all' : 'majority',
          deadlineMs: options.deadlineMs,
        }),
      );
    } else if (kind === 'get') {
      const got = await mesh.get(key, {
        consistency: options.consistency === 'local' ? 'local' : 'linearizable',
        deadlineMs: options.deadlineMs,
      });
      text = got === null ? 'null (no value)' : shownValue(got);
    } else {
      const removed = await mesh.delete(key, { deadlineMs: options.deadlineMs });
      text = removed ? 'true (removed)' : 'false (there was none)';
    }
  } catch (caught) {
    error = errorCode(caught);
    text = describeError(caught);
  }
  const latencyMs = performance.now() - startedMs;
  recentOps.add({ kind, endedAtMs: performance.now(), latencyMs, error });
  return { text, latencyMs, error };
}

async function runFromForm(): Promise<void> {
  const kind = ui.op.value as OpKind;
  const key = ui.key.value;
  const timeout = Number(ui.timeout.value);
  const options = {
    ack: ui.ack.value,
    consistency: ui.consistency.value,
    deadlineMs: Number.isInteger(timeout) && timeout > 0 ? timeout : 5_000,
  };
  const outcome = await runOp(kind, key, ui.value.value, options);
  const what =
    kind === 'put'
      ? `put ${key} = ${ui.value.value}${options.ack === 'all' ? ' (ack all)' : ''}`
      : kind === 'get'
        ? `get ${key}${options.consistency === 'local' ? ' (local)' : ''}`
        : `delete ${key}`;
  const row = document.createElement('tr');
  row.className = outcome.error === null ? 'ok' : 'error';
  row.innerHTML = `<td><code>${escapeHtml(clip(what))}</code></td><td class="result">${
    outcome.error === null ? '' : '<span class="error-code">error</span> '
  }${escapeHtml(outcome.text)}</td><td>${outcome.latencyMs.toFixed(1)} ms</td>`;
  ui.results.prepend(row);
  while (ui.results.rows.length > MAX_RESULTS) ui.results.deleteRow(-1);
  renderOps();
}

/** LOAD_OPERATIONS operations, half puts and half linearizable gets, LOAD_CONCURRENCY at a time. */
async function runLoad(): Promise<void> {
  if (loadRunning) return;
  loadRunning = true;
  refreshControls();
  let next = 0;
  let failed = 0;
  const worker = async () => {
    while (next < LOAD_OPERATIONS && nodeState === 'running') {
      const i = next++;
      const key = `load-${i % LOAD_KEYS}`;
      const outcome = await runOp(i % 2 === 0 ? 'put' : 'get', key, `value ${i}`, {
        ack: 'majority',
        consistency: 'linearizable',
        deadlineMs: 5_000,
      });
      if (outcome.error !== null) failed++;
      if (i % 20 === 0) renderOps();
    }
  };
  ui.faultResult.textContent = `Load burst: ${LOAD_OPERATIONS} operations…`;
  await Promise.all(Array.from({ length: LOAD_CONCURRENCY }, worker));
  ui.faultResult.textContent = `Load burst done: ${next} operations, ${failed} failed.`;
  loadRunning = false;
  refreshControls();
  renderOps();
}

function shownValue(bytes: Uint8Array): string {
  const text = new TextDecoder().decode(bytes);
  return `"${clip(text)}"${bytes.byteLength > MAX_SHOWN_VALUE_CHARS ? ` (${bytes.byteLength} bytes)` : ''}`;
}

function clip(text: string): string {
  return text.length > MAX_SHOWN_VALUE_CHARS ? `${text.slice(0, MAX_SHOWN_VALUE_CHARS)}…` : text;
}

function errorCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'ERROR';
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** `CODE: message`, as the CLI prints errors. */
function describeError(error: unknown): string {
  return `${errorCode(error)}: ${message(error)}`;
}

// ---------------------------------------------------------------------------------------
// Cluster view

async function refresh(): Promise<void> {
  const nowMs = performance.now();
  if (browserNode !== null && nodeState === 'running' && selfId !== undefined) {
    const status = browserNode.node.status();
    statuses.set(selfId, { status, source: 'this tab', receivedAtMs: nowMs });
    channel?.postMessage({ status });
  } else if (selfId !== undefined) {
    statuses.delete(selfId);
  }
  for (const [nodeId, known] of statuses) {
    if (nowMs - known.receivedAtMs > STATUS_STALE_MS) statuses.delete(nodeId);
  }
  try {
    const answer = await fetch('/status', { cache: 'no-store' });
    if (answer.ok) registry = (await answer.json()) as RegistryStatus;
  } catch {
    // The signaling server is away: the data plane goes on; the view keeps the last registry.
  }
  if (registry !== null) pollPeers(registry);
  render();
}

function pollPeers(current: RegistryStatus): void {
  const peers = current.members
    .filter((m) => m.state === 'up' && m.httpAddress !== undefined && m.nodeId !== selfId)
    .slice(0, MAX_POLLED_PEERS);
  for (const peer of peers) {
    if (peerFetches.has(peer.nodeId)) continue;
    peerFetches.add(peer.nodeId);
    fetch(`${peer.httpAddress}/status`, {
      cache: 'no-store',
      signal: AbortSignal.timeout(PEER_STATUS_TIMEOUT_MS),
    })
      .then(async (answer) => {
        if (!answer.ok) return;
        const status = (await answer.json()) as NodeStatus;
        if (status.nodeId !== peer.nodeId) return;
        statuses.set(peer.nodeId, {
          status,
          source: 'HTTP /status',
          receivedAtMs: performance.now(),
        });
      })
      .catch(() => {
        // Down or slow: its status goes stale and drops out of the view.
      })
      .finally(() => peerFetches.delete(peer.nodeId));
  }
}

function render(): void {
  refreshControls();
  renderOps();
  if (registry === null) return;
  const view = clusterView(registry, statuses);
  if (tokens === null) tokens = new TokenPositions(view.tokensPerNode);
  const colour = colours(view);
  ui.q.textContent = String(view.partitions);
  ui.n.textContent = String(view.replicationFactor);
  ui.ring.innerHTML = ringSvg(view, tokens, colour);
  ui.nodeLegend.innerHTML = nodeLegend(view, selfId, colour);
  ui.members.innerHTML = membersTable(view, selfId, colour);
  ui.moves.innerHTML = movesList(view);
  ui.partitions.innerHTML = partitionsTable(view, colour);
  // The node choice is rebuilt only when the known nodes change (keeps the selection).
  const known = [...statuses.keys()].sort();
  const options = known
    .map(
      (id) =>
        `<option value="${escapeHtml(id)}">${escapeHtml(id)}${id === selfId ? ' (this tab)' : ''}</option>`,
    )
    .join('');
  if (options !== groupsNodeOptions) {
    const chosen = ui.groupsNode.value || selfId || '';
    ui.groupsNode.innerHTML = options;
    groupsNodeOptions = options;
    if (known.includes(chosen)) ui.groupsNode.value = chosen;
  }
  ui.groups.innerHTML = groupsTable(statuses.get(ui.groupsNode.value)?.status, colour);
}

function renderOps(): void {
  ui.opsTable.innerHTML = opsTable(recentOps.summary(performance.now()));
}

ui.groupsNode.addEventListener('change', render);
void start();
