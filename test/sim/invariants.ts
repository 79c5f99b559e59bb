/**
 * Raft's safety properties (Figure 3 of the paper), checked as the simulation runs:
 * - Election Safety: at most one leader per term.
 * - Log Matching: entries any nodes persisted with the same index and term are identical
 *   (byte for byte).
 * - Leader Completeness: a leader's log holds every entry committed before its term.
 * - State Machine Safety: every node applies the same entry at a given index.
 * A violation throws SimFailure, which stops the seed.
 *
 * One SafetyMonitor watches one Raft group; `GroupMonitors` keeps one per group for a
 * MeshNode cluster (every partition is its own group, with its own terms and indexes).
 */
import type { Entry, NodeId, Storage } from '@meshkv/raft';

/** A broken invariant; `invariant` names it for the report. */
export class SimFailure extends Error {
  override readonly name = 'SimFailure';
  constructor(
    readonly invariant: string,
    /** The message without the invariant's name. */
    readonly detail: string,
  ) {
    super(`${invariant}: ${detail}`);
  }
}

/** Bytes per String.fromCharCode call (its argument count is bounded). */
const CONTENT_CHUNK_BYTES = 4096;

/**
 * An entry's identity beyond index and term: its type and payload, byte for byte (a
 * payload is a binary command: decoding it as text would merge different ones).
 */
export function entryContent(entry: Entry): string {
  let text = `${entry.type}:`;
  for (let at = 0; at < entry.data.length; at += CONTENT_CHUNK_BYTES) {
    text += String.fromCharCode(...entry.data.subarray(at, at + CONTENT_CHUNK_BYTES));
  }
  return text;
}

/** What a leader's log shows the completeness check: a raft Storage's read side. */
export type LogView = Pick<Storage, 'firstIndex' | 'lastIndex' | 'term'>;

export class SafetyMonitor {
  /** term → the node that led it. */
  private readonly leaders = new Map<number, NodeId>();
  /** `${index}:${term}` → content of the entry any node persisted there. */
  private readonly persisted = new Map<string, string>();
  /** index → term and content of the entry applied there (applied ⇒ committed). */
  private readonly applied = new Map<number, { term: number; content: string; by: NodeId }>();
  private maxAppliedIndex = 0;

  /** A node reports it is leader of `term`; `storage` is its log at that moment. */
  onLeader(node: NodeId, term: number, storage: LogView): void {
    const other = this.leaders.get(term);
    if (other !== undefined && other !== node) {
      throw new SimFailure('election safety', `${other} and ${node} both lead term ${term}`);
    }
    this.leaders.set(term, node);
    this.checkCompleteness(node, term, storage);
  }

  /** A node persisted `entries` (before sending anything that depends on them). */
  onPersist(node: NodeId, entries: readonly Entry[]): void {
    for (const entry of entries) {
      const key = `${entry.index}:${entry.term}`;
      const content = entryContent(entry);
      const known = this.persisted.get(key);
      if (known === undefined) this.persisted.set(key, content);
      else if (known !== content) {
        throw new SimFailure(
          'log matching',
          `${node} persisted ${describe(entry)} but another node has ${known} at index ${entry.index} term ${entry.term}`,
        );
      }
    }
  }

  /** A node applied `entry`. */
  onApply(node: NodeId, entry: Entry): void {
    const content = entryContent(entry);
    const known = this.applied.get(entry.index);
    if (known === undefined) {
      this.applied.set(entry.index, { term: entry.term, content, by: node });
      this.maxAppliedIndex = Math.max(this.maxAppliedIndex, entry.index);
    } else if (known.term !== entry.term || known.content !== content) {
      throw new SimFailure(
        'state machine safety',
        `${node} applied ${describe(entry)} at index ${entry.index}, ${known.by} applied term ${known.term} ${known.content}`,
      );
    }
  }

  termsWithLeader(): number {
    return this.leaders.size;
  }

  private checkCompleteness(node: NodeId, term: number, storage: LogView): void {
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    if (last < this.maxAppliedIndex) {
      throw new SimFailure(
        'leader completeness',
        `${node} leads term ${term} with last index ${last}, but index ${this.maxAppliedIndex} was committed`,
      );
    }
    for (let i = first; i <= this.maxAppliedIndex; i++) {
      const committed = this.applied.get(i);
      if (committed !== undefined && committed.term !== storage.term(i)) {
        throw new SimFailure(
          'leader completeness',
          `${node} leads term ${term} with term ${storage.term(i)} at index ${i}, where term ${committed.term} was committed`,
        );
      }
    }
  }
}

/** Payload bytes shown in a report. */
const DESCRIBED_BYTES = 48;

function describe(entry: Entry): string {
  const shown = entryContent({ ...entry, data: entry.data.subarray(0, DESCRIBED_BYTES) });
  const more = entry.data.length > DESCRIBED_BYTES ? `… (${entry.data.length} bytes)` : '';
  return `{index ${entry.index}, term ${entry.term}, ${JSON.stringify(shown)}${more}}`;
}

/** One SafetyMonitor per Raft group, created on first use; failures name the group. */
export class GroupMonitors {
  private readonly monitors = new Map<number, SafetyMonitor>();

  get(group: number): SafetyMonitor {
    let monitor = this.monitors.get(group);
    if (monitor === undefined) {
      monitor = new SafetyMonitor();
      this.monitors.set(group, monitor);
    }
    return monitor;
  }

  onLeader(group: number, node: NodeId, term: number, log: LogView): void {
    this.named(group, () => this.get(group).onLeader(node, term, log));
  }

  onPersist(group: number, node: NodeId, entries: readonly Entry[]): void {
    this.named(group, () => this.get(group).onPersist(node, entries));
  }

  /**
   * Every node applies the same entry at an index. The order within a node is not checked
   * here: a MeshNode applies again from its durable state after a restart, and after a
   * group is reloaded (a snapshot stream that failed), and a snapshot install moves the
   * applied index without applying entries; none of these is visible to the observer.
   */
  onApply(group: number, node: NodeId, entry: Entry): void {
    this.named(group, () => this.get(group).onApply(node, entry));
  }

  /** Terms that had a leader, over all groups. */
  termsWithLeader(): number {
    let terms = 0;
    for (const monitor of this.monitors.values()) terms += monitor.termsWithLeader();
    return terms;
  }

  private named(group: number, check: () => void): void {
    try {
      check();
    } catch (e) {
      if (e instanceof SimFailure) throw new SimFailure(e.invariant, `group ${group}: ${e.detail}`);
      throw e;
    }
  }
}
