/** One bar group of a chart: a label and its bars (values in ms; NaN = not measured). */
export interface BarGroup {
  readonly label: string;
  readonly bars: readonly { readonly series: string; readonly value: number; readonly whisker?: number }[];
}

/** Groups drawn on one shared scale. */
export interface Panel {
  readonly subtitle: string;
  readonly groups: readonly BarGroup[];
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

const LEFT = 190;
const PLOT_W = 520;
const BAR_H = 14;
const GAP = 4;
const GROUP_GAP = 14;

/** Draws one panel from `top`; returns its SVG and the y where the next panel may start. */
function panel(p: Panel, top: number, unit: string, color: (series: string) => string): [string, number] {
  const values = p.groups.flatMap((g) => g.bars.flatMap((b) => [b.value, b.whisker ?? 0]).filter(Number.isFinite));
  const maxV = niceMax(Math.max(0, ...values));
  const x = (v: number) => LEFT + (Math.max(0, v) / maxV) * PLOT_W;
  const out: string[] = [`<text x="12" y="${top}" class="subtitle">${esc(p.subtitle)}</text>`];
  let y = top + 14;
  const first = y;
  for (const g of p.groups) {
    const h = g.bars.length * (BAR_H + GAP) - GAP;
    out.push(`<text x="${LEFT - 8}" y="${y + h / 2 + 4}" text-anchor="end" class="label">${esc(g.label)}</text>`);
    for (const b of g.bars) {
      if (Number.isFinite(b.value)) {
        const tip = `${g.label} — ${b.series}: ${b.value.toFixed(0)} ${unit}`;
        out.push(
          `<rect x="${LEFT}" y="${y}" width="${(x(b.value) - LEFT).toFixed(1)}" height="${BAR_H}" fill="${color(b.series)}"><title>${esc(tip)}</title></rect>`,
        );
        let end = x(b.value);
        if (b.whisker !== undefined && Number.isFinite(b.whisker) && b.whisker > b.value) {
          const wx = x(b.whisker);
          out.push(
            `<line x1="${end.toFixed(1)}" y1="${y + BAR_H / 2}" x2="${wx.toFixed(1)}" y2="${y + BAR_H / 2}" class="whisker"/>`,
            `<line x1="${wx.toFixed(1)}" y1="${y + 3}" x2="${wx.toFixed(1)}" y2="${y + BAR_H - 3}" class="whisker"/>`,
          );
          end = wx;
        }
        out.push(`<text x="${(end + 4).toFixed(1)}" y="${y + BAR_H - 3}" class="value">${b.value.toFixed(0)}</text>`);
      } else {
        out.push(`<text x="${LEFT + 4}" y="${y + BAR_H - 3}" class="value">not measured</text>`);
      }
      y += BAR_H + GAP;
    }
    y += GROUP_GAP - GAP;
  }
  const axisY = y;
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    const t = f * maxV;
    const label = t >= 1000 ? `${t / 1000} s` : `${t} ${unit}`;
    out.unshift(`<line x1="${x(t).toFixed(1)}" y1="${first - 4}" x2="${x(t).toFixed(1)}" y2="${axisY}" class="grid"/>`);
    out.push(`<text x="${x(t).toFixed(1)}" y="${axisY + 13}" text-anchor="middle" class="tick">${label}</text>`);
  }
  return [out.join('\n'), axisY + 40];
}

/**
 * A horizontal grouped bar chart as a standalone SVG: panels stacked top to
 * bottom, each on its own scale (so seconds-long VM boots do not flatten
 * sub-second container starts), one group per label, one bar per series, an
 * optional whisker (e.g. p95 over a p50 bar) and the value at the bar's end.
 * Written by hand, so it needs no library and regenerates byte-identically
 * from the same numbers.
 */
export function barChart(title: string, unit: string, panels: readonly Panel[]): string {
  const series = [...new Set(panels.flatMap((p) => p.groups.flatMap((g) => g.bars.map((b) => b.series))))];
  const color = (s: string) => PALETTE[series.indexOf(s) % PALETTE.length] as string;
  // One legend entry per line keeps long series names from running into each other.
  const legend = series
    .map(
      (s, i) =>
        `<rect x="${LEFT}" y="${32 + i * 16}" width="10" height="10" fill="${color(s)}"/><text x="${LEFT + 14}" y="${41 + i * 16}" class="legend">${esc(s)}</text>`,
    )
    .join('\n');
  let y = 32 + series.length * 16 + 22;
  const parts: string[] = [];
  for (const p of panels) {
    const [svg, next] = panel(p, y, unit, color);
    parts.push(svg);
    y = next;
  }
  const height = y - 14;
  const width = LEFT + PLOT_W + 70;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">
<style>.label{font-size:12px;fill:#222}.value{font-size:10px;fill:#333}.tick{font-size:10px;fill:#555}.legend{font-size:11px;fill:#222}.title{font-size:14px;font-weight:bold;fill:#111}.subtitle{font-size:12px;font-weight:bold;fill:#444}.grid{stroke:#ddd;stroke-width:1}.whisker{stroke:#333;stroke-width:1.2}</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="12" y="20" class="title">${esc(title)}</text>
${legend}
${parts.join('\n')}
</svg>
`;
}
