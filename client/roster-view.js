// @ts-check
/**
 * The roster: who is in the room, in sections (NCS, on air, queue, checked in, listening),
 * one compact row each, a search by callsign, and a details view per participant (volume,
 * and for net control mute / remove / appoint / grant).
 *
 * Built for 300 members: roster, net and level updates only mark the view dirty; it
 * renders once per animation frame, touching only rows whose content changed (in a large roster rows are
 * `content-visibility: auto`, so the browser lays out only what is on screen). Every render
 * is measured as `performance.measure('yv-roster-render')` (make bench reads it).
 */

import { $, h } from './dom.js';
import { TalkClock } from './talk-clock.js';

/** @typedef {import('./voice-room.js').VoiceRoom} VoiceRoom */
/** @typedef {import('./voice-room.js').RosterEntry} RosterEntry */
/** @typedef {import('./protocol-types.js').CheckIn} CheckIn */
/** @typedef {'ncs'|'air'|'queue'|'checkedin'|'listening'} Section */
/**
 * What the roster needs from the page.
 * @typedef {{
 *   room: VoiceRoom,
 *   volumeOf: (displayName: string) => number,
 *   setVolume: (displayName: string, volume: number) => void,
 *   act: (action: () => Promise<unknown>) => Promise<boolean>,
 * }} RosterHost
 */

/** @type {[Section, string][]} */
export const SECTIONS = [
  ['ncs', 'Net control'],
  ['air', 'On air'],
  ['queue', 'Queue'],
  ['checkedin', 'Checked in'],
  ['listening', 'Listening'],
];
const MEASURE = 'yv-roster-render';
const MARK = 'yv-roster-render-start';
/** Measures kept before the oldest are dropped (the bench reads far fewer). */
const MAX_MEASURES = 5000;
/** From this many rows on, off-screen rows are skipped by the browser (content-visibility). */
export const LARGE = 120;

/** @type {Record<string, string>} */
const STATUS_TEXT = {
  new: 'checked in',
  acknowledged: 'acknowledged',
  traffic_listed: 'traffic listed',
  traffic_passed: 'traffic passed',
  checked_out: 'checked out',
};

/**
 * Compact badges for a check-in's flags: [key, short text, long text].
 * @param {CheckIn} c
 * @returns {[string, string, string][]}
 */
export function flagBadges(c) {
  /** @type {[string, string, string][]} */
  const out = [];
  if (c.emergency) out.push(['emergency', 'EMRG', 'emergency traffic']);
  if (c.traffic) out.push(['traffic', 'TFC', 'has traffic']);
  if (c.shortTime) out.push(['short', 'ST', 'short time']);
  if (c.mobile) out.push(['mobile', 'M/P', 'mobile or portable']);
  return out;
}

/**
 * The section of a roster entry.
 * @param {RosterEntry} p
 * @param {CheckIn|null} checkin
 * @returns {Section}
 */
export function sectionOf(p, checkin) {
  if (p.netControl || p.role === 'ncs') return 'ncs';
  if (p.floor === 'holder' || p.floor === 'paused') return 'air';
  if (p.floor === 'queued') return 'queue';
  if (checkin && checkin.status !== 'checked_out') return 'checkedin';
  return 'listening';
}

