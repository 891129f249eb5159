// SPDX-License-Identifier: Apache-2.0
// Listeners: list with state and traffic, create / edit for tcp, http and https, delete.
import * as api from '../api.js';
import { h, clear } from '../dom.js';
import * as fmt from '../format.js';
import { ACTIONS, badge, dialog, field, input, select, pageHeader, showError, table, notice, confirm,
    clearErrors } from '../ui.js';

const POLICIES = ['tls_cipher_policy_1_2_strict_with_1_3', 'tls_cipher_policy_1_2_strict',
    'tls_cipher_policy_1_2', 'tls_cipher_policy_1_1', 'tls_cipher_policy_1_0'];

// The state badge of a listener: its configured status first, then what its counters say
// (s: its /v1/stats entry, r: its rates over the last poll). [text, level].
export function listenerState(l, s, r) {
    if (l.status === 'stopped') return ['stopped', 'unknown'];
    if (!s) return ['starting', 'unknown'];
    if (r && r.refused > 0) return ['refusing', 'warning'];
    return ['serving', 'ok'];
}

// The listener object the form describes, on top of the stored one (fields the form does
// not show are kept as they are).
export function listenerFromForm(v, stored) {
    const l = stored ? structuredClone(stored) : {};
    l.name = v.name;
    l.protocol = v.protocol;
    l.bind = v.bind;
    if (v.backend_group) l.backend_group = v.backend_group;
    else delete l.backend_group;
    l.max_connections = Number(v.max_connections || 0);
    l.connect_timeout_ms = Number(v.connect_timeout_ms || 5000);
    // Limits: an empty field is no limit; requests_per_s needs requests (not on tcp).
    const limits = {};
    for (const k of ['connections_per_s', 'requests_per_s', 'bandwidth_mbps']) {
        const x = v.limits?.[k];
        if (x !== undefined && x !== '' && !(k === 'requests_per_s' && v.protocol === 'tcp'))
            limits[k] = Number(x);
    }
    if (Object.keys(limits).length) l.limits = limits;
    else delete l.limits;
    if (v.protocol === 'http') {
        if (v.redirect_to) l.redirect_to = v.redirect_to;
        else if (l.redirect_to !== undefined) l.redirect_to = '';
    }
    if (v.protocol === 'https') {
        l.tls = {
            ...(l.tls || {}),
            certificates: v.certificates,
            client_ca: v.client_ca || '',
            client_auth: v.client_auth,
            policy: v.policy,
            session_ticket_lifetime_s: Number(v.session_ticket_lifetime_s),
            alpn: v.alpn,
        };
    } else {
        delete l.tls;
    }
    return l;
}

