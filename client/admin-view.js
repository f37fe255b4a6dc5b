// @ts-check
/**
 * The admin page (role `admin`): the live view of rooms and SFU workers, the rooms
 * (add, edit, remove), and invites (mint, list, revoke). Draws into #admin-root; every
 * call goes through AdminApi (admin.js). Laid out as stacked cards, so it works on a phone.
 */
import { AdminApi } from './admin.js';
import { $, h } from './dom.js';

/** @typedef {import('./admin.js').RoomDefinition} RoomDefinition */
/** @typedef {import('./admin.js').InviteInfo} InviteInfo */
/** @typedef {import('./admin.js').AdminOverview} AdminOverview */
/** @typedef {import('./protocol-types.js').Role} Role */

// How often the live view refreshes while the page is shown.
const LIVE_MS = 3000;
const EXPIRY = [
  ['1 hour', 3600],
  ['12 hours', 12 * 3600],
  ['1 day', 86400],
  ['7 days', 7 * 86400],
  ['30 days', 30 * 86400],
];
/** @type {Role[]} */
const ROLES = ['operator', 'listener', 'ncs', 'admin'];

/**
 * @param {string} iso
 * @returns {string} local date and time, short
 */
function when(iso) {
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? '' : t.toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
}

/**
 * @param {string} label
 * @param {HTMLElement} control
 */
function row(label, control) {
  control.id = control.id || `adm-${label.toLowerCase().replace(/\W+/g, '-')}`;
  return [h('label', { htmlFor: control.id }, label), control];
}

/**
 * @param {string} id
 * @param {string[][]} options [value, label]
 */
function select(id, options) {
  const el = h('select', { id });
  for (const [value, label] of options) el.append(h('option', { value }, label));
  return el;
}

export class AdminView {
  /**
   * @param {import('./api.js').Api} api
   * @param {(err: unknown) => void} onError the page's error banner
   */
  constructor(api, onError) {
    this.admin = new AdminApi(api);
    this.onError = onError;
    /** @type {ReturnType<typeof setInterval>|null} */
    this.timer = null;
    /** @type {RoomDefinition[]} */
    this.rooms = [];
    /** @type {RoomDefinition|null} the room the form edits (null: a new one) */
    this.editing = null;
    this.built = false;
  }

  get allowed() {
    return this.admin.allowed;
  }

  /** Shown: draw (once), load everything, refresh the live view every few seconds. */
  show() {
    if (!this.built) this._build();
    this.hide();
    this.refresh();
    this.timer = setInterval(() => this._live(), LIVE_MS);
  }

  hide() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async refresh() {
    await Promise.all([this._live(), this._loadRooms(), this._loadInvites()]);
  }

  /**
   * Run an admin call; a refusal goes to the page's banner (and stops the live view if
   * the token no longer works).
   * @template T
   * @param {() => Promise<T>} call
   * @returns {Promise<T|null>}
   */
  async _try(call) {
    try {
      return await call();
    } catch (err) {
      if (err && /** @type {any} */ (err).kind === 'auth') this.hide();
      this.onError(err);
      return null;
    }
  }

  // ------------------------------------------------------------------ building

