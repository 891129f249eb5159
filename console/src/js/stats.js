// SPDX-License-Identifier: Apache-2.0
// Traffic history: /v1/stats polled every POLL_MS, counters turned into per-second rates, the
// last 15 minutes kept for the charts. The pure parts (rates, alarms) are unit-tested.

export const POLL_MS = 2000;
export const WINDOW_MS = 15 * 60 * 1000;

const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const REQ_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'];

function perSec(a, b, dt) {
    const d = (b ?? 0) - (a ?? 0);
    // A counter that went down means slbd restarted or the listener was re-created: no rate.
    return d < 0 ? 0 : d / dt;
}

// Rates between two /v1/stats answers taken at tPrev and tCur (ms).
export function rates(prev, cur, tPrev, tCur) {
    const dt = (tCur - tPrev) / 1000;
    const out = { t: tCur, listeners: {}, requests: {}, handshakes: { full: 0, resumed: 0 } };
    for (const c of REQ_CLASSES) out.requests[c] = 0;
    if (!prev || dt <= 0) return out;
    const before = new Map((prev.listeners || []).map((l) => [l.name, l]));
    for (const l of cur.listeners || []) {
        const p = before.get(l.name);
        if (!p || p.protocol !== l.protocol) continue;
        const r = {
            conns: perSec(p.connections, l.connections, dt),
            payload: perSec(sum(Object.values(p.payload_bytes || {})),
                sum(Object.values(l.payload_bytes || {})), dt),
            wire: perSec(sum(Object.values(p.wire_bytes || {})),
                sum(Object.values(l.wire_bytes || {})), dt),
            refused: perSec(p.refused, l.refused, dt),
        };
        out.listeners[l.name] = r;
        if (l.requests && p.requests)
            for (const c of REQ_CLASSES) out.requests[c] += perSec(p.requests[c], l.requests[c], dt);
        if (l.handshakes && p.handshakes) {
            out.handshakes.full += perSec(p.handshakes.full, l.handshakes.full, dt);
            out.handshakes.resumed += perSec(p.handshakes.resumed, l.handshakes.resumed, dt);
        }
    }
    return out;
}

// What needs the operator's attention: expiring certificates, servers down, listeners that
// refused connections within the history, handshake failures by reason.
export function alarms(stats, certs, history, nowMs = Date.now()) {
    const out = [];
    for (const c of certs || []) {
        const days = Math.floor((Date.parse(c.not_after) - nowMs) / 86400000);
        if (days < 30)
            out.push({
                kind: 'certificate', level: days < 7 ? 'critical' : 'warning', subject: c.name,
                text: days < 0 ? `expired ${-days} days ago` : `expires in ${days} days`,
                link: '#/certificates',
            });
    }
    for (const g of stats?.groups || [])
        for (const s of g.servers || [])
            if (s.health === 'down')
                out.push({
                    kind: 'server', level: 'critical',
                    subject: `${g.name} / ${s.address.includes(':') ? `[${s.address}]` : s.address}:${s.port}`,
                    text: `down (${s.last_check || 'failing checks'})`, link: '#/groups',
                });
    const refused = {};
    for (const h of history || [])
        for (const [name, r] of Object.entries(h.listeners))
            if (r.refused > 0) refused[name] = true;
    for (const l of stats?.listeners || [])
        if (refused[l.name])
            out.push({
                kind: 'listener', level: 'warning', subject: l.name,
                text: `refusing connections (${l.refused} since start)`, link: '#/listeners',
            });
    return out;
}

export function handshakeFailures(stats) {
    const by = {};
    for (const l of stats?.listeners || [])
        for (const [reason, n] of Object.entries(l.handshakes?.failures || {}))
            by[reason] = (by[reason] || 0) + n;
    return Object.entries(by).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
}

// The poller: one per console session.
export class StatsFeed {
    constructor(fetchStats, { pollMs = POLL_MS, windowMs = WINDOW_MS } = {}) {
        this.fetchStats = fetchStats;
        this.pollMs = pollMs;
        this.windowMs = windowMs;
        this.latest = null;
        this.latestAt = 0;
        this.history = [];
        this.subs = new Set();
        this.timer = null;
        this.error = null;
    }

    subscribe(fn) {
        this.subs.add(fn);
        if (this.latest) fn(this);
        return () => this.subs.delete(fn);
    }

    add(stats, t) {
        if (this.latest) this.history.push(rates(this.latest, stats, this.latestAt, t));
        while (this.history.length && this.history[0].t < t - this.windowMs) this.history.shift();
        this.latest = stats;
        this.latestAt = t;
    }

    async tick() {
        try {
            const stats = await this.fetchStats();
            this.error = null;
            this.add(stats, Date.now());
        } catch (e) {
            this.error = e;
        }
        for (const fn of this.subs) fn(this);
    }

    start() {
        if (this.timer) return;
        const loop = async () => {
            await this.tick();
            if (this.timer !== null) this.timer = setTimeout(loop, this.pollMs);
        };
        this.timer = 0;
        loop();
    }

    stop() {
        if (this.timer) clearTimeout(this.timer);
        this.timer = null;
    }
}
