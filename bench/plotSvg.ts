/** A dependency-free line plot as SVG (benchmark results are read on GitHub, where SVG renders inline). */

export interface PlotSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  /** x in [0, 1] (a fraction, shown as %), or in [0, xMax] when xMax is given; y >= 0 */
  series: { name: string; points: [number, number][] }[];
  /** an absolute x axis from 0 to xMax (ticks in its own unit); points beyond it are left out */
  xMax?: number;
}

const COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b'];

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function plotLinesSvg(spec: PlotSpec): string {
  const width = 640;
  const height = 400;
  const m = { left: 60, right: 200, top: 40, bottom: 50 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const xMax = spec.xMax;
  const series = xMax === undefined ? spec.series : spec.series.map((s) => ({ ...s, points: s.points.filter((p) => p[0] <= xMax).map(([px, py]): [number, number] => [px / xMax, py]) }));
  const yMax = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1]))) * 1.1;
  const x = (v: number) => m.left + v * plotW;
  const y = (v: number) => m.top + plotH - (v / yMax) * plotH;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(`<text x="${width / 2 - m.right / 2}" y="22" text-anchor="middle" font-size="14">${escapeXml(spec.title)}</text>`);
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    parts.push(`<line x1="${m.left}" x2="${m.left + plotW}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    parts.push(`<text x="${m.left - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(0)}</text>`);
    const xv = i / 4;
    const tick = xMax === undefined ? `${(xv * 100).toFixed(0)}%` : `${+(xv * xMax).toFixed(1)}`;
    parts.push(`<text x="${x(xv)}" y="${m.top + plotH + 16}" text-anchor="middle">${tick}</text>`);
  }
  parts.push(`<text x="${m.left + plotW / 2}" y="${height - 10}" text-anchor="middle">${escapeXml(spec.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${m.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(spec.yLabel)}</text>`);
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    parts.push(`<polyline fill="none" stroke="${colour}" stroke-width="2" points="${pts.map((p) => `${x(p[0])},${y(p[1])}`).join(' ')}"/>`);
    for (const p of pts) parts.push(`<circle cx="${x(p[0])}" cy="${y(p[1])}" r="3" fill="${colour}"/>`);
    parts.push(`<rect x="${m.left + plotW + 14}" y="${m.top + i * 20}" width="12" height="12" fill="${colour}"/>`);
    parts.push(`<text x="${m.left + plotW + 32}" y="${m.top + i * 20 + 10}">${escapeXml(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