  _build() {
    const root = $('admin-root');
    const live = h('section', { className: 'card admin-card', 'aria-labelledby': 'adm-live-title' },
      h('div', { className: 'admin-head' },
        h('h2', { id: 'adm-live-title' }, 'Live'),
        h('span', { id: 'adm-live-at', className: 'muted' })),
      h('h3', {}, 'Rooms'),
      h('ul', { id: 'adm-live-rooms', className: 'admin-list', 'aria-label': 'Rooms now' }),
      h('h3', {}, 'SFU workers'),
      h('ul', { id: 'adm-workers', className: 'admin-list', 'aria-label': 'SFU workers and their load' }),
      h('p', { id: 'adm-workers-empty', className: 'muted', hidden: true }, 'No SFU worker is registered: rooms stay peer-to-peer.'));

    const roomForm = h('form', { id: 'adm-room-form', className: 'admin-form', 'aria-label': 'Add or edit a room' },
      h('h3', { id: 'adm-room-form-title' }, 'Add a room'),
      h('div', { className: 'field-grid' },
        ...row('Id', h('input', { id: 'adm-room-id', className: 'field', type: 'text', required: true, maxLength: 64,
          pattern: '[a-z0-9][a-z0-9_\\-]*', placeholder: 'field-day', autocapitalize: 'none', spellcheck: false })),
        ...row('Name', h('input', { id: 'adm-room-name', className: 'field', type: 'text', maxLength: 80 })),
        ...row('Description', h('input', { id: 'adm-room-desc', className: 'field', type: 'text', maxLength: 500 })),
        ...row('Places', h('input', { id: 'adm-room-max', className: 'field', type: 'number', min: 1, max: 5000, value: '50' })),
        ...row('Floor', select('adm-room-floor', [['open', 'open (anyone talks)'], ['directed', 'directed net (net control)']])),
        ...row('Kind', select('adm-room-kind', [['voice', 'voice'], ['parrot', 'echo test']])),
        ...row('Recording', select('adm-room-record', [['false', 'never'], ['ncs', 'when net control starts it'], ['true', 'always']]))),
      h('label', { className: 'check' }, h('input', { id: 'adm-room-ptt', type: 'checkbox' }), ' Push-to-talk by default'),
      h('div', { className: 'net-buttons' },
        h('button', { id: 'adm-room-save', className: 'btn btn-primary', type: 'submit' }, 'Add room'),
        h('button', { id: 'adm-room-cancel', className: 'btn btn-ghost', type: 'button', hidden: true }, 'Cancel')));
    const rooms = h('section', { className: 'card admin-card', 'aria-labelledby': 'adm-rooms-title' },
      h('h2', { id: 'adm-rooms-title' }, 'Rooms'),
      h('ul', { id: 'adm-rooms', className: 'admin-list', 'aria-label': 'Room definitions' }),
      roomForm);

    const inviteForm = h('form', { id: 'adm-invite-form', className: 'admin-form', 'aria-label': 'Mint an invite' },
      h('div', { className: 'field-grid' },
        ...row('Callsign', h('input', { id: 'adm-inv-callsign', type: 'text', required: true, maxLength: 32,
          autocapitalize: 'characters', spellcheck: false, placeholder: 'G4ABC' })),
        ...row('Room', select('adm-inv-room', [['*', 'every room']])),
        ...row('Role', select('adm-inv-role', ROLES.map((r) => [r, r]))),
        ...row('Valid for', select('adm-inv-ttl', EXPIRY.map(([label, s]) => [String(s), String(label)]))),
        ...row('Note', h('input', { id: 'adm-inv-note', className: 'field', type: 'text', maxLength: 200 }))),
      h('button', { id: 'adm-inv-mint', className: 'btn btn-primary', type: 'submit' }, 'Mint invite'));
    const minted = h('div', { id: 'adm-minted', className: 'admin-minted', hidden: true, role: 'status' },
      h('p', { id: 'adm-minted-for' }),
      h('input', { id: 'adm-minted-link', className: 'field', type: 'text', readOnly: true, 'aria-label': 'Invite link' }),
      h('button', { id: 'adm-minted-copy', className: 'btn btn-small', type: 'button' }, 'Copy link'));
    const invites = h('section', { className: 'card admin-card', 'aria-labelledby': 'adm-inv-title' },
      h('h2', { id: 'adm-inv-title' }, 'Invites'),
      inviteForm,
      minted,
      h('ul', { id: 'adm-invites', className: 'admin-list', 'aria-label': 'Invites, newest first' }),
      h('p', { id: 'adm-invites-empty', className: 'muted', hidden: true }, 'No invite minted yet.'));

    root.replaceChildren(live, rooms, invites);
    roomForm.addEventListener('submit', (e) => { e.preventDefault(); this._saveRoom(); });
    $('adm-room-cancel').addEventListener('click', () => this._editRoom(null));
    inviteForm.addEventListener('submit', (e) => { e.preventDefault(); this._mint(); });
    $('adm-minted-copy').addEventListener('click', () => {
      const link = /** @type {HTMLInputElement} */ ($('adm-minted-link'));
      link.select();
      navigator.clipboard?.writeText(link.value).catch(() => null);
    });
    this.built = true;
  }