function listenerForm(stored, groups, certs, onDone) {
    const tls = stored?.tls || {};
    const form = h('form', { class: 'form', novalidate: true, id: 'listener-form' });
    const proto = select('protocol', ['https', 'http', 'tcp'], stored?.protocol || 'https',
        { disabled: !!stored });
    const serverCerts = certs.filter((c) => c.type === 'server');
    const caCerts = certs.filter((c) => c.type === 'ca');
    const chosen = tls.certificates || [];
    const certBox = h('fieldset', { class: 'field', 'data-field': 'tls.certificates' },
        h('legend', null, 'Server certificates (the first is the default; the others are chosen by SNI)'),
        serverCerts.length ? serverCerts.map((c) => h('label', { class: 'check' },
            h('input', { type: 'checkbox', name: 'certificates', value: c.id, checked: chosen.includes(c.id) }),
            ` ${c.name} `, h('span', { class: 'muted' }, `${c.subject} · ${c.key_type}`)))
            : h('p', { class: 'muted' }, 'No server certificate yet: upload one first.'),
        h('p', { class: 'field-error', role: 'alert' }));
    const alpn = tls.alpn || ['h2', 'http/1.1'];
    const httpsPart = h('div', { class: 'group-https' },
        h('h3', null, 'TLS'),
        certBox,
        field('Client CA (two-way authentication)', select('client_ca',
            [['', 'off'], ...caCerts.map((c) => [c.id, c.name])], tls.client_ca || ''), null),
        field('Client authentication', select('client_auth', [['required', 'required'],
            ['optional', 'optional']], tls.client_auth || 'required'), 'Used with a client CA only'),
        field('Security policy', select('policy', POLICIES, tls.policy || POLICIES[0])),
        field('Session ticket lifetime (s)', input('session_ticket_lifetime_s', { type: 'number',
            min: 0, max: 7200, value: tls.session_ticket_lifetime_s ?? 300 }), '0 turns resumption off'),
        h('fieldset', { class: 'field', 'data-field': 'tls.alpn' }, h('legend', null, 'ALPN'),
            ['h2', 'http/1.1'].map((p) => h('label', { class: 'check' },
                h('input', { type: 'checkbox', name: 'alpn', value: p, checked: alpn.includes(p) }), ` ${p}`)),
            h('p', { class: 'field-error', role: 'alert' })));
    const httpPart = h('div', null, field('Redirect to (http only)', input('redirect_to',
        { value: stored?.redirect_to || '', placeholder: 'https://HOST:PORT' }),
        'Answer every request with a redirect; the backend group may then be empty'));
    const rpsPart = h('div', null, field('Requests per second (limit)', input('limits.requests_per_s',
        { type: 'number', min: 1, value: stored?.limits?.requests_per_s ?? '' }),
    'Empty: no limit. Beyond it requests get 503 with Retry-After (http and https)'));
    form.append(h('div', { class: 'form-error', role: 'alert' }),
        field('Name', input('name', { value: stored?.name || '', required: true, readonly: !!stored })),
        field('Protocol', proto, stored ? 'Changing the protocol is delete and create' : null),
        field('Bind address', input('bind', { value: stored?.bind || '', placeholder: '0.0.0.0:443', required: true })),
        field('Backend group', select('backend_group', [['', '(none)'], ...groups.map((g) => g.name)],
            stored?.backend_group ?? (groups[0]?.name || ''))),
        field('Max connections', input('max_connections', { type: 'number', min: 0,
            value: stored?.max_connections ?? 0 }), '0: no limit'),
        field('Backend connect timeout (ms)', input('connect_timeout_ms', { type: 'number', min: 100,
            value: stored?.connect_timeout_ms ?? 5000 })),
        field('New connections per second (limit)', input('limits.connections_per_s', { type: 'number',
            min: 1, value: stored?.limits?.connections_per_s ?? '' }), 'Empty: no limit. Beyond it connections are reset'),
        rpsPart,
        field('Bandwidth to clients (Mbit/s)', input('limits.bandwidth_mbps', { type: 'number',
            min: 1, value: stored?.limits?.bandwidth_mbps ?? '' }), 'Empty: no limit. Traffic is shaped, not dropped'),
        httpPart, httpsPart);
    const sync = () => {
        httpsPart.hidden = proto.value !== 'https';
        httpPart.hidden = proto.value !== 'http';
        rpsPart.hidden = proto.value === 'tcp';
    };
    proto.addEventListener('change', sync);
    sync();
    form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        clearErrors(form);
        const el = form.elements;
        const checked = (n) => [...form.querySelectorAll(`input[name="${n}"]:checked`)].map((x) => x.value);
        const v = {
            name: el.name.value, protocol: proto.value, bind: el.bind.value,
            backend_group: el.backend_group.value, max_connections: el.max_connections.value,
            connect_timeout_ms: el.connect_timeout_ms.value, redirect_to: el.redirect_to.value,
            certificates: checked('certificates'), client_ca: el.client_ca.value,
            client_auth: el.client_auth.value, policy: el.policy.value,
            session_ticket_lifetime_s: el.session_ticket_lifetime_s.value, alpn: checked('alpn'),
            limits: {
                connections_per_s: el['limits.connections_per_s'].value,
                requests_per_s: el['limits.requests_per_s'].value,
                bandwidth_mbps: el['limits.bandwidth_mbps'].value,
            },
        };
        const body = listenerFromForm(v, stored?.obj);
        try {
            const r = stored
                ? await api.put(`/v1/listeners/${api.seg(stored.name)}`, body, { ifMatch: stored.etag })
                : await api.post('/v1/listeners', body);
            onDone(r.data);
        } catch (e) {
            if (e.status === 401) return;
            showError(form, e);
        }
    });
    return form;
}

