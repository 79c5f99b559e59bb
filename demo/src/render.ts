/**
 * HTML of the read-only panels (members, partitions, groups, moves, recent operations, the
 * ring), as strings from the view: every text from the cluster goes through `escape`.
 * The panels are replaced whole on each refresh; the controls never are (focus stays).
 */
import type { GroupStatus, NodeStatus } from '@meshkv/node';
import type { ClusterView, MemberRow, PartitionRow, TokenPositions } from './cluster-view.ts';
import type { OpSummary } from './recent-ops.ts';

/** Distinct on light backgrounds, readable as fills; a node's colour is by registry order. */
const PALETTE = [
  '#1f77b4',
  '#d62728',
  '#2ca02c',
  '#9467bd',
  '#ff7f0e',
  '#17becf',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#393b79',
  '#637939',
];
const UNKNOWN_COLOUR = '#d0d0d0';
const MOVING_COLOUR = '#f0a000';

export function escapeHtml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

/** Node id → colour, by the member's index in the registry (the same in every tab). */
export function colours(view: ClusterView): Map<string, string> {
  const map = new Map<string, string>();
  view.members.forEach((m, i) => {
    map.set(m.nodeId, PALETTE[i % PALETTE.length]!);
  });
  return map;
}

function swatch(colour: string | undefined): string {
  return `<span class="swatch" style="background:${colour ?? UNKNOWN_COLOUR}" aria-hidden="true"></span>`;
}

function nodeName(nodeId: string, selfId: string | undefined, colour: Map<string, string>): string {
  const self = nodeId === selfId ? ' <span class="badge">this tab</span>' : '';
  return `${swatch(colour.get(nodeId))}<code>${escapeHtml(nodeId)}</code>${self}`;
}

function list(ids: readonly string[] | undefined): string {
  if (ids === undefined) return '<span class="muted">?</span>';
  if (ids.length === 0) return '<span class="muted">–</span>';
  return ids.map((id) => `<code>${escapeHtml(id)}</code>`).join(', ');
}

function count(value: number | undefined): string {
  return value === undefined ? '<span class="muted">?</span>' : String(value);
}

export function membersTable(
  view: ClusterView,
  selfId: string | undefined,
  colour: Map<string, string>,
): string {
  if (view.members.length === 0) return '<p class="muted">No members yet.</p>';
  const rows = view.members.map((m: MemberRow) => {
    const state = `<span class="state state-${m.state}">${m.state}</span>${
      m.state === 'up' && !m.connected ? ' <span class="muted">(not connected)</span>' : ''
    }`;
    return `<tr><th scope="row">${nodeName(m.nodeId, selfId, colour)}</th><td>${
      m.kind === 'browser' ? 'browser tab' : 'Node.js process'
    }</td><td>${state}</td><td>${m.placed}</td><td>${count(m.hosted)}</td><td>${count(
      m.leading,
    )}</td><td>${count(m.movesInProgress)}</td><td>${m.source ?? '<span class="muted">not known</span>'}</td></tr>`;
  });
  return `<table aria-label="Members"><thead><tr><th scope="col">Node</th><th scope="col">Kind</th><th scope="col">State</th><th scope="col" title="Partitions the ring places on it">Placed</th><th scope="col" title="Replicas it holds now">Hosts</th><th scope="col" title="Groups it leads">Leads</th><th scope="col" title="Replicas it is copying to new nodes">Moves</th><th scope="col" title="Where this page got the node's status">Status from</th></tr></thead><tbody>${rows.join(
    '',
  )}</tbody></table>`;
}

function partitionState(row: PartitionRow): string {
  if (row.voters === undefined) return '<span class="muted">no status known</span>';
  if (!row.moving) return 'in place';
  const parts: string[] = [];
  if (row.learners.length > 0) parts.push(`catching up ${list(row.learners)}`);
  if (row.votersOutgoing.length > 0) parts.push('switching replicas (joint)');
  if (parts.length === 0) parts.push('waiting to move');
  return `<span class="moving">${parts.join('; ')}</span>${row.note ? `<br><span class="muted note">${escapeHtml(row.note)}</span>` : ''}`;
}

