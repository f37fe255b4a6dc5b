// @ts-check
/**
 * The NCS console: open and close the net, the floor (queue with grant / grant next /
 * revoke, roll call, the current transmission's time against the TOT), the check-in list
 * (manual add, edit, reorder, remove, status), notes and the log, exports and the archive
 * of closed nets. Net control sees all of it; an appointed logger sees the log tools only.
 *
 * Keyboard (never while typing in a field, never Space or M): N grant next, R revoke,
 * A add a check-in, / search the roster. A priority request (or an emergency check-in)
 * beeps (WebAudio, no file) and is highlighted and announced.
 */

import { $, clock, h, saveBlob, typingInto, utcTime } from './dom.js';
import { CHECKIN_STATUSES } from './netlog.js';
import { flagBadges } from './roster-view.js';

/** @typedef {import('./voice-room.js').VoiceRoom} VoiceRoom */
/** @typedef {import('./protocol-types.js').CheckIn} CheckIn */
/** @typedef {import('./protocol-types.js').CheckInEdit} CheckInEdit */
/** @typedef {import('./protocol-types.js').NetInfo} NetInfo */
/** @typedef {import('./protocol-types.js').NetEvent} NetEvent */
/** @typedef {import('./protocol-types.js').FloorState} FloorState */
/** @typedef {import('./netlog.js').ExportFile} ExportFile */
/** @typedef {import('./talk-clock.js').TalkClock} TalkClock */
/**
 * @typedef {{
 *   room: VoiceRoom,
 *   clock: TalkClock,
 *   tot: () => number,
 *   act: (action: () => Promise<unknown>) => Promise<boolean>,
 * }} ConsoleHost
 */

/** @type {Record<string, string>} */
const STATUS_NAMES = {
  new: 'New',
  acknowledged: 'Acknowledged',
  traffic_listed: 'Traffic listed',
  traffic_passed: 'Traffic passed',
  checked_out: 'Checked out',
};
/** @type {Record<string, string>} */
const KIND_LABELS = { checkin: 'check-in', traffic: 'traffic', comment: 'comment', priority: 'PRIORITY' };
/** Log lines shown (the export has them all). */
const LOG_SHOWN = 200;

/** @type {[string, ExportFile][]} */
const EXPORTS = [
  ['export-checkins-csv', 'checkins.csv'],
  ['export-log-csv', 'log.csv'],
  ['export-json', 'checkins.json'],
  ['export-log-json', 'log.json'],
  ['export-report', 'report.txt'],
];

export class ConsoleView {
  /** @param {ConsoleHost} host */
  constructor(host) {
    this.host = host;
    this.room = host.room;
    /** @type {Map<string, {li: HTMLLIElement, sig: string}>} */
    this.rows = new Map();
    /** @type {string[]} */
    this.order = [];
    /** The check-in being edited. @type {string|null} */
    this.editing = null;
    /** Priority requests and emergency check-ins already announced. */
    this.announced = new Set();
    this.visible = false;
    /** Closed nets, newest first. @type {NetInfo[]} */
    this.archive = [];
    /** Which net the export buttons fetch ('' = the open one, else the newest closed). */
    this.exportNet = '';
    /** @type {AudioContext|null} */
    this.audio = null;
    this.lastTimer = '';
    this.logShownSeq = -1;
    this._wire();
  }

  /** Whether this seat runs the console. */
  get allowed() {
    // Only once seated: the archive and the log load when the console first shows, and
    // the net-log calls refuse before the join is done (a page reloaded into a room
    // showed "No closed nets yet" for good).
    const seated = this.room.status === 'joined' || this.room.status === 'reconnecting';
    return seated && this.room.netLog.canLog;
  }

  _wire() {
    const netLog = this.room.netLog;
    const act = this.host.act;
    $('net-open-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const name = /** @type {HTMLInputElement} */ ($('net-name')).value.trim();
      const preamble = /** @type {HTMLTextAreaElement} */ ($('net-preamble')).value;
      if (name) act(() => netLog.open(name, preamble));
    });
    $('net-close').addEventListener('click', async () => {
      const net = netLog.net;
      if (!net || !confirm(`Close the net "${net.name}"? It goes to the archive.`)) return;
      let closed = '';
      const ok = await act(async () => {
        const record = await netLog.close();
        closed = record && record.net ? record.net.id : '';
      });
      if (ok) {
        this.exportNet = closed;
        this.loadArchive();
      }
    });
    $('grant-next').addEventListener('click', () => act(() => this.room.net.grantFloor(null)));
    $('revoke-all').addEventListener('click', () => act(() => this.room.net.revokeFloor(null)));
    $('roll-call').addEventListener('click', () =>
      act(() => (this.room.floor && this.room.floor.open ? this.room.net.closeFloor() : this.room.net.openFloor())),
    );
    $('console-queue').addEventListener('click', (event) => {
      const button = /** @type {HTMLElement|null} */ ((/** @type {HTMLElement} */ (event.target)).closest('button[data-action]'));
      const pid = button && button.dataset.participant;
      if (!button || !pid) return;
      if (button.dataset.action === 'grant') act(() => this.room.net.grantFloor(pid));
      else if (button.dataset.action === 'revoke') act(() => this.room.net.revokeFloor(pid));
    });

