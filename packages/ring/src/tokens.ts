import { writeTokenPositions } from './position.ts';

/**
 * All tokens of a member set, sorted clockwise: by position (hi, lo), then by owner, so
 * tokens at equal positions are ordered by node id. `owner` indexes `ids`, which are
 * sorted, so comparing owner indices compares node ids.
 */
export interface SortedTokens {
  readonly ids: readonly string[];
  readonly high: Uint32Array;
  readonly low: Uint32Array;
  readonly owner: Uint16Array;
}

export const NO_TOKENS: SortedTokens = {
  ids: [],
  high: new Uint32Array(0),
  low: new Uint32Array(0),
  owner: new Uint16Array(0),
};

/**
 * The sorted tokens of `ids` (validated, sorted), reusing `previous` (any earlier member
 * set with the same V): tokens of members in both are not hashed again and stay in order,
 * so only the newcomers' tokens are hashed and sorted, then merged in one linear pass.
 * A join or leave thus costs O(M·V) copying plus O(V log V), not a full re-sort.
 */
export function sortedTokens(
  previous: SortedTokens,
  ids: readonly string[],
  tokensPerNode: number,
): SortedTokens {
  // Both id lists are sorted: a two-pointer walk maps old owner indices to new ones.
  const ownerNow = new Int32Array(previous.ids.length).fill(-1);
  const newcomers: number[] = [];
  for (let was = 0, now = 0; now < ids.length; ) {
    const old = previous.ids[was];
    const id = ids[now]!;
    if (old !== undefined && old < id) {
      was++;
    } else if (old === id) {
      ownerNow[was++] = now++;
    } else {
      newcomers.push(now++);
    }
  }
  const added = hashedTokens(ids, newcomers, tokensPerNode);

  const count = ids.length * tokensPerNode;
  const high = new Uint32Array(count);
  const low = new Uint32Array(count);
  const owner = new Uint16Array(count);
  let out = 0;
  let a = 0;
  const addedCount = added.high.length;
  for (let p = 0; p < previous.high.length; p++) {
    const o = ownerNow[previous.owner[p]!]!;
    if (o < 0) continue; // a member that left
    const h = previous.high[p]!;
    const l = previous.low[p]!;
    // Emit the newcomers' tokens that come before this one.
    while (
      a < addedCount &&
      compareTokens(added.high[a]!, added.low[a]!, added.owner[a]!, h, l, o) < 0
    ) {
      high[out] = added.high[a]!;
      low[out] = added.low[a]!;
      owner[out++] = added.owner[a++]!;
    }
    high[out] = h;
    low[out] = l;
    owner[out++] = o;
  }
  for (; a < addedCount; a++) {
    high[out] = added.high[a]!;
    low[out] = added.low[a]!;
    owner[out++] = added.owner[a]!;
  }
  if (out !== count) throw new Error('assertion failed: every member has exactly V tokens');
  return { ids, high, low, owner };
}

/** The tokens of `ids[m]` for each m in `members`, hashed and sorted. */
function hashedTokens(
  ids: readonly string[],
  members: readonly number[],
  tokensPerNode: number,
): { high: Uint32Array; low: Uint32Array; owner: Uint16Array } {
  const count = members.length * tokensPerNode;
  const high = new Uint32Array(count);
  const low = new Uint32Array(count);
  const owner = new Uint16Array(count);
  members.forEach((m, k) => {
    writeTokenPositions(ids[m]!, tokensPerNode, high, low, k * tokensPerNode);
    owner.fill(m, k * tokensPerNode, (k + 1) * tokensPerNode);
  });
  const order = Uint32Array.from({ length: count }, (_, i) => i);
  order.sort((x, y) => compareTokens(high[x]!, low[x]!, owner[x]!, high[y]!, low[y]!, owner[y]!));
  return {
    high: order.map((i) => high[i]!),
    low: order.map((i) => low[i]!),
    owner: Uint16Array.from(order, (i) => owner[i]!),
  };
}

/** Clockwise order of tokens: position (hi, then lo), then owner (i.e. node id). */
function compareTokens(
  highA: number,
  lowA: number,
  ownerA: number,
  highB: number,
  lowB: number,
  ownerB: number,
): number {
  // Differences of uint32 values are exact in a double and carry the right sign.
  return highA - highB || lowA - lowB || ownerA - ownerB;
}
