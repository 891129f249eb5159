// SPDX-License-Identifier: Apache-2.0
// Settings (drain timeout, access log) and the about box.
import * as api from '../api.js';
import { h, clear } from '../dom.js';
import * as fmt from '../format.js';
import { field, input, pageHeader, showError, notice, clearErrors } from '../ui.js';

export function render() {
    const root = h('section', { class: 'page' });
    const formBox = h('div', { class: 'card' });
    const about = h('div', { class: 'card', id: 'about' });
    root.append(pageHeader('Settings'), h('div', { class: 'two-col' }, formBox, about));

    async function load() {
        const r = await api.get('/v1/settings');
        const etag = r.etag;
        const st = r.data;
        const form = h('form', { class: 'form', novalidate: true },
            h('h2', null, 'Node settings'),
            h('div', { class: 'form-error', role: 'alert' }),
            field('Drain timeout (s)', input('drain_timeout_s', { type: 'number', min: 0, max: 3600,
                value: st.drain_timeout_s }), 'How long a stop waits for open connections (0–3600)'),
            field('Access log', input('access_log', { value: st.access_log, placeholder: 'off' }),
                'Empty: off. "stdout", or a file name inside the state directory'),
            h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save settings')));
        form.addEventListener('submit', async (ev) => {
            ev.preventDefault();
            clearErrors(form);
            const body = { ...st, drain_timeout_s: Number(form.elements.drain_timeout_s.value),
                access_log: form.elements.access_log.value };
            try {
                await api.put('/v1/settings', body, { ifMatch: etag });
                notice('Settings saved');
                load();
            } catch (e) {
                if (e.status !== 401) showError(form, e);
            }
        });
        clear(formBox).append(form);
    }

    async function loadAbout() {
        const r = await api.get('/v1/about');
        const a = r.data;
        clear(about).append(h('h2', null, 'About this node'),
            h('dl', { class: 'about' },
                h('dt', null, 'Version'), h('dd', null, `slbd ${a.version}`),
                h('dt', null, 'State directory'), h('dd', { class: 'mono' }, a.state_dir),
                h('dt', null, 'Workers'), h('dd', null, String(a.workers)),
                h('dt', null, 'Uptime'), h('dd', null, `${fmt.duration(Date.now() - a.started_ms)} (since ${new Date(a.started_ms).toISOString().replace('T', ' ').slice(0, 19)} UTC)`),
                h('dt', null, 'Configuration generation'), h('dd', null, String(a.generation)),
                h('dt', null, 'Console'), h('dd', null, 'served by slbd itself; every action uses the admin API')));
    }

    load().catch((e) => clear(formBox).append(h('p', { class: 'form-error' }, e.message)));
    loadAbout().catch((e) => clear(about).append(h('p', { class: 'form-error' }, e.message)));
    return { el: root };
}
