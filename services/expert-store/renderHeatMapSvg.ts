/** What the picture shows: per MoE layer, each expert's use (any non-negative scale) and whether it is resident. */
export interface HeatMapView {
  title?: string;
  nExpert: number;
  layers: { layer: number; heat: readonly number[]; resident?: readonly boolean[] }[];
}

// viridis, 6 stops: dark (unused) to yellow (hottest)
const STOPS: [number, number, number][] = [
  [68, 1, 84],
  [65, 68, 135],
  [42, 120, 142],
  [34, 168, 132],
  [122, 209, 81],
  [253, 231, 37],
];

function colour(t: number): string {
  const x = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const c = STOPS[i].map((v, k) => Math.round(v + (STOPS[i + 1][k] - v) * f));
  return `#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`;
}

function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (ch) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[ch] as string);
}

function fmt(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(1) : n.toPrecision(2);
}

/**
 * An SVG heat map: one row per layer, one column per expert, colour = use on a log scale (viridis: dark = unused,
 * yellow = hottest), a white dot where the expert is resident in memory, each cell with a tooltip (<title>).
 */
export function renderHeatMapSvg(view: HeatMapView): string {
  const nExpert = Math.max(1, view.nExpert);
  const nLayer = Math.max(1, view.layers.length);
  const cell = Math.max(4, Math.min(24, Math.floor(1200 / nExpert), Math.floor(900 / nLayer)));
  const left = 56;
  const top = 40;
  const width = left + nExpert * cell + 110;
  const height = top + nLayer * cell + 48;
  let max = 0;
  for (const l of view.layers) for (const h of l.heat) max = Math.max(max, h);
  const scale = (h: number) => (max > 0 ? Math.log1p(h) / Math.log1p(max) : 0);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="18" font-size="14" font-weight="bold">${escapeXml(view.title ?? 'expert heat map')}</text>`,
    `<text x="${left}" y="32" fill="#555">${nLayer} layers x ${nExpert} experts; colour = use (log scale), dot = resident</text>`,
  );
  const labelEvery = Math.max(1, Math.ceil(12 / cell));
  view.layers.forEach((l, row) => {
    const y = top + row * cell;
    if (row % labelEvery === 0) out.push(`<text x="${left - 6}" y="${y + cell / 2 + 4}" text-anchor="end">${l.layer}</text>`);
    for (let e = 0; e < nExpert; e++) {
      const h = l.heat[e] ?? 0;
      const x = left + e * cell;
      const resident = l.resident?.[e] === true;
      out.push(
        `<rect class="cell" x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${colour(scale(h))}"><title>layer ${l.layer} expert ${e}: ${fmt(h)}${resident ? ', resident' : ''}</title></rect>`,
      );
      if (resident) out.push(`<circle class="resident" cx="${x + cell / 2}" cy="${y + cell / 2}" r="${Math.max(1, cell / 5)}" fill="#ffffff" stroke="#000000" stroke-width="0.5"/>`);
    }
  });
  const xEvery = Math.max(1, Math.ceil(24 / cell));
  for (let e = 0; e < nExpert; e += xEvery) {
    out.push(`<text x="${left + e * cell + cell / 2}" y="${top + nLayer * cell + 14}" text-anchor="middle">${e}</text>`);
  }
  out.push(`<text x="${left + (nExpert * cell) / 2}" y="${top + nLayer * cell + 32}" text-anchor="middle" fill="#555">expert</text>`);
  out.push(`<text x="14" y="${top + (nLayer * cell) / 2}" transform="rotate(-90 14 ${top + (nLayer * cell) / 2})" text-anchor="middle" fill="#555">layer</text>`);
  // legend
  const lx = left + nExpert * cell + 24;
  const lh = Math.max(60, Math.min(200, nLayer * cell));
  out.push('<defs><linearGradient id="heat" x1="0" y1="1" x2="0" y2="0">');
  STOPS.forEach((_, i) => out.push(`<stop offset="${i / (STOPS.length - 1)}" stop-color="${colour(i / (STOPS.length - 1))}"/>`));
  out.push('</linearGradient></defs>');
  out.push(`<rect x="${lx}" y="${top}" width="14" height="${lh}" fill="url(#heat)"/>`);
  out.push(`<text x="${lx + 20}" y="${top + 10}">${fmt(max)}</text>`, `<text x="${lx + 20}" y="${top + lh}">0</text>`);
  out.push('</svg>');
  return out.join('\n');
}

/** The view of a GetHeatMap-shaped report plus a Residency-shaped one (as the service and the CLI have them). */
export function heatMapViewOf(
  heat: { layers: readonly { layer: number; heat: readonly number[]; counts?: readonly number[] }[] },
  residency: { layers: readonly { layer: number; residentExperts: readonly number[] }[] } | undefined,
  title?: string,
): HeatMapView {
  const resident = new Map(residency?.layers.map((l) => [l.layer, new Set(l.residentExperts)]) ?? []);
  const nExpert = Math.max(0, ...heat.layers.map((l) => Math.max(l.heat.length, l.counts?.length ?? 0)));
  return {
    title,
    nExpert,
    layers: heat.layers.map((l) => {
      const values = l.heat.length > 0 ? l.heat : (l.counts ?? []);
      const set = resident.get(l.layer);
      return { layer: l.layer, heat: values, resident: Array.from({ length: nExpert }, (_, e) => set?.has(e) ?? false) };
    }),
  };
}
