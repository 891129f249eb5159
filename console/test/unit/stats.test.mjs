// SPDX-License-Identifier: Apache-2.0
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rates, alarms, handshakeFailures, StatsFeed } from '../../src/js/stats.js';

const listener = (name, o = {}) => ({
    name, protocol: 'https', connections: 0, active: 0, refused: 0,
    payload_bytes: { in: 0, out: 0 }, wire_bytes: { in: 0, out: 0 },
    requests: { total: 0, '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 },
    handshakes: { full: 0, resumed: 0, failures: { unknown_ca: 0, timeout: 0 } }, ...o,
});

test('rates are counter deltas per second', () => {
    const a = { listeners: [listener('web')] };
    const b = { listeners: [listener('web', {
        connections: 10, refused: 2, payload_bytes: { in: 100, out: 900 }, wire_bytes: { in: 400, out: 1600 },
        requests: { total: 8, '1xx': 0, '2xx': 6, '3xx': 0, '4xx': 2, '5xx': 0 },
        handshakes: { full: 4, resumed: 6, failures: {} } })] };
    const r = rates(a, b, 1000, 3000);
    assert.equal(r.t, 3000);
    assert.deepEqual(r.listeners.web, { conns: 5, payload: 500, wire: 1000, refused: 1 });
    assert.equal(r.requests['2xx'], 3);
    assert.equal(r.requests['4xx'], 1);
    assert.deepEqual(r.handshakes, { full: 2, resumed: 3 });
});

test('a counter that went down (restart, re-created listener) gives no negative rate', () => {
    const a = { listeners: [listener('web', { connections: 50 })] };
    const b = { listeners: [listener('web', { connections: 3 })] };
    assert.equal(rates(a, b, 0, 2000).listeners.web.conns, 0);
    // A listener that changed protocol or is new has no rate yet.
    const c = { listeners: [listener('web', { protocol: 'tcp' }), listener('new')] };
    assert.deepEqual(rates(b, c, 0, 2000).listeners, {});
});

test('alarms: expiring certificates, servers down, refusing listeners', () => {
    const now = Date.parse('2026-12-01T00:00:00Z');
    const certs = [
        { name: 'soon', not_after: '2026-12-20T00:00:00Z' },
        { name: 'fine', not_after: '2027-12-01T00:00:00Z' },
        { name: 'gone', not_after: '2026-11-01T00:00:00Z' },
    ];
    const stats = {
        listeners: [listener('web', { refused: 7 }), listener('api')],
        groups: [{ name: 'g', servers: [
            { address: '10.0.0.1', port: 80, health: 'up' },
            { address: '::1', port: 81, health: 'down', last_check: 'timeout' }] }],
    };
    const history = [{ listeners: { web: { refused: 0.5 }, api: { refused: 0 } } }];
    const al = alarms(stats, certs, history, now);
    assert.deepEqual(al.map((a) => [a.kind, a.level, a.subject]), [
        ['certificate', 'warning', 'soon'],
        ['certificate', 'critical', 'gone'],
        ['server', 'critical', 'g / [::1]:81'],
        ['listener', 'warning', 'web'],
    ]);
    assert.match(al[1].text, /expired 30 days ago/);
    assert.match(al[2].text, /timeout/);
});

test('handshake failures are summed over listeners, largest first, zeros left out', () => {
    const stats = { listeners: [
        listener('a', { handshakes: { failures: { unknown_ca: 2, timeout: 1, other: 0 } } }),
        listener('b', { handshakes: { failures: { unknown_ca: 3, timeout: 0 } } }),
        { name: 'tcp', protocol: 'tcp' }] };
    assert.deepEqual(handshakeFailures(stats), [['unknown_ca', 5], ['timeout', 1]]);
});

test('the feed keeps 15 minutes of rates', () => {
    const feed = new StatsFeed(async () => ({}), { windowMs: 10000 });
    for (let t = 0; t <= 30000; t += 2000)
        feed.add({ listeners: [listener('web', { connections: t / 100 })] }, t);
    assert.equal(feed.latestAt, 30000);
    assert.ok(feed.history.every((x) => x.t >= 20000));
    assert.equal(feed.history.length, 6);
    assert.equal(feed.history.at(-1).listeners.web.conns, 10);
});

test('the feed reports errors to subscribers and keeps the last good answer', async () => {
    let fail = false;
    const feed = new StatsFeed(async () => {
        if (fail) throw new Error('down');
        return { listeners: [] };
    });
    const seen = [];
    feed.subscribe((f) => seen.push(f.error ? f.error.message : 'ok'));
    await feed.tick();
    fail = true;
    await feed.tick();
    assert.deepEqual(seen, ['ok', 'down']);
    assert.deepEqual(feed.latest, { listeners: [] });
});
