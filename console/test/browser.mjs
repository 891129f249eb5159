// SPDX-License-Identifier: Apache-2.0
// The console in a real browser: headless Chromium from Debian driven by playwright-core
// (no browser download). Run by tests/e2e/test_console.py, which starts slbd, backends and
// the demo configuration and passes them in the environment. Exits non-zero on the first
// failed step; screenshots of every page go to $CONSOLE_ARTIFACTS.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const env = process.env;
const ADMIN = env.SLBD_ADMIN;
const TOKEN = env.SLBD_TOKEN;
const OUT = env.CONSOLE_ARTIFACTS;
const UP = env.CONSOLE_UPLOAD_DIR;
const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const problems = [];
const log = (...a) => console.log(...a);

function check(cond, what) {
    if (!cond) throw new Error(`check failed: ${what}`);
}

async function apiGet(p) {
    const r = await fetch(ADMIN + p, { headers: { Authorization: `Bearer ${TOKEN}` } });
    return { status: r.status, data: await r.json() };
}

const browser = await chromium.launch({
    executablePath: env.CONSOLE_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ viewport: DESKTOP });
const page = await context.newPage();
const origin = new URL(ADMIN).origin;

// Every request stays on slbd's origin; no page error, no CSP violation, no alert().
page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith('data:')) problems.push(`request to another origin: ${u}`);
});
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
    // 4xx answers the tests provoke on purpose are logged by Chromium as resource errors.
    if (m.type() === 'error' && !/status of (400|401|404|409|412)/.test(m.text()))
        problems.push(`console error: ${m.text()}`);
});
page.on('dialog', async (d) => {
    problems.push(`a JavaScript dialog opened: ${d.message()}`);
    await d.dismiss();
});

let shots = 0;
async function shot(name) {
    shots += 1;
    await page.screenshot({ path: path.join(OUT, `${String(shots).padStart(2, '0')}-${name}.png`), fullPage: true });
}

// axe-core, evaluated through the DevTools protocol (the page's CSP forbids injected scripts,
// as it should). Serious and critical violations fail the test.
async function axe(what) {
    await page.evaluate(AXE);
    const res = await page.evaluate(async () => {
        // eslint-disable-next-line no-undef
        const r = await axe.run(document, { resultTypes: ['violations'] });
        return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
    });
    const bad = res.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    for (const v of res) log(`  axe ${what}: ${v.impact} ${v.id} (${v.help}) ${v.nodes.join(', ')}`);
    if (bad.length) problems.push(`axe-core on ${what}: ${bad.map((v) => `${v.id} at ${v.nodes.join(', ')}`).join('; ')}`);
}

async function goto(pageKey, heading) {
    await page.click(`nav a[data-page="${pageKey}"]`);
    await page.waitForSelector(`h1:text-is("${heading}")`);
}

async function step(name, fn) {
    log(`step: ${name}`);
    try {
        await fn();
    } catch (e) {
        await shot(`FAILED-${name.replace(/\W+/g, '-')}`).catch(() => {});
        throw e;
    }
}

