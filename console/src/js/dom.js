// SPDX-License-Identifier: Apache-2.0
// Building DOM nodes. Text always goes in as text nodes (never innerHTML), so a certificate
// subject or a listener name holding markup is shown as what it is.

export function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

export function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
}

function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k.startsWith('on') && typeof v === 'function') {
            el.addEventListener(k.slice(2).toLowerCase(), v);
        } else if (k === 'value' && 'value' in el) {
            el.value = v;
        } else if (k === 'checked' || k === 'selected' || k === 'disabled') {
            el[k] = !!v;
            if (v) el.setAttribute(k, '');
        } else {
            el.setAttribute(k, v === true ? '' : String(v));
        }
    }
}

// Like el.append, but skips null, undefined and false (conditional children) and flattens arrays.
export function append(el, ...children) {
    for (const c of children.flat(Infinity)) {
        if (c === undefined || c === null || c === false) continue;
        el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
}

export function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
}

let idSeq = 0;
export function uid(prefix) {
    idSeq += 1;
    return `${prefix}-${idSeq}`;
}
