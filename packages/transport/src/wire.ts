/**
 * The WebRTC mesh's wire format: how frames travel in data channel messages.
 *
 * One data channel message (at most `maxMessageBytes`, 64 KiB by default: Chromium and
 * every Node stack measured here stop at 256 KiB per message) is
 *
 *   u8 version (= WIRE_VERSION), then records back to back until the end:
 *   FRAME     u8 1, u32 length, `length` bytes          a whole frame
 *   CHUNK     u8 2, u32 messageId, u32 chunkIndex, u32 chunkCount, u32 totalLength,
 *             u32 chunkLength, `chunkLength` bytes      one piece of a frame too big for a message
 *   HEARTBEAT u8 3                                      "I am alive" when the link is idle
 *   CLOSE     u8 4                                      the sender closes the link on purpose
 *
 * Integers are big-endian. Frames queued together are packed into as few messages as fit,
 * so many small frames cost one `send`. A frame that does not fit a message alone is cut
 * into chunks of one fixed size (the last one shorter); the channel is ordered and the
 * sender never interleaves chunks of two frames, so a receiver holds at most ONE
 * reassembly per link and requires chunks in order, without gaps.
 *
 * Decoding validates the whole message before delivering anything from it: a malformed
 * message (wrong version, truncated record, unknown kind, a chunk out of sequence, a
 * frame above `maxFrameBytes`) is dropped whole and counted, and any reassembly in
 * progress is abandoned, because continuity is lost.
 */

export const WIRE_VERSION = 1;

enum RecordKind {
  Frame = 1,
  Chunk = 2,
  Heartbeat = 3,
  Close = 4,
}

const VERSION_BYTES = 1;
const FRAME_HEADER_BYTES = 1 + 4;
const CHUNK_HEADER_BYTES = 1 + 4 * 5;
/** The smallest message that can carry a chunk with at least one byte. */
export const MIN_MESSAGE_BYTES = VERSION_BYTES + CHUNK_HEADER_BYTES + 1;

/** A control message: the version byte and one HEARTBEAT record. */
export const HEARTBEAT_MESSAGE = new Uint8Array([WIRE_VERSION, RecordKind.Heartbeat]);
/** A control message: the version byte and one CLOSE record. */
export const CLOSE_MESSAGE = new Uint8Array([WIRE_VERSION, RecordKind.Close]);

/** True if `message` is exactly a heartbeat (all the control channel may carry). */
export function isHeartbeatMessage(message: Uint8Array): boolean {
  return (
    message.length === HEARTBEAT_MESSAGE.length &&
    message[0] === HEARTBEAT_MESSAGE[0] &&
    message[1] === HEARTBEAT_MESSAGE[1]
  );
}

/** Frames waiting to be sent on one link, in order, and the packer that cuts messages. */
export class Outbox {
  private frames: Uint8Array[] = [];
  private head = 0;
  /** Bytes of `frames[head]` already sent as chunks (0 when none). */
  private headOffset = 0;
  private headMessageId = 0;
  private nextMessageId = 1;
  private queuedBytesTotal = 0;
  /**
   * The buffer every message is cut into (allocated at the first message): a data channel
   * copies a message when it is sent, and a fresh buffer per message (off the JavaScript
   * heap past 64 bytes) cost ~1.5 µs at 4 KiB and ~5 µs at 64 KiB, and garbage collections.
   */
  private scratch: Uint8Array | null = null;
  private scratchView: DataView | null = null;

  constructor(private readonly maxMessageBytes: number) {
    if (!Number.isInteger(maxMessageBytes) || maxMessageBytes < MIN_MESSAGE_BYTES) {
      throw new RangeError(`maxMessageBytes must be an integer >= ${MIN_MESSAGE_BYTES}`);
    }
  }

  /** Frames not yet completely handed to the channel. */
  get queuedFrames(): number {
    return this.frames.length - this.head;
  }

  /** Payload bytes not yet handed to the channel. */
  get queuedBytes(): number {
    return this.queuedBytesTotal;
  }

  push(frame: Uint8Array): void {
    this.frames.push(frame);
    this.queuedBytesTotal += frame.length;
  }

  /**
   * Makes a chunked frame that was partly sent start over at its first chunk: the link it
   * went out on was replaced, and the receiver's new link holds no partial frame.
   */
  restartHead(): void {
    this.headOffset = 0;
  }

