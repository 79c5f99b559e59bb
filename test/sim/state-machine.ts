/**
 * The replicated state machine of the simulation: a KV map plus the table of applied
 * requests. A request applied twice (the network duplicates a forwarded proposal, a
 * client's retry) takes effect once, as the node's session table does (Raft thesis §6.3).
 */
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

export class KvStateMachine {
  private readonly values = new Map<string, string>();
  /** requestId → result of its first application. */
  private readonly results = new Map<number, KvResult>();

  /** Applies `command` once; a repeated request id returns the first result unchanged. */
  apply(command: Command): KvResult {
    const earlier = this.results.get(command.requestId);
    if (earlier !== undefined) return earlier;
    const { call } = command;
    let result: KvResult;
    switch (call.kind) {
      case 'put':
        this.values.set(call.key, call.value);
        result = { kind: 'put' };
        break;
      case 'delete':
        result = { kind: 'delete', removed: this.values.delete(call.key) };
        break;
      case 'get':
        throw new Error(`request ${command.requestId}: reads are not proposed`);
    }
    this.results.set(command.requestId, result);
    return result;
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
}