export class RosterView {
  /** @param {RosterHost} host */
  constructor(host) {
    this.host = host;
    this.room = host.room;
    /** @type {RosterEntry[]} */
    this.entries = [];
    /** @type {Map<string, {li: HTMLLIElement, sig: string, section: Section, entry: RosterEntry}>} */
    this.rows = new Map();
    /** @type {Map<Section, {box: HTMLElement, list: HTMLElement, count: HTMLElement, ids: string[]}>} */
    this.sections = new Map();
    this.query = '';
    this.dirty = false;
    /** @type {number|null} */
    this.frame = null;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.fallback = null;
    /** Participant whose details are open. @type {string|null} */
    this.detailsId = null;
    /** @type {HTMLElement|null} the row control that opened the details */
    this.opener = null;
    /** Smoothed meter levels. @type {Map<string, number>} */
    this.shown = new Map();
    this.clock = new TalkClock();
    this.nowTalking = '';
    this.renders = 0;

    const root = $('roster');
    root.replaceChildren();
    for (const [key, title] of SECTIONS) {
      const count = h('span', { className: 'muted section-count' });
      const list = h('ul', { className: 'roster-list', 'aria-label': title });
      const heading = h('h3', { className: 'roster-section-title', id: `roster-h-${key}` }, title, ' ', count);
      const box = h('section', { className: 'roster-section', 'data-section': key, 'aria-labelledby': heading.id, hidden: true }, heading, list);
      root.append(box);
      this.sections.set(key, { box, list, count, ids: [] });
    }
    const search = /** @type {HTMLInputElement} */ ($('roster-search'));
    search.addEventListener('input', () => {
      this.query = search.value.trim().toUpperCase();
      this.schedule();
    });
    search.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && search.value) {
        search.value = '';
        this.query = '';
        this.schedule();
      } else if (event.key === 'Enter') {
        const first = [...this.rows.values()].find((r) => !r.li.hidden && r.entry.id !== this.detailsId);
        if (first) this.openDetails(first.entry.id, /** @type {HTMLElement} */ (first.li.querySelector('.peer-open')));
      }
    });
    root.addEventListener('click', (event) => {
      const button = /** @type {HTMLElement|null} */ ((/** @type {HTMLElement} */ (event.target)).closest('.peer-open'));
      const li = button && /** @type {HTMLElement|null} */ (button.closest('li.peer'));
      if (button && li) this.openDetails(li.dataset.participant || '', button);
    });
    this._wireDetails();
  }

  /** New roster entries (room.onroster). @param {RosterEntry[]} roster */
  update(roster) {
    this.entries = roster;
    this.schedule();
  }

  /** Mark dirty; render on the next animation frame (or soon, if frames are paused). */
  schedule() {
    this.dirty = true;
    if (this.frame !== null) return;
    this.frame = requestAnimationFrame(() => this.render());
    // A hidden tab gets no frames: render anyway, less often.
    if (!this.fallback) this.fallback = setTimeout(() => this.render(), 250);
  }

  /** Render what changed since the last render (one measured pass). */
  render() {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    if (this.fallback) clearTimeout(this.fallback);
    this.frame = null;
    this.fallback = null;
    if (!this.dirty) return;
    this.dirty = false;
    performance.mark(MARK);
    try {
      this._render();
    } finally {
      performance.measure(MEASURE, MARK);
      if (++this.renders % MAX_MEASURES === 0) performance.clearMeasures(MEASURE);
    }
  }

  _render() {
    const netLog = this.room.netLog;
    const byPid = new Map();
    const byCall = new Map();
    for (const c of netLog.checkins) {
      if (c.participantId) byPid.set(c.participantId, c);
      byCall.set(c.callsign.toUpperCase(), c);
    }
    const order = new Map(netLog.checkins.map((c, i) => [c.id, i]));
    const seen = new Set();
    /** @type {Map<Section, {id: string, key: string|number}[]>} */
    const wanted = new Map(SECTIONS.map(([key]) => [key, []]));
    const showDetailsTools = this.room.isNetControl;
    for (const p of this.entries) {
      seen.add(p.id);
      const checkin = byPid.get(p.id) || byCall.get(p.displayName.toUpperCase()) || null;
      const section = sectionOf(p, checkin);
      let row = this.rows.get(p.id);
      const sig = signature(p, checkin, section);
      if (!row) {
        row = { li: newRow(p.id), sig: '', section, entry: p };
        this.rows.set(p.id, row);
      }
      row.entry = p;
      if (row.sig !== sig) {
        fillRow(row.li, p, checkin, section);
        row.sig = sig;
      }
      row.section = section;
      const visible = !this.query || p.displayName.toUpperCase().includes(this.query);
      if (row.li.hidden === visible) row.li.hidden = !visible;
      /** @type {string|number} */
      let key;
      if (section === 'queue') key = p.queuePosition;
      else if (section === 'checkedin') key = checkin ? (order.get(checkin.id) ?? 0) : 0;
      else if (section === 'listening') key = p.isSelf ? '' : p.displayName;
      else key = 0; // join order
      /** @type {{id: string, key: string|number}[]} */ (wanted.get(section)).push({ id: p.id, key });
    }
    for (const [id, row] of [...this.rows]) {
      if (seen.has(id)) continue;
      row.li.remove();
      this.rows.delete(id);
      this.shown.delete(id);
      if (this.detailsId === id) this.closeDetails(false);
    }
    for (const [key, list] of wanted) {
      const section = /** @type {NonNullable<ReturnType<typeof this.sections.get>>} */ (this.sections.get(key));
      const ids = stableSort(list).map((x) => x.id);
      if (!sameIds(section.ids, ids)) {
        // Re-append only when the order or membership of this section changed.
        const nodes = ids.map((id) => /** @type {NonNullable<ReturnType<typeof this.rows.get>>} */ (this.rows.get(id)).li);
        reconcile(section.list, nodes);
        section.ids = ids;
      }
      const shown = this.query ? ids.filter((id) => !this.rows.get(id)?.li.hidden).length : ids.length;
      const text = this.query ? `(${shown} of ${ids.length})` : `(${ids.length})`;
      if (section.count.textContent !== text) section.count.textContent = text;
      const hide = shown === 0;
      if (section.box.hidden !== hide) section.box.hidden = hide;
    }
    const root = $('roster');
    const large = this.entries.length >= LARGE;
    if (root.classList.contains('is-large') !== large) root.classList.toggle('is-large', large);
    $('roster-count').textContent = `(${this.entries.length})`;
    $('room-count').textContent = `${this.entries.length} on frequency`;
    $('roster-empty').hidden = !this.query || [...this.rows.values()].some((r) => !r.li.hidden);
    if (this.detailsId) this._fillDetails(showDetailsTools);
  }

  /** Levels by participant (room.onlevels): the meters and "now talking". @param {Record<string, number>} levels */
  setLevels(levels) {
    const now = Date.now();
    this.clock.feed(levels, now);
    for (const [id, row] of this.rows) {
      const raw = levels[id] || 0;
      const before = this.shown.get(id) || 0;
      if (!raw && !before) continue;
      // Fast attack, slow release: a meter operators can read.
      let shown = Math.max(raw, before * 0.5);
      if (shown < 0.01) shown = 0;
      this.shown.set(id, shown);
      const speaking = String(this.clock.heard.get(id) === now);
      if (row.li.dataset.speaking !== speaking) {
        row.li.dataset.speaking = speaking;
        row.li.classList.toggle('speaking', speaking === 'true');
      }
      if (row.li.hidden) continue;
      const fill = /** @type {HTMLElement} */ (row.li.querySelector('.level-fill'));
      // sqrt: quiet voices still move the meter
      fill.style.transform = `scaleY(${Math.min(1, Math.sqrt(shown)).toFixed(3)})`;
    }
    const talking = this.clock
      .talking(1.5, now)
      .map((id) => this.rows.get(id)?.entry.displayName)
      .filter(Boolean);
    const text = talking.length ? `Talking: ${talking.join(', ')}` : '';
    if (text !== this.nowTalking) {
      this.nowTalking = text; // aria-live: only real changes are announced
      $('now-talking').textContent = text;
    }
  }

  // ------------------------------------------------------------------ details

  /**
   * Open the details of a participant.
   * @param {string} id
   * @param {HTMLElement|null} [opener] focus goes back there on close
   */
  openDetails(id, opener = null) {
    if (!this.rows.has(id)) return;
    this.detailsId = id;
    this.opener = opener;
    for (const row of this.rows.values()) row.li.classList.toggle('is-open', row.entry.id === id);
    const panel = $('participant-details');
    panel.hidden = false;
    this._fillDetails(this.room.isNetControl);
    /** @type {HTMLElement} */ ($('pd-title')).focus();
  }

  /** @param {boolean} [restoreFocus] */
  closeDetails(restoreFocus = true) {
    const row = this.detailsId ? this.rows.get(this.detailsId) : null;
    if (row) row.li.classList.remove('is-open');
    this.detailsId = null;
    $('participant-details').hidden = true;
    if (restoreFocus && this.opener && this.opener.isConnected) this.opener.focus();
    this.opener = null;
  }

  _wireDetails() {
    $('pd-close').addEventListener('click', () => this.closeDetails());
    $('participant-details').addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        event.stopPropagation();
        this.closeDetails();
      }
    });
    const slider = /** @type {HTMLInputElement} */ ($('pd-volume'));
    slider.addEventListener('input', () => {
      const row = this.detailsId ? this.rows.get(this.detailsId) : null;
      if (!row) return;
      $('pd-volume-out').textContent = `${slider.value} %`;
      this.host.setVolume(row.entry.displayName, Number(slider.value));
    });
    const target = () => (this.detailsId ? this.rows.get(this.detailsId)?.entry : undefined);
    const net = this.room.net;
    $('pd-mute').addEventListener('click', () => {
      const p = target();
      if (p) this.host.act(() => net.muteParticipant(p.id, !p.mutedByNcs));
    });
    $('pd-grant').addEventListener('click', () => {
      const p = target();
      if (p) this.host.act(() => (p.floor === 'holder' ? net.revokeFloor(p.id) : net.grantFloor(p.id)));
    });
    $('pd-remove').addEventListener('click', () => {
      const p = target();
      if (p && confirm(`Remove ${p.displayName} from the room? Their callsign is banned for a while.`)) {
        this.host.act(() => net.removeParticipant(p.id, 'removed by net control'));
      }
    });
    const appoint = /** @type {HTMLSelectElement} */ ($('pd-appoint'));
    appoint.addEventListener('change', () => {
      const p = target();
      const role = appoint.value === 'ncs' || appoint.value === 'logger' ? appoint.value : null;
      if (p) this.host.act(() => net.appoint(p.id, role));
    });
  }

  /** @param {boolean} ncsTools */
  _fillDetails(ncsTools) {
    const row = this.detailsId ? this.rows.get(this.detailsId) : null;
    if (!row) return;
    const p = row.entry;
    const checkin = this.room.netLog.entryOf(p.id, p.displayName);
    $('pd-title').textContent = p.isSelf ? `${p.displayName} (you)` : p.displayName;
    const facts = [
      p.role === 'ncs' ? 'NCS' : p.canPublish ? p.role : 'listener',
      stateText(p, this.room.canPublish),
      p.mutedByNcs ? 'muted by net control' : p.isMuted ? 'muted' : '',
      p.floor === 'holder' ? 'has the floor' : p.floor === 'queued' ? `#${p.queuePosition} in the queue` : '',
    ].filter(Boolean);
    $('pd-facts').textContent = facts.join(' · ');
    $('pd-checkin').textContent = checkin
      ? [
          `${STATUS_TEXT[checkin.status] || checkin.status}`,
          [checkin.name, checkin.location].filter(Boolean).join(', '),
          flagBadges(checkin).map((b) => b[2]).join(', '),
          checkin.remarks,
        ]
          .filter(Boolean)
          .join(' · ')
      : 'Not checked in';
    const volume = $('pd-volume-row');
    volume.hidden = p.isSelf || !p.canPublish;
    const slider = /** @type {HTMLInputElement} */ ($('pd-volume'));
    const value = String(this.host.volumeOf(p.displayName));
    if (document.activeElement !== slider && slider.value !== value) slider.value = value;
    slider.setAttribute('aria-label', `Volume for ${p.displayName}`);
    $('pd-volume-out').textContent = `${slider.value} %`;
    const tools = $('pd-ncs');
    tools.hidden = !ncsTools || p.isSelf;
    if (!tools.hidden) {
      $('pd-mute').textContent = p.mutedByNcs ? 'Unmute' : 'Mute';
      const grant = /** @type {HTMLButtonElement} */ ($('pd-grant'));
      grant.textContent = p.floor === 'holder' ? 'Revoke floor' : 'Grant floor';
      grant.disabled = !p.canPublish || !this.room.directed;
      const appoint = /** @type {HTMLSelectElement} */ ($('pd-appoint'));
      const floor = this.room.floor;
      const appointed = (floor && floor.appointed && floor.appointed[p.id]) || '';
      if (document.activeElement !== appoint) appoint.value = appointed;
    }
  }
}

