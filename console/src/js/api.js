// SPDX-License-Identifier: Apache-2.0
// The admin API client: the token lives in sessionStorage (gone with the tab) and travels in
// the Authorization header; no cookies, so no CSRF. A 401 anywhere sends the operator back to
// the login page.

const KEY = 'slbd.token';

export class ApiError extends Error {
    constructor(status, code, message, where) {
        super(message || code || `HTTP ${status}`);
        this.status = status;
        this.code = code || '';
        this.where = where || '';
    }
}

const listeners = new Set();

export function onUnauthorized(fn) {
    listeners.add(fn);
}

export function token() {
    return sessionStorage.getItem(KEY) || '';
}

export function setToken(t) {
    if (t) sessionStorage.setItem(KEY, t);
    else sessionStorage.removeItem(KEY);
}

// One call: resolves to {status, data, etag}; rejects with ApiError.
export async function call(method, path, body, opts = {}) {
    const headers = { Authorization: `Bearer ${opts.token ?? token()}` };
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
        headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
    }
    if (opts.ifMatch) headers['If-Match'] = opts.ifMatch;
    let res;
    try {
        res = await fetch(path, init);
    } catch (e) {
        throw new ApiError(0, 'network', `slbd did not answer (${e.message})`);
    }
    const text = await res.text();
    let data = null;
    if (text) {
        try {
            data = JSON.parse(text);
        } catch {
            data = text;
        }
    }
    if (!res.ok) {
        const err = data && data.error ? data.error : {};
        const e = new ApiError(res.status, err.code, err.message, err.where);
        if (res.status === 401 && !opts.noAuthRedirect) for (const fn of listeners) fn(e);
        throw e;
    }
    return { status: res.status, data, etag: res.headers.get('ETag') };
}

export const get = (path, opts) => call('GET', path, undefined, opts);
export const post = (path, body, opts) => call('POST', path, body, opts);
export const put = (path, body, opts) => call('PUT', path, body, opts);
export const patch = (path, body, opts) => call('PATCH', path, body, opts);
export const del = (path, opts) => call('DELETE', path, undefined, opts);

export function seg(s) {
    return encodeURIComponent(s);
}
