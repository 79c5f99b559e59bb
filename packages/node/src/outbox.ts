/**
 * Everything this node has for its peers in one loop round, one FrameBuilder per peer:
 * Raft messages and node records are added as the round produces them and leave together
 * in `flush()`, so one round costs one frame per peer (split at the transport's frame
 * bound; two when a leader's appends leave before the round's write, loop.ts). Raft
 * messages that promise durable state are only added after the batch that holds that
 * state is durable (the loop's order), so flushing never sends a promise early.
 */
import type { GroupId, Message, NodeId } from '@meshkv/raft';
import type { Transport } from '@meshkv/transport';
import { nodeOfReplica } from './replica-id.ts';
import { type DirectRecord, FrameBuilder, maxRecordBytes, type RelayedRecord } from './wire.ts';

/**
 * The node to send a copy of a record for `to` through, while the link to `to` is down
 * (README "One missing link"), or null to send it straight only; `group` is the record's
 * group or partition (-1 for none). Called per record: it must be cheap when every link
 * is up.
 */
export type RelayChoice = (to: NodeId, group: GroupId) => NodeId | null;

export class Outbox {
  private readonly builders = new Map<NodeId, FrameBuilder>();
  /** Peers with something added since the last flush. */
  private readonly dirty = new Set<NodeId>();
  private readonly transport: Transport;
  private readonly maxFrameBytes: number;
  private readonly relayVia: RelayChoice;
  /** Frames handed to the transport so far (status, the benchmark). */
  framesSent = 0;
  /** Records of this node also sent through a relay (status). */
  recordsRelayed = 0;
  /** Records this node forwarded for their authors (status). */
  recordsForwarded = 0;

  constructor(transport: Transport, maxFrameBytes: number, relayVia: RelayChoice = () => null) {
    if (maxFrameBytes < maxRecordBytes + 1) {
      throw new RangeError(
        `the transport's frames (${maxFrameBytes} bytes) cannot carry the node's largest record (${maxRecordBytes} bytes)`,
      );
    }
    this.transport = transport;
    this.maxFrameBytes = maxFrameBytes;
    this.relayVia = relayVia;
  }

  /** Whether anything waits for `flush`. */
  get pending(): boolean {
    return this.dirty.size > 0;
  }

  /**
   * A Raft message goes to the node of its replica (replica-id.ts). While a link is down,
   * a copy of what goes over it goes through a relay too (here and in `record`). The
   * direct one is still sent: sending is what makes the transport dial a failed link
   * again, and a duplicate is taken as a retransmission (Raft, the session table, the
   * streams' sequence numbers).
   */
  raft(message: Message): void {
    const to = nodeOfReplica(message.to);
    this.builder(to).addRaft(message);
    const via = this.relayVia(to, message.groupId);
    if (via !== null) this.relay(via, to, { kind: 'raft', message });
  }

  record(to: NodeId, record: DirectRecord): void {
    this.builder(to).add(record);
    const group =
      record.kind === 'request' ? record.partition : 'group' in record ? record.group : -1;
    const via = this.relayVia(to, group);
    if (via !== null) this.relay(via, to, record);
  }

  /** Forwards a record its author relayed through this node (one hop, never again). */
  forward(relayed: RelayedRecord): void {
    this.builder(relayed.target).add(relayed);
    this.recordsForwarded++;
  }

  private relay(via: NodeId, target: NodeId, record: DirectRecord): void {
    const author = this.transport.localId;
    this.builder(via).add({ kind: 'relayed', author, target, record });
    this.recordsRelayed++;
  }

  /** Hands every peer's frames to the transport (never re-entrantly: handlers run later). */
  flush(): void {
    for (const peer of this.dirty) {
      const builder = this.builders.get(peer);
      if (builder === undefined) continue;
      for (const frame of builder.takeFrames()) {
        this.transport.send(peer, frame);
        this.framesSent++;
      }
    }
    this.dirty.clear();
  }

  /** Drops what was queued for `peer` and its builder (the peer left the cluster). */
  forget(peer: NodeId): void {
    this.builders.delete(peer);
    this.dirty.delete(peer);
  }

  private builder(peer: NodeId): FrameBuilder {
    let builder = this.builders.get(peer);
    if (builder === undefined) {
      builder = new FrameBuilder(this.maxFrameBytes);
      this.builders.set(peer, builder);
    }
    this.dirty.add(peer);
    return builder;
  }
}
