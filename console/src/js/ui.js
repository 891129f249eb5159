// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the pages: fields with their error slot, dialogs, notices, tables, badges.
import { h, clear, uid, append } from './dom.js';
import { fieldCandidates } from './format.js';

// The header of a table's column of buttons: named for screen readers only.
export const ACTIONS = Symbol('actions');

export function badge(text, level) {
    return h('span', { class: `badge ${level}` }, text);
}

// A labelled field. The input gets data-field=name so an API error whose `where` names it
// is shown right under it.
export function field(label, input, hint) {
    const id = input.id || uid('f');
    input.id = id;
    const err = h('p', { class: 'field-error', id: `${id}-err`, role: 'alert' });
    const hintEl = hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null;
    input.setAttribute('aria-describedby', [hintEl ? `${id}-hint` : '', `${id}-err`].join(' ').trim());
    return h('div', { class: 'field', 'data-field': input.name || '' },
        h('label', { for: id }, label), input, hintEl, err);
}

export function input(name, attrs = {}) {
    return h('input', { name, type: 'text', autocomplete: 'off', spellcheck: 'false', ...attrs });
}

export function select(name, options, value, attrs = {}) {
    return h('select', { name, ...attrs },
        options.map((o) => {
            const [v, text] = Array.isArray(o) ? o : [o, o];
            return h('option', { value: v, selected: v === value }, text);
        }));
}

export function clearErrors(form) {
    for (const e of form.querySelectorAll('.field-error')) e.textContent = '';
    for (const e of form.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
    const fe = form.querySelector('.form-error');
    if (fe) clear(fe);
}

// Show an API error at the field it names, or at the top of the form.
export function showError(form, err) {
    clearErrors(form);
    let box = null;
    for (const key of fieldCandidates(err.where)) {
        box = form.querySelector(`.field[data-field="${CSS.escape(key)}"]`);
        if (box) break;
    }
    const text = err.code ? `${err.message} (${err.code})` : err.message;
    if (box) {
        box.querySelector('.field-error').textContent = text;
        const ctl = box.querySelector('textarea, select, input:not([type=file])');
        if (ctl) {
            ctl.setAttribute('aria-invalid', 'true');
            ctl.focus();
        }
        return;
    }
    const fe = form.querySelector('.form-error');
    if (fe) fe.append(h('p', null, text));
}

let noticeRegion = null;
export function notice(text, level = 'ok') {
    if (!noticeRegion) {
        noticeRegion = h('div', { class: 'notices', role: 'status', 'aria-live': 'polite' });
        document.body.append(noticeRegion);
    }
    const n = h('div', { class: `notice ${level}` }, text);
    noticeRegion.append(n);
    setTimeout(() => n.remove(), 5000);
}

// A modal dialog; body is a node. actions: [{text, kind, onClick}] where onClick may be
// async and return false to keep the dialog open. Escape closes it (native <dialog>).
export function dialog(title, body, actions) {
    const titleId = uid('dlg');
    const errBox = h('div', { class: 'form-error', role: 'alert' });
    const dlg = h('dialog', { 'aria-labelledby': titleId, class: 'dialog' });
    const buttons = actions.map((a) => {
        const b = h('button', { type: a.submit ? 'submit' : 'button', class: a.kind || '' }, a.text);
        if (!a.submit)
            b.addEventListener('click', async () => {
                if (a.onClick) {
                    b.disabled = true;
                    try {
                        if ((await a.onClick(dlg)) === false) return;
                    } catch (e) {
                        clear(errBox).append(h('p', null, e.code ? `${e.message} (${e.code})` : e.message));
                        return;
                    } finally {
                        b.disabled = false;
                    }
                }
                dlg.close();
            });
        return b;
    });
    append(dlg, h('h2', { id: titleId }, title), errBox, body, h('div', { class: 'actions' }, buttons));
    dlg.addEventListener('close', () => dlg.remove());
    document.body.append(dlg);
    dlg.showModal();
    return dlg;
}

export function confirm(title, text, confirmText, action) {
    return dialog(title, h('p', null, text), [
        { text: 'Cancel', kind: 'secondary' },
        { text: confirmText, kind: 'danger', onClick: action },
    ]);
}

// On a phone each row becomes a card: every cell is labelled with its column (CSS shows
// data-label in front of the cell).
export function labelCells(rows, headers) {
    for (const tr of rows)
        [...tr.children].forEach((td, i) => {
            if (typeof headers[i] === 'string') td.dataset.label = headers[i];
        });
    return rows;
}

export function table(caption, headers, rows, attrs = {}) {
    labelCells(rows, headers);
    return h('div', { class: 'table-wrap' },
        h('table', attrs,
            h('caption', { class: 'sr-only' }, caption),
            h('thead', null, h('tr', null, headers.map((x) => h('th', { scope: 'col' },
                x === ACTIONS ? h('span', { class: 'sr-only' }, 'Actions') : x)))),
            h('tbody', null, rows.length ? rows
                : h('tr', null, h('td', { colspan: headers.length, class: 'empty' }, 'None yet')))));
}

export function pageHeader(title, ...actions) {
    return h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, title),
        h('div', { class: 'page-actions' }, actions));
}

// A file picker that fills a textarea (reading the file locally; nothing is uploaded by it).
export function fileInto(textarea, label) {
    const picker = h('input', { type: 'file', accept: '.pem,.crt,.cer,.key,.crl,text/plain',
        'aria-label': label });
    picker.addEventListener('change', async () => {
        const f = picker.files[0];
        if (f) textarea.value = await f.text();
    });
    return picker;
}
