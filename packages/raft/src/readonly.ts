import type { Message } from './message.ts';
import type { NodeId } from './types.ts';

/** A linearizable read point: once the applied index reaches `index`, reading is safe (§6.4). */
export interface ReadState {
  readonly index: number;
  /** The context given to readIndex(), identifying the request. */
  readonly context: Uint8Array;
}

interface PendingRead {
  readonly index: number;
  readonly request: Message;
  readonly acks: Map<NodeId, boolean>;
}

/** Hex of a context, as a map key (contexts are short, caller-chosen ids). */
function key(context: Uint8Array): string {
  let s = '';
  for (const b of context) s += b.toString(16).padStart(2, '0');
  return s;
}

/**
 * Read-index requests waiting for a quorum of heartbeat acknowledgements (etcd-io/raft
 * read_only.go). The heartbeat that confirms a request also confirms every earlier one.
 */
export class ReadOnly {
  private readonly pending = new Map<string, PendingRead>();
  private queue: string[] = [];

  size(): number {
    return this.queue.length;
  }

  /** Registers a request at read index `index`. A context already pending is ignored. */
  add(index: number, request: Message): void {
    const k = key(request.context);
    if (this.pending.has(k)) return;
    this.pending.set(k, { index, request, acks: new Map() });
    this.queue.push(k);
  }

  /** Records that `id` acknowledged the heartbeat carrying `context`; returns its acks. */
  recvAck(id: NodeId, context: Uint8Array): ReadonlyMap<NodeId, boolean> | null {
    const rs = this.pending.get(key(context));
    if (!rs) return null;
    rs.acks.set(id, true);
    return rs.acks;
  }

  /** Removes and returns the request with `context` and every request queued before it. */
  advance(context: Uint8Array): { index: number; request: Message }[] {
    const k = key(context);
    const at = this.queue.indexOf(k);
    if (at < 0) return [];
    const done = this.queue.slice(0, at + 1);
    this.queue = this.queue.slice(at + 1);
    return done.map((d) => {
      const rs = this.pending.get(d)!;
      this.pending.delete(d);
      return { index: rs.index, request: rs.request };
    });
  }

  lastPendingContext(): Uint8Array | null {
    const last = this.queue[this.queue.length - 1];
    return last === undefined ? null : this.pending.get(last)!.request.context;
  }
}
