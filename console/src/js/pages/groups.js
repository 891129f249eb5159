// SPDX-License-Identifier: Apache-2.0
// Backend groups: servers with live health, weights edited inline, add / remove / drain,
// scheduler and health-check settings. Server changes go through the server sub-resources
// with If-Match, so two operators never lose each other's changes.
import * as api from '../api.js';
import { h, clear } from '../dom.js';
import * as fmt from '../format.js';
import { ACTIONS, labelCells, badge, dialog, field, input, select, pageHeader, showError, notice, confirm,
    clearErrors } from '../ui.js';

const SCHEDULERS = [['wrr', 'wrr: weighted round robin'], ['rr', 'rr: round robin'],
    ['wlc', 'wlc: weighted least connections'], ['sch', 'sch: hash of the client IP'],
    ['tch', 'tch: hash of the 4-tuple']];

const SERVER_COLS = ['Server', 'Health', 'Last check', 'Weight', 'Load', ACTIONS];

const serverPath = (g, srv) => `/v1/groups/${api.seg(g)}/servers/${api.seg(fmt.serverKey(srv))}`;

function groupForm(stored, onDone) {
    const hc = stored?.health_check || {};
    const form = h('form', { class: 'form', novalidate: true, id: 'group-form' });
    form.append(h('div', { class: 'form-error', role: 'alert' }),
        field('Name', input('name', { value: stored?.name || '', readonly: !!stored, required: true })),
        field('Scheduler', select('scheduler', SCHEDULERS, stored?.scheduler || 'wrr')),
        h('h3', null, 'Health check'),
        h('div', { class: 'field', 'data-field': 'health_check.enabled' },
            h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'enabled', checked: hc.enabled ?? true }),
                ' Checks on (off: every server counts as healthy)'), h('p', { class: 'field-error', role: 'alert' })),
        h('div', { class: 'grid2' },
            field('Protocol', select('hc_protocol', ['tcp', 'http'], hc.protocol || 'tcp'), null),
            field('URI (http)', input('uri', { value: hc.uri ?? '/' })),
            field('Method (http)', select('method', ['head', 'get'], hc.method || 'head')),
            field('Host header (http)', input('domain', { value: hc.domain ?? '', placeholder: 'the server address' })),
            field('Interval (s)', input('interval_s', { type: 'number', min: 1, max: 50, value: hc.interval_s ?? 2 })),
            field('Timeout (s)', input('timeout_s', { type: 'number', min: 1, max: 300, value: hc.timeout_s ?? 5 })),
            field('Healthy threshold', input('healthy_threshold', { type: 'number', min: 2, max: 10, value: hc.healthy_threshold ?? 3 })),
            field('Unhealthy threshold', input('unhealthy_threshold', { type: 'number', min: 2, max: 10, value: hc.unhealthy_threshold ?? 3 })),
            field('Port', input('port', { type: 'number', min: 0, max: 65535, value: hc.port ?? 0 }), "0: the server's port")));
    // The API names fields as health_check.X; the inputs carry short names.
    for (const f of form.querySelectorAll('.grid2 .field')) {
        const n = f.dataset.field === 'hc_protocol' ? 'protocol' : f.dataset.field;
        f.dataset.field = `health_check.${n}`;
    }
    form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        clearErrors(form);
        const e = form.elements;
        const body = stored ? structuredClone(stored.obj) : { name: e.name.value, servers: [] };
        body.scheduler = e.scheduler.value;
        body.health_check = {
            ...(body.health_check || {}),
            enabled: e.enabled.checked, protocol: e.hc_protocol.value, uri: e.uri.value,
            method: e.method.value, domain: e.domain.value,
            interval_s: Number(e.interval_s.value), timeout_s: Number(e.timeout_s.value),
            healthy_threshold: Number(e.healthy_threshold.value),
            unhealthy_threshold: Number(e.unhealthy_threshold.value), port: Number(e.port.value),
        };
        try {
            const r = stored
                ? await api.put(`/v1/groups/${api.seg(stored.name)}`, body, { ifMatch: stored.etag })
                : await api.post('/v1/groups', body);
            onDone(r.data);
        } catch (err) {
            if (err.status === 401) return;
            showError(form, err);
        }
    });
    return form;
}

