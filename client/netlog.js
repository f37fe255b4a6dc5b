// @ts-check
/**
 * The net log from a VoiceRoom: the room's open net (name, preamble, who runs it), its
 * check-in list in net order and its log lines; the REST calls that change them; the
 * archive of closed nets and the exports. `room.netLog` holds one (like `room.net` for
 * the floor). No DOM here: the page assigns `onNetChange` / `onNetLog`.
 *
 * Consistency (docs/protocol.md "Net log"): every change of the net bumps `net.version` by
 * one and comes as a `netChanged` frame; a frame whose version is not ours + 1 (a lost
 * frame, a reconnect) makes us GET the net again. Log lines (`netLogged`) carry a `seq`;
 * a gap is filled with GET net/log. REST answers (NetState) are taken when not older.
 */

import { roomPath } from './api.js';
import { VoiceError } from './errors.js';

/** @typedef {import('./voice-room.js').VoiceRoom} VoiceRoom */
/** @typedef {import('./protocol-types.js').NetInfo} NetInfo */
/** @typedef {import('./protocol-types.js').NetState} NetState */
/** @typedef {import('./protocol-types.js').NetEvent} NetEvent */
/** @typedef {import('./protocol-types.js').NetLogPage} NetLogPage */
/** @typedef {import('./protocol-types.js').NetArchive} NetArchive */
/** @typedef {import('./protocol-types.js').NetRecord} NetRecord */
/** @typedef {import('./protocol-types.js').CheckIn} CheckIn */
/** @typedef {import('./protocol-types.js').CheckInSelf} CheckInSelf */
/** @typedef {import('./protocol-types.js').CheckInAdd} CheckInAdd */
/** @typedef {import('./protocol-types.js').CheckInEdit} CheckInEdit */
/** @typedef {import('./protocol-types.js').NetUpdate} NetUpdate */
/** @typedef {import('./protocol-types.js').CheckInStatus} CheckInStatus */
/** @typedef {import('./protocol-types.js').NetChangedData} NetChangedData */
/** @typedef {import('./protocol-types.js').NetLoggedData} NetLoggedData */
/** @typedef {import('./protocol-types.js').ServerFrame} ServerFrame */
/**
 * Why the net state changed: a frame's change, or `refresh` (a GET or a REST answer),
 * `reset` (left the room).
 * @typedef {import('./protocol-types.js').NetChange|'refresh'|'reset'} NetStateChange
 */
/** @typedef {{net: NetInfo|null, checkins: CheckIn[], events: NetEvent[]}} NetLogState */

/** The statuses of a check-in, in the order a page offers them. */
export const CHECKIN_STATUSES = /** @type {const} */ ([
  'new',
  'acknowledged',
  'traffic_listed',
  'traffic_passed',
  'checked_out',
]);

/** The files a net exports (GET nets/<id>/<file>). */
export const EXPORT_FILES = /** @type {const} */ ([
  'checkins.csv',
  'checkins.json',
  'log.csv',
  'log.json',
  'report.txt',
]);
/** @typedef {typeof EXPORT_FILES[number]} ExportFile */

/** Log lines kept in memory (the server keeps them all; exports have the whole log). */
export const MAX_EVENTS = 2000;
const LOG_PAGE = 500;

export class NetLog {
  /** @param {VoiceRoom} room */
  constructor(room) {
    this.room = room;
    /** The room's open net, null when none (or not known yet). @type {NetInfo|null} */
    this.net = null;
    /** Its check-ins, in net order. @type {CheckIn[]} */
    this.checkins = [];
    /** Its log lines, oldest first (only while `followLog`). @type {NetEvent[]} */
    this.events = [];
    /** Keep the log lines (net control and loggers do; a plain operator needs not). */
    this.followLog = false;
    /** The highest log seq we hold (0: none). */
    this.logSeq = 0;
    /** @type {Promise<NetLogState>|null} */
    this.refreshing = null;
    /** @type {Promise<void>|null} */
    this.logLoading = null;
    /** Bumped by reset(): answers of an earlier room are dropped. */
    this.epoch = 0;

    /** The net, its check-ins or its log changed. @type {((state: NetLogState, change: NetStateChange) => void)|null} */
    this.onNetChange = null;
    /** A log line arrived (also while not following the log). @type {((event: NetEvent) => void)|null} */
    this.onNetLog = null;
  }

  // ------------------------------------------------------------------ views

  /** @returns {NetLogState} */
  get state() {
    return { net: this.net, checkins: this.checkins, events: this.events };
  }