export function render(ctx) {
    const root = h('section', { class: 'page' });
    const list = h('div');
    root.append(pageHeader('Listeners', h('button', { type: 'button', onClick: () => edit() }, 'Create listener')),
        h('p', { class: 'muted' }, 'A stopped listener keeps its configuration and closes its socket; start it to accept connections again.'),
        list);
    let listeners = [];

    async function load() {
        const r = await api.get('/v1/listeners');
        listeners = r.data.listeners;
        draw();
    }

    async function edit(l) {
        const [g, c] = await Promise.all([api.get('/v1/groups'), api.get('/v1/certificates')]);
        let stored;
        if (l) {
            const r = await api.get(`/v1/listeners/${api.seg(l.name)}`);
            stored = { ...r.data, obj: r.data, etag: r.etag };
        }
        let dlg;
        const form = listenerForm(stored, g.data.groups, c.data.certificates, (n) => {
            dlg.close();
            notice(`${l ? 'Saved' : 'Created'} listener ${n.name}`);
            load();
        });
        dlg = dialog(l ? `Edit listener ${l.name}` : 'Create a listener', form, [{ text: 'Cancel', kind: 'secondary' }]);
        dlg.querySelector('.actions').prepend(h('button', { type: 'submit', form: 'listener-form' }, l ? 'Save' : 'Create'));
    }

    function setStatus(l, action) {
        const stop = action === 'stop';
        confirm(`${stop ? 'Stop' : 'Start'} ${l.name}`,
            stop ? `Stop listener ${l.name} on ${l.bind}? Its socket closes: new connections are refused, connections in progress finish. Its configuration is kept.`
                : `Start listener ${l.name}? It opens ${l.bind} again.`,
            stop ? 'Stop' : 'Start', async () => {
                await api.post(`/v1/listeners/${api.seg(l.name)}/${action}`);
                notice(`${stop ? 'Stopped' : 'Started'} listener ${l.name}`);
                load();
            });
    }

    function remove(l) {
        confirm(`Delete ${l.name}`, `Delete listener ${l.name} on ${l.bind}? It stops accepting at once; open connections finish as in a stop.`,
            'Delete', async () => {
                await api.del(`/v1/listeners/${api.seg(l.name)}`);
                notice(`Deleted listener ${l.name}`);
                load();
            });
    }

    // Rows are built once per load; each poll only rewrites the live cells, so keyboard
    // focus on a row's buttons survives the refresh.
    let cells = new Map();
    function draw() {
        cells = new Map();
        const rows = listeners.map((l) => {
            const c = { state: h('td'), conns: h('td'), traffic: h('td') };
            cells.set(l.name, c);
            return h('tr', { 'data-name': l.name },
                h('td', { class: 'strong' }, l.name),
                h('td', null, l.protocol, l.tls ? h('div', { class: 'muted small-text' },
                    `${l.tls.certificates.length} certificate${l.tls.certificates.length === 1 ? '' : 's'}`,
                    l.tls.client_ca ? ` · client auth ${l.tls.client_auth}` : '') : null),
                h('td', { class: 'mono' }, l.bind),
                h('td', null, l.backend_group || (l.redirect_to ? `redirect → ${l.redirect_to}` : '')),
                c.state, c.conns, c.traffic,
                h('td', { class: 'row-actions' },
                    h('button', { type: 'button', class: 'secondary small', onClick: () => edit(l),
                        'aria-label': `Edit ${l.name}` }, 'Edit'),
                    l.status === 'stopped'
                        ? h('button', { type: 'button', class: 'secondary small', onClick: () => setStatus(l, 'start'),
                            'aria-label': `Start ${l.name}` }, 'Start')
                        : h('button', { type: 'button', class: 'secondary small', onClick: () => setStatus(l, 'stop'),
                            'aria-label': `Stop ${l.name}` }, 'Stop'),
                    h('button', { type: 'button', class: 'danger small', onClick: () => remove(l),
                        'aria-label': `Delete ${l.name}` }, 'Delete')));
        });
        clear(list).append(table('Listeners', ['Name', 'Protocol', 'Bind', 'Backend', 'State', 'Connections', 'Traffic', ACTIONS],
            rows, { id: 'listener-table' }));
        update(ctx.feed);
    }

    function update(feed) {
        const st = new Map((feed.latest?.listeners || []).map((x) => [x.name, x]));
        const last = feed.history[feed.history.length - 1];
        const byName = new Map(listeners.map((l) => [l.name, l]));
        for (const [name, c] of cells) {
            const s = st.get(name);
            const r = last?.listeners[name];
            clear(c.state).append(badge(...listenerState(byName.get(name) || {}, s, r)));
            c.conns.textContent = s ? `${fmt.count(s.active)} open · ${fmt.rate(r?.conns ?? 0)} new` : '–';
            c.traffic.textContent = s ? `${fmt.bytes(r?.payload ?? 0)}/s payload · ${fmt.bytes(r?.wire ?? 0)}/s wire` : '–';
        }
    }

    load().catch((e) => clear(list).append(h('p', { class: 'form-error' }, e.message)));
    const unsub = ctx.feed.subscribe(update);
    return { el: root, dispose: unsub };
}