/** @param {string} id */
function newRow(id) {
  const li = h(
    'li',
    { className: 'peer', 'data-participant': id, 'data-id': id, 'data-speaking': 'false' },
    h('span', { className: 'level', 'aria-hidden': 'true' }, h('span', { className: 'level-fill' })),
    h(
      'button',
      { type: 'button', className: 'peer-open', 'aria-haspopup': 'true', 'aria-controls': 'participant-details' },
      h('span', { className: 'peer-call' }),
      h(
        'span',
        { className: 'peer-tags' },
        h('span', { className: 'badge role' }),
        h('span', { className: 'badge muted-tag', hidden: true }, 'muted'),
        h('span', { className: 'badge floor-tag', hidden: true }),
        h('span', { className: 'ci-tags' }),
        h('span', { className: 'state' }),
      ),
    ),
  );
  return li;
}

/**
 * What a row shows, as a string: a row is redrawn only when it changes.
 * @param {RosterEntry} p
 * @param {CheckIn|null} c
 * @param {Section} section
 */
function signature(p, c, section) {
  return [
    section,
    p.displayName,
    p.role,
    p.isSelf,
    p.isMuted,
    p.mutedByNcs,
    p.netControl,
    p.floor,
    p.queuePosition,
    p.state,
    p.via,
    p.canPublish,
    c ? `${c.status}${c.traffic}${c.shortTime}${c.mobile}${c.emergency}` : '-',
  ].join('|');
}