  /** Forgets every queued frame; returns how many there were. */
  clear(): number {
    const dropped = this.queuedFrames;
    this.frames = [];
    this.head = 0;
    this.headOffset = 0;
    this.queuedBytesTotal = 0;
    return dropped;
  }

  /**
   * Cuts the next message from the queue, or returns undefined when it is empty.
   * `completed` receives the payload size of every frame whose last byte is in it.
   * The message is a view of the outbox's own buffer: valid until the next call (send it,
   * or copy it, before that).
   */
  nextMessage(completed: (frameBytes: number) => void): Uint8Array | undefined {
    if (this.queuedFrames === 0) return undefined;
    const chunkPayloadBytes = this.maxMessageBytes - VERSION_BYTES - CHUNK_HEADER_BYTES;
    // First pass: decide which records go in, so the message is allocated once.
    let size = VERSION_BYTES;
    let index = this.head;
    let offset = this.headOffset;
    const plan: { frame: Uint8Array; chunk: boolean; start: number; length: number }[] = [];
    while (index < this.frames.length) {
      const frame = this.frames[index]!;
      const wholeFits = FRAME_HEADER_BYTES + frame.length <= this.maxMessageBytes - VERSION_BYTES;
      if (wholeFits) {
        if (size + FRAME_HEADER_BYTES + frame.length > this.maxMessageBytes) break;
        size += FRAME_HEADER_BYTES + frame.length;
        plan.push({ frame, chunk: false, start: 0, length: frame.length });
        index += 1;
        continue;
      }
      const length = Math.min(chunkPayloadBytes, frame.length - offset);
      if (size + CHUNK_HEADER_BYTES + length > this.maxMessageBytes) break;
      size += CHUNK_HEADER_BYTES + length;
      plan.push({ frame, chunk: true, start: offset, length });
      offset += length;
      if (offset < frame.length) break; // a full chunk filled the message
      index += 1;
      offset = 0;
    }
    if (this.scratch === null) {
      this.scratch = new Uint8Array(this.maxMessageBytes);
      this.scratchView = new DataView(this.scratch.buffer);
    }
    const message = this.scratch.subarray(0, size);
    const view = this.scratchView!;
    message[0] = WIRE_VERSION;
    let at = VERSION_BYTES;
    for (const piece of plan) {
      if (!piece.chunk) {
        message[at] = RecordKind.Frame;
        view.setUint32(at + 1, piece.length);
        message.set(piece.frame, at + FRAME_HEADER_BYTES);
        at += FRAME_HEADER_BYTES + piece.length;
      } else {
        if (piece.start === 0) this.headMessageId = this.allocateMessageId();
        message[at] = RecordKind.Chunk;
        view.setUint32(at + 1, this.headMessageId);
        view.setUint32(at + 5, piece.start / chunkPayloadBytes);
        view.setUint32(at + 9, Math.ceil(piece.frame.length / chunkPayloadBytes));
        view.setUint32(at + 13, piece.frame.length);
        view.setUint32(at + 17, piece.length);
        message.set(
          piece.frame.subarray(piece.start, piece.start + piece.length),
          at + CHUNK_HEADER_BYTES,
        );
        at += CHUNK_HEADER_BYTES + piece.length;
      }
      if (piece.start + piece.length === piece.frame.length) {
        completed(piece.frame.length);
        this.queuedBytesTotal -= piece.frame.length;
      }
    }
    this.head = index;
    this.headOffset = offset;
    this.compact();
    return message;
  }

  private allocateMessageId(): number {
    const id = this.nextMessageId;
    this.nextMessageId = id === 0xffff_ffff ? 1 : id + 1;
    return id;
  }

  /** Drops consumed entries once they dominate the array (amortized O(1) per frame). */
  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.frames.length) {
      this.frames = this.frames.slice(this.head);
      this.head = 0;
    }
  }
}

/** What one decoded message held, in order. */
export type DecodedRecord =
  | { readonly kind: 'frame'; readonly frame: Uint8Array }
  | { readonly kind: 'heartbeat' }
  | { readonly kind: 'close' };

export type DecodeResult =
  | { readonly ok: true; readonly records: readonly DecodedRecord[] }
  | { readonly ok: false; readonly reason: string };

interface Reassembly {
  readonly messageId: number;
  readonly chunkCount: number;
  readonly buffer: Uint8Array;
  nextIndex: number;
  filledBytes: number;
}