  /** A net is open in the room. */
  get isOpen() {
    return !!this.net && !this.net.closedAt;
  }

  /** This seat may keep the log: net control, or appointed logger. */
  get canLog() {
    const me = this.room.identity;
    if (!me) return false;
    if (this.room.isNetControl) return true;
    const floor = this.room.floor;
    return !!floor && !!floor.appointed && floor.appointed[me.participantId] === 'logger';
  }

  /** This seat's own check-in (by participant id, else by callsign). @returns {CheckIn|null} */
  mine() {
    const me = this.room.identity;
    return me ? this.entryOf(me.participantId, me.callsign) : null;
  }

  /**
   * The check-in of a participant (by id, else by callsign).
   * @param {string} participantId
   * @param {string} [callsign]
   * @returns {CheckIn|null}
   */
  entryOf(participantId, callsign) {
    const call = (callsign || '').toUpperCase();
    return (
      this.checkins.find((c) => c.participantId === participantId) ||
      (call ? this.checkins.find((c) => c.callsign.toUpperCase() === call) : undefined) ||
      null
    );
  }

  // ------------------------------------------------------------------ the open net

  /** GET the room's net (after a join, a reconnect or a version gap). @returns {Promise<NetLogState>} */
  refresh() {
    if (this.refreshing) return this.refreshing;
    const epoch = this.epoch;
    this.refreshing = this._call('GET', 'net')
      .then((answer) => {
        if (epoch === this.epoch) this._take(answer, true);
        return this.state;
      })
      .finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }

  /**
   * Net control: open a net.
   * @param {string} name
   * @param {string} [preamble]
   * @returns {Promise<NetLogState>}
   */
  open(name, preamble = '') {
    return this._state('POST', 'net/open', { name, preamble });
  }

  /** Net control: rename the net or change its preamble. @param {NetUpdate} fields */
  update(fields) {
    return this._state('POST', 'net/update', fields);
  }

  /** Net control: close the net; answers the archived record. @returns {Promise<NetRecord>} */
  async close() {
    const epoch = this.epoch;
    /** @type {NetRecord} */
    const record = await this._call('POST', 'net/close');
    if (epoch === this.epoch && this.net && record && record.net && record.net.id === this.net.id) {
      this._clear('closed');
    }
    return record;
  }

  /** Check this seat in (again: update its entry). @param {CheckInSelf} [fields] */
  checkIn(fields = {}) {
    return this._state('POST', 'net/checkin', fields);
  }

  /** Check this seat out. */
  checkOut() {
    return this._state('POST', 'net/checkout');
  }

  /** Net control or logger: enter a station by hand. @param {CheckInAdd} fields */
  add(fields) {
    return this._state('POST', 'net/checkins', { ...fields, callsign: fields.callsign.trim().toUpperCase() });
  }

  /** Net control or logger: edit an entry. @param {string} checkinId @param {CheckInEdit} fields */
  edit(checkinId, fields) {
    return this._state('POST', `net/checkins/${encodeURIComponent(checkinId)}`, fields);
  }

  /** Net control or logger: set an entry's status. @param {string} checkinId @param {CheckInStatus} status */
  setStatus(checkinId, status) {
    return this.edit(checkinId, { status });
  }

  /** Net control or logger: remove an entry. @param {string} checkinId */
  remove(checkinId) {
    return this._state('DELETE', `net/checkins/${encodeURIComponent(checkinId)}`);
  }

  /** Net control or logger: these entries first, in this order. @param {string[]} order */
  reorder(order) {
    return this._state('POST', 'net/checkins/order', { order: [...order] });
  }

  /**
   * Net control or logger: move one entry up (-1) or down (+1) the list.
   * @param {string} checkinId
   * @param {number} delta
   */
  move(checkinId, delta) {
    const ids = this.checkins.map((c) => c.id);
    const from = ids.indexOf(checkinId);
    const to = Math.max(0, Math.min(ids.length - 1, from + delta));
    if (from < 0 || from === to) return Promise.resolve(this.state);
    ids.splice(from, 1);
    ids.splice(to, 0, checkinId);
    return this.reorder(ids);
  }

  /** Net control or logger: type a line into the log. @param {string} text @returns {Promise<NetEvent>} */
  async note(text) {
    /** @type {NetEvent} */
    const event = await this._call('POST', 'net/notes', { text });
    if (this.net) this._addEvents([event]);
    return event;
  }

  // ------------------------------------------------------------------ the log

