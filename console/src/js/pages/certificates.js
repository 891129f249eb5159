// SPDX-License-Identifier: Apache-2.0
// Certificates: list, upload, replace, delete, CRL upload for CA certificates.
import * as api from '../api.js';
import { h, clear, append } from '../dom.js';
import * as fmt from '../format.js';
import { ACTIONS, badge, dialog, field, input, pageHeader, showError, table, notice, fileInto, confirm,
    clearErrors } from '../ui.js';

function pemField(name, label, hint) {
    const ta = h('textarea', { name, rows: 6, spellcheck: 'false', class: 'mono',
        placeholder: '-----BEGIN …-----' });
    const f = field(label, ta, hint);
    f.insertBefore(fileInto(ta, `${label}: choose a file`), ta);
    return f;
}

// The upload / replace form. existing: the certificate being replaced, or undefined.
function certForm(existing, onDone) {
    const form = h('form', { class: 'form', novalidate: true });
    const nameIn = input('name', { value: existing ? existing.name : '', required: !existing });
    const typeSel = h('fieldset', { class: 'field', 'data-field': 'type' },
        h('legend', null, 'Type'),
        ['server', 'ca'].map((t) => h('label', { class: 'inline' },
            h('input', { type: 'radio', name: 'type', value: t,
                checked: (existing ? existing.type : 'server') === t, disabled: !!existing }),
            t === 'server' ? ' Server (certificate and key)' : ' CA (for client authentication)')),
        h('p', { class: 'field-error', role: 'alert' }));
    const keyField = pemField('private_key', 'Private key (PEM, not encrypted)');
    const idIn = input('id', { placeholder: 'generated when empty' });
    const formErr = h('div', { class: 'form-error', role: 'alert' });
    const syncType = () => {
        const t = form.querySelector('input[name=type]:checked').value;
        keyField.hidden = t !== 'server';
    };
    append(form, formErr,
        field('Name', nameIn, existing ? 'Leave as is to keep the name' : null),
        typeSel,
        pemField('certificate', existing?.type === 'ca' || false ? 'CA certificate (PEM)'
            : 'Certificate (PEM: the leaf and its intermediates)'),
        keyField,
        existing ? null : field('Id (optional)', idIn));
    form.addEventListener('change', syncType);
    syncType();
    form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        clearErrors(form);
        const type = form.querySelector('input[name=type]:checked').value;
        const body = { type, certificate: form.elements.certificate.value };
        if (form.elements.name.value || !existing) body.name = form.elements.name.value;
        if (type === 'server') body.private_key = form.elements.private_key.value;
        if (!existing && idIn.value) body.id = idIn.value;
        try {
            const r = existing
                ? await api.put(`/v1/certificates/${api.seg(existing.id)}`, body, { ifMatch: existing.etag })
                : await api.post('/v1/certificates', body);
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
    const uploadBtn = h('button', { type: 'button', onClick: () => upload() }, 'Upload certificate');
    root.append(pageHeader('Certificates', uploadBtn), list);

    async function load() {
        const r = await api.get('/v1/certificates');
        draw(r.data.certificates);
    }

    function upload() {
        let dlg;
        const form = certForm(undefined, (c) => {
            dlg.close();
            notice(`Uploaded ${c.name} (${c.id})`);
            load();
        });
        dlg = dialog('Upload a certificate', form, [
            { text: 'Cancel', kind: 'secondary' },
        ]);
        dlg.querySelector('.actions').prepend(h('button', { type: 'submit', form: form.id = 'cert-form' }, 'Upload'));
    }

    async function replace(c) {
        const r = await api.get(`/v1/certificates/${api.seg(c.id)}`);
        const cur = { ...r.data, etag: r.etag };
        let dlg;
        const form = certForm(cur, (n) => {
            dlg.close();
            notice(`Replaced ${n.name}: version ${n.version}`);
            load();
        });
        const switching = cur.used_by.length
            ? h('p', { class: 'callout' }, 'These listeners will switch to the new certificate for every new handshake: ',
                cur.used_by.map((l, i) => [i ? ', ' : '', h('strong', null, l)]))
            : h('p', { class: 'muted' }, 'No listener uses this certificate.');
        dlg = dialog(`Replace ${cur.name}`, h('div', null, switching, form), [{ text: 'Cancel', kind: 'secondary' }]);
        dlg.querySelector('.actions').prepend(h('button', { type: 'submit', form: form.id = 'cert-form' }, 'Replace'));
    }

    function crl(c) {
        const ta = h('textarea', { name: 'crl', rows: 8, class: 'mono', spellcheck: 'false' });
        const f = field('CRLs (PEM: one X509 CRL per issuing CA, with the intermediates that signed them)', ta);
        f.insertBefore(fileInto(ta, 'CRL file'), ta);
        const form = h('form', { class: 'form', novalidate: true }, h('div', { class: 'form-error', role: 'alert' }), f);
        dialog(`CRLs of ${c.name}`, form, [
            { text: 'Cancel', kind: 'secondary' },
            { text: 'Upload CRLs', onClick: async () => {
                try {
                    await api.put(`/v1/certificates/${api.seg(c.id)}/crl`, { crl: ta.value });
                } catch (e) {
                    showError(form, e);
                    return false;
                }
                notice(`CRLs of ${c.name} updated`);
                load();
                return true;
            } },
        ]);
    }

    function remove(c) {
        const text = c.used_by.length
            ? `${c.name} is used by ${c.used_by.join(', ')}: slbd refuses to delete it until no listener uses it.`
            : `Delete ${c.name} (${c.id})? Its private key is deleted from the state directory.`;
        confirm(`Delete ${c.name}`, text, 'Delete', async () => {
            await api.del(`/v1/certificates/${api.seg(c.id)}`);
            notice(`Deleted ${c.name}`);
            load();
        });
    }

    function draw(certs) {
        const rows = certs.map((c) => {
            const days = fmt.daysLeft(c.not_after);
            const level = fmt.expiryLevel(days);
            return h('tr', { 'data-id': c.id },
                h('td', null, h('div', { class: 'strong' }, c.name), h('div', { class: 'muted mono' }, c.id)),
                h('td', null, c.type),
                h('td', { class: 'nowrap' }, c.key_type),
                h('td', { class: 'wrap' }, h('div', null, c.subject),
                    c.sans?.length ? h('div', { class: 'muted' }, c.sans.join(', ')) : null),
                h('td', { class: 'wrap' }, c.issuer),
                h('td', null, h('div', null, fmt.date(c.not_after)), badge(fmt.daysText(days), level)),
                h('td', null, c.used_by.length ? c.used_by.join(', ') : h('span', { class: 'muted' }, 'unused'),
                    c.crl ? h('div', { class: 'muted' }, `CRL: ${c.crl.revoked} revoked, next update ${fmt.date(c.crl.next_update)}`) : null),
                h('td', { class: 'row-actions' },
                    h('button', { type: 'button', class: 'secondary small', onClick: () => replace(c),
                        'aria-label': `Replace ${c.name}` }, 'Replace'),
                    c.type === 'ca' ? h('button', { type: 'button', class: 'secondary small', onClick: () => crl(c),
                        'aria-label': `CRL of ${c.name}` }, 'CRL') : null,
                    h('button', { type: 'button', class: 'danger small', onClick: () => remove(c),
                        'aria-label': `Delete ${c.name}` }, 'Delete')));
        });
        clear(list).append(table('Certificates',
            ['Name', 'Type', 'Key', 'Subject / SANs', 'Issuer', 'Not after', 'Used by', ACTIONS], rows,
            { id: 'cert-table' }));
    }

    load().catch((e) => clear(list).append(h('p', { class: 'form-error' }, e.message)));
    return { el: root };
}
