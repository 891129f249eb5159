// SPDX-License-Identifier: Apache-2.0
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fmt from '../../src/js/format.js';

test('bytes', () => {
    assert.equal(fmt.bytes(0), '0 B');
    assert.equal(fmt.bytes(1023), '1023 B');
    assert.equal(fmt.bytes(1024), '1 KiB');
    assert.equal(fmt.bytes(4454), '4.35 KiB');
    assert.equal(fmt.bytes(1536 * 1024), '1.5 MiB');
    assert.equal(fmt.bytes(200 * 1024 ** 3), '200 GiB');
    assert.equal(fmt.bytes(NaN), '–');
});

test('rate', () => {
    assert.equal(fmt.rate(0), '0/s');
    assert.equal(fmt.rate(0.333), '0.33/s');
    assert.equal(fmt.rate(2.5), '2.5/s');
    assert.equal(fmt.rate(42), '42/s');
    assert.equal(fmt.rate(12500), '12.5k/s');
    assert.equal(fmt.rate(3.2e6), '3.2M/s');
});

test('days left and expiry level', () => {
    const now = Date.parse('2026-12-01T00:00:00Z');
    assert.equal(fmt.daysLeft('2026-12-31T00:00:00Z', now), 30);
    assert.equal(fmt.daysLeft('2026-12-30T23:59:59Z', now), 29);
    assert.equal(fmt.daysLeft('2026-11-30T00:00:00Z', now), -1);
    assert.ok(Number.isNaN(fmt.daysLeft('garbage', now)));
    assert.equal(fmt.expiryLevel(30), 'ok');
    assert.equal(fmt.expiryLevel(29), 'warning');
    assert.equal(fmt.expiryLevel(6), 'critical');
    assert.equal(fmt.expiryLevel(-1), 'expired');
    assert.equal(fmt.daysText(1), '1 day left');
    assert.equal(fmt.daysText(0), 'expires today');
    assert.equal(fmt.daysText(-3), 'expired 3 days ago');
});

test('duration', () => {
    assert.equal(fmt.duration(5000), '5s');
    assert.equal(fmt.duration(65000), '1m 5s');
    assert.equal(fmt.duration(3 * 3600e3 + 120e3), '3h 2m');
    assert.equal(fmt.duration(2 * 86400e3 + 3600e3), '2d 1h 0m');
    assert.equal(fmt.duration(-1), '–');
});

test('server keys put IPv6 in brackets', () => {
    assert.equal(fmt.serverKey({ address: '10.0.0.5', port: 80 }), '10.0.0.5:80');
    assert.equal(fmt.serverKey({ address: '::1', port: 8080 }), '[::1]:8080');
});

test('the field an API error names', () => {
    assert.equal(fmt.fieldOf('tls.certificates[0]'), 'tls.certificates');
    assert.equal(fmt.fieldOf('listeners[3].bind'), 'listeners.bind');
    assert.equal(fmt.fieldOf(undefined), '');
    assert.deepEqual(fmt.fieldCandidates('settings.drain_timeout_s'),
        ['settings.drain_timeout_s', 'settings', 'drain_timeout_s']);
    assert.deepEqual(fmt.fieldCandidates('health_check.uri'), ['health_check.uri', 'health_check', 'uri']);
    assert.deepEqual(fmt.fieldCandidates('private_key'), ['private_key']);
});
