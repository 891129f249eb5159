// SPDX-License-Identifier: Apache-2.0
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { listenerFromForm, listenerState } from '../../src/js/pages/listeners.js';

const form = {
    name: 'web', protocol: 'https', bind: '0.0.0.0:443', backend_group: 'pool',
    max_connections: '0', connect_timeout_ms: '5000', redirect_to: '',
    certificates: ['c1', 'c2'], client_ca: 'ca1', client_auth: 'optional',
    policy: 'tls_cipher_policy_1_2', session_ticket_lifetime_s: '600', alpn: ['http/1.1'],
};

test('an https listener from the form', () => {
    const l = listenerFromForm(form);
    assert.deepEqual(l, {
        name: 'web', protocol: 'https', bind: '0.0.0.0:443', backend_group: 'pool',
        max_connections: 0, connect_timeout_ms: 5000,
        tls: { certificates: ['c1', 'c2'], client_ca: 'ca1', client_auth: 'optional',
            policy: 'tls_cipher_policy_1_2', session_ticket_lifetime_s: 600, alpn: ['http/1.1'] },
    });
});

test('an edit keeps the fields the form does not show', () => {
    const stored = { name: 'web', protocol: 'https', bind: '0.0.0.0:443', backend_group: 'old',
        header_timeout_s: 10, sticky: null,
        tls: { certificates: ['c1'], session_max_age_s: 3600, policy: 'x' } };
    const l = listenerFromForm(form, stored);
    assert.equal(l.header_timeout_s, 10);
    assert.equal(l.tls.session_max_age_s, 3600);
    assert.equal(l.backend_group, 'pool');
    assert.deepEqual(stored.tls.certificates, ['c1'], 'the stored object is not changed');
});

test('tcp and http listeners carry no tls block; an empty redirect clears it', () => {
    const t = listenerFromForm({ ...form, protocol: 'tcp' });
    assert.equal(t.tls, undefined);
    const h = listenerFromForm({ ...form, protocol: 'http', backend_group: '', redirect_to: '' },
        { name: 'web', protocol: 'http', redirect_to: 'https://a', backend_group: 'x' });
    assert.equal(h.redirect_to, '');
    assert.equal(h.backend_group, undefined);
    assert.equal(listenerFromForm({ ...form, protocol: 'http', redirect_to: 'https://b:8443' }).redirect_to,
        'https://b:8443');
});

test('the state badge: a stopped listener shows stopped whatever its counters', () => {
    assert.deepEqual(listenerState({ status: 'stopped' }, { active: 1 }, { refused: 3 }), ['stopped', 'unknown']);
    assert.deepEqual(listenerState({ status: 'running' }, undefined, undefined), ['starting', 'unknown']);
    assert.deepEqual(listenerState({ status: 'running' }, {}, { refused: 2 }), ['refusing', 'warning']);
    assert.deepEqual(listenerState({}, {}, { refused: 0 }), ['serving', 'ok']);
});

test('an edit keeps the status; the limits are the form\'s', () => {
    const stored = { name: 'web', protocol: 'https', bind: '0.0.0.0:443', status: 'stopped',
        limits: { requests_per_s: 5 }, tls: { certificates: ['c1'] } };
    let l = listenerFromForm(form, stored);
    assert.equal(l.status, 'stopped');
    assert.equal(l.limits, undefined); // the form's limit fields were left empty
    l = listenerFromForm({ ...form, limits: { requests_per_s: '5', connections_per_s: '',
        bandwidth_mbps: '100' } }, stored);
    assert.deepEqual(l.limits, { requests_per_s: 5, bandwidth_mbps: 100 });
    l = listenerFromForm({ ...form, protocol: 'tcp', limits: { requests_per_s: '5',
        connections_per_s: '9' } }, stored);
    assert.deepEqual(l.limits, { connections_per_s: 9 });
});