  // ------------------------------------------------------------------ live view

  async _live() {
    const view = await this._try(() => this.admin.overview());
    if (!view) return;
    $('adm-live-at').textContent = `updated ${new Date().toLocaleTimeString()}`;
    $('adm-live-rooms').replaceChildren(...view.rooms.map((r) => {
      const where = r.mode === 'sfu' ? `SFU ${r.worker || ''}${r.edges.length ? ` + ${r.edges.length} edge(s)` : ''}` : 'mesh';
      const people = r.participants.map((p) => `${p.callsign}${p.isActive ? '' : ' (away)'}`).join(', ');
      return h('li', { className: 'admin-item', 'data-room': r.id },
        h('span', { className: 'admin-name' }, r.name),
        h('span', { className: 'badge' }, `${r.participantCount} / ${r.maxParticipants}`),
        h('span', { className: `badge${r.mode === 'sfu' ? ' badge-live' : ''}` }, where),
        h('span', { className: 'muted admin-people' }, people || 'nobody'));
    }));
    $('adm-workers').replaceChildren(...view.workers.map((w) => h('li', { className: 'admin-item', 'data-worker': w.id },
      h('span', { className: 'admin-name' }, w.id), w.draining && h('span', { className: 'badge' }, 'draining'),
      h('span', { className: 'muted' }, `${w.host || ''} · ${w.rooms} rooms · ${w.peers} peers · ${w.streams} streams · CPU ${Math.round(w.cpu)} %`))));
    $('adm-workers-empty').hidden = view.workers.length > 0;
  }

  // ------------------------------------------------------------------ rooms

  async _loadRooms() {
    const rooms = await this._try(() => this.admin.rooms());
    if (!rooms) return;
    this.rooms = rooms;
    $('adm-rooms').replaceChildren(...rooms.map((r) => {
      const edit = h('button', { className: 'btn btn-small', type: 'button' }, 'Edit');
      const remove = h('button', { className: 'btn btn-small btn-danger', type: 'button' }, 'Remove');
      edit.addEventListener('click', () => this._editRoom(r));
      remove.addEventListener('click', () => this._removeRoom(r));
      return h('li', { className: 'admin-item', 'data-room': r.id },
        h('span', { className: 'admin-name' }, r.name || r.id),
        h('span', { className: 'muted' }, r.id),
        h('span', { className: 'badge' }, `${r.max_participants} places`),
        r.floor === 'directed' ? h('span', { className: 'badge' }, 'directed') : null,
        r.kind === 'parrot' ? h('span', { className: 'badge' }, 'echo test') : null,
        r.ptt ? h('span', { className: 'badge' }, 'PTT') : null,
        h('span', { className: 'admin-actions' }, edit, remove));
    }));
    const choice = /** @type {HTMLSelectElement} */ ($('adm-inv-room'));
    const chosen = choice.value;
    choice.replaceChildren(...rooms.map((r) => h('option', { value: r.id }, r.name || r.id)), h('option', { value: '*' }, 'every room'));
    if ([...choice.options].some((o) => o.value === chosen)) choice.value = chosen;
  }

  /** @param {RoomDefinition|null} room */
  _editRoom(room) {
    this.editing = room;
    const field = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ ($(id));
    field('adm-room-id').value = room ? room.id : '';
    field('adm-room-id').readOnly = !!room;
    field('adm-room-name').value = room ? String(room.name || '') : '';
    field('adm-room-desc').value = room ? String(room.description || '') : '';
    field('adm-room-max').value = String(room ? room.max_participants : 50);
    field('adm-room-floor').value = room ? String(room.floor) : 'open';
    field('adm-room-kind').value = room ? String(room.kind) : 'voice';
    field('adm-room-record').value = room ? String(room.record) : 'false';
    field('adm-room-ptt').checked = !!(room && room.ptt);
    $('adm-room-form-title').textContent = room ? `Edit ${room.id}` : 'Add a room';
    $('adm-room-save').textContent = room ? 'Save changes' : 'Add room';
    $('adm-room-cancel').hidden = !room;
    if (room) field('adm-room-name').focus();
  }

