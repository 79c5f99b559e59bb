/**
 * What journal.browser.ts (the page side) and journal-worker.browser.ts (the dedicated
 * worker that owns the OPFS files) say to each other, and the frame kinds both know.
 *
 * A journal generation is one OPFS file of frames. Every frame is
 * `[u32 payload length][u32 crc32 of the rest][u64 seq][payload]`, big-endian, and the
 * payload's first byte is its kind. A generation starts with the base (the whole key space
 * as of `seq`: base pages, then one base end); after that come the writes, one frame each,
 * with strictly increasing seq. A generation without its base end is a rotation cut short.
 * Payloads are codec.ts journal records, so the kind byte is their tag (JournalTag):
 * BasePage (part of the base: key/value pairs), BaseEnd (the base is complete; its seq is
 * the seq the base reflects), Write (one engine write: puts, deletes, range deletes).
 */

export const frameHeaderBytes = 16;
/** Bigger than any batch the store accepts (256 MiB): a longer length is damage. */
export const maxFramePayloadBytes = 320 * 1024 * 1024;

export interface JournalFrame {
  readonly kind: number;
  readonly seq: number;
  readonly payload: Uint8Array;
}

/** What the current generation holds (at open: once a torn tail, if any, is cut off). */
export interface JournalExtent {
  /** The seq its base reflects. */
  readonly baseSeq: number;
  /** The seq of its last frame (= baseSeq when it holds no write yet). */
  readonly lastSeq: number;
  /** File size in bytes, and how many of them are the base. */
  readonly bytes: number;
  readonly baseBytes: number;
}

export type JournalRequest =
  /** Opens (creating) the directory `path` under the OPFS root, picks the newest complete generation, deletes the rest. */
  | { readonly op: 'open'; readonly path: readonly string[] }
  /** Frames of the current generation from byte `offset`, about `maxBytes` of them. */
  | { readonly op: 'read'; readonly offset: number; readonly maxBytes: number }
  /** Appends one write frame and flushes it. */
  | { readonly op: 'append'; readonly seq: number; readonly payload: Uint8Array }
  /** Starts a new generation whose base reflects `seq`. */
  | { readonly op: 'beginGeneration'; readonly seq: number }
  /** Appends a base page to the generation being started. */
  | { readonly op: 'appendBase'; readonly payload: Uint8Array }
  /** Ends the new generation's base, flushes it, and deletes the old generation. */
  | { readonly op: 'endGeneration' }
  | { readonly op: 'close' };

export type JournalResult =
  | { readonly op: 'open'; readonly extent: JournalExtent | null }
  | { readonly op: 'append'; readonly extent: JournalExtent }
  | { readonly op: 'endGeneration'; readonly extent: JournalExtent }
  | {
      readonly op: 'read';
      readonly frames: readonly JournalFrame[];
      /** Where the next read starts, or null at the end of the file. */
      readonly next: number | null;
    }
  | { readonly op: 'beginGeneration' }
  | { readonly op: 'appendBase' }
  | { readonly op: 'close' };

export type JournalReply =
  | { readonly id: number; readonly result: JournalResult }
  /** `corrupt`: the journal holds damage a kill cannot leave (the open refuses it). */
  | { readonly id: number; readonly error: string; readonly corrupt: boolean };
