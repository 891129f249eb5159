// SPDX-License-Identifier: Apache-2.0
// Pure formatting helpers (unit-tested in console/test/unit).

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n) {
    if (!Number.isFinite(n)) return '–';
    let v = Math.abs(n);
    let i = 0;
    while (v >= 1024 && i < UNITS.length - 1) {
        v /= 1024;
        i += 1;
    }
    const sign = n < 0 ? '-' : '';
    // parseFloat drops trailing zeros: "5 KiB", "1.5 MiB", "4.35 KiB".
    return i === 0 ? `${sign}${Math.round(v)} B` : `${sign}${parseFloat(v.toFixed(v < 10 ? 2 : 1))} ${UNITS[i]}`;
}

export function rate(n, unit = '/s') {
    if (!Number.isFinite(n)) return '–';
    if (n === 0) return `0${unit}`;
    if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M${unit}`;
    if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k${unit}`;
    if (n >= 10) return `${n.toFixed(0)}${unit}`;
    return `${n.toFixed(n < 1 ? 2 : 1)}${unit}`;
}

export function count(n) {
    if (!Number.isFinite(n)) return '–';
    return n.toLocaleString('en-US');
}

const DAY_MS = 86400000;

// Whole days from now until an RFC 3339 date; negative once past.
export function daysLeft(iso, nowMs = Date.now()) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return NaN;
    return Math.floor((t - nowMs) / DAY_MS);
}

export function expiryLevel(days) {
    if (!Number.isFinite(days)) return 'unknown';
    if (days < 0) return 'expired';
    if (days < 7) return 'critical';
    if (days < 30) return 'warning';
    return 'ok';
}

export function daysText(days) {
    if (!Number.isFinite(days)) return '';
    if (days < 0) return `expired ${-days} day${days === -1 ? '' : 's'} ago`;
    if (days === 0) return 'expires today';
    return `${days} day${days === 1 ? '' : 's'} left`;
}

export function duration(ms) {
    if (!Number.isFinite(ms) || ms < 0) return '–';
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const hh = Math.floor(s / 3600);
    s -= hh * 3600;
    const mm = Math.floor(s / 60);
    s -= mm * 60;
    if (d) return `${d}d ${hh}h ${mm}m`;
    if (hh) return `${hh}h ${mm}m`;
    if (mm) return `${mm}m ${s}s`;
    return `${s}s`;
}

export function date(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return iso || '';
    return new Date(t).toISOString().slice(0, 10);
}

// A server's key in the API's paths: "address:port", IPv6 in brackets.
export function serverKey(srv) {
    const a = String(srv.address);
    return a.includes(':') ? `[${a}]:${srv.port}` : `${a}:${srv.port}`;
}

// The field a validation error names, without array indexes
// ("tls.certificates[0]" -> "tls.certificates", "listeners[3].bind" -> "listeners.bind").
export function fieldOf(where) {
    if (!where) return '';
    return String(where).replace(/\[\d+\]/g, '');
}

// The names a form may know a field by, most specific first: "settings.a.b" is tried as
// "settings.a.b", "settings.a", "settings", then "a.b", "a", then "b".
export function fieldCandidates(where) {
    const parts = fieldOf(where).split('.').filter(Boolean);
    const out = [];
    for (let start = 0; start < parts.length; start++)
        for (let end = parts.length; end > start; end--) out.push(parts.slice(start, end).join('.'));
    return out;
}
