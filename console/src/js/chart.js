// SPDX-License-Identifier: Apache-2.0
// A small SVG line chart for the overview: time on x (the last 15 minutes), one line per series.
// Drawn from scratch on each poll; a few hundred points per line cost nothing.
import { h, s } from './dom.js';

const W = 420;
const H = 150;
const PAD = { l: 64, r: 10, t: 10, b: 22 };

// A round upper bound for the axis: 1, 2 or 5 times a power of ten, at least max; with
// unit 1024, 1, 2 or 5 times a power of ten of KiB (1 KiB, 2 KiB, 5 KiB, 10 KiB, ...).
export function niceMax(max, unit = 1) {
    if (unit !== 1 && max > 0) return unit * niceMax(max / unit);
    if (!(max > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(max));
    for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
    return 10 * p;
}

// SVG path data for points [[t, v], ...] scaled into the plot area.
export function pathData(points, t0, t1, vmax) {
    const pw = W - PAD.l - PAD.r;
    const ph = H - PAD.t - PAD.b;
    let d = '';
    for (const [t, v] of points) {
        if (t < t0) continue;
        const x = PAD.l + ((t - t0) / (t1 - t0)) * pw;
        const y = PAD.t + ph - (Math.min(v, vmax) / vmax) * ph;
        d += `${d ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`;
    }
    return d;
}

// series: [{name, points: [[t, v]]}]; fmt formats a value for the axis and the legend.
export function lineChart({ title, series, t0, t1, fmt, unit = 1 }) {
    const vmax = niceMax(Math.max(unit, ...series.flatMap((x) => x.points.map((p) => p[1]))), unit);
    const ph = H - PAD.t - PAD.b;
    const grid = [];
    for (let i = 0; i <= 2; i++) {
        const v = (vmax * i) / 2;
        const y = PAD.t + ph - (i / 2) * ph;
        grid.push(s('line', { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: 'grid' }));
        grid.push(s('text', { x: PAD.l - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, fmt(v)));
    }
    grid.push(s('text', { x: PAD.l, y: H - 4, class: 'axis' }, '−15 min'));
    grid.push(s('text', { x: W - PAD.r, y: H - 4, class: 'axis', 'text-anchor': 'end' }, 'now'));
    // Each line ends in a dot, so a series that started a moment ago is visible at once.
    const lines = series.map((x, i) => {
        const d = pathData(x.points, t0, t1, vmax);
        const end = d.match(/([\d.]+),([\d.]+)$/);
        return s('g', null, s('path', { d, class: `line c${i % 8}` }),
            end ? s('circle', { cx: end[1], cy: end[2], r: 3.5, class: `dot c${i % 8}` }) : null);
    });
    const latest = (x) => (x.points.length ? x.points[x.points.length - 1][1] : 0);
    const label = `${title}: ${series.map((x) => `${x.name} ${fmt(latest(x))}`).join(', ') || 'no data'}`;
    return h('figure', { class: 'chart' },
        h('figcaption', null, title),
        s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label }, grid, lines),
        h('ul', { class: 'legend' }, series.map((x, i) =>
            h('li', null, h('span', { class: `swatch c${i % 8}`, 'aria-hidden': 'true' }),
                `${x.name} `, h('strong', null, fmt(latest(x)))))),
        series.length ? null : h('p', { class: 'muted' }, 'No data yet'));
}
