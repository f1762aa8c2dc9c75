/** One bar group of a chart: a label and its bars (values in ms; NaN = not measured). */
export interface BarGroup {
  readonly label: string;
  readonly bars: readonly { readonly series: string; readonly value: number; readonly whisker?: number }[];
}

/** Fill colours per series, in order (colour-blind-safe Okabe–Ito picks). */
const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A "nice" axis maximum (1, 2 or 5 × 10^k) at or above `v`. */
function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * exp >= v) return m * exp;
  return 10 * exp;
}

/**
 * A horizontal grouped bar chart as a standalone SVG: one group per label,
 * one bar per series, an optional whisker (e.g. p95 over a p50 bar), value
 * labels at the bar ends. Written by hand so the chart needs no library and
 * regenerates byte-identically from the same numbers.
 */
export function barChart(title: string, unit: string, groups: readonly BarGroup[]): string {
  const series = [...new Set(groups.flatMap((g) => g.bars.map((b) => b.series)))];
  const color = (s: string) => PALETTE[series.indexOf(s) % PALETTE.length] as string;
  const barH = 14;
  const gap = 4;
  const groupGap = 14;
  const left = 190;
  const plotW = 520;
  const top = 58;
  const maxV = niceMax(
    Math.max(0, ...groups.flatMap((g) => g.bars.flatMap((b) => [b.value, b.whisker ?? 0]).filter(Number.isFinite))),
  );
  const x = (v: number) => left + (Math.max(0, v) / maxV) * plotW;
  const out: string[] = [];
  let y = top;
  for (const g of groups) {
    const h = g.bars.length * (barH + gap) - gap;
    out.push(`<text x="${left - 8}" y="${y + h / 2 + 4}" text-anchor="end" class="label">${esc(g.label)}</text>`);
    for (const b of g.bars) {
      if (Number.isFinite(b.value)) {
        out.push(
          `<rect x="${left}" y="${y}" width="${(x(b.value) - left).toFixed(1)}" height="${barH}" fill="${color(b.series)}"><title>${esc(`${g.label} — ${b.series}: ${b.value.toFixed(0)} ${unit}`)}</title></rect>`,
        );
        let end = x(b.value);
        if (b.whisker !== undefined && Number.isFinite(b.whisker) && b.whisker > b.value) {
          const wx = x(b.whisker);
          out.push(
            `<line x1="${end.toFixed(1)}" y1="${y + barH / 2}" x2="${wx.toFixed(1)}" y2="${y + barH / 2}" class="whisker"/>`,
            `<line x1="${wx.toFixed(1)}" y1="${y + 3}" x2="${wx.toFixed(1)}" y2="${y + barH - 3}" class="whisker"/>`,
          );
          end = wx;
        }
        out.push(`<text x="${(end + 4).toFixed(1)}" y="${y + barH - 3}" class="value">${b.value.toFixed(0)}</text>`);
      } else {
        out.push(`<text x="${left + 4}" y="${y + barH - 3}" class="value">not measured</text>`);
      }
      y += barH + gap;
    }
    y += groupGap - gap;
  }
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => f * maxV);
  const axisY = y + 4;
  const grid = ticks
    .map(
      (t) =>
        `<line x1="${x(t).toFixed(1)}" y1="${top - 6}" x2="${x(t).toFixed(1)}" y2="${axisY}" class="grid"/>` +
        `<text x="${x(t).toFixed(1)}" y="${axisY + 14}" text-anchor="middle" class="tick">${t >= 1000 ? `${t / 1000} s` : `${t} ${unit}`}</text>`,
    )
    .join('');
  const legend = series
    .map(
      (s, i) =>
        `<rect x="${left + i * 170}" y="32" width="10" height="10" fill="${color(s)}"/><text x="${left + i * 170 + 14}" y="41" class="legend">${esc(s)}</text>`,
    )
    .join('');
  const height = axisY + 26;
  const width = left + plotW + 70;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">
<style>.label{font-size:12px;fill:#222}.value{font-size:10px;fill:#333}.tick{font-size:10px;fill:#555}.legend{font-size:11px;fill:#222}.title{font-size:14px;font-weight:bold;fill:#111}.grid{stroke:#ddd;stroke-width:1}.whisker{stroke:#333;stroke-width:1.2}</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="12" y="20" class="title">${esc(title)}</text>
${legend}
${grid}
${out.join('\n')}
</svg>
`;
}
