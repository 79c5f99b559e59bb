/**
 * What a client learned from a Node peer's HTTP API answer (packages/node/README.md "HTTP
 * API"), for a history the checker reads: a result, an unknown outcome (null), or
 * 'refused' (the call did nothing: left out of the history). Shared by the tests that
 * drive real peers over HTTP.
 */
import type { KvCall, KvResult } from './kv.ts';

export type HttpKvAnswer = KvResult | null | 'refused';

/**
 * 200: the result; 404 KEY_NOT_FOUND: absent (a get) or nothing removed (a delete). 503
 * (UNAVAILABLE, OVERLOADED, CLOSED) and every 4xx: nothing was done. 504 (TIMEOUT,
 * OUTCOME_UNKNOWN), 500 and anything else: a write may have been applied. A failed read
 * constrains nothing, so it is refused whatever the status.
 */
export function httpKvAnswer(
  kind: KvCall['kind'],
  status: number,
  code: string | null,
  body: string,
): HttpKvAnswer {
  if (status === 200) {
    if (kind === 'get') return { kind: 'get', value: body };
    return kind === 'put' ? { kind: 'put' } : { kind: 'delete', removed: true };
  }
  if (status === 404 && code === 'KEY_NOT_FOUND') {
    return kind === 'get' ? { kind: 'get', value: null } : { kind: 'delete', removed: false };
  }
  if (kind === 'get' || status === 503 || (status >= 400 && status < 500)) return 'refused';
  return null;
}