export function render(ctx) {
    const root = h('section', { class: 'page' });
    const list = h('div', { class: 'groups' });
    root.append(pageHeader('Backend groups', h('button', { type: 'button', onClick: () => editGroup() }, 'Create group')), list);
    let groups = [];
    let cells = new Map(); // "group|address:port" -> live cells

    async function load() {
        const r = await api.get('/v1/groups');
        groups = r.data.groups;
        draw();
    }

    async function editGroup(g) {
        let stored;
        if (g) {
            const r = await api.get(`/v1/groups/${api.seg(g.name)}`);
            stored = { ...r.data, obj: r.data, etag: r.etag };
        }
        let dlg;
        const form = groupForm(stored, (n) => {
            dlg.close();
            notice(`${g ? 'Saved' : 'Created'} group ${n.name}`);
            load();
        });
        dlg = dialog(g ? `Settings of ${g.name}` : 'Create a backend group', form, [{ text: 'Cancel', kind: 'secondary' }]);
        dlg.querySelector('.actions').prepend(h('button', { type: 'submit', form: 'group-form' }, g ? 'Save' : 'Create'));
    }

    function removeGroup(g) {
        confirm(`Delete ${g.name}`, `Delete backend group ${g.name} and its ${g.servers.length} servers? slbd refuses while a listener uses it.`,
            'Delete', async () => {
                await api.del(`/v1/groups/${api.seg(g.name)}`);
                notice(`Deleted group ${g.name}`);
                load();
            });
    }

    function addServer(g) {
        const form = h('form', { class: 'form', novalidate: true, id: 'server-form' },
            h('div', { class: 'form-error', role: 'alert' }),
            field('Address (IPv4 or IPv6 literal)', input('address', { required: true })),
            field('Port', input('port', { type: 'number', min: 1, max: 65535, required: true })),
            field('Weight', input('weight', { type: 'number', min: 0, max: 100, value: 100 }), '0 drains the server'));
        let dlg;
        form.addEventListener('submit', async (ev) => {
            ev.preventDefault();
            clearErrors(form);
            const e = form.elements;
            try {
                await api.post(`/v1/groups/${api.seg(g.name)}/servers`,
                    { address: e.address.value, port: Number(e.port.value), weight: Number(e.weight.value) });
                dlg.close();
                notice(`Added ${e.address.value}:${e.port.value} to ${g.name}`);
                load();
            } catch (err) {
                if (err.status !== 401) showError(form, err);
            }
        });
        dlg = dialog(`Add a server to ${g.name}`, form, [{ text: 'Cancel', kind: 'secondary' }]);
        dlg.querySelector('.actions').prepend(h('button', { type: 'submit', form: 'server-form' }, 'Add'));
    }

    // Set a weight: read the server's ETag, then PATCH with If-Match.
    async function setWeight(g, srv, weight, errEl, inputEl) {
        errEl.textContent = '';
        inputEl.removeAttribute('aria-invalid');
        try {
            const cur = await api.get(serverPath(g.name, srv));
            if (cur.data.weight !== srv.weight) {
                inputEl.value = cur.data.weight;
                srv.weight = cur.data.weight;
                throw new api.ApiError(412, 'precondition_failed', `the weight was changed to ${cur.data.weight} meanwhile; check and try again`, 'weight');
            }
            const r = await api.patch(serverPath(g.name, srv), { weight }, { ifMatch: cur.etag });
            srv.weight = r.data.weight;
            inputEl.value = r.data.weight;
            notice(`${g.name} / ${fmt.serverKey(srv)}: weight ${r.data.weight}`);
        } catch (e) {
            if (e.status === 401) return;
            errEl.textContent = e.code ? `${e.message} (${e.code})` : e.message;
            inputEl.setAttribute('aria-invalid', 'true');
        }
    }

    function removeServer(g, srv) {
        const key = fmt.serverKey(srv);
        confirm(`Remove ${key}`, `Remove ${key} from ${g.name}? Open connections to it finish; new ones go elsewhere.`,
            'Remove', async () => {
                const cur = await api.get(serverPath(g.name, srv));
                await api.del(serverPath(g.name, srv), { ifMatch: cur.etag });
                notice(`Removed ${key} from ${g.name}`);
                load();
            });
    }

    function serverRow(g, srv) {
        const key = fmt.serverKey(srv);
        const c = { health: h('td'), check: h('td', { class: 'muted' }), load: h('td') };
        cells.set(`${g.name}|${key}`, c);
        const wIn = h('input', { type: 'number', min: 0, max: 100, value: srv.weight, class: 'weight',
            name: 'weight', 'aria-label': `Weight of ${key}` });
        const wErr = h('div', { class: 'field-error', role: 'alert' });
        const commit = () => {
            const v = Number(wIn.value);
            if (wIn.value !== '' && v !== srv.weight) setWeight(g, srv, v, wErr, wIn);
        };
        wIn.addEventListener('change', commit);
        wIn.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); commit(); } });
        return h('tr', { 'data-server': key },
            h('td', { class: 'mono strong' }, key), c.health, c.check,
            h('td', null, wIn, srv.weight === 0 ? h('span', { class: 'muted' }, ' draining') : null, wErr),
            c.load,
            h('td', { class: 'row-actions' },
                h('button', { type: 'button', class: 'secondary small', disabled: srv.weight === 0,
                    'aria-label': `Drain ${key}`, onClick: () => { wIn.value = 0; commit(); } }, 'Drain'),
                h('button', { type: 'button', class: 'danger small', 'aria-label': `Remove ${key}`,
                    onClick: () => removeServer(g, srv) }, 'Remove')));
    }

    function draw() {
        cells = new Map();
        clear(list);
        if (!groups.length) list.append(h('p', { class: 'muted' }, 'No backend group yet.'));
        for (const g of groups) {
            const hc = g.health_check || {};
            const hcText = hc.enabled === false ? 'health checks off'
                : `${hc.protocol === 'http' ? `http ${String(hc.method || 'head').toUpperCase()} ${hc.uri}` : 'tcp connect'} every ${hc.interval_s} s, timeout ${hc.timeout_s} s, down after ${hc.unhealthy_threshold} failures`;
            const headId = `g-${g.name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
            list.append(h('section', { class: 'card group', 'data-group': g.name, 'aria-labelledby': headId },
                h('div', { class: 'group-head' },
                    h('div', null, h('h2', { id: headId }, g.name),
                        h('p', { class: 'muted' }, `scheduler ${g.scheduler} · ${hcText}`)),
                    h('div', { class: 'page-actions' },
                        h('button', { type: 'button', class: 'small', onClick: () => addServer(g) }, 'Add server'),
                        h('button', { type: 'button', class: 'secondary small', onClick: () => editGroup(g) }, 'Settings'),
                        h('button', { type: 'button', class: 'danger small', onClick: () => removeGroup(g),
                            'aria-label': `Delete group ${g.name}` }, 'Delete'))),
                h('div', { class: 'table-wrap' }, h('table', { class: 'servers' },
                    h('caption', { class: 'sr-only' }, `Servers of ${g.name}`),
                    h('thead', null, h('tr', null, SERVER_COLS.map((x) => h('th', { scope: 'col' },
                        x === ACTIONS ? h('span', { class: 'sr-only' }, 'Actions') : x)))),
                    h('tbody', null, g.servers.length ? labelCells(g.servers.map((srv) => serverRow(g, srv)), SERVER_COLS)
                        : h('tr', null, h('td', { colspan: 6, class: 'empty' }, 'No servers: requests get 503')))))));
        }
        update(ctx.feed);
    }

    function update(feed) {
        for (const g of feed.latest?.groups || [])
            for (const srv of g.servers || []) {
                const c = cells.get(`${g.name}|${fmt.serverKey(srv)}`);
                if (!c) continue;
                clear(c.health).append(badge(srv.health, srv.health === 'up' ? 'ok' : 'critical'));
                c.check.textContent = srv.last_check || '';
                c.load.textContent = srv.requests > 0
                    ? `${fmt.count(srv.active)} active · ${fmt.count(srv.requests)} requests · ${srv.avg_response_ms.toFixed(1)} ms avg`
                    : `${fmt.count(srv.active)} active · ${fmt.count(srv.connections)} connections`;
            }
    }

    load().catch((e) => clear(list).append(h('p', { class: 'form-error' }, e.message)));
    const unsub = ctx.feed.subscribe(update);
    return { el: root, dispose: unsub };
}
