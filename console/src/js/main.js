// SPDX-License-Identifier: Apache-2.0
// The console's entry point: login, the shell (navigation) and the hash router.
import * as api from './api.js';
import { h, clear } from './dom.js';
import { StatsFeed } from './stats.js';
import * as overview from './pages/overview.js';
import * as certificates from './pages/certificates.js';
import * as listeners from './pages/listeners.js';
import * as groups from './pages/groups.js';
import * as settings from './pages/settings.js';

const PAGES = {
    overview: { title: 'Overview', mod: overview },
    listeners: { title: 'Listeners', mod: listeners },
    groups: { title: 'Backend groups', mod: groups },
    certificates: { title: 'Certificates', mod: certificates },
    settings: { title: 'Settings', mod: settings },
};

const app = document.getElementById('app');
let feed = null;
let current = null;

function login(message) {
    if (feed) feed.stop();
    feed = null;
    if (current?.dispose) current.dispose();
    current = null;
    const tok = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off',
        required: true, 'aria-describedby': 'token-hint token-err' });
    const err = h('p', { class: 'field-error', id: 'token-err', role: 'alert' }, message || '');
    const form = h('form', { class: 'login card', novalidate: true },
        h('h1', null, h('span', { class: 'logo', 'aria-hidden': 'true' }), 'slbd console'),
        h('div', { class: 'field' },
            h('label', { for: 'token' }, 'Admin token'), tok,
            h('p', { class: 'hint', id: 'token-hint' }, 'The content of admin.token in the state directory. It is kept in this tab only (sessionStorage) and sent to slbd alone.'),
            err),
        h('button', { type: 'submit' }, 'Sign in'));
    form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const t = tok.value.trim();
        if (!t) {
            err.textContent = 'Paste the admin token.';
            return;
        }
        try {
            await api.get('/v1/stats', { token: t, noAuthRedirect: true });
        } catch (e) {
            err.textContent = e.status === 401 ? 'slbd refused this token.' : e.message;
            tok.setAttribute('aria-invalid', 'true');
            return;
        }
        api.setToken(t);
        if (!location.hash || location.hash === '#/login') location.hash = '#/overview';
        shell();
    });
    document.title = 'Sign in · slbd console';
    clear(app).append(h('main', { class: 'login-wrap' }, form));
    tok.focus();
}

let content = null;
let nav = null;

function shell() {
    feed = new StatsFeed(async () => (await api.get('/v1/stats')).data);
    feed.start();
    content = h('main', { id: 'content', tabindex: '-1' });
    nav = h('nav', { 'aria-label': 'Main' }, h('ul', null, Object.entries(PAGES).map(([k, p]) =>
        h('li', null, h('a', { href: `#/${k}`, 'data-page': k }, p.title)))));
    const live = h('span', { class: 'live', 'aria-hidden': 'true' });
    feed.subscribe((f) => {
        live.className = `live ${f.error ? 'down' : 'up'}`;
        live.title = f.error ? `stats unavailable: ${f.error.message}` : 'live';
    });
    clear(app).append(
        h('a', { href: '#content', class: 'skip', onClick: (ev) => {
            ev.preventDefault();
            content.focus();
        } }, 'Skip to content'),
        h('header', { class: 'top' },
            h('div', { class: 'brand' }, h('span', { class: 'logo', 'aria-hidden': 'true' }), 'slbd', live),
            nav,
            h('button', { type: 'button', class: 'secondary small', onClick: () => {
                api.setToken('');
                location.hash = '';
                login('Signed out.');
            } }, 'Sign out')),
        content);
    route();
}

function route() {
    if (!feed) return;
    const key = (location.hash.replace(/^#\/?/, '') || 'overview').split('/')[0];
    const page = PAGES[key] || PAGES.overview;
    if (current?.dispose) current.dispose();
    current = page.mod.render({ feed });
    clear(content).append(current.el);
    document.title = `${page.title} · slbd console`;
    for (const a of nav.querySelectorAll('a'))
        if (a.dataset.page === key) a.setAttribute('aria-current', 'page');
        else a.removeAttribute('aria-current');
}

window.addEventListener('hashchange', () => {
    if (location.hash === '#content') return;
    route();
    content?.querySelector('h1')?.focus();
});
api.onUnauthorized(() => {
    api.setToken('');
    login('The token was refused (401): sign in again.');
});

if (api.token()) shell();
else login();