    $('manual-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const call = /** @type {HTMLInputElement} */ ($('manual-callsign'));
      const name = /** @type {HTMLInputElement} */ ($('manual-name'));
      const traffic = /** @type {HTMLInputElement} */ ($('manual-traffic'));
      const via = /** @type {HTMLSelectElement} */ ($('manual-via'));
      const callsign = call.value.trim().toUpperCase();
      if (!callsign) return;
      const viaValue = via.value === 'phone' || via.value === 'other' ? via.value : 'rf';
      const ok = await act(() => netLog.add({ callsign, name: name.value.trim(), traffic: traffic.checked, via: viaValue }));
      if (ok) {
        call.value = '';
        name.value = '';
        traffic.checked = false;
        call.focus();
      }
    });
    const list = $('checkins');
    list.addEventListener('change', (event) => {
      const select = /** @type {HTMLElement} */ (event.target);
      const li = /** @type {HTMLElement|null} */ (select.closest('li[data-checkin]'));
      if (!li || !(select instanceof HTMLSelectElement) || select.dataset.field !== 'status') return;
      const status = CHECKIN_STATUSES.find((s) => s === select.value);
      if (status) act(() => netLog.setStatus(li.dataset.checkin || '', status));
    });
    list.addEventListener('click', (event) => {
      const button = /** @type {HTMLElement|null} */ ((/** @type {HTMLElement} */ (event.target)).closest('button[data-action]'));
      const li = button && /** @type {HTMLElement|null} */ (button.closest('li[data-checkin]'));
      if (!button || !li) return;
      const id = li.dataset.checkin || '';
      switch (button.dataset.action) {
        case 'up':
        case 'down':
          act(() => netLog.move(id, button.dataset.action === 'up' ? -1 : 1)).then(() => {
            const again = list.querySelector(`li[data-checkin="${CSS.escape(id)}"] button[data-action="${button.dataset.action}"]`);
            if (again instanceof HTMLElement && !(/** @type {HTMLButtonElement} */ (again)).disabled) again.focus();
          });
          break;
        case 'edit':
          this.editing = id;
          this.renderCheckins(true);
          /** @type {HTMLElement|null} */ (list.querySelector(`li[data-checkin="${CSS.escape(id)}"] input`))?.focus();
          break;
        case 'cancel':
          this.editing = null;
          this.renderCheckins(true);
          break;
        case 'remove':
          if (confirm(`Remove ${li.dataset.callsign} from the check-in list?`)) act(() => netLog.remove(id));
          break;
        default:
          break;
      }
    });
    list.addEventListener('submit', async (event) => {
      event.preventDefault();
      const form = /** @type {HTMLFormElement} */ (event.target);
      const li = /** @type {HTMLElement|null} */ (form.closest('li[data-checkin]'));
      if (!li) return;
      const data = new FormData(form);
      const text = (/** @type {string} */ name) => String(data.get(name) || '').trim();
      /** @type {CheckInEdit} */
      const fields = {
        callsign: text('callsign').toUpperCase() || undefined,
        name: text('name'),
        location: text('location'),
        remarks: text('remarks'),
        traffic: data.has('traffic'),
        shortTime: data.has('shortTime'),
        mobile: data.has('mobile'),
        emergency: data.has('emergency'),
      };
      const id = li.dataset.checkin || '';
      // Only what changed (the log line lists the changed fields).
      const current = /** @type {Record<string, unknown>} */ (/** @type {unknown} */ (netLog.checkins.find((c) => c.id === id) || {}));
      const changed = /** @type {CheckInEdit} */ (
        Object.fromEntries(Object.entries(fields).filter(([key, value]) => value !== undefined && value !== current[key]))
      );
      if (!Object.keys(changed).length) {
        this.editing = null;
        this.renderCheckins(true);
        return;
      }
      if (await act(() => netLog.edit(id, changed))) {
        this.editing = null;
        this.renderCheckins(true);
        /** @type {HTMLElement|null} */ (list.querySelector(`li[data-checkin="${CSS.escape(id)}"] button[data-action="edit"]`))?.focus();
      }
    });

    $('note-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const note = /** @type {HTMLInputElement} */ ($('net-note'));
      const text = note.value.trim();
      if (text && (await act(() => netLog.note(text)))) note.value = '';
    });
    for (const [id, file] of EXPORTS) $(id).addEventListener('click', () => this.download(file));
    $('archive-refresh').addEventListener('click', () => this.loadArchive());
    $('net-archive').addEventListener('click', (event) => {
      const button = /** @type {HTMLElement|null} */ ((/** @type {HTMLElement} */ (event.target)).closest('button[data-action="select"]'));
      const li = button && /** @type {HTMLElement|null} */ (button.closest('li[data-net]'));
      if (!li) return;
      this.exportNet = li.dataset.net || '';
      this.renderArchive();
      this.renderExports();
    });
    window.addEventListener('keydown', (event) => this.onKey(event));
  }

  // ------------------------------------------------------------------ keyboard

  /** @param {KeyboardEvent} event */
  onKey(event) {
    if ($('view-room').hidden || event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
    if (typingInto(event.target)) return;
    const key = event.key.toLowerCase();
    if (key === '/') {
      event.preventDefault();
      /** @type {HTMLElement} */ ($('roster-search')).focus();
      return;
    }
    if (!this.visible) return;
    const ncs = this.room.isNetControl && this.room.directed;
    if (key === 'n' && ncs) {
      event.preventDefault();
      if (this.room.floor && this.room.floor.queue.length) this.host.act(() => this.room.net.grantFloor(null));
    } else if (key === 'r' && ncs) {
      event.preventDefault();
      if (this.room.floor && this.room.floor.holders.length) this.host.act(() => this.room.net.revokeFloor(null));
    } else if (key === 'a' && this.room.netLog.isOpen) {
      event.preventDefault();
      $('manual-callsign').focus();
    }
  }

  // ------------------------------------------------------------------ rendering

  /** Everything (a net, floor or role change). */
  render() {
    const show = this.allowed;
    const box = $('console');
    if (show !== this.visible) {
      this.visible = show;
      box.hidden = !show;
      this.room.netLog.setFollowLog(show).catch(() => {});
      if (show) this.loadArchive();
    }
    if (!show) {
      $('ncs-controls').hidden = true;
      return;
    }
    const netLog = this.room.netLog;
    const ncs = this.room.isNetControl;
    const net = netLog.net;
    $('console-title').textContent = ncs ? 'Net control console' : 'Net logger';
    $('net-open-form').hidden = !!net || !ncs;
    $('net-open-hint').hidden = !!net || ncs;
    $('net-running').hidden = !net;
    /** @type {HTMLButtonElement} */ ($('net-close')).hidden = !ncs;
    if (net) {
      $('net-running-name').textContent = net.name;
      const loggers = net.loggers.length ? ` · logger ${net.loggers.join(', ')}` : '';
      $('net-running-meta').textContent = `opened ${utcTime(net.openedAt)} UTC by ${net.openedBy}${loggers} · ${net.checkinCount} check-ins, ${net.trafficCount} with traffic`;
    }
    for (const id of ['console-checkins', 'console-log']) $(id).hidden = !net;
    this.renderFloor();
    this.renderCheckins();
    this.renderLog();
    this.renderExports();
  }

  /** The floor tools (net control in a directed room). */
  renderFloor() {
    const state = this.room.floor;
    const tools = $('ncs-controls');
    const show = this.visible && this.room.isNetControl && this.room.directed && !!state;
    tools.hidden = !show;
    if (!show || !state) return;
    /** @type {HTMLButtonElement} */ ($('grant-next')).disabled = !state.queue.length;
    /** @type {HTMLButtonElement} */ ($('revoke-all')).disabled = !state.holders.length;
    const rollCall = $('roll-call');
    rollCall.textContent = state.open ? 'Close roll call' : 'Open floor (roll call)';
    rollCall.setAttribute('aria-pressed', String(state.open));

    const list = $('console-queue');
    /** @type {HTMLElement[]} */
    const items = [];
    for (const holder of state.holders) {
      items.push(
        h(
          'li',
          { className: 'is-holder', 'data-participant': holder.participantId },
          h('span', { className: 'q-call' }, holder.callsign),
          h('span', { className: 'badge floor-tag' }, holder.paused ? 'paused' : 'on the floor'),
          h(
            'button',
            { type: 'button', className: 'btn btn-small', 'data-action': 'revoke', 'data-participant': holder.participantId, 'aria-label': `Revoke the floor from ${holder.callsign}` },
            'Revoke',
          ),
        ),
      );
    }
    for (const entry of state.queue) {
      const key = `${entry.participantId}@${entry.at}`;
      const priority = entry.kind === 'priority';
      if (priority && !this.announced.has(key)) {
        this.announced.add(key);
        this.alert(`Priority request from ${entry.callsign}`);
      }
      items.push(
        h(
          'li',
          { className: priority ? 'is-priority' : '', 'data-participant': entry.participantId, 'data-kind': entry.kind },
          h('span', { className: 'q-call' }, entry.callsign),
          h('span', { className: 'badge q-kind', 'data-kind': entry.kind }, KIND_LABELS[entry.kind] || entry.kind),
          h(
            'button',
            { type: 'button', className: 'btn btn-small btn-primary', 'data-action': 'grant', 'data-participant': entry.participantId, 'aria-label': `Grant the floor to ${entry.callsign}` },
            'Grant',
          ),
        ),
      );
    }
    const focused = document.activeElement instanceof HTMLElement && list.contains(document.activeElement)
      ? `${document.activeElement.dataset.action}:${document.activeElement.dataset.participant}` : '';
    list.replaceChildren(...items);
    if (focused) {
      const [action, pid] = focused.split(':');
      /** @type {HTMLElement|null} */ (list.querySelector(`button[data-action="${action}"][data-participant="${CSS.escape(pid)}"]`))?.focus();
    }
    $('console-queue-count').textContent = state.queue.length ? `(${state.queue.length} waiting)` : '';
    $('console-queue-empty').hidden = items.length > 0;
    this.tick();
  }

  /** The transmission timer (a few times a second, with the levels). */
  tick() {
    if (!this.visible || $('ncs-controls').hidden) return;
    const state = this.room.floor;
    const tot = this.host.tot();
    const timer = $('tot-timer');
    const holders = state ? state.holders.filter((x) => !x.paused) : [];
    let text = 'Nobody has the floor';
    let level = 'idle';
    if (holders.length) {
      const now = Date.now();
      const parts = holders.map((x) => {
        const talking = this.host.clock.seconds(x.participantId, now);
        const held = (now - Date.parse(x.since)) / 1000;
        if (tot && talking >= tot) level = 'over';
        else if (tot && talking >= tot - Math.min(30, tot * 0.2) && level !== 'over') level = 'warn';
        else if (level === 'idle') level = talking ? 'on' : 'held';
        const tx = talking ? `transmitting ${clock(talking)}${tot ? ` of ${clock(tot)}` : ''}` : 'not transmitting';
        return `${x.callsign}: ${tx} · floor ${Number.isFinite(held) ? clock(held) : '–'}`;
      });
      text = parts.join('; ');
    }
    if (text !== this.lastTimer) {
      this.lastTimer = text;
      timer.textContent = text;
    }
    if (timer.dataset.level !== level) timer.dataset.level = level;
  }

  /**
   * The check-in list: rows keyed by id, redrawn only when their entry changed.
   * @param {boolean} [force] redraw every row (edit mode changed)
   */
  renderCheckins(force = false) {
    const netLog = this.room.netLog;
    const list = $('checkins');
    const entries = netLog.checkins;
    const seen = new Set();
    for (const [i, c] of entries.entries()) {
      seen.add(c.id);
      const editing = this.editing === c.id;
      const sig = `${i}|${i === entries.length - 1}|${editing}|${JSON.stringify(c)}`;
      let row = this.rows.get(c.id);
      if (!row) {
        row = { li: h('li', { className: 'checkin' }), sig: '' };
        this.rows.set(c.id, row);
      }
      if (force || row.sig !== sig) {
        const focus = document.activeElement instanceof HTMLElement && row.li.contains(document.activeElement)
          ? document.activeElement.dataset.action || document.activeElement.dataset.field || '' : '';
        fillCheckin(row.li, c, i, entries.length, editing);
        row.sig = sig;
        if (focus) /** @type {HTMLElement|null} */ (row.li.querySelector(`[data-action="${focus}"], [data-field="${focus}"]`))?.focus();
      }
      if (c.emergency && !this.announced.has(`ci:${c.id}`)) {
        this.announced.add(`ci:${c.id}`);
        if (c.status === 'new') this.alert(`Emergency traffic: ${c.callsign} checked in with emergency traffic`);
      }
    }
    for (const [id, row] of [...this.rows]) {
      if (!seen.has(id)) {
        row.li.remove();
        this.rows.delete(id);
      }
    }
    const ids = entries.map((c) => c.id);
    if (ids.length !== this.order.length || ids.some((id, i) => id !== this.order[i])) {
      list.replaceChildren(...ids.map((id) => /** @type {NonNullable<ReturnType<typeof this.rows.get>>} */ (this.rows.get(id)).li));
      this.order = ids;
    }
    const traffic = entries.filter((c) => c.traffic && c.status !== 'checked_out').length;
    $('checkins-count').textContent = `(${entries.length}${traffic ? `, ${traffic} with traffic` : ''})`;
    $('checkins-empty').hidden = entries.length > 0;
  }

  renderLog() {
    const events = this.room.netLog.events;
    const last = events.length ? events[events.length - 1].seq : 0;
    if (last === this.logShownSeq) return;
    this.logShownSeq = last;
    const list = $('net-log');
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    list.replaceChildren(...events.slice(-LOG_SHOWN).map(logLine));
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  /** Which net the export buttons fetch. @returns {NetInfo|null} */
  exportTarget() {
    const net = this.room.netLog.net;
    if (this.exportNet) {
      const chosen = this.archive.find((n) => n.id === this.exportNet);
      if (chosen) return chosen;
      if (net && net.id === this.exportNet) return net;
    }
    return net || this.archive[0] || null;
  }

  renderExports() {
    const target = this.exportTarget();
    $('export-target').textContent = target
      ? `${target.name} (${target.openedAt.slice(0, 10)}${target.closedAt ? '' : ', open'})`
      : '(no net yet)';
    for (const [id] of EXPORTS) /** @type {HTMLButtonElement} */ ($(id)).disabled = !target;
  }

  /** @param {ExportFile} file */
  async download(file) {
    const target = this.exportTarget();
    if (!target) return;
    await this.host.act(async () => {
      const blob = await this.room.netLog.exportFile(target.id, file);
      saveBlob(blob, blob.name);
    });
  }

  async loadArchive() {
    try {
      const answer = await this.room.netLog.archive({ limit: 50 });
      this.archive = answer.nets || [];
    } catch (err) {
      this.room._log('GET nets failed', err);
    }
    this.renderArchive();
    this.renderExports();
  }

  renderArchive() {
    const list = $('net-archive');
    const target = this.exportTarget();
    list.replaceChildren(
      ...this.archive.map((n) => {
        const minutes = n.closedAt ? Math.round((Date.parse(n.closedAt) - Date.parse(n.openedAt)) / 60000) : 0;
        const selected = !!target && target.id === n.id;
        return h(
          'li',
          { 'data-net': n.id, className: selected ? 'is-selected' : '' },
          h('span', { className: 'arch-name' }, n.name),
          h('span', { className: 'muted' }, ` ${n.openedAt.slice(0, 10)} ${utcTime(n.openedAt)}–${utcTime(n.closedAt)} UTC (${minutes} min) · ${n.checkinCount} check-ins · NCS ${n.ncs.join(', ') || n.openedBy}`),
          h(
            'button',
            { type: 'button', className: 'btn btn-small', 'data-action': 'select', 'aria-pressed': String(selected), 'aria-label': `Export ${n.name} of ${n.openedAt.slice(0, 10)}` },
            selected ? 'Selected' : 'Export…',
          ),
        );
      }),
    );
    $('net-archive-empty').hidden = this.archive.length > 0;
  }

  /**
   * Announce something urgent: a beep, a visible flash, a screen-reader alert.
   * @param {string} text
   */
  alert(text) {
    $('console-alert').textContent = text;
    const box = $('console');
    box.classList.remove('flash');
    void box.offsetWidth; // restart the animation
    box.classList.add('flash');
    this.beep();
  }

  /** Two short tones (WebAudio, no sound file). */
  beep() {
    try {
      if (!this.audio) this.audio = new AudioContext();
      const ctx = this.audio;
      if (ctx.state === 'suspended') ctx.resume().catch(() => {});
      for (const [i, hz] of [880, 1320].entries()) {
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        const start = ctx.currentTime + i * 0.16;
        osc.frequency.value = hz;
        gain.gain.setValueAtTime(0.0001, start);
        gain.gain.exponentialRampToValueAtTime(0.25, start + 0.01);
        gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.13);
        osc.connect(gain).connect(ctx.destination);
        osc.start(start);
        osc.stop(start + 0.14);
      }
    } catch {
      /* no audio output: the highlight and the alert remain */
    }
  }
}

