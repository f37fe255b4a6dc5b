// @ts-check
/**
 * The operator's view of the net: the open net's name and preamble, "Check in" with
 * optional remarks (name, location or grid, flags), "Check out", the station's own entry,
 * and the check-in list everyone sees (rendered only while its disclosure is open).
 */

import { $, h, utcTime } from './dom.js';
import { flagBadges } from './roster-view.js';

/** @typedef {import('./voice-room.js').VoiceRoom} VoiceRoom */
/** @typedef {import('./protocol-types.js').CheckIn} CheckIn */
/** @typedef {import('./protocol-types.js').CheckInSelf} CheckInSelf */
/** @typedef {{room: VoiceRoom, act: (action: () => Promise<unknown>) => Promise<boolean>}} CheckinHost */

/** @type {Record<string, string>} */
export const STATUS_LABELS = {
  new: 'checked in, waiting to be acknowledged',
  acknowledged: 'acknowledged by net control',
  traffic_listed: 'your traffic is listed',
  traffic_passed: 'your traffic was passed',
  checked_out: 'checked out',
};

const FLAG_IDS = /** @type {const} */ ([
  ['ci-traffic', 'traffic'],
  ['ci-short', 'shortTime'],
  ['ci-mobile', 'mobile'],
  ['ci-emergency', 'emergency'],
]);

export class CheckinView {
  /** @param {CheckinHost} host */
  constructor(host) {
    this.host = host;
    this.room = host.room;
    /** @type {HTMLFormElement} */
    this.form = $('checkin-form');
    $('checkin-open').addEventListener('click', () => this.openForm());
    $('ci-cancel').addEventListener('click', () => this.closeForm(true));
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    $('checkout').addEventListener('click', () => this.host.act(() => this.room.netLog.checkOut()));
    const list = /** @type {HTMLDetailsElement} */ ($('net-checkins-box'));
    list.addEventListener('toggle', () => this.render());
  }

  /** Show the form, filled with this station's entry if it has one. */
  openForm() {
    const mine = this.room.netLog.mine();
    const text = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ ($(id));
    text('ci-name').value = mine ? mine.name : text('ci-name').value;
    text('ci-location').value = mine ? mine.location : text('ci-location').value;
    text('ci-remarks').value = mine ? mine.remarks : '';
    for (const [id, field] of FLAG_IDS) text(id).checked = mine ? !!mine[field] : false;
    $('ci-submit').textContent = mine && mine.status !== 'checked_out' ? 'Update check-in' : 'Check in';
    this.form.hidden = false;
    $('checkin-open').setAttribute('aria-expanded', 'true');
    text('ci-name').focus();
  }

  /** @param {boolean} [focusBack] */
  closeForm(focusBack = false) {
    this.form.hidden = true;
    $('checkin-open').setAttribute('aria-expanded', 'false');
    if (focusBack) $('checkin-open').focus();
  }

  async submit() {
    const value = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ ($(id)).value.trim();
    const checked = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ ($(id)).checked;
    /** @type {CheckInSelf} */
    const fields = {
      name: value('ci-name'),
      location: value('ci-location'),
      remarks: value('ci-remarks'),
      traffic: checked('ci-traffic'),
      shortTime: checked('ci-short'),
      mobile: checked('ci-mobile'),
      emergency: checked('ci-emergency'),
    };
    const button = /** @type {HTMLButtonElement} */ ($('ci-submit'));
    button.disabled = true;
    try {
      if (await this.host.act(() => this.room.netLog.checkIn(fields))) this.closeForm(true);
    } finally {
      button.disabled = false;
    }
  }

  /** The panel from `room.netLog` (called on every net change). */
  render() {
    const netLog = this.room.netLog;
    const net = netLog.net;
    const panel = $('net-panel');
    panel.hidden = !net;
    if (!net) {
      this.closeForm();
      return;
    }
    $('net-name-shown').textContent = net.name;
    const ncs = net.ncs.length ? net.ncs.join(', ') : net.openedBy;
    $('net-meta').textContent = `Net control ${ncs} · opened ${utcTime(net.openedAt)} UTC · ${netLog.checkins.length} checked in`;
    const preamble = $('net-preamble-shown');
    preamble.textContent = net.preamble;
    preamble.hidden = !net.preamble;

    const mine = netLog.mine();
    const active = !!mine && mine.status !== 'checked_out';
    const my = $('my-checkin');
    my.dataset.status = mine ? mine.status : 'none';
    if (mine) {
      const place = netLog.checkins.indexOf(mine) + 1;
      const flags = flagBadges(mine).map((b) => b[2]);
      const text = `${active ? `You are #${place} on the list: ` : 'You are '}${STATUS_LABELS[mine.status] || mine.status}${flags.length ? ` (${flags.join(', ')})` : ''}.`;
      if (my.textContent !== text) my.textContent = text;
    } else if (my.textContent !== 'You are not checked in.') {
      my.textContent = 'You are not checked in.';
    }
    const open = $('checkin-open');
    open.textContent = active ? 'Edit check-in' : 'Check in';
    $('checkout').hidden = !active;

    $('net-checkin-count').textContent = `(${netLog.checkins.length})`;
    const box = /** @type {HTMLDetailsElement} */ ($('net-checkins-box'));
    if (box.open) {
      const list = $('net-checkins-public');
      list.replaceChildren(
        ...netLog.checkins.map((c) =>
          h(
            'li',
            { 'data-status': c.status, className: mine && c.id === mine.id ? 'is-self' : '' },
            h('span', { className: 'ci-call' }, c.callsign),
            ' ',
            ...flagBadges(c).map(([key, short, long]) => h('span', { className: 'badge flag', 'data-flag': key, title: long }, short)),
            c.status === 'checked_out' ? h('span', { className: 'muted' }, ' out') : null,
          ),
        ),
      );
    }
  }
}