  /**
   * One page of the open net's log (GET net/log).
   * @param {number} [after] the last seq already known
   * @param {number} [limit]
   * @returns {Promise<NetLogPage>}
   */
  log(after = 0, limit = LOG_PAGE) {
    return this._call('GET', `net/log?after=${Math.max(0, after | 0)}&limit=${Math.max(1, limit | 0)}`);
  }

  /** Keep (true) the log lines, loading what is missing; or stop keeping them. @param {boolean} on */
  setFollowLog(on) {
    this.followLog = !!on;
    if (!on) {
      this.events = [];
      this.logSeq = 0;
      return Promise.resolve();
    }
    return this.loadLog();
  }

  /** Fetch the log lines after `logSeq` (all pages). */
  loadLog() {
    if (!this.followLog || !this.net) return Promise.resolve();
    if (this.logLoading) return this.logLoading;
    const netId = this.net.id;
    const epoch = this.epoch;
    this.logLoading = (async () => {
      for (let pages = 0; pages < 100; pages++) {
        const page = await this.log(this.logSeq, LOG_PAGE);
        if (epoch !== this.epoch || !this.net || this.net.id !== netId || page.netId !== netId) return;
        this._addEvents(page.events || []);
        if (!page.events || page.events.length < LOG_PAGE) return;
      }
    })().finally(() => {
      this.logLoading = null;
    });
    return this.logLoading;
  }

  // ------------------------------------------------------------------ the archive

  /**
   * The room's closed nets, newest first.
   * @param {{limit?: number, before?: string|number}} [options]
   * @returns {Promise<NetArchive>}
   */
  archive(options = {}) {
    const query = new URLSearchParams();
    if (options.limit) query.set('limit', String(options.limit));
    if (options.before !== undefined && options.before !== '') query.set('before', String(options.before));
    const qs = query.toString();
    return this._call('GET', `nets${qs ? `?${qs}` : ''}`);
  }

  /** One net with its check-ins and whole log. @param {string} netId @returns {Promise<NetRecord>} */
  record(netId) {
    return this._call('GET', `nets/${encodeURIComponent(netId)}`);
  }

  /**
   * An export of a net, fetched with the token: a File (a Blob with the server's name).
   * @param {string} netId
   * @param {ExportFile} file
   * @returns {Promise<File>}
   */
  async exportFile(netId, file) {
    if (!EXPORT_FILES.includes(file)) {
      throw new VoiceError('bad-request', `unknown export: ${file}`, 400);
    }
    const roomId = this._roomId();
    const path = roomPath(roomId, `nets/${encodeURIComponent(netId)}/${file}`);
    const { blob, filename } = await this.room.api.download(path, `${roomId}-${file.replace('.', '-')}.${file.split('.').pop()}`);
    return new File([blob], filename, { type: blob.type || 'application/octet-stream' });
  }

  // ------------------------------------------------------------------ frames & state

  /** A netChanged or netLogged frame of our room (voice-room.js routes them here). @param {ServerFrame} frame */
  _onFrame(frame) {
    if (frame.type === 'netChanged') this._onChanged(frame.data);
    else if (frame.type === 'netLogged') this._onLogged(frame.data);
  }

  /** @param {NetChangedData} data */
  _onChanged(data) {
    if (!data) return;
    if (data.change === 'closed') {
      if (this.net) this._clear('closed');
      return;
    }
    const net = data.net;
    if (!net) return;
    const current = this.net;
    if (current && current.id === net.id && net.version <= current.version) return; // late or twice
    if (data.change === 'opened') {
      this.net = net;
      this.checkins = [];
      this.events = [];
      this.logSeq = 0;
      this._emit('opened');
      this.loadLog().catch((err) => this.room._log('GET net/log failed', err));
      return;
    }
    if (!current || current.id !== net.id || net.version !== current.version + 1) {
      this.refresh().catch((err) => this.room._log('GET net failed', err));
      return;
    }
    this.net = net;
    switch (data.change) {
      case 'checkin': {
        const entry = data.checkin;
        if (!entry) break;
        const at = this.checkins.findIndex((c) => c.id === entry.id);
        if (at >= 0) this.checkins = this.checkins.map((c, i) => (i === at ? entry : c));
        else this.checkins = [...this.checkins, entry];
        break;
      }
      case 'checkinRemoved':
        this.checkins = this.checkins.filter((c) => c.id !== data.checkinId);
        break;
      case 'order':
        this.checkins = ordered(this.checkins, data.order || []);
        break;
      default:
        break;
    }
    this._emit(data.change);
  }