  async _saveRoom() {
    const value = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ ($(id)).value;
    const record = value('adm-room-record');
    /** @type {RoomDefinition} */
    const room = {
      ...(this.editing || {}),
      id: value('adm-room-id').trim(),
      name: value('adm-room-name').trim(),
      description: value('adm-room-desc').trim(),
      max_participants: Number(value('adm-room-max')) || 50,
      floor: value('adm-room-floor') === 'directed' ? 'directed' : 'open',
      kind: value('adm-room-kind') === 'parrot' ? 'parrot' : 'voice',
      record: record === 'ncs' ? 'ncs' : record === 'true',
      ptt: /** @type {HTMLInputElement} */ ($('adm-room-ptt')).checked,
    };
    const editing = this.editing;
    const saved = await this._try(() => (editing ? this.admin.updateRoom(room) : this.admin.createRoom(room)));
    if (!saved) return;
    this._editRoom(null);
    await Promise.all([this._loadRooms(), this._live()]);
  }

  /** @param {RoomDefinition} room */
  async _removeRoom(room) {
    if (!window.confirm(`Remove ${room.name || room.id}? Everyone in it is disconnected.`)) return;
    if (await this._try(() => this.admin.removeRoom(room.id))) {
      if (this.editing && this.editing.id === room.id) this._editRoom(null);
      await Promise.all([this._loadRooms(), this._live()]);
    }
  }

  // ------------------------------------------------------------------ invites

  async _loadInvites() {
    const list = await this._try(() => this.admin.invites());
    if (!list) return;
    $('adm-invites').replaceChildren(...list.invites.map((i) => this._invite(i)));
    $('adm-invites-empty').hidden = list.invites.length > 0;
  }

  /** @param {InviteInfo} invite */
  _invite(invite) {
    const item = h('li', { className: 'admin-item', 'data-invite': invite.id, 'data-state': invite.state },
      h('span', { className: 'admin-name' }, invite.callsign),
      h('span', { className: 'badge' }, invite.room === '*' ? 'every room' : invite.room),
      h('span', { className: 'badge' }, invite.role),
      h('span', { className: `badge${invite.state === 'active' ? ' badge-live' : ''} invite-state` }, invite.state),
      h('span', { className: 'muted' }, invite.state === 'revoked'
        ? `revoked ${when(invite.revokedAt || '')} by ${invite.revokedBy || ''}`
        : `until ${when(invite.expiresAt)}`),
      invite.note ? h('span', { className: 'muted' }, invite.note) : null);
    if (invite.state === 'active') {
      const revoke = h('button', { className: 'btn btn-small btn-danger', type: 'button' }, 'Revoke');
      revoke.addEventListener('click', async () => {
        if (!window.confirm(`Revoke the invite of ${invite.callsign}? Their session ends now.`)) return;
        if (await this._try(() => this.admin.revokeInvite(invite.id))) await this._loadInvites();
      });
      item.append(h('span', { className: 'admin-actions' }, revoke));
    }
    return item;
  }

  async _mint() {
    const value = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ ($(id)).value;
    const role = /** @type {Role} */ (value('adm-inv-role'));
    const minted = await this._try(() => this.admin.mintInvite({
      callsign: value('adm-inv-callsign').trim(),
      room: value('adm-inv-room'),
      role,
      ttl: Number(value('adm-inv-ttl')),
      note: value('adm-inv-note').trim(),
    }));
    if (!minted) return;
    $('adm-minted').hidden = false;
    const inv = minted.invite;
    $('adm-minted-for').textContent = `Invite for ${inv.callsign} (${inv.role}, ${inv.room === '*' ? 'every room' : inv.room}), until ${when(inv.expiresAt)}. The link is shown only now:`;
    /** @type {HTMLInputElement} */ ($('adm-minted-link')).value = minted.link;
    /** @type {HTMLInputElement} */ ($('adm-inv-callsign')).value = '';
    /** @type {HTMLInputElement} */ ($('adm-inv-note')).value = '';
    await this._loadInvites();
  }
}
