// SPDX-License-Identifier: Apache-2.0
// Overview: counts, alarms and the live charts of the last 15 minutes.
import * as api from '../api.js';
import { h, clear, append } from '../dom.js';
import * as fmt from '../format.js';
import { lineChart } from '../chart.js';
import { alarms, handshakeFailures } from '../stats.js';
import { badge, pageHeader } from '../ui.js';

export function render(ctx) {
    const root = h('section', { class: 'page overview' });
    const body = h('div');
    root.append(pageHeader('Overview'), body);
    let certs = [];
    api.get('/v1/certificates').then((r) => {
        certs = r.data.certificates;
        draw(ctx.feed);
    }).catch(() => {});

    function card(label, value, sub) {
        return h('div', { class: 'card stat' }, h('span', { class: 'label' }, label),
            h('span', { class: 'value' }, value), sub ? h('span', { class: 'sub' }, sub) : null);
    }

    function draw(feed) {
        const st = feed.latest;
        if (!st) return;
        const servers = (st.groups || []).flatMap((g) => g.servers || []);
        const up = servers.filter((x) => x.health === 'up').length;
        const active = (st.listeners || []).reduce((a, l) => a + (l.active || 0), 0);
        const al = alarms(st, certs, feed.history);
        const hf = handshakeFailures(st);
        const t1 = feed.latestAt;
        const t0 = t1 - feed.windowMs;
        const hist = feed.history;
        const pts = (f) => hist.map((x) => [x.t, f(x)]);
        const names = (st.listeners || []).map((l) => l.name);
        const charts = [
            lineChart({ title: 'New connections per second', t0, t1, fmt: (v) => fmt.rate(v),
                series: names.map((n) => ({ name: n, points: pts((x) => x.listeners[n]?.conns ?? 0) })) }),
            lineChart({ title: 'Requests per second by status', t0, t1, fmt: (v) => fmt.rate(v),
                series: ['2xx', '3xx', '4xx', '5xx'].map((c) => ({ name: c, points: pts((x) => x.requests[c]) })) }),
            lineChart({ title: 'TLS handshakes per second', t0, t1, fmt: (v) => fmt.rate(v),
                series: ['full', 'resumed'].map((k) => ({ name: k, points: pts((x) => x.handshakes[k]) })) }),
        ];
        const traffic = (st.listeners || []).map((l) => {
            const payload = Object.values(l.payload_bytes || {}).reduce((a, b) => a + b, 0);
            const wire = Object.values(l.wire_bytes || {}).reduce((a, b) => a + b, 0);
            const over = payload > 0 ? ((wire - payload) / payload) * 100 : 0;
            return h('div', { class: 'traffic' },
                lineChart({ title: `${l.name}: payload vs wire bytes per second`, t0, t1,
                    fmt: (v) => `${fmt.bytes(v)}/s`, unit: 1024,
                    series: [
                        { name: 'payload (billed)', points: pts((x) => x.listeners[l.name]?.payload ?? 0) },
                        { name: 'wire (actual)', points: pts((x) => x.listeners[l.name]?.wire ?? 0) },
                    ] }),
                h('p', { class: 'muted' }, `Since start: payload ${fmt.bytes(payload)}, wire ${fmt.bytes(wire)}`,
                    l.protocol !== 'https' ? ' (no encryption: the wire carries the payload)'
                        : payload > 0 ? ` (${over >= 0 ? '+' : ''}${over.toFixed(1)} % on the wire: TLS handshakes and records)` : ''));
        });
        append(clear(body),
            h('div', { class: 'cards' },
                card('Listeners', fmt.count((st.listeners || []).length), `${fmt.count(active)} connection${active === 1 ? '' : 's'} open`),
                card('Backend groups', fmt.count((st.groups || []).length), `${up} of ${servers.length} servers up`),
                card('Certificates', fmt.count(certs.length),
                    `${certs.filter((c) => fmt.daysLeft(c.not_after) < 30).length} expiring within 30 days`),
                card('Workers', fmt.count(st.workers), `configuration generation ${st.generation}`)),
            h('div', { class: 'two-col' },
                h('section', { class: 'card', 'aria-labelledby': 'alarms-h' },
                    h('h2', { id: 'alarms-h' }, 'Alarms'),
                    al.length ? h('ul', { class: 'alarms' }, al.map((a) => h('li', { class: a.level },
                        badge(a.level, a.level), ' ', h('a', { href: a.link }, a.subject), ` ${a.text}`)))
                        : h('p', { class: 'ok-text' }, 'Nothing needs attention.')),
                h('section', { class: 'card', 'aria-labelledby': 'hs-h' },
                    h('h2', { id: 'hs-h' }, 'Handshake failures since start'),
                    hf.length ? h('ul', { class: 'kv' }, hf.map(([r, n]) =>
                        h('li', null, h('span', null, r.replace(/_/g, ' ')), h('strong', null, fmt.count(n)))))
                        : h('p', { class: 'ok-text' }, 'None.'))),
            feed.error ? h('p', { class: 'form-error', role: 'alert' }, `Stats unavailable: ${feed.error.message}`) : null,
            h('h2', null, 'Traffic, last 15 minutes'),
            h('div', { class: 'charts' }, charts),
            h('h2', null, 'Billing vs wire traffic per listener'),
            h('div', { class: 'charts' }, traffic.length ? traffic : h('p', { class: 'muted' }, 'No listeners yet.')));
    }
    const unsub = ctx.feed.subscribe(draw);
    return { el: root, dispose: unsub };
}
