/**
 * The replicated state machine of the simulation: a KV map plus the table of applied
 * requests. A request applied twice (the network duplicates a forwarded proposal, a
 * client's retry) takes effect once, as the node's session table does (Raft thesis §6.3).
 *
 * It lives in memory and in the node's @meshkv/storage store: every change it makes is
 * also queued as a storage write (`takeChanges`), KV values as `kv` and the applied-request
 * table as `sessions` (one session record per request id, its result as JSON), so that a
 * restarted node rebuilds it from the store (`recover`) as a real node does.
 */
import type { KvWrite, SessionWrite } from '@meshkv/storage';
import type { KvCall, KvResult } from '../lincheck/kv.ts';

/** What a client proposes; `requestId` is unique per simulated run. */
export interface Command {
  readonly requestId: number;
  readonly call: KvCall;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeCommand(command: Command): Uint8Array {
  return encoder.encode(JSON.stringify(command));
}

export function decodeCommand(data: Uint8Array): Command {
  return JSON.parse(decoder.decode(data)) as Command;
}

/** The storage writes that bring the stored state machine up to date with memory. */
export interface StateMachineWrites {
  readonly kv: KvWrite[];
  readonly sessions: SessionWrite[];
}

export class KvStateMachine {
  private readonly values = new Map<string, string>();
  /** requestId → result of its first application. */
  private readonly results = new Map<number, KvResult>();
  /** Changes made since the last takeChanges(), in order. */
  private changes: StateMachineWrites = { kv: [], sessions: [] };

  /** Applies `command` once; a repeated request id returns the first result unchanged. */
  apply(command: Command): KvResult {
    const earlier = this.results.get(command.requestId);
    if (earlier !== undefined) return earlier;
    const { call } = command;
    let result: KvResult;
    switch (call.kind) {
      case 'put':
        this.values.set(call.key, call.value);
        this.changes.kv.push({ key: call.key, value: encoder.encode(call.value) });
        result = { kind: 'put' };
        break;
      case 'delete':
        result = { kind: 'delete', removed: this.values.delete(call.key) };
        if (result.removed) this.changes.kv.push({ key: call.key, value: null });
        break;
      case 'get':
        throw new Error(`request ${command.requestId}: reads are not proposed`);
    }
    this.results.set(command.requestId, result);
    this.changes.sessions.push(sessionWrite(command.requestId, result));
    return result;
  }

  /** The storage writes for the changes applied since the previous call. */
  takeChanges(): StateMachineWrites {
    const changes = this.changes;
    this.changes = { kv: [], sessions: [] };
    return changes;
  }

  /**
   * The storage writes that replace this state machine, as stored, with `next` (a snapshot
   * from the leader): every key and request of `next`, and deletions of the rest.
   */
  replacementBy(next: KvStateMachine): StateMachineWrites {
    const kv: KvWrite[] = [];
    const sessions: SessionWrite[] = [];
    for (const key of this.values.keys()) if (!next.values.has(key)) kv.push({ key, value: null });
    for (const [key, value] of next.values) kv.push({ key, value: encoder.encode(value) });
    for (const id of this.results.keys())
      if (!next.results.has(id)) sessions.push({ clientId: String(id), record: null });
    for (const [id, result] of next.results) sessions.push(sessionWrite(id, result));
    return { kv, sessions };
  }

  get(key: string): string | null {
    return this.values.get(key) ?? null;
  }

  hasApplied(requestId: number): boolean {
    return this.results.has(requestId);
  }

  /** A canonical text of the whole state, to compare replicas. */
  fingerprint(): string {
    return JSON.stringify([...this.values].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  /** A canonical text of the applied-request table, to compare memory with the store. */
  requestsFingerprint(): string {
    return JSON.stringify([...this.results].sort(([a], [b]) => a - b));
  }

  /** The state a Raft snapshot carries to followers that need one. */
  encode(): Uint8Array {
    return encoder.encode(JSON.stringify({ values: [...this.values], results: [...this.results] }));
  }

  /** The state a snapshot carries; empty data (a bootstrap snapshot) is the empty state. */
  static decode(data: Uint8Array): KvStateMachine {
    const machine = new KvStateMachine();
    if (data.byteLength === 0) return machine;
    const parsed = JSON.parse(decoder.decode(data)) as {
      values: [string, string][];
      results: [number, KvResult][];
    };
    for (const [key, value] of parsed.values) machine.values.set(key, value);
    for (const [id, result] of parsed.results) machine.results.set(id, result);
    return machine;
  }

  /** The state machine a store holds: its KV values (null = absent) and session records. */
  static recover(
    values: ReadonlyMap<string, Uint8Array | null>,
    sessions: ReadonlyMap<string, Uint8Array>,
  ): KvStateMachine {
    const machine = new KvStateMachine();
    for (const [key, value] of values)
      if (value !== null) machine.values.set(key, decoder.decode(value));
    for (const [id, record] of sessions) {
      machine.results.set(Number(id), JSON.parse(decoder.decode(record)) as KvResult);
    }
    return machine;
  }
}

function sessionWrite(requestId: number, result: KvResult): SessionWrite {
  return { clientId: String(requestId), record: encoder.encode(JSON.stringify(result)) };
}
