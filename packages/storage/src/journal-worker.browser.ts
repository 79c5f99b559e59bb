/**
 * The dedicated worker that owns a journal's OPFS files (journal.browser.ts starts it):
 * synchronous access handles, the only OPFS API that appends in place, exist only in
 * dedicated workers. A frame is written with one write() at the end of the file and then
 * flushed, so a kill can only leave the last frame torn; open cuts a tail that fails its
 * length or checksum, and refuses (`corrupt`) a damaged frame that intact frames follow, or
 * an intact frame out of order: neither is what a kill leaves. Requests are handled one at
 * a time, in arrival order.
 */
import { crc32, encodeJournalBaseEnd, FORMAT_VERSION, JournalTag } from './codec.ts';
import {
  frameHeaderBytes,
  type JournalExtent,
  type JournalFrame,
  type JournalReply,
  type JournalRequest,
  type JournalResult,
  maxFramePayloadBytes,
} from './journal-protocol.ts';

/** The part of FileSystemSyncAccessHandle used here (TypeScript's DOM lib lacks it). */
interface SyncHandle {
  read(buffer: Uint8Array, options: { at: number }): number;
  write(buffer: Uint8Array, options: { at: number }): number;
  truncate(size: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
}

interface Generation {
  readonly number: number;
  readonly handle: SyncHandle;
  readonly baseSeq: number;
  size: number;
  baseBytes: number;
  lastSeq: number;
}

const generationName = (n: number) => `gen-${String(n).padStart(16, '0')}`;
const generationPattern = /^gen-(\d{16})$/;

let directory: FileSystemDirectoryHandle | null = null;
let current: Generation | null = null;
/** The generation a rotation is writing, until endGeneration makes it current. */
let starting: Generation | null = null;

/** Damage a kill cannot explain: the page side refuses the open with 'corrupt'. */
class JournalCorruption extends Error {}

function encodeFrame(kind: number, seq: number, payload: Uint8Array): Uint8Array {
  if (payload[0] !== kind) throw new Error(`frame payload does not start with its kind ${kind}`);
  if (payload.length > maxFramePayloadBytes) throw new Error('frame payload too large');
  const frame = new Uint8Array(frameHeaderBytes + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint32(0, payload.length);
  view.setUint32(8, Math.floor(seq / 2 ** 32));
  view.setUint32(12, seq >>> 0);
  frame.set(payload, frameHeaderBytes);
  view.setUint32(4, crc32(frame.subarray(8)));
  return frame;
}

/**
 * The frame at `offset`, or null where the file holds no whole, intact frame (its end, or
 * a torn or damaged tail).
 */
function readFrame(
  handle: SyncHandle,
  offset: number,
  size: number,
): (JournalFrame & { end: number }) | null {
  if (size - offset < frameHeaderBytes) return null;
  const header = new Uint8Array(frameHeaderBytes);
  handle.read(header, { at: offset });
  const view = new DataView(header.buffer);
  const length = view.getUint32(0);
  if (length === 0 || length > maxFramePayloadBytes) return null;
  const end = offset + frameHeaderBytes + length;
  if (end > size) return null;
  const checked = new Uint8Array(8 + length);
  checked.set(header.subarray(8));
  handle.read(checked.subarray(8), { at: offset + frameHeaderBytes });
  if (crc32(checked) !== view.getUint32(4)) return null;
  const seq = view.getUint32(8) * 2 ** 32 + view.getUint32(12);
  const payload = checked.subarray(8);
  return { kind: payload[0]!, seq, payload, end };
}

/** Bytes the search for intact frames after a damaged one reads at a time. */
const searchWindowBytes = 1024 * 1024;

/**
 * Whether an intact frame starts anywhere after `offset`. A kill tears only the last
 * frame, so a damaged frame with an intact one after it is damage in the middle. Every
 * position is tried (a damaged length field says nothing about where the next frame is);
 * only those that look like a frame header (length, kind, version) are checksummed.
 */
function intactFrameAfter(handle: SyncHandle, offset: number, size: number): boolean {
  const lookahead = frameHeaderBytes + 2;
  const window = new Uint8Array(searchWindowBytes + lookahead);
  const view = new DataView(window.buffer);
  for (let start = offset + 1; start + lookahead <= size; start += searchWindowBytes) {
    const length = Math.min(window.length, size - start);
    handle.read(window.subarray(0, length), { at: start });
    for (let i = 0; i < searchWindowBytes && i + lookahead <= length; i++) {
      const payloadBytes = view.getUint32(i);
      const kind = window[i + frameHeaderBytes];
      if (
        payloadBytes < 2 ||
        payloadBytes > size - (start + i + frameHeaderBytes) ||
        (kind !== JournalTag.Write &&
          kind !== JournalTag.BasePage &&
          kind !== JournalTag.BaseEnd) ||
        window[i + frameHeaderBytes + 1] !== FORMAT_VERSION
      ) {
        continue;
      }
      if (readFrame(handle, start + i, size) !== null) return true;
    }
  }
  return false;
}

/**
 * Walks a generation: its base, then writes numbered one after the other, up to its end
 * or a torn tail (a damaged frame that no intact one follows). Returns the generation as
 * far as it is whole (its size ends there), or null if its base is incomplete. Anything
 * else out of place throws JournalCorruption.
 */
function scan(number: number, handle: SyncHandle): Generation | null {
  const size = handle.getSize();
  const where = (offset: number) => `${generationName(number)}, byte ${offset}`;
  let offset = 0;
  let baseSeq: number | null = null;
  let baseBytes = 0;
  let lastSeq = 0;
  for (;;) {
    const frame = readFrame(handle, offset, size);
    if (frame === null) {
      if (offset < size && intactFrameAfter(handle, offset, size)) {
        throw new JournalCorruption(
          `the frame at ${where(offset)} is damaged and intact frames follow it (damage in the middle, not a torn tail)`,
        );
      }
      break;
    }
    if (baseSeq === null) {
      if (frame.kind === JournalTag.BaseEnd) {
        baseSeq = frame.seq;
        lastSeq = frame.seq;
        baseBytes = frame.end;
      } else if (frame.kind !== JournalTag.BasePage) {
        throw new JournalCorruption(
          `a frame of kind ${frame.kind} at ${where(offset)} is inside the base`,
        );
      }
    } else if (frame.kind !== JournalTag.Write || frame.seq !== lastSeq + 1) {
      throw new JournalCorruption(
        `the frame at ${where(offset)} (kind ${frame.kind}, batch ${frame.seq}) does not follow batch ${lastSeq}`,
      );
    } else {
      lastSeq = frame.seq;
    }
    offset = frame.end;
  }
  return baseSeq === null ? null : { number, handle, baseSeq, size: offset, baseBytes, lastSeq };
}

function extentOf(generation: Generation): JournalExtent {
  return {
    baseSeq: generation.baseSeq,
    lastSeq: generation.lastSeq,
    bytes: generation.size,
    baseBytes: generation.baseBytes,
  };
}

/** Drops what follows the whole frames for good (flushed: the cut must not come back). */
function cut(generation: Generation): void {
  if (generation.handle.getSize() > generation.size) {
    generation.handle.truncate(generation.size);
    generation.handle.flush();
  }
}

function append(generation: Generation, frame: Uint8Array): void {
  const written = generation.handle.write(frame, { at: generation.size });
  if (written !== frame.length) {
    throw new Error(`wrote ${written} of ${frame.length} bytes (disk or quota full?)`);
  }
  generation.size += frame.length;
}

/**
 * A page that goes away (a reload) releases its Web Lock before its worker's access
 * handles are gone, so the next page's worker may find the file still held: it retries
 * for up to `handleWaitMs`.
 */
const handleWaitMs = 10_000;
const handleRetryMs = 50;

async function createHandle(name: string, create: boolean): Promise<SyncHandle> {
  const file = await need(directory).getFileHandle(name, { create });
  const deadline = Date.now() + handleWaitMs;
  for (;;) {
    try {
      return await (
        file as unknown as { createSyncAccessHandle(): Promise<SyncHandle> }
      ).createSyncAccessHandle();
    } catch (error) {
      const held = error instanceof DOMException && error.name === 'NoModificationAllowedError';
      if (!held || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, handleRetryMs));
    }
  }
}

function need<T>(value: T | null): T {
  if (value === null) throw new Error('journal is not open');
  return value;
}

async function open(path: readonly string[]): Promise<JournalResult> {
  let dir = await navigator.storage.getDirectory();
  for (const part of path) dir = await dir.getDirectoryHandle(part, { create: true });
  directory = dir;
  const numbers: number[] = [];
  for await (const name of (dir as unknown as { keys(): AsyncIterable<string> }).keys()) {
    const match = generationPattern.exec(name);
    if (match !== null) numbers.push(Number(match[1]));
  }
  numbers.sort((a, b) => b - a);
  let extent: JournalExtent | null = null;
  for (const number of numbers) {
    if (current === null) {
      const handle = await createHandle(generationName(number), false);
      try {
        current = scan(number, handle);
      } catch (error) {
        // Refused: the file is free at once for deleteIndexedDbStorage (or a look at it).
        handle.close();
        throw error;
      }
      if (current !== null) {
        cut(current);
        extent = extentOf(current);
        continue;
      }
      handle.close();
    }
    // Older than the chosen generation, or a rotation cut short.
    await dir.removeEntry(generationName(number));
  }
  return { op: 'open', extent };
}

function read(offset: number, maxBytes: number): JournalResult {
  const generation = need(current);
  const frames: JournalFrame[] = [];
  let at = offset;
  let bytes = 0;
  while (at < generation.size && bytes < maxBytes) {
    const frame = readFrame(generation.handle, at, generation.size);
    if (frame === null) throw new Error(`damaged frame at byte ${at}`);
    frames.push({ kind: frame.kind, seq: frame.seq, payload: frame.payload });
    bytes += frame.end - at;
    at = frame.end;
  }
  return { op: 'read', frames, next: at < generation.size ? at : null };
}

async function beginGeneration(seq: number): Promise<JournalResult> {
  if (starting !== null) throw new Error('a generation is already being started');
  const number = current === null ? 1 : current.number + 1;
  const handle = await createHandle(generationName(number), true);
  handle.truncate(0);
  starting = { number, handle, baseSeq: seq, size: 0, baseBytes: 0, lastSeq: seq };
  return { op: 'beginGeneration' };
}

async function endGeneration(): Promise<JournalResult> {
  const next = need(starting);
  append(next, encodeFrame(JournalTag.BaseEnd, next.baseSeq, encodeJournalBaseEnd()));
  next.baseBytes = next.size;
  next.handle.flush();
  starting = null;
  const old = current;
  current = next;
  if (old !== null) {
    old.handle.close();
    await need(directory).removeEntry(generationName(old.number));
  }
  return { op: 'endGeneration', extent: extentOf(next) };
}

function close(): JournalResult {
  for (const generation of [current, starting]) generation?.handle.close();
  current = null;
  starting = null;
  directory = null;
  return { op: 'close' };
}

async function handle(request: JournalRequest): Promise<JournalResult> {
  switch (request.op) {
    case 'open':
      return open(request.path);
    case 'read':
      return read(request.offset, request.maxBytes);
    case 'append': {
      const generation = need(current);
      if (request.seq !== generation.lastSeq + 1) {
        throw new Error(`append of seq ${request.seq} after seq ${generation.lastSeq}`);
      }
      append(generation, encodeFrame(JournalTag.Write, request.seq, request.payload));
      generation.handle.flush();
      generation.lastSeq = request.seq;
      return { op: 'append', extent: extentOf(generation) };
    }
    case 'beginGeneration':
      return beginGeneration(request.seq);
    case 'appendBase': {
      const next = need(starting);
      append(next, encodeFrame(JournalTag.BasePage, next.baseSeq, request.payload));
      return { op: 'appendBase' };
    }
    case 'endGeneration':
      return endGeneration();
    case 'close':
      return close();
  }
}

let queue = Promise.resolve();
self.onmessage = (event: MessageEvent<{ id: number; request: JournalRequest }>) => {
  const { id, request } = event.data;
  queue = queue.then(async () => {
    let reply: JournalReply;
    try {
      reply = { id, result: await handle(request) };
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      reply = { id, error: message, corrupt: error instanceof JournalCorruption };
    }
    const transfer =
      'result' in reply && reply.result.op === 'read'
        ? reply.result.frames.map((frame) => frame.payload.buffer)
        : [];
    self.postMessage(reply, { transfer: transfer as Transferable[] });
  });
};