export function partitionsTable(view: ClusterView, colour: Map<string, string>): string {
  const rows = view.rows.map((row) => {
    const leader =
      row.leader === undefined
        ? '<span class="muted">?</span>'
        : row.leader === null
          ? '<span class="moving">none (election)</span>'
          : `${swatch(colour.get(row.leader))}<code>${escapeHtml(row.leader)}</code>`;
    return `<tr><th scope="row">${row.partition}</th><td>${leader}</td><td>${count(row.term)}</td><td>${count(
      row.commit,
    )}</td><td>${list(row.voters)}</td><td>${list(row.placement)}</td><td>${partitionState(row)}</td></tr>`;
  });
  return `<table aria-label="Partitions"><thead><tr><th scope="col">Partition</th><th scope="col">Leader</th><th scope="col">Term</th><th scope="col">Commit index</th><th scope="col">Replicas now</th><th scope="col">Ring places on</th><th scope="col">State</th></tr></thead><tbody>${rows.join(
    '',
  )}</tbody></table>`;
}

export function movesList(view: ClusterView): string {
  const active = view.rows.filter(
    (row) => row.learners.length > 0 || row.votersOutgoing.length > 0,
  );
  const waiting = view.rows.filter(
    (row) => row.moving && row.learners.length === 0 && row.votersOutgoing.length === 0,
  );
  const busy = view.members.filter((m) => (m.movesInProgress ?? 0) > 0);
  const unknown = view.rows.filter((row) => row.voters === undefined).length;
  const items = active.map((row) => {
    const steps: string[] = [];
    if (row.learners.length > 0) steps.push(`copying its data to ${list(row.learners)}`);
    if (row.votersOutgoing.length > 0) steps.push('switching to its new replicas');
    return `<li>Partition ${row.partition}: ${steps.join(', ')}</li>`;
  });
  for (const m of busy) {
    items.push(
      // Standalone: this member's own count may be fresher than the partition rows above.
      `<li>Node <code>${escapeHtml(m.nodeId)}</code> is copying ${m.movesInProgress} replica${m.movesInProgress === 1 ? '' : 's'} of partitions it leads</li>`,
    );
  }
  const parts: string[] = [];
  if (items.length > 0) parts.push(`<ul class="moves">${items.join('')}</ul>`);
  if (waiting.length > 0) {
    parts.push(
      `<p>Waiting to move (a leader moves a few at a time): partition${waiting.length === 1 ? '' : 's'} ${waiting
        .map((row) => row.partition)
        .join(', ')}.</p>`,
    );
  }
  if (parts.length === 0) {
    parts.push(
      '<p>None: every partition this page can see has its replicas where the ring places them.</p>',
    );
  }
  if (unknown > 0) {
    parts.push(
      `<p class="muted">${unknown} partition(s) are on nodes whose status this page cannot see.</p>`,
    );
  }
  return parts.join('');
}

export function groupsTable(status: NodeStatus | undefined, colour: Map<string, string>): string {
  if (status === undefined) return '<p class="muted">This node\'s status is not known here.</p>';
  if (status.groups.length === 0) return '<p>It hosts no replica (yet).</p>';
  const rows = status.groups.map((g: GroupStatus) => {
    const flags = [
      g.installingSnapshot ? 'receiving a snapshot' : '',
      g.retiring ? 'removed, retiring' : '',
      g.initialized ? '' : 'no data yet',
      g.learners.length > 0 ? `learners ${g.learners.map(escape).join(', ')}` : '',
    ].filter((f) => f !== '');
    const leader =
      g.leader === null
        ? '<span class="muted">none</span>'
        : `${swatch(colour.get(g.leader))}<code>${escapeHtml(g.leader)}</code>`;
    return `<tr><th scope="row">${g.partition}</th><td><span class="role role-${g.role}">${g.role}</span></td><td>${g.term}</td><td>${leader}</td><td>${g.commit}</td><td>${g.applied}</td><td>${g.logEntries}</td><td>${list(g.voters)}</td><td>${flags.join('; ') || '<span class="muted">–</span>'}</td></tr>`;
  });
  return `<table aria-label="Groups of node ${escapeHtml(status.nodeId)}"><thead><tr><th scope="col">Partition</th><th scope="col">Role</th><th scope="col">Term</th><th scope="col">Leader</th><th scope="col">Commit index</th><th scope="col">Applied index</th><th scope="col">Log size</th><th scope="col">Voters</th><th scope="col">Notes</th></tr></thead><tbody>${rows.join(
    '',
  )}</tbody></table>`;
}