/** Per-link decoder: validates messages and reassembles chunked frames. */
export class Inbox {
  private reassembly: Reassembly | undefined;

  constructor(private readonly maxFrameBytes: number) {}

  /** True while a chunked frame is partly received. */
  get reassembling(): boolean {
    return this.reassembly !== undefined;
  }

  /** Forgets a partial frame (the link was replaced). */
  reset(): void {
    this.reassembly = undefined;
  }

  decode(message: Uint8Array): DecodeResult {
    const result = this.parse(message);
    if (!result.ok) this.reassembly = undefined;
    return result;
  }

  private parse(message: Uint8Array): DecodeResult {
    if (message.length < VERSION_BYTES) return { ok: false, reason: 'empty message' };
    if (message[0] !== WIRE_VERSION) {
      return { ok: false, reason: `unknown wire version ${message[0]}` };
    }
    const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
    const records: DecodedRecord[] = [];
    // A failed message abandons the reassembly (decode), so it can be filled in place.
    let reassembly = this.reassembly;
    let at = VERSION_BYTES;
    while (at < message.length) {
      const kind = message[at];
      if (kind === RecordKind.Heartbeat) {
        records.push({ kind: 'heartbeat' });
        at += 1;
      } else if (kind === RecordKind.Close) {
        records.push({ kind: 'close' });
        at += 1;
      } else if (kind === RecordKind.Frame) {
        if (at + FRAME_HEADER_BYTES > message.length) {
          return { ok: false, reason: 'truncated frame header' };
        }
        const length = view.getUint32(at + 1);
        if (at + FRAME_HEADER_BYTES + length > message.length) {
          return { ok: false, reason: 'truncated frame' };
        }
        if (length > this.maxFrameBytes) return { ok: false, reason: 'frame too large' };
        if (reassembly !== undefined) {
          return { ok: false, reason: 'whole frame inside a chunked frame' };
        }
        const start = at + FRAME_HEADER_BYTES;
        records.push({ kind: 'frame', frame: message.slice(start, start + length) });
        at = start + length;
      } else if (kind === RecordKind.Chunk) {
        if (at + CHUNK_HEADER_BYTES > message.length) {
          return { ok: false, reason: 'truncated chunk header' };
        }
        const messageId = view.getUint32(at + 1);
        const chunkIndex = view.getUint32(at + 5);
        const chunkCount = view.getUint32(at + 9);
        const totalLength = view.getUint32(at + 13);
        const chunkLength = view.getUint32(at + 17);
        const start = at + CHUNK_HEADER_BYTES;
        if (start + chunkLength > message.length) return { ok: false, reason: 'truncated chunk' };
        if (totalLength > this.maxFrameBytes) return { ok: false, reason: 'frame too large' };
        if (chunkCount < 2 || chunkIndex >= chunkCount || chunkLength === 0) {
          return { ok: false, reason: 'bad chunk numbering' };
        }
        if (chunkIndex === 0) {
          if (reassembly !== undefined) return { ok: false, reason: 'chunked frame interrupted' };
          if (chunkCount > totalLength) return { ok: false, reason: 'bad chunk numbering' };
          reassembly = {
            messageId,
            chunkCount,
            buffer: new Uint8Array(totalLength),
            nextIndex: 0,
            filledBytes: 0,
          };
        } else if (
          reassembly === undefined ||
          reassembly.messageId !== messageId ||
          reassembly.chunkCount !== chunkCount ||
          reassembly.buffer.length !== totalLength ||
          reassembly.nextIndex !== chunkIndex
        ) {
          return { ok: false, reason: 'chunk out of sequence' };
        }
        const dest = reassembly.filledBytes;
        if (dest + chunkLength > totalLength) return { ok: false, reason: 'chunk overflows frame' };
        const last = chunkIndex === chunkCount - 1;
        if (last !== (dest + chunkLength === totalLength)) {
          return { ok: false, reason: 'chunk lengths do not add up' };
        }
        reassembly.buffer.set(message.subarray(start, start + chunkLength), dest);
        reassembly.nextIndex = chunkIndex + 1;
        reassembly.filledBytes = dest + chunkLength;
        if (last) {
          records.push({ kind: 'frame', frame: reassembly.buffer });
          reassembly = undefined;
        }
        at = start + chunkLength;
      } else {
        return { ok: false, reason: `unknown record kind ${kind}` };
      }
    }
    this.reassembly = reassembly;
    return { ok: true, records };
  }
}