/**
 * @param {HTMLElement} li
 * @param {RosterEntry} p
 * @param {CheckIn|null} c
 * @param {Section} section
 */
function fillRow(li, p, c, section) {
  li.dataset.in = section; // not data-section: that names the section boxes
  li.dataset.state = p.state;
  li.classList.toggle('is-self', p.isSelf);
  li.classList.toggle('is-muted', p.isMuted);
  const q = (/** @type {string} */ sel) => /** @type {HTMLElement} */ (li.querySelector(sel));
  q('.peer-call').textContent = p.isSelf ? `${p.displayName} (you)` : p.displayName;
  const role = q('.role');
  role.textContent = p.role === 'ncs' ? 'NCS' : p.canPublish ? p.role : 'listener';
  role.dataset.role = p.role;
  role.hidden = p.role === 'operator' && p.canPublish; // the usual case needs no badge
  q('.muted-tag').hidden = !p.isMuted || p.mutedByNcs;
  const floorTag = q('.floor-tag');
  const [tagKey, tagText] = floorTagOf(p);
  floorTag.hidden = !tagKey;
  floorTag.dataset.floor = tagKey;
  floorTag.textContent = tagText;
  const ci = q('.ci-tags');
  ci.replaceChildren();
  if (c) {
    if (c.status !== 'new') {
      ci.append(h('span', { className: 'badge ci-status', 'data-status': c.status }, STATUS_TEXT[c.status] || c.status));
    }
    for (const [key, short, long] of flagBadges(c)) {
      ci.append(h('span', { className: 'badge flag', 'data-flag': key, title: long, 'aria-label': long }, short));
    }
  }
  const state = q('.state');
  state.textContent = stateText(p, p.canPublish);
  state.className = `state state-${p.state}`;
  const open = q('.peer-open');
  const checked = c ? `, ${STATUS_TEXT[c.status] || c.status}` : '';
  open.setAttribute('aria-label', `${p.displayName}${p.isSelf ? ' (you)' : ''}${checked}: details and volume`);
}