let failed = false;
try {
    await step('the root redirects to the login page', async () => {
        await page.goto(`${ADMIN}/`);
        check(page.url() === `${origin}/ui/`, `at ${page.url()}`);
        await page.waitForSelector('#token');
        await shot('login');
        await axe('login');
    });

    await step('a wrong token is refused at the field', async () => {
        await page.fill('#token', 'not-the-token-0123456789');
        await page.keyboard.press('Enter');
        await page.waitForSelector('#token-err:text("refused")');
    });

    await step('log in with the keyboard', async () => {
        await page.fill('#token', TOKEN);
        await page.keyboard.press('Enter');
        await page.waitForSelector('h1:text-is("Overview")');
        const stored = await page.evaluate(() => sessionStorage.getItem('slbd.token'));
        check(stored === TOKEN, 'token kept in sessionStorage');
        const cookies = await context.cookies();
        check(cookies.length === 0, 'no cookies');
    });

    await step('overview: counts, alarms and charts', async () => {
        // Two polls make a rate; traffic in between gives the charts something to show.
        for (let i = 0; i < 3; i++) {
            await fetch(`http://127.0.0.1:${env.CONSOLE_HTTP_PORT}/hello`).then((r) => r.text());
            await page.waitForTimeout(1200);
        }
        await page.waitForSelector('figure.chart svg path.line', { state: 'attached' });
        const text = await page.textContent('main');
        check(text.includes('Listeners') && text.includes('Alarms'), 'cards and alarms');
        check(text.includes('payload vs wire'), 'payload vs wire chart');
        check((await page.$$('figure.chart')).length >= 6, 'charts: 3 + one per listener');
        await shot('overview');
        await axe('overview');
    });

    await step("listeners: the demo's listeners", async () => {
        await goto('listeners', 'Listeners');
        await page.waitForSelector('#listener-table tr[data-name="https"]');
        for (const n of ['https', 'http', 'tcp'])
            check(await page.$(`#listener-table tr[data-name="${n}"]`), `listener ${n} listed`);
        await page.waitForSelector('#listener-table tr[data-name="https"] .badge:text("serving")');
        await shot('listeners');
        await axe('listeners');
        await page.click('#listener-table tr[data-name="https"] button:text("Edit")');
        await page.waitForSelector('dialog[open] h2:text("Edit listener https")');
        check(await page.isChecked('dialog input[name=certificates][value=demo]'), 'demo certificate checked');
        await shot('listener-edit');
        await axe('listener edit dialog');
        await page.keyboard.press('Escape');
        await page.waitForSelector('dialog', { state: 'detached' });
    });

    await step('listeners: stop and start with confirmation', async () => {
        const row = '#listener-table tr[data-name="http"]';
        await page.click(`${row} button:text("Stop")`);
        await page.waitForSelector('dialog[open] h2:text("Stop http")');
        check((await page.textContent('dialog[open]')).includes('configuration is kept'), 'stop explained');
        await axe('stop dialog');
        await page.click('dialog button:text("Stop")');
        await page.waitForSelector(`${row} .badge:text("stopped")`);
        check((await apiGet('/v1/listeners/http')).data.status === 'stopped', 'stopped in the API');
        const refused = await fetch(`http://127.0.0.1:${env.CONSOLE_HTTP_PORT}/hello`).then(() => false, () => true);
        check(refused, 'a stopped listener refuses connections');
        await shot('listener-stopped');
        await page.click(`${row} button:text("Start")`);
        await page.click('dialog button:text("Start")');
        await page.waitForSelector(`${row} .badge:text("serving")`);
        check((await apiGet('/v1/listeners/http')).data.status === 'running', 'running in the API');
        await fetch(`http://127.0.0.1:${env.CONSOLE_HTTP_PORT}/hello`).then((r) => r.text());
    });

    await step('listeners: limits in the edit form, errors at the field', async () => {
        const row = '#listener-table tr[data-name="http"]';
        await page.click(`${row} button:text("Edit")`);
        await page.waitForSelector('dialog[open] h2:text("Edit listener http")');
        await page.fill('dialog input[name="limits.requests_per_s"]', '0');
        await page.click('dialog button[type=submit]');
        await page.waitForSelector('dialog .field[data-field="limits.requests_per_s"] .field-error:not(:empty)');
        await axe('listener edit with a limit error');
        await page.fill('dialog input[name="limits.requests_per_s"]', '1000');
        await page.fill('dialog input[name="limits.bandwidth_mbps"]', '500');
        await page.click('dialog button[type=submit]');
        await page.waitForSelector('dialog', { state: 'detached' });
        const l = (await apiGet('/v1/listeners/http')).data;
        check(l.limits?.requests_per_s === 1000 && l.limits?.bandwidth_mbps === 500, JSON.stringify(l.limits));
        check(l.status === 'running', 'status kept by the edit');
    });

    await step('certificates: hostile text is shown as text', async () => {
        await goto('certificates', 'Certificates');
        await page.waitForSelector('#cert-table tr[data-id="hostile"]');
        const row = await page.$('#cert-table tr[data-id="hostile"]');
        const text = await row.textContent();
        const cert = (await apiGet('/v1/certificates/hostile')).data;
        // The subject as the API gives it (RFC 4514 escapes \< and \>), character for character.
        check(cert.subject.includes('<script') && cert.subject.includes('<img src=x onerror=alert(1)'), cert.subject);
        check(text.includes(cert.subject), `subject shown literally: ${text}`);
        check(text.includes('<img src=x onerror=alert(3)>evil'), 'name shown literally');
        check((await page.$$('main img, main script')).length === 0, 'no element made from it');
        await shot('certificates');
        await axe('certificates');
    });

    await step('certificates: a mismatched key shows the error at the field', async () => {
        await page.click('button:text("Upload certificate")');
        await page.waitForSelector('dialog[open] form');
        await page.fill('dialog input[name=name]', 'mismatch');
        await page.fill('dialog textarea[name=certificate]', readFileSync(path.join(UP, 'other-chain.pem'), 'utf8'));
        await page.fill('dialog textarea[name=private_key]', readFileSync(path.join(UP, 'wrong.key'), 'utf8'));
        await page.click('dialog button[type=submit]');
        const err = await page.waitForSelector('dialog .field[data-field="private_key"] .field-error:not(:empty)');
        const msg = await err.textContent();
        check(msg.includes('key_mismatch'), `field error: ${msg}`);
        check(await page.getAttribute('dialog textarea[name=private_key]', 'aria-invalid') === 'true', 'aria-invalid');
        await shot('certificate-key-mismatch');
        await axe('upload dialog with an error');
        await page.click('dialog button:text("Cancel")');
    });

    await step('certificates: upload through the form with the file pickers', async () => {
        await page.click('button:text("Upload certificate")');
        await page.waitForSelector('dialog[open] form');
        await page.fill('dialog input[name=name]', 'uploaded-in-browser');
        const pickers = await page.$$('dialog input[type=file]');
        await pickers[0].setInputFiles(path.join(UP, 'other-chain.pem'));
        await pickers[1].setInputFiles(path.join(UP, 'other.key'));
        await page.waitForFunction(() => document.querySelector('dialog textarea[name=private_key]').value.includes('PRIVATE KEY'));
        await page.click('dialog button[type=submit]');
        await page.waitForSelector('dialog', { state: 'detached' });
        const row = await page.waitForSelector('#cert-table tbody tr:has-text("uploaded-in-browser")');
        check((await row.textContent()).includes('other.test'), 'SANs listed');
    });

    await step('certificates: replace names the listeners that switch; delete in use is refused', async () => {
        await page.click('#cert-table tr[data-id="demo"] button:text("Replace")');
        await page.waitForSelector('dialog[open] .callout');
        check((await page.textContent('dialog .callout')).includes('https'), 'listener https named');
        await shot('certificate-replace');
        await page.click('dialog button:text("Cancel")');
        await page.click('#cert-table tr[data-id="demo"] button:text("Delete")');
        await page.click('dialog button:text("Delete")');
        const err = await page.waitForSelector('dialog .form-error p');
        const msg = await err.textContent();
        check(msg.includes('in_use') && msg.includes('https'), `refusal names the listener: ${msg}`);
        await page.click('dialog button:text("Cancel")');
    });

    await step('certificates: a CA uploaded through the form, then its CRL', async () => {
        await page.click('button:text("Upload certificate")');
        await page.waitForSelector('dialog[open] form');
        await page.fill('dialog input[name=name]', 'clients-ca');
        await page.check('dialog input[name=type][value=ca]');
        check(await page.isHidden('dialog textarea[name=private_key]'), 'no key field for a CA');
        await page.fill('dialog textarea[name=certificate]', readFileSync(path.join(UP, 'inter.pem'), 'utf8'));
        await page.click('dialog button[type=submit]');
        await page.waitForSelector('dialog', { state: 'detached' });
        const row = '#cert-table tbody tr:has-text("clients-ca")';
        await page.click(`${row} button:text("CRL")`);
        await page.fill('dialog textarea[name=crl]', readFileSync(path.join(UP, 'inter.crl'), 'utf8'));
        await page.click('dialog button:text("Upload CRLs")');
        await page.waitForSelector(`${row}:has-text("CRL: 1 revoked")`);
    });

    await step('listeners: create an https listener with two-way authentication', async () => {
        await goto('listeners', 'Listeners');
        await page.click('button:text("Create listener")');
        await page.waitForSelector('dialog[open] form');
        await page.fill('dialog input[name=name]', 'mtls');
        await page.selectOption('dialog select[name=protocol]', 'https');
        await page.fill('dialog input[name=bind]', '127.0.0.1:70000');
        await page.check('dialog input[name=certificates][value=demo]');
        const caId = (await apiGet('/v1/certificates')).data.certificates.find((c) => c.name === 'clients-ca').id;
        await page.selectOption('dialog select[name=client_ca]', caId);
        await page.selectOption('dialog select[name=client_auth]', 'optional');
        await page.uncheck('dialog input[name=alpn][value=h2]');
        await page.click('dialog button[type=submit]');
        // The API's message, at the field it names.
        const err = await page.waitForSelector('dialog .field[data-field="bind"] .field-error:not(:empty)');
        check((await err.textContent()).includes('out of range'), await err.textContent());
        await page.fill('dialog input[name=bind]', `127.0.0.1:${env.CONSOLE_FREE_PORT}`);
        await page.click('dialog button[type=submit]');
        await page.waitForSelector('dialog', { state: 'detached' });
        await page.waitForSelector('#listener-table tr[data-name="mtls"]');
        const l = (await apiGet('/v1/listeners/mtls')).data;
        check(l.tls.client_ca === caId && l.tls.client_auth === 'optional', JSON.stringify(l.tls));
        check(JSON.stringify(l.tls.alpn) === '["http/1.1"]' && l.tls.certificates[0] === 'demo', JSON.stringify(l.tls));
    });

    await step('groups: change a weight inline and see the API reflect it', async () => {
        await goto('groups', 'Backend groups');
        const sel = `tr[data-server="${env.CONSOLE_WEIGHT_SERVER}"] input.weight`;
        await page.waitForSelector(sel);
        await page.fill(sel, '37');
        await page.press(sel, 'Enter');
        let w = 0;
        for (let i = 0; i < 50 && w !== 37; i++) {
            await page.waitForTimeout(100);
            w = (await apiGet(`/v1/groups/web/servers/${env.CONSOLE_WEIGHT_SERVER}`)).data.weight;
        }
        check(w === 37, `API weight ${w}`);
        check(!(await page.$(`tr[data-server="${env.CONSOLE_WEIGHT_SERVER}"] .field-error:not(:empty)`)), 'no error');
    });

    await step('groups: a killed backend turns down within the health-check time', async () => {
        const row = `tr[data-server="${env.CONSOLE_KILL_SERVER}"]`;
        await page.waitForSelector(`${row} .badge:text("up")`);
        process.kill(Number(env.CONSOLE_KILL_PID), 'SIGKILL');
        const t0 = Date.now();
        // interval 1 s, timeout 1 s, 2 failures: about 2-3 s, plus one 2 s poll.
        await page.waitForSelector(`${row} .badge:text("down")`, { timeout: 15000 });
        log(`  down after ${Date.now() - t0} ms`);
        await page.waitForTimeout(300);
        await shot('groups');
        await axe('groups');
    });

    await step('groups: scheduler settings', async () => {
        await page.click('section[data-group="web"] button:text("Settings")');
        await page.waitForSelector('dialog[open] form');
        await page.selectOption('dialog select[name=scheduler]', 'wlc');
        await page.click('dialog button[type=submit]');
        await page.waitForSelector('dialog', { state: 'detached' });
        await page.waitForSelector('section[data-group="web"] p:has-text("scheduler wlc")');
        const g = (await apiGet('/v1/groups/web')).data;
        check(g.scheduler === 'wlc' && g.health_check.interval_s === 1 && g.servers.length === 2, JSON.stringify(g));
    });

    await step('overview shows the server down as an alarm', async () => {
        await goto('overview', 'Overview');
        await page.waitForSelector(`.alarms li:has-text("${env.CONSOLE_KILL_SERVER}")`);
        await shot('overview-alarm');
    });

    await step('settings and about', async () => {
        await goto('settings', 'Settings');
        await page.waitForSelector('#about dd');
        const about = await page.textContent('#about');
        check(about.includes('slbd') && about.includes('Workers') && about.includes('Uptime'), about);
        await page.fill('input[name=drain_timeout_s]', '99999');
        await page.click('button:text("Save settings")');
        await page.waitForSelector('.field[data-field="drain_timeout_s"] .field-error:not(:empty)');
        await page.fill('input[name=drain_timeout_s]', '20');
        await page.click('button:text("Save settings")');
        for (let i = 0; i < 50; i++) {
            if ((await apiGet('/v1/settings')).data.drain_timeout_s === 20) break;
            await page.waitForTimeout(100);
        }
        check((await apiGet('/v1/settings')).data.drain_timeout_s === 20, 'settings saved');
        await shot('settings');
        await axe('settings');
    });

    await step('keyboard: the skip link and the navigation', async () => {
        await page.goto(`${origin}/ui/#/listeners`);
        await page.reload(); // a fresh page: focus starts at the top
        await page.waitForSelector('h1:text-is("Listeners")');
        await page.keyboard.press('Tab');
        check(await page.evaluate(() => document.activeElement.textContent) === 'Skip to content', 'skip link first');
        await page.keyboard.press('Tab');
        await page.keyboard.press('Tab');
        check(await page.evaluate(() => document.activeElement.dataset.page) === 'listeners', 'nav reachable');
        await page.keyboard.press('Shift+Tab');
        await page.keyboard.press('Enter');
        await page.waitForSelector('h1:text-is("Overview")');
    });

    await step('a phone (390x844)', async () => {
        await page.setViewportSize(PHONE);
        for (const [k, title] of [['overview', 'Overview'], ['listeners', 'Listeners'], ['groups', 'Backend groups'],
            ['certificates', 'Certificates'], ['settings', 'Settings']]) {
            await goto(k, title);
            await page.waitForTimeout(400);
            const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
            const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
                .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
                .slice(0, 5).map((e) => `${e.tagName}.${e.className}`).join(', '));
            check(overflow <= 0, `${k}: the page is ${overflow}px wider than the phone (${wide})`);
            await shot(`phone-${k}`);
            await axe(`${k} on a phone`);
        }
        await page.setViewportSize(DESKTOP);
    });

    await step('a 401 returns to the login page', async () => {
        await page.evaluate(() => sessionStorage.setItem('slbd.token', 'stale-token-0123456789abcdef'));
        await page.reload();
        await page.waitForSelector('#token');
        check((await page.textContent('#token-err')).includes('401'), 'told why');
    });
} catch (e) {
    failed = true;
    console.error(e.stack || String(e));
}
await browser.close();
if (problems.length) {
    failed = true;
    console.error(`problems:\n  ${problems.join('\n  ')}`);
}
log(failed ? 'FAILED' : `ok (${shots} screenshots in ${OUT})`);
process.exit(failed ? 1 : 0);
