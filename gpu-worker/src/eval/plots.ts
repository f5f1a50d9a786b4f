/**
 * @module eval/plots
 * Two small SVG charts for the report, written by hand (no plotting dependency): a stacked bar
 * chart of per-example latency by phase (paper Figure 2a) and a line chart against γ on a log axis
 * (paper Figure 2b). Output is a standalone SVG document (UTF-8 text).
 */

const COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"];
const FONT = `font-family="sans-serif" font-size="11"`;

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const fmt = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toPrecision(2));

/** A "nice" upper bound ≥ `max` (1, 2 or 5 × 10^k). */
export function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 5, 10].map((m) => m * p).find((v) => v >= max)!;
}

/**
 * Stacked bars: one bar per `bars[i]`, its `values` stacked in `series` order.
 * @param unit axis label, e.g. "ms per example".
 */
export function stackedBarSvg(
  title: string,
  series: readonly string[],
  bars: ReadonlyArray<{ label: string; values: readonly number[] }>,
  unit: string,
): string {
  const w = 120 + bars.length * 70,
    h = 320,
    left = 60,
    top = 30,
    bottom = 70,
    plotH = h - top - bottom;
  const ymax = niceMax(Math.max(...bars.map((b) => b.values.reduce((a, v) => a + v, 0))));
  const y = (v: number) => top + plotH - (v / ymax) * plotH;
  const parts: string[] = [];
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    parts.push(`<line x1="${left}" x2="${left + bars.length * 70}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 4}" y="${y(v) + 4}" text-anchor="end" ${FONT}>${fmt(v)}</text>`);
  }
  bars.forEach((b, i) => {
    const x = left + 15 + i * 70;
    let acc = 0;
    b.values.forEach((v, s) => {
      parts.push(
        `<rect x="${x}" y="${y(acc + v)}" width="40" height="${Math.max(0, y(acc) - y(acc + v))}" fill="${COLORS[s % COLORS.length]}"><title>${esc(series[s]!)}: ${fmt(v)}</title></rect>`,
      );
      acc += v;
    });
    parts.push(
      `<text x="${x + 20}" y="${top + plotH + 14}" text-anchor="end" transform="rotate(-30 ${x + 20} ${top + plotH + 14})" ${FONT}>${esc(b.label)}</text>`,
    );
  });
  series.forEach((s, i) => {
    parts.push(`<rect x="${w - 110}" y="${top + i * 16}" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/>`);
    parts.push(`<text x="${w - 96}" y="${top + i * 16 + 9}" ${FONT}>${esc(s)}</text>`);
  });
  return svg(w, h, title, unit, parts);
}

/**
 * Line chart against x on a log10 axis: one polyline per series (points with null y are skipped).
 * @param xs positive x values (e.g. γ), in plotting order.
 */
export function logLineSvg(
  title: string,
  xLabel: string,
  xs: readonly number[],
  series: ReadonlyArray<{ name: string; ys: readonly (number | null)[] }>,
  yLabel: string,
): string {
  const w = 520,
    h = 300,
    left = 60,
    top = 30,
    plotW = 320,
    plotH = 200;
  const lx = xs.map((x) => Math.log10(x));
  const [x0, x1] = [Math.min(...lx), Math.max(...lx)];
  const X = (x: number) => left + (x1 === x0 ? plotW / 2 : ((Math.log10(x) - x0) / (x1 - x0)) * plotW);
  const ymax = niceMax(Math.max(0, ...series.flatMap((s) => s.ys.filter((v): v is number => v !== null))));
  const Y = (v: number) => top + plotH - (v / ymax) * plotH;
  const parts: string[] = [];
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${Y(v)}" y2="${Y(v)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 4}" y="${Y(v) + 4}" text-anchor="end" ${FONT}>${fmt(v)}</text>`);
  }
  xs.forEach((x) => parts.push(`<text x="${X(x)}" y="${top + plotH + 14}" text-anchor="middle" ${FONT}>${x.toExponential(0)}</text>`));
  parts.push(`<text x="${left + plotW / 2}" y="${top + plotH + 32}" text-anchor="middle" ${FONT}>${esc(xLabel)}</text>`);
  series.forEach((s, i) => {
    const pts = xs.flatMap((x, j) => (s.ys[j] === null || s.ys[j] === undefined ? [] : [[X(x), Y(s.ys[j]!)] as const]));
    const c = COLORS[i % COLORS.length];
    parts.push(
      `<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ")}"/>`,
    );
    pts.forEach(([a, b]) => parts.push(`<circle cx="${a.toFixed(1)}" cy="${b.toFixed(1)}" r="3" fill="${c}"/>`));
    parts.push(`<rect x="${left + plotW + 15}" y="${top + i * 16}" width="10" height="10" fill="${c}"/>`);
    parts.push(`<text x="${left + plotW + 29}" y="${top + i * 16 + 9}" ${FONT}>${esc(s.name)}</text>`);
  });
  return svg(w, h, title, yLabel, parts);
}

function svg(w: number, h: number, title: string, yLabel: string, parts: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${w / 2}" y="16" text-anchor="middle" font-family="sans-serif" font-size="13">${esc(title)}</text>`,
    `<text x="14" y="${h / 2}" text-anchor="middle" transform="rotate(-90 14 ${h / 2})" ${FONT}>${esc(yLabel)}</text>`,
    ...parts,
    `</svg>`,
    "",
  ].join("\n");
}