/**
 * The roster badge for a participant's floor standing: [key, text] ('' key: none).
 * @param {RosterEntry} p
 * @returns {[string, string]}
 */
export function floorTagOf(p) {
  if (p.mutedByNcs) return ['ncs-muted', 'muted by NCS'];
  if (p.floor === 'holder') return ['holder', 'on the floor'];
  if (p.floor === 'paused') return ['paused', 'paused'];
  if (p.floor === 'queued') return ['queued', `#${p.queuePosition} in queue`];
  if (p.netControl && p.role !== 'ncs') return ['ncs', 'NCS'];
  return ['', ''];
}

/**
 * @param {RosterEntry} p
 * @param {boolean} selfPublishes
 */
function stateText(p, selfPublishes) {
  if (p.isSelf) return selfPublishes ? '' : 'listening';
  switch (p.state) {
    case 'connected':
      return p.via === 'sfu' ? 'via server' : 'connected';
    case 'new':
    case 'connecting':
    case 'waiting':
      return 'connecting…';
    case 'disconnected':
      return 'reconnecting…';
    case 'stalled':
      return 'nothing received';
    case 'failed':
      return 'no audio path';
    case 'listening':
      return 'listening';
    default:
      return p.state;
  }
}

/**
 * Sort by key, keeping the incoming (join) order among equal keys.
 * @param {{id: string, key: string|number}[]} list
 */
function stableSort(list) {
  return list
    .map((x, i) => ({ ...x, i }))
    .sort((a, b) => {
      if (a.key === b.key) return a.i - b.i;
      if (typeof a.key === 'number' && typeof b.key === 'number') return a.key - b.key;
      return String(a.key).localeCompare(String(b.key));
    });
}

/**
 * Make `parent`'s children exactly `nodes`, in order, with as few DOM moves as possible:
 * one station joining a section of 260 moves one row, where replaceChildren() would detach
 * and re-attach all 260 and make the browser restyle and lay out every one of them.
 * @param {HTMLElement} parent
 * @param {HTMLElement[]} nodes
 */
function reconcile(parent, nodes) {
  const wanted = new Set(nodes);
  for (const child of [...parent.children]) if (!wanted.has(/** @type {HTMLElement} */ (child))) child.remove();
  let cursor = parent.firstElementChild;
  for (const node of nodes) {
    if (node === cursor) {
      cursor = cursor.nextElementSibling;
      continue;
    }
    parent.insertBefore(node, cursor);
  }
}

/** @param {string[]} a @param {string[]} b */
function sameIds(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