function ms(value: number | undefined): string {
  if (value === undefined) return '<span class="muted">–</span>';
  return value < 100 ? value.toFixed(1) : value.toFixed(0);
}

export function opsTable(summaries: readonly OpSummary[]): string {
  const rows = summaries.map(
    (s) =>
      `<tr><th scope="row">${s.kind}</th><td>${s.count}</td><td>${s.opsPerSecond.toFixed(1)}</td><td>${ms(s.p50Ms)}</td><td>${ms(
        s.p99Ms,
      )}</td><td>${ms(s.maxMs)}</td><td>${s.errors}</td></tr>`,
  );
  return `<table aria-label="Recent operations"><thead><tr><th scope="col">Kind</th><th scope="col">Count</th><th scope="col">Ops/s</th><th scope="col"><abbr title="median latency: half were faster">p50</abbr></th><th scope="col"><abbr title="99th percentile latency: 1 in 100 was slower">p99</abbr></th><th scope="col"><abbr title="the slowest">max</abbr></th><th scope="col">Errors</th></tr></thead><tbody>${rows.join(
    '',
  )}</tbody></table>`;
}

// ---------------------------------------------------------------------------------------
// The ring (SVG in a -110..110 box, 0 at the top, clockwise)

function point(radius: number, turn: number): string {
  const angle = 2 * Math.PI * turn;
  return `${(radius * Math.sin(angle)).toFixed(2)} ${(-radius * Math.cos(angle)).toFixed(2)}`;
}

function band(inner: number, outer: number, from: number, to: number): string {
  return `M${point(outer, from)}A${outer} ${outer} 0 0 1 ${point(outer, to)}L${point(inner, to)}A${inner} ${inner} 0 0 0 ${point(inner, from)}Z`;
}

export function ringSvg(
  view: ClusterView,
  tokens: TokenPositions,
  colour: Map<string, string>,
): string {
  const parts: string[] = ['<desc id="ring-desc">The ring of partitions and node tokens</desc>'];
  const q = view.partitions;
  // A hair of space between partitions, unless there are too many to see it.
  const gap = q <= 128 ? 0.0015 : 0;
  for (const row of view.rows) {
    const from = row.partition / q + gap;
    const to = (row.partition + 1) / q - gap;
    const fill = row.leader ? (colour.get(row.leader) ?? UNKNOWN_COLOUR) : UNKNOWN_COLOUR;
    const title = `Partition ${row.partition}: leader ${row.leader ?? 'unknown'}; replicas ${(row.voters ?? row.placement).join(', ')}`;
    parts.push(
      `<path d="${band(88, 104, from, to)}" fill="${fill}"><title>${escapeHtml(title)}</title></path>`,
    );
    if (row.moving) parts.push(`<path d="${band(84, 87, from, to)}" fill="${MOVING_COLOUR}"/>`);
  }
  parts.push('<circle r="76" fill="none" stroke="#bbb" stroke-width="0.5"/>');
  for (const m of view.members) {
    if (m.state !== 'up') continue;
    const fill = colour.get(m.nodeId) ?? UNKNOWN_COLOUR;
    const dots = tokens.of(m.nodeId).map((turn) => {
      const [x, y] = point(76, turn).split(' ');
      return `<circle cx="${x}" cy="${y}" r="1.4"/>`;
    });
    parts.push(
      `<g fill="${fill}"><title>${escapeHtml(`tokens of ${m.nodeId}`)}</title>${dots.join('')}</g>`,
    );
  }
  parts.push(
    `<text x="0" y="-6" text-anchor="middle" class="ring-label">${q} partitions</text><text x="0" y="8" text-anchor="middle" class="ring-label">${view.replicationFactor} replicas each</text><text x="0" y="22" text-anchor="middle" class="ring-label muted-fill">epoch ${view.epoch}</text>`,
  );
  return parts.join('');
}

export function nodeLegend(
  view: ClusterView,
  selfId: string | undefined,
  colour: Map<string, string>,
): string {
  const items = view.members
    .filter((m) => m.state === 'up')
    .map(
      (m) =>
        `<li>${nodeName(m.nodeId, selfId, colour)} <span class="muted">${m.kind === 'browser' ? 'tab' : 'process'}</span></li>`,
    );
  items.push(`<li>${swatch(UNKNOWN_COLOUR)}leader not known here</li>`);
  items.push(`<li>${swatch(MOVING_COLOUR)}inner mark: replicas moving</li>`);
  return items.join('');
}