  /** @param {NetLoggedData} data */
  _onLogged(data) {
    if (!data || !data.event) return;
    if (this.net && data.netId !== this.net.id) return;
    this._emit('onNetLog', data.event);
    if (!this.followLog || !this.net) return;
    const seq = data.event.seq;
    if (seq <= this.logSeq) return;
    if (seq === this.logSeq + 1) {
      this._addEvents([data.event]);
      return;
    }
    this.loadLog().catch((err) => this.room._log('GET net/log failed', err)); // a gap
  }

  /**
   * Take a NetState (a REST answer) unless it is older than what we have.
   * @param {NetState} answer
   * @param {boolean} [authoritative] a GET: a null net means none is open
   */
  _take(answer, authoritative = false) {
    if (!answer || typeof answer !== 'object' || answer.roomId !== this.room.roomId) return;
    const net = answer.net || null;
    const current = this.net;
    if (!net) {
      if (current && authoritative) this._clear('closed');
      else if (!current) this._emit('refresh');
      return;
    }
    if (current && current.id === net.id && net.version < current.version) return;
    const fresh = !current || current.id !== net.id;
    this.net = net;
    this.checkins = Array.isArray(answer.checkins) ? answer.checkins : [];
    if (fresh) {
      this.events = [];
      this.logSeq = 0;
    }
    this._emit('refresh');
    if (this.followLog) this.loadLog().catch((err) => this.room._log('GET net/log failed', err));
  }

  /** @param {NetEvent[]} events */
  _addEvents(events) {
    const fresh = events.filter((e) => e && e.seq > this.logSeq);
    if (!fresh.length) return;
    fresh.sort((a, b) => a.seq - b.seq);
    let events2 = [...this.events, ...fresh];
    if (events2.length > MAX_EVENTS) events2 = events2.slice(events2.length - MAX_EVENTS);
    this.events = events2;
    this.logSeq = fresh[fresh.length - 1].seq;
    this._emit('log');
  }

  /** @param {NetStateChange} change */
  _clear(change) {
    this.net = null;
    this.checkins = [];
    this.events = [];
    this.logSeq = 0;
    this._emit(change);
  }

  /** Left the room: forget its net. */
  reset() {
    this.epoch++;
    const had = !!this.net;
    this.net = null;
    this.checkins = [];
    this.events = [];
    this.logSeq = 0;
    if (had) this._emit('reset');
  }

  /**
   * @param {NetStateChange|'log'|'onNetLog'} what
   * @param {NetEvent} [event]
   */
  _emit(what, event) {
    const name = what === 'onNetLog' ? 'onNetLog' : 'onNetChange';
    const fn = this[name];
    if (typeof fn !== 'function') return;
    try {
      if (what === 'onNetLog') /** @type {(e: NetEvent) => void} */ (fn)(/** @type {NetEvent} */ (event));
      else /** @type {(s: NetLogState, c: any) => void} */ (fn)(this.state, what);
    } catch (err) {
      console.error(`NetLog ${name} handler threw`, err);
    }
  }

  // ------------------------------------------------------------------ REST

  _roomId() {
    const roomId = this.room.roomId;
    if (!roomId || (this.room.status !== 'joined' && this.room.status !== 'reconnecting')) {
      throw new VoiceError('bad-request', 'join a room first', 400);
    }
    return roomId;
  }

  /**
   * @param {string} method
   * @param {string} what path under /api/voice-rooms/<room>/
   * @param {unknown} [body]
   * @returns {Promise<any>}
   */
  async _call(method, what, body) {
    const roomId = this._roomId();
    return this.room.api.request(method, roomPath(roomId, what), body);
  }

  /**
   * A call answered with the NetState, which is taken at once.
   * @param {string} method
   * @param {string} what
   * @param {unknown} [body]
   * @returns {Promise<NetLogState>}
   */
  async _state(method, what, body) {
    const epoch = this.epoch;
    const answer = await this._call(method, what, body);
    if (epoch === this.epoch) this._take(answer);
    return this.state;
  }
}

/**
 * `entries` with the ids of `order` first, in that order, the rest after (as the server does).
 * @param {CheckIn[]} entries
 * @param {string[]} order
 * @returns {CheckIn[]}
 */
export function ordered(entries, order) {
  const byId = new Map(entries.map((c) => [c.id, c]));
  /** @type {CheckIn[]} */
  const out = [];
  for (const id of order) {
    const entry = byId.get(id);
    if (entry) {
      out.push(entry);
      byId.delete(id);
    }
  }
  for (const entry of entries) if (byId.has(entry.id)) out.push(entry);
  return out;
}
