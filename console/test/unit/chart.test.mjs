// SPDX-License-Identifier: Apache-2.0
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { niceMax, pathData } from '../../src/js/chart.js';

test('axis maxima are round', () => {
    assert.equal(niceMax(0), 1);
    assert.equal(niceMax(0.3), 0.5);
    assert.equal(niceMax(1), 1);
    assert.equal(niceMax(1.2), 2);
    assert.equal(niceMax(3), 5);
    assert.equal(niceMax(7), 10);
    assert.equal(niceMax(4200), 5000);
    assert.equal(niceMax(1500, 1024), 2048);
    assert.equal(niceMax(1000, 1024), 1024);
    assert.equal(niceMax(3000, 1024), 5120);
});

test('paths are scaled into the plot and skip points before the window', () => {
    const d = pathData([[0, 5], [50, 0], [100, 10], [-10, 3]], 0, 100, 10);
    const pts = d.split(/[ML]/).filter(Boolean).map((p) => p.split(',').map(Number));
    assert.equal(pts.length, 3);
    assert.ok(d.startsWith('M'));
    // x grows with time, y is 0 at the bottom and vmax at the top.
    assert.ok(pts[0][0] < pts[1][0] && pts[1][0] < pts[2][0]);
    assert.ok(pts[1][1] > pts[0][1] && pts[0][1] > pts[2][1]);
    assert.equal(pathData([[-5, 1]], 0, 100, 1), '');
});