/**
 * One row of the check-in list.
 * @param {HTMLElement} li
 * @param {CheckIn} c
 * @param {number} index
 * @param {number} count
 * @param {boolean} editing
 */
function fillCheckin(li, c, index, count, editing) {
  li.dataset.checkin = c.id;
  li.dataset.callsign = c.callsign;
  li.dataset.status = c.status;
  li.classList.toggle('is-emergency', c.emergency);
  const info = [c.name, c.location].filter(Boolean).join(', ');
  const via = c.via === 'page' ? '' : ` · via ${c.via === 'rf' ? 'RF' : c.via}`;
  const status = h('select', { 'data-field': 'status', className: 'ci-status-select', 'aria-label': `Status of ${c.callsign}` });
  for (const s of CHECKIN_STATUSES) status.append(new Option(STATUS_NAMES[s], s, false, s === c.status));
  const button = (/** @type {string} */ action, /** @type {string} */ text, /** @type {string} */ label, disabled = false) =>
    h('button', { type: 'button', className: 'btn btn-small', 'data-action': action, 'aria-label': label, disabled }, text);
  li.replaceChildren(
    h('span', { className: 'ci-num' }, `${index + 1}.`),
    h(
      'div',
      { className: 'ci-main' },
      h('span', { className: 'ci-call' }, c.callsign),
      ...flagBadges(c).map(([key, short, long]) => h('span', { className: 'badge flag', 'data-flag': key, title: long, 'aria-label': long }, short)),
      h('span', { className: 'ci-info muted' }, `${info}${via}${c.remarks ? ` · ${c.remarks}` : ''}`),
    ),
    h(
      'div',
      { className: 'ci-tools' },
      status,
      button('up', '↑', `Move ${c.callsign} up`, index === 0),
      button('down', '↓', `Move ${c.callsign} down`, index === count - 1),
      button('edit', 'Edit', `Edit ${c.callsign}`),
      button('remove', '✕', `Remove ${c.callsign}`),
    ),
  );
  if (editing) li.append(editForm(c));
}

