/**
 * The journal: a second copy of an IndexedDB node database, in the origin private file
 * system (OPFS), kept by a dedicated worker (journal-worker.browser.ts). Chromium can lose
 * a whole IndexedDB backing store when it is killed mid-write (README, "Limits"); OPFS
 * files live outside that backing store, and a frame appended to one can only be torn at
 * the file's end, where the next open cuts it. indexeddb.browser.ts writes every batch to
 * both, and rebuilds whichever copy a crash left missing or behind from the other.
 * Frame payloads are codec.ts records (README, "Format"); journal-protocol.ts describes
 * the frames around them.
 */
import { encodeJournalBasePage, encodeJournalWrite, type JournalOp } from './codec.ts';
import { StorageError } from './errors.ts';
import type {
  JournalExtent,
  JournalFrame,
  JournalReply,
  JournalRequest,
  JournalResult,
} from './journal-protocol.ts';

/** The OPFS directory of a database's journal: `meshkv-journal/<database name>`. */
export function journalPath(dbName: string): readonly string[] {
  return ['meshkv-journal', encodeURIComponent(dbName)];
}

type ResultOf<Op extends JournalRequest['op']> = Extract<JournalResult, { op: Op }>;

/** The page side of one open journal: one worker, requests answered in order. */
export class Journal {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (result: JournalResult) => void; reject: (error: unknown) => void }
  >();
  private failure: StorageError | null = null;

  private constructor(
    private readonly worker: Worker,
    /** The database's name for errors ("IndexedDB \"meshkv/…\""). */
    readonly name: string,
  ) {
    worker.onmessage = (event: MessageEvent<JournalReply>) => {
      const reply = event.data;
      const waiter = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if ('error' in reply) {
        const code = reply.corrupt ? 'corrupt' : 'io';
        waiter?.reject(new StorageError(code, `${this.name}: journal: ${reply.error}`));
      } else {
        waiter?.resolve(reply.result);
      }
    };
    worker.onerror = (event) => {
      event.preventDefault();
      this.fail(`its worker failed: ${event.message || 'could not be loaded'}`);
    };
    worker.onmessageerror = () => this.fail('a reply could not be read');
  }

  /** Starts the worker and opens the journal of `dbName`; the extent is null if it has none. */
  static async open(
    dbName: string,
    name: string,
  ): Promise<{ journal: Journal; extent: JournalExtent | null }> {
    if (typeof Worker === 'undefined' || navigator.storage?.getDirectory === undefined) {
      throw new StorageError(
        'io',
        `${name}: needs the origin private file system in a dedicated worker, which this context lacks`,
      );
    }
    const worker = new Worker(new URL('./journal-worker.browser.ts', import.meta.url), {
      type: 'module',
    });
    const journal = new Journal(worker, name);
    try {
      const { extent } = await journal.request({ op: 'open', path: journalPath(dbName) });
      return { journal, extent };
    } catch (error) {
      worker.terminate();
      throw error;
    }
  }

  private fail(why: string): void {
    this.failure ??= new StorageError('io', `${this.name}: journal: ${why}`);
    for (const waiter of this.pending.values()) waiter.reject(this.failure);
    this.pending.clear();
  }

  private request<Op extends JournalRequest['op']>(
    request: Extract<JournalRequest, { op: Op }>,
    transfer: Transferable[] = [],
  ): Promise<ResultOf<Op>> {
    if (this.failure !== null) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (result: JournalResult) => void, reject });
      this.worker.postMessage({ id, request }, transfer);
    });
  }

  /** Appends write `seq` (greater than every seq before it) and resolves once it is flushed. */
  async append(seq: number, ops: readonly JournalOp[]): Promise<JournalExtent> {
    const payload = encodeJournalWrite(ops);
    return (await this.request({ op: 'append', seq, payload }, [payload.buffer])).extent;
  }

  /** Every frame of the current generation, about `maxBytes` per step. */
  async *frames(maxBytes: number): AsyncGenerator<readonly JournalFrame[]> {
    let offset: number | null = 0;
    while (offset !== null) {
      const page: ResultOf<'read'> = await this.request({ op: 'read', offset, maxBytes });
      yield page.frames;
      offset = page.next;
    }
  }

  /**
   * Replaces the journal by a new generation whose base is `pages` (the whole key space as
   * of write `seq`); the old generation is deleted only once the new one is flushed.
   */
  async rewrite(
    seq: number,
    pages: AsyncIterable<ReadonlyArray<readonly [Uint8Array, Uint8Array]>>,
  ): Promise<JournalExtent> {
    await this.request({ op: 'beginGeneration', seq });
    for await (const page of pages) {
      const payload = encodeJournalBasePage(page);
      await this.request({ op: 'appendBase', payload }, [payload.buffer]);
    }
    return (await this.request({ op: 'endGeneration' })).extent;
  }

  /** Closes the files and stops the worker. */
  async close(): Promise<void> {
    try {
      if (this.failure === null) await this.request({ op: 'close' });
    } finally {
      this.worker.terminate();
      this.fail('closed');
    }
  }
}

/** Deletes the journal of `dbName` (nothing if it has none). Its journal must be closed. */
export async function deleteJournal(dbName: string): Promise<void> {
  const [top, leaf] = journalPath(dbName) as [string, string];
  const root = await navigator.storage.getDirectory();
  let parent: FileSystemDirectoryHandle;
  try {
    parent = await root.getDirectoryHandle(top);
  } catch {
    return;
  }
  await parent.removeEntry(leaf, { recursive: true }).catch((error: unknown) => {
    if (!(error instanceof DOMException && error.name === 'NotFoundError')) throw error;
  });
}
