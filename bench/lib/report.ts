// What the benchmarks print besides their JSON lines, and how they round figures.

export function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** A plain-text table: each column as wide as its widest cell, two spaces between. */
export function textTable(
  header: readonly string[],
  lines: readonly (readonly string[])[],
): string {
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  return [header, ...lines]
    .map((l) => l.map((cell, i) => cell.padEnd(widths[i]!)).join('  '))
    .join('\n');
}