/** @param {CheckIn} c */
function editForm(c) {
  const field = (/** @type {string} */ name, /** @type {string} */ label, /** @type {string} */ value, max = 64) =>
    h('label', { className: 'edit-field' }, h('span', {}, label), h('input', { name, value, maxLength: max, className: name === 'callsign' ? '' : 'field', type: 'text' }));
  const flag = (/** @type {string} */ name, /** @type {string} */ label, /** @type {boolean} */ on) =>
    h('label', { className: 'check' }, h('input', { type: 'checkbox', name, checked: on }), ` ${label}`);
  return h(
    'form',
    { className: 'ci-edit', 'aria-label': `Edit ${c.callsign}` },
    field('callsign', 'Callsign', c.callsign, 16),
    field('name', 'Name', c.name),
    field('location', 'Location / grid', c.location),
    field('remarks', 'Remarks', c.remarks, 200),
    h(
      'div',
      { className: 'ci-edit-flags' },
      flag('traffic', 'Traffic', c.traffic),
      flag('shortTime', 'Short time', c.shortTime),
      flag('mobile', 'Mobile/portable', c.mobile),
      flag('emergency', 'Emergency', c.emergency),
    ),
    h(
      'div',
      { className: 'ci-edit-buttons' },
      h('button', { type: 'submit', className: 'btn btn-small btn-primary', 'data-action': 'save' }, 'Save'),
      h('button', { type: 'button', className: 'btn btn-small', 'data-action': 'cancel' }, 'Cancel'),
    ),
  );
}

/** @param {NetEvent} e */
function logLine(e) {
  const who = e.by ? `${e.by}: ` : '';
  const about = e.callsign ? ` ${e.callsign}` : '';
  const duration = e.duration !== null && e.duration !== undefined ? ` (${clock(e.duration)})` : '';
  const text = e.text ? ` — ${e.text}` : '';
  return h(
    'li',
    { 'data-kind': e.kind, 'data-seq': e.seq },
    h('time', { dateTime: e.at, className: 'muted' }, utcTime(e.at)),
    ` ${who}${e.kind.replace(/_/g, ' ')}${about}${duration}${text}`,
  );
}
