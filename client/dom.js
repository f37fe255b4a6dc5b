// @ts-check
/**
 * Small DOM helpers shared by the page modules (app.js and the *-view.js files).
 */

/**
 * The element with this id (a missing one is a bug in index.html).
 * @template {HTMLElement} T
 * @param {string} id
 * @returns {T}
 */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return /** @type {T} */ (el);
}

/**
 * A new element: `h('button', {type: 'button', className: 'btn'}, 'Grant')`. Attribute
 * names with a dash (data-*, aria-*) are set as attributes, the others as properties.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, string|number|boolean|null|undefined>} [props]
 * @param {...(Node|string|null|undefined|false)} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.includes('-')) el.setAttribute(key, String(value));
    else /** @type {any} */ (el)[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) el.append(child);
  return el;
}

/**
 * m:ss (or h:mm:ss) of a number of seconds.
 * @param {number} seconds
 */
export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(s / 3600);
  const mins = Math.floor((s % 3600) / 60);
  const secs = String(s % 60).padStart(2, '0');
  return hours ? `${hours}:${String(mins).padStart(2, '0')}:${secs}` : `${mins}:${secs}`;
}

/**
 * HH:MM UTC of an ISO time ('' if none).
 * @param {string|null|undefined} iso
 */
export function utcTime(iso) {
  if (!iso) return '';
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return '';
  return `${String(t.getUTCHours()).padStart(2, '0')}:${String(t.getUTCMinutes()).padStart(2, '0')}`;
}

/**
 * Whether a key press goes to a text field (shortcuts must not fire then).
 * @param {EventTarget|null} target
 */
export function typingInto(target) {
  if (!(target instanceof HTMLElement)) return false;
  return (
    target.isContentEditable ||
    (['INPUT', 'SELECT', 'TEXTAREA'].includes(target.tagName) &&
      !(target instanceof HTMLInputElement && ['checkbox', 'radio', 'range', 'button', 'submit'].includes(target.type)))
  );
}

/**
 * Save a Blob (or File) as a download through a Blob URL.
 * @param {Blob} blob
 * @param {string} filename
 */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
