// @ts-check
/**
 * yahaml-voice client: a participant's voice session, the public entry of the client.
 *
 * No DOM access here (Galène's protocol.js split): the page (app.js) assigns the `on*`
 * callbacks of a {@link VoiceRoom} and turns them into elements. A second UI, a test or a
 * YAHAML panel can drive the same class. VoiceRoom orchestrates the modules that do the work:
 * - api.js:         REST calls and the identity (login, invite token);
 * - signalling.js:  the WebSocket (token subprotocol, keepalive, reconnect, frame parsing);
 * - microphone.js:  the local track, its gate (mute, push-to-talk) and level;
 * - peer-link.js:   one RTCPeerConnection with perfect negotiation;
 * - mesh.js:        the mesh links by peer id;
 * - sfu-link.js:    the SFU connection and its speaker slots;
 * - floor.js:       net control: the latest floor state and what it means for this seat;
 * - netcontrol.js:  `room.net`: the floor and moderation calls;
 * - netlog.js:      `room.netLog`: the net log (open net, check-ins, log lines, exports);
 * - recording.js:   `room.recording`: the room's recording notice and "say again";
 * - audio-stats.js: getStats() counters and levels;
 * - network-watch.js: network changes, which restart ICE (`restartIce()`) in place.
 *
 * Net control (directed nets, moderation): `room.floor` is the latest FloorState (by
 * version; floorChanged frames and REST answers), `floorView()` and the getters below read
 * it for this seat. In a directed room the microphone track is enabled only while this seat
 * holds the floor (or is net control, or during a roll call), like push-to-talk; the SFU
 * enforces it anyway. Muted by net control: the track stays disabled, setMuted(false) is
 * refused, and in mesh the other clients do not play it.
 *
 * Media planes:
 * - mesh: one PeerLink per publishing peer (the polite side rolls back on glare, the
 *   impolite side ignores the colliding offer);
 * - sfu:  one PeerLink to the peer id `sfu`: `slots` recvonly audio m-lines, then one
 *   sendonly m-line for the microphone (docs/architecture.md, SFU media contract).
 * A mode switch builds the new plane while the old one keeps playing and flips over only
 * when the new one carries audio, so operators hear no gap.
 */

import { Api, identityFromToken } from './api.js';
import { collectStats, levelsOf, SPEAKING_LEVEL } from './audio-stats.js';
import { VoiceError, asVoiceError } from './errors.js';
import { FLOOR_KINDS, floorView, isMutedByNcs, isNewer } from './floor.js';
import { Microphone, listMicrophones, openMicrophone } from './microphone.js';
import { Mesh, attachMic } from './mesh.js';
import { NetworkWatch } from './network-watch.js';
import { NetControl } from './netcontrol.js';
import { NetLog } from './netlog.js';
import { Recording } from './recording.js';
import { rtcIceServers } from './peer-link.js';
import { SFU_PEER, SfuLink } from './sfu-link.js';
import { PROTOCOL_VERSION, Signalling, WS_SUBPROTOCOL, WS_TOKEN_PREFIX } from './signalling.js';

export {
  PROTOCOL_VERSION,
  WS_SUBPROTOCOL,
  WS_TOKEN_PREFIX,
  SFU_PEER,
  SPEAKING_LEVEL,
  FLOOR_KINDS,
  VoiceError,
  identityFromToken,
};

/** @typedef {import('./protocol-types.js').Role} Role */
/** @typedef {import('./protocol-types.js').Mode} Mode */
/** @typedef {import('./protocol-types.js').SignalType} SignalType */
/** @typedef {import('./protocol-types.js').SessionDescription} SessionDescription */
/** @typedef {import('./protocol-types.js').IceCandidate} IceCandidate */
/** @typedef {import('./protocol-types.js').RoomSummary} RoomSummary */
/** @typedef {import('./protocol-types.js').RoomDetail} RoomDetail */
/** @typedef {import('./protocol-types.js').Participant} Participant */
/** @typedef {import('./protocol-types.js').SignalMessage} SignalMessage */
/** @typedef {import('./protocol-types.js').SlotAssignment} SlotAssignment */
/** @typedef {import('./protocol-types.js').FloorState} FloorState */
/** @typedef {import('./protocol-types.js').FloorChangedData} FloorChangedData */
/** @typedef {import('./protocol-types.js').ModerationData} ModerationData */
/** @typedef {import('./protocol-types.js').TalkerCutData} TalkerCutData */
/** @typedef {import('./protocol-types.js').FloorRequestBody} FloorRequestBody */
/** @typedef {import('./protocol-types.js').FloorHolder} FloorHolder */
/** @typedef {import('./protocol-types.js').FloorEntry} FloorEntry */
/** @typedef {NonNullable<FloorRequestBody['kind']>} FloorKind */
/** @typedef {import('./floor.js').FloorView} FloorView */
/** @typedef {import('./api.js').FloorAnswer} FloorAnswer */
/** @typedef {import('./api.js').Identity} Identity */
/** @typedef {import('./errors.js').ErrorKind} ErrorKind */
/** @typedef {import('./microphone.js').LocalState} LocalState */
/** @typedef {import('./sfu-link.js').Slot} Slot */
/** @typedef {import('./audio-stats.js').InboundStats} InboundStats */
/** @typedef {import('./audio-stats.js').OutboundStats} OutboundStats */
/** @typedef {import('./audio-stats.js').AudioStats} AudioStats */
/** @typedef {import('./peer-link.js').LinkHost} LinkHost */
/** @typedef {import('./peer-link.js').PeerLink} PeerLink */
/** @typedef {import('./mesh.js').Sendable} Sendable */
/** @typedef {import('./signalling.js').ServerFrame} ServerFrame */

/**
 * @typedef {{id: string, displayName: string, role?: Role, isMuted?: boolean,
 *   audioSourceType?: string, canPublish?: boolean, joinedAt?: string}} ParticipantInfo
 * `stalled`: the connection says connected but nothing arrived for a while (STALL_MS).
 * @typedef {'self'|'waiting'|'new'|'connecting'|'connected'|'stalled'|'disconnected'|'failed'|'closed'|'listening'} LinkState
 * @typedef {'holder'|'paused'|'queued'|null} FloorStanding
 * @typedef {{id: string, displayName: string, role: Role, isMuted: boolean, isSelf: boolean,
 *   canPublish: boolean, state: LinkState, via: 'mesh'|'sfu'|null, mutedByNcs: boolean,
 *   netControl: boolean, floor: FloorStanding, queuePosition: number}} RosterEntry
 * @typedef {'idle'|'joining'|'joined'|'reconnecting'|'left'} Status
 * The SFU connection does not work (`onsfuproblem`): it `failed`, it is connected but
 * `stalled`, or it has been `unreachable` (not connected) since `since`; `attempts`: new
 * connections and ICE restarts tried since. It keeps being retried.
 * @typedef {{why: 'failed'|'stalled'|'unreachable', since: number, attempts: number}} SfuProblem
 */

const STATS_EVERY_MS = 250;
/** TURN credentials are renewed after this share of their lifetime, and at least
 * ICE_RENEW_MARGIN_S seconds before it ends (a relay allocation started then still works). */
const ICE_RENEW_AT = 0.8;
const ICE_RENEW_MARGIN_S = 2;
/** A failed renewal is retried after this long. */
const ICE_RETRY_MS = 10_000;
/** An ICE restart of the SFU connection not done after this: a new connection instead. */
const SFU_RESTART_MS = 4_000;
/** The SFU connection not working for this long (or failed) is a problem the UI shows. */
const SFU_PROBLEM_MS = 5_000;

/**
 * A participant's voice session: login, one room at a time, media, reconnects.
 *
 * Assign the `on*` callbacks, then `login()` or `useToken()`, then `join()`.
 */
export class VoiceRoom {
  /**
   * @param {{baseUrl?: string, debug?: boolean}} [options]
   */
  constructor(options = {}) {
    this.debug = !!options.debug;
    this.api = new Api(options.baseUrl || '');
    this.signalling = new Signalling(this.api, (...args) => this._log(...args));
    this.signalling.onframe = (frame) => this._onFrame(frame);
    this.signalling.onlost = (auth, code, reason) => this._onSocketLost(auth, code, reason);
    this.mic = new Microphone(
      (local) => this._emit('onlocal', local),
      (error) => this._error(error),
    );
    /** What the links ask of this room. @type {LinkHost} */
    this.linkHost = {
      signal: (peerId, type, data) => this._signal(peerId, type, data),
      answering: (link) => this._attachMic(link),
      track: (link, event) => this._onTrack(link, event),
      state: (link) => this._onLinkState(link),
      trouble: (link, why) => this._linkTrouble(link, why),
      log: (...args) => this._log(...args),
    };
    this.mesh = new Mesh(this.linkHost);
    this.sfuLink = new SfuLink(this.linkHost);
    /** Restarts ICE when the network changes, while in a room. */
    this.network = new NetworkWatch((reason) => this.restartIce(reason));
    /** Since when the SFU connection has not worked (0: it works, or there is none). */
    this.sfuDownSince = 0;
    /** New SFU connections and ICE restarts since it stopped working. */
    this.sfuAttempts = 0;
    /** The SFU problem last told to the UI. @type {SfuProblem|null} */
    this.sfuProblem = null;
    /** Links last shown as stalled in the roster. @type {Set<PeerLink>} */
    this.shownStalled = new Set();

    /** @type {string|null} */
    this.roomId = null;
    /** @type {Status} */
    this.status = 'idle';
    /** The room's mode as the server last said. @type {Mode} */
    this.mode = 'mesh';
    /** The plane whose audio is played (lags `mode` during a switch). @type {Mode} */
    this.plane = 'mesh';
    this.epoch = 0;
    /** A join request is out: mode changes wait for its answer (see _join). */
    this.joinPending = false;
    /** @type {{mode: Mode, epoch: number}|null} */
    this.pendingMode = null;
    this.gracePeriod = 15;
    /** @type {RTCConfiguration} */
    this.rtcConfig = {};
    /** Participants of the room, self included. @type {Map<string, ParticipantInfo>} */
    this.participants = new Map();
    /** When the current mode switch started (0: none). */
    this.switchStartedAt = 0;
    /** joinedAt of our seat: a different one after a rejoin means the seat was lost. */
    this.seatJoinedAt = '';
    this.listenOnly = false;
    this.disconnectedAt = 0;
    /** Reconnect attempts made (only the latest one's socket and outcome count). */
    this.reconnectAttempt = 0;
    /** The network changed: restart ICE everywhere once the socket and seat are back. */
    this.iceRestartPending = false;
    /** The room's floor as last heard (highest version), null until then. @type {FloorState|null} */
    this.floor = null;
    /** Asking for the floor, and running the net (net control): netcontrol.js. */
    this.net = new NetControl(this);
    /** The net log: the open net, its check-ins and log lines (netlog.js). */
    this.netLog = new NetLog(this);
    /** The room's recording and its last transmissions (recording.js). */
    this.recording = new Recording(this);

    /** @type {ReturnType<typeof setInterval>|null} */
    this.tickTimer = null;
    /** @type {ReturnType<typeof setInterval>|null} */
    this.statsTimer = null;
    /** Renews the TURN credentials while in a room. @type {ReturnType<typeof setTimeout>|null} */
    this.iceTimer = null;
    this.statsBusy = false;
    /** Audio keys handed to the UI (key -> participant). @type {Map<string, string|null>} */
    this.emitted = new Map();
    /** Bumped by leave(): late callbacks of an old session do nothing. */
    this.session = 0;

    // ---- callbacks for the UI (all optional) ----
    /** @type {((status: Status, detail?: string) => void)|null} */
    this.onstatus = null;
    /** @type {((roster: RosterEntry[]) => void)|null} */
    this.onroster = null;
    /** @type {((peerId: string, state: LinkState) => void)|null} */
    this.onpeerstate = null;
    /** Levels 0..1 by participant id (self included), a few times a second. */
    /** @type {((levels: Record<string, number>) => void)|null} */
    this.onlevels = null;
    /** @type {((error: VoiceError) => void)|null} */
    this.onerror = null;
    /** @type {((mode: Mode, epoch: number) => void)|null} */
    this.onmode = null;
    /** @type {((slots: Slot[], speaking: string[]) => void)|null} */
    this.onslots = null;
    /**
     * Remote audio to play: `stream` null means stop playing `key`. `participantId` is who
     * is heard on it (changes with speaker slots in sfu mode).
     * @type {((key: string, stream: MediaStream|null, participantId: string|null) => void)|null}
     */
    this.onaudio = null;
    /** @type {((local: LocalState) => void)|null} */
    this.onlocal = null;
    /** A newer floor state (null: left the room). @type {((state: FloorState|null) => void)|null} */
    this.onfloor = null;
    /** Net control did something (mute, remove, ban, appoint...). @type {((data: ModerationData) => void)|null} */
    this.onmoderation = null;
    /** The time-out timer cut a talker off (this seat if data.participantId is ours). */
    /** @type {((data: TalkerCutData) => void)|null} */
    this.ontalkercut = null;
    /** The SFU connection stopped working (it is being retried), or works again (null). */
    /** @type {((problem: SfuProblem|null) => void)|null} */
    this.onsfuproblem = null;
  }

  // ------------------------------------------------------------------ state views

  /** Origin of the server ('' = this page's). */
  get baseUrl() {
    return this.api.baseUrl;
  }

  /** @returns {Identity|null} */
  get identity() {
    return this.api.identity;
  }

  /** @param {Identity|null} identity */
  set identity(identity) {
    this.api.identity = identity;
  }

  /** Mesh links by peer id. */
  get links() {
    return this.mesh.links;
  }

  /** The link to the SFU, while there is one. */
  get sfu() {
    return this.sfuLink.link;
  }

  /** The signalling socket, while open. */
  get ws() {
    return this.signalling.ws;
  }

  get slotCount() {
    return this.sfuLink.slotCount;
  }

  get slots() {
    return this.sfuLink.slots;
  }

  get speaking() {
    return this.sfuLink.speaking;
  }

  get localStream() {
    return this.mic.stream;
  }

  /** The microphone track, if publishing. */
  get micTrack() {
    return this.mic.track;
  }

  get muted() {
    return this.mic.muted;
  }

  get ptt() {
    return this.mic.ptt;
  }

  get held() {
    return this.mic.held;
  }

  get canPublish() {
    return this.mic.canPublish;
  }

  get deviceId() {
    return this.mic.deviceId;
  }

  /** This seat's standing in the floor (see floor.js). @returns {FloorView} */
  floorView() {
    const identity = this.identity;
    return floorView(this.floor, identity ? identity.participantId : '', identity ? identity.role : undefined);
  }

  /** The room is a directed net (known from the first floor state). */
  get directed() {
    return this.floorView().directed;
  }

  /** This seat holds the floor (and is not paused by a priority break-in). */
  get hasFloor() {
    return this.floorView().hasFloor;
  }

  /** 1-based place in the floor queue; 0 when not waiting. */
  get queuePosition() {
    return this.floorView().queuePosition;
  }

  /** This seat is net control (an ncs token, or appointed ncs for this net). */
  get isNetControl() {
    return this.floorView().isNetControl;
  }

  /** Net control muted this seat: it cannot unmute itself. */
  get mutedByNcs() {
    return this.floorView().mutedByNcs;
  }

  /** Every live connection, mesh and SFU. */
  _allLinks() {
    const sfu = this.sfuLink.link;
    return [...this.links.values(), ...(sfu ? [sfu] : [])];
  }

  // ------------------------------------------------------------------ identity & REST

  /**
   * Open-auth login: the server issues a token for a callsign.
   * @param {string} callsign
   * @returns {Promise<Identity>}
   */
  login(callsign) {
    return this.api.login(callsign);
  }

  /**
   * Use a token from an invite link (`#token=...`) or storage.
   * @param {string} token
   * @returns {Identity}
   */
  useToken(token) {
    return this.api.useToken(token);
  }

  /**
   * Forget the identity; with `revoke`, the server also denies the token from now on
   * (POST /api/sessions/logout; best effort: an unreachable server only forgets it here).
   * @param {boolean} [revoke]
   */
  logout(revoke = false) {
    return this.api.logout(revoke);
  }

  /** @returns {Promise<RoomSummary[]>} */
  listRooms() {
    return this.api.listRooms();
  }

  /** @param {string} roomId @returns {Promise<RoomDetail>} */
  getRoom(roomId) {
    return this.api.getRoom(roomId);
  }

  // ------------------------------------------------------------------ local audio

  /** @returns {Promise<MediaDeviceInfo[]>} */
  listMicrophones() {
    return listMicrophones();
  }

  /**
   * Switch microphones without renegotiating (replaceTrack on every sender).
   * @param {string} deviceId
   */
  async setMicrophone(deviceId) {
    this.mic.deviceId = deviceId;
    if (!this.mic.stream || this.status === 'idle' || this.status === 'left') return;
    await this.mic.switchTo(deviceId, async (track) => {
      for (const link of this._allLinks()) {
        for (const sender of link.pc.getSenders()) {
          if (sender.track && sender.track.kind === 'audio') await sender.replaceTrack(track);
        }
      }
    });
  }

  /** @returns {LocalState} */
  localState() {
    return this.mic.state();
  }

  /**
   * Mute or unmute (told to the room). Muted wins over a held push-to-talk.
   * @param {boolean} muted
   */
  async setMuted(muted) {
    if (!muted && this.mic.mutedByNcs) {
      throw new VoiceError('forbidden', 'net control muted you; only net control can unmute you', 403, 'muted_by_ncs');
    }
    this.mic.muted = !!muted;
    this.mic.applyGate();
    const self = this.identity && this.participants.get(this.identity.participantId);
    if (self) self.isMuted = this.mic.muted;
    this._emitRoster();
    if (this.roomId && (this.status === 'joined' || this.status === 'reconnecting')) {
      await this.api.mute(this.roomId, this.mic.muted).catch((err) => {
        if (err instanceof VoiceError && err.code === 'muted_by_ncs') {
          this.mic.muted = true; // the server knew before we did
          this.mic.applyGate();
          this._emitRoster();
        }
        this._error(err);
      });
    }
  }

  /**
   * Push-to-talk mode: the mic track is enabled only while talk(true) is held.
   * @param {boolean} on
   */
  setPushToTalk(on) {
    this.mic.ptt = !!on;
    this.mic.held = false;
    this.mic.applyGate();
  }

  /**
   * Press (true) or release (false) the push-to-talk key.
   * @param {boolean} down
   */
  talk(down) {
    if (this.mic.held === !!down) return;
    this.mic.held = !!down;
    this.mic.applyGate();
  }

  // ------------------------------------------------------------------ the floor
  // The floor and moderation calls are `room.net` (netcontrol.js); what they answer and
  // the floorChanged frames come back through _applyFloor.

  /**
   * One floor/moderation call for the current room; a FloorState answer is applied at once
   * (the floorChanged frame may come before or after: versions sort it out).
   * @param {(roomId: string) => Promise<FloorAnswer>} call
   * @returns {Promise<FloorState|null>}
   */
  async _floorCall(call) {
    const roomId = this.roomId;
    if (!roomId || (this.status !== 'joined' && this.status !== 'reconnecting')) {
      throw new VoiceError('bad-request', 'join a room first', 400);
    }
    const answer = await call(roomId);
    if (roomId !== this.roomId) return null;
    this._applyFloor(answer);
    return this.floor;
  }

  /**
   * Take a floor state if it is newer than ours: gate the microphone, drop or restore
   * NCS-muted peers' audio (mesh), tell the UI.
   * @param {unknown} state
   * @returns {boolean} whether it was taken
   */
  _applyFloor(state) {
    if (!isNewer(this.floor, state, this.roomId)) return false;
    this.floor = state;
    this._applyFloorGate();
    this._applyFloorAudio();
    this._emit('onfloor', state);
    this._emitRoster();
    return true;
  }

  /** The microphone follows the floor: sent only while this seat may talk (floor.md). */
  _applyFloorGate() {
    const view = this.floorView();
    const mic = this.mic;
    const allowed = !view.directed || view.hasFloor || view.isNetControl || view.open;
    if (mic.floorAllowed === allowed && mic.mutedByNcs === view.mutedByNcs) return;
    mic.floorAllowed = allowed;
    mic.mutedByNcs = view.mutedByNcs;
    mic.applyGate();
  }

  /** Whether net control muted participant `id` (its audio is not played). @param {string} id */
  _mutedByNcs(id) {
    return isMutedByNcs(this.floor, id);
  }

  /** Mesh: stop playing peers net control muted, play again those it released. */
  _applyFloorAudio() {
    if (this.plane !== 'mesh') return;
    for (const link of this.links.values()) {
      const muted = this._mutedByNcs(link.peerId);
      for (const [key, stream] of link.streams) {
        if (muted) this._emitAudio(key, null, null);
        else if (!this.emitted.has(key)) this._emitAudio(key, stream, this._owner(key));
      }
    }
  }

  // ------------------------------------------------------------------ join / leave

  /**
   * Join a room: microphone (unless listening only), socket, seat, media.
   * @param {string} roomId
   * @param {{listenOnly?: boolean, deviceId?: string|null, ptt?: boolean}} [options]
   */
  async join(roomId, options = {}) {
    if (!this.identity) throw new VoiceError('auth', 'log in first', 401);
    if (this.status === 'joining' || this.status === 'joined' || this.status === 'reconnecting') {
      await this.leave();
    }
    const session = ++this.session;
    const mic = this.mic;
    this.roomId = roomId;
    this.listenOnly = !!options.listenOnly || this.identity.role === 'listener';
    mic.canPublish = !this.listenOnly;
    if (options.deviceId !== undefined) mic.deviceId = options.deviceId;
    if (options.ptt !== undefined) mic.ptt = !!options.ptt;
    mic.held = false;
    this._setStatus('joining');
    try {
      // The socket opens while the microphone is asked for (no serial wait).
      const opening = this.signalling.open(() => session === this.session);
      opening.catch(() => {}); // awaited below; a mic error comes first
      if (mic.canPublish) {
        const stream = await openMicrophone(mic.deviceId);
        if (session !== this.session) {
          stream.getTracks().forEach((t) => t.stop());
          return;
        }
        mic.use(stream);
      }
      await opening;
      await this._join(session);
    } catch (err) {
      if (session === this.session) {
        this._teardown();
        this._setStatus('idle');
      }
      throw err;
    }
    if (session !== this.session) throw new VoiceError('aborted', 'left before the join completed');
    this.network.start();
    this.tickTimer = setInterval(() => this._tick(), 1000);
    this.statsTimer = setInterval(() => this._statsTick(), STATS_EVERY_MS);
  }

  /**
   * POST join (idempotent for a seat we still hold) and reconcile links with its answer.
   * @param {number} session
   */
  async _join(session) {
    // A roomModeChanged that overtakes the join answer (the joiner who tips the room onto the
    // SFU gets both) waits for it: links are made with the answer's ICE servers, once.
    this.pendingMode = null;
    this.joinPending = true;
    let answer;
    try {
      answer = await this.api.join(this.roomId || '', {
        audioSourceType: 'microphone',
        joinMode: this.listenOnly ? 'listener' : 'operator',
      });
    } finally {
      this.joinPending = false;
    }
    // (set by _onFrame meanwhile; the cast undoes the narrowing to null above)
    const pending = /** @type {{mode: Mode, epoch: number}|null} */ (this.pendingMode);
    this.pendingMode = null;
    if (session !== this.session) return;
    const me = answer.participant;
    const mic = this.mic;
    const seatKept = !!this.seatJoinedAt && this.seatJoinedAt === me.joinedAt;
    if (this.seatJoinedAt && !seatKept) {
      this._log('seat was lost while disconnected; joining afresh');
      this._closeAllLinks();
      this._resetFloor(); // the room may have emptied out meanwhile: versions restart
    }
    this.seatJoinedAt = me.joinedAt;
    mic.canPublish = me.canPublish !== false && !this.listenOnly;
    if (!mic.canPublish && mic.stream) mic.stop();
    this.rtcConfig = {
      iceServers: rtcIceServers(answer.iceServers),
      iceTransportPolicy: answer.iceTransportPolicy || 'all',
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
      // Candidates (a TURN allocation included) are gathered as soon as a connection
      // exists: a passive mesh link, made when a newcomer is announced, has them ready
      // when the newcomer's offer arrives. One is enough: everything is bundled.
      iceCandidatePoolSize: 1,
    };
    this._scheduleIceRenewal(session, Number(answer.iceTtl) || 0);
    this.sfuLink.slotCount = (answer.sfu && answer.sfu.slots) || 3;
    this.gracePeriod = Number(answer.gracePeriod) || this.gracePeriod;
    mic.muted = !!me.isMuted || mic.muted;

    this.participants = new Map();
    this.participants.set(me.id, { ...me });
    for (const peer of answer.peers || []) this.participants.set(peer.id, { ...peer });

    // Links to peers that left while we were away go; existing ones get refreshed.
    for (const [id, link] of [...this.links]) {
      if (!this.participants.has(id)) this._closeLink(id);
      else {
        link.setIceServers(this.rtcConfig.iceServers || []);
        const state = link.pc.connectionState;
        if (state === 'failed' || state === 'disconnected') link.restartIce();
      }
    }
    this._setStatus('joined');
    mic.applyGate();
    const mode = answer.mode === 'sfu' ? 'sfu' : 'mesh';
    if (!this.links.size && !this.sfu) this.plane = mode; // nothing to hand over from
    const epoch = Number(answer.epoch) || 0;
    this._setMode(mode, epoch, true);
    if (pending && pending.epoch > epoch) this._setMode(pending.mode, pending.epoch);
    if (mode === 'mesh') {
      for (const id of this.participants.keys()) {
        if (!this.links.has(id)) this._ensureLink(id, true);
      }
    }
    this._emitRoster();
    // The server also sends a floorChanged right after the join; this covers a lost frame.
    this.net.refreshFloor().catch((err) => this._log('GET floor failed', err));
    // Frames may have been missed while away: the net log is fetched again too.
    this.netLog.refresh().catch((err) => this._log('GET net failed', err));
    this.recording.take(answer.recording);
  }

  /** Forget the floor (left, or the seat was lost): nothing directed until told again. */
  _resetFloor() {
    const had = !!this.floor;
    this.floor = null;
    this.mic.floorAllowed = true;
    this.mic.mutedByNcs = false;
    if (had) this._emit('onfloor', null);
  }

  /**
   * Fetch fresh TURN credentials before `ttl` seconds are up. The server hands them only to
   * participants holding a seat, for a short time (docs/turn.md): connections made later
   * (new peers, ICE restarts, an SFU switch) need valid ones; relays already allocated
   * keep working.
   * @param {number} session
   * @param {number} ttl
   */
  _scheduleIceRenewal(session, ttl) {
    if (this.iceTimer) clearTimeout(this.iceTimer);
    this.iceTimer = null;
    if (!ttl || ttl <= 0) return;
    // At 80 % of the lifetime, and never later than ICE_RENEW_MARGIN_S before it ends, so
    // that a connection started just before the renewal can still allocate a relay.
    const at = Math.min(ttl * ICE_RENEW_AT, ttl - ICE_RENEW_MARGIN_S);
    this.iceTimer = setTimeout(() => this._renewIce(session), Math.max(1000, at * 1000));
  }

  /** @param {number} session */
  async _renewIce(session) {
    this.iceTimer = null;
    if (session !== this.session || this.status === 'idle' || this.status === 'left') return;
    try {
      const ice = await this.api.iceServers();
      if (session !== this.session) return;
      this.rtcConfig = {
        ...this.rtcConfig,
        iceServers: rtcIceServers(ice.iceServers),
        iceTransportPolicy: ice.iceTransportPolicy || this.rtcConfig.iceTransportPolicy,
      };
      for (const link of this._allLinks()) {
        try {
          link.setIceServers(this.rtcConfig.iceServers || []);
        } catch (err) {
          this._log('new ICE servers refused by the link to', link.peerId, err);
        }
      }
      this._log('TURN credentials renewed for', ice.ttl, 's');
      this._scheduleIceRenewal(session, Number(ice.ttl) || 0);
    } catch (err) {
      if (session !== this.session) return;
      // E.g. 403 while the seat is being re-taken after a reconnect: the rejoin's answer
      // brings fresh credentials and reschedules; otherwise try again shortly.
      this._log('renewing TURN credentials failed:', err);
      if (!this.iceTimer) this.iceTimer = setTimeout(() => this._renewIce(session), ICE_RETRY_MS);
    }
  }

  /** Leave the room and release everything (the seed's cleanup order). */
  async leave() {
    if (this.status === 'idle' || this.status === 'left') return;
    const roomId = this.roomId;
    const hadSeat = !!this.seatJoinedAt;
    this.session++;
    const request =
      roomId && hadSeat && this.identity
        ? this.api.leave(roomId).catch(() => null)
        : Promise.resolve(null);
    this._teardown();
    this._setStatus('left');
    await request;
  }

  /**
   * 1. stop local tracks, 2. close all peer connections, 3. clear remote streams,
   * 4. close the WebSocket, 5. reset state.
   */
  _teardown() {
    this.session++;
    this.mic.stop();
    this._closeAllLinks();
    this._closeSfu();
    for (const key of [...this.emitted.keys()]) this._emitAudio(key, null, null);
    this.emitted.clear();
    this.signalling.close();
    this.network.stop();
    this.iceRestartPending = false;
    for (const timer of [this.tickTimer, this.statsTimer]) if (timer) clearInterval(timer);
    if (this.iceTimer) clearTimeout(this.iceTimer);
    this.tickTimer = this.statsTimer = this.iceTimer = null;
    this.mic.release();
    this._resetFloor();
    this.netLog.reset();
    this.recording.reset();
    this.participants = new Map();
    this.sfuLink.clearSlots();
    this.sfuLink.peersDown.clear();
    this.seatJoinedAt = '';
    this.switchStartedAt = 0;
    this.mode = this.plane = 'mesh';
    this.epoch = 0;
    this.shownStalled.clear();
    this._checkSfu(Date.now());
    this._emitRoster();
  }

  // ------------------------------------------------------------------ socket events

  /**
   * @param {VoiceError|null} auth
   * @param {number} code
   * @param {string} reason
   */
  _onSocketLost(auth, code, reason) {
    if (auth) {
      this._error(auth);
      this._teardown();
      this._setStatus('left', 'auth');
      return;
    }
    this._log('socket closed', code, reason);
    if (!this.disconnectedAt) this.disconnectedAt = Date.now();
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    const session = this.session;
    const delay = this.signalling.scheduleRetry(this.gracePeriod, () => this._reconnect(session));
    if (delay === null) return;
    this._setStatus('reconnecting', `retrying in ${Math.round(delay / 100) / 10} s`);
  }

  /** One reconnect attempt: a new socket, then the seat again (kept if within grace). */
  /** @param {number} session */
  async _reconnect(session) {
    if (session !== this.session) return;
    // A network change starts a new attempt over one still under way (which may be stuck
    // on the address that went away): the older one's socket and outcome are dropped.
    const attempt = ++this.reconnectAttempt;
    const current = () => session === this.session && attempt === this.reconnectAttempt;
    try {
      await this.signalling.open(current);
      if (!current()) return;
      await this._join(session);
      if (!current()) return;
      this.signalling.reconnected();
      this.disconnectedAt = 0;
      if (this.iceRestartPending) this._restartAllIce();
    } catch (err) {
      if (!current()) return;
      const error = asVoiceError(err);
      this.signalling.discard();
      if (error.kind === 'auth' || error.kind === 'room-full' || error.kind === 'forbidden') {
        this._error(error);
        this._teardown();
        this._setStatus('left', error.kind);
        return;
      }
      if (error.kind === 'unreachable' && this.signalling.attempts >= 2) this._error(error);
      this._scheduleReconnect();
    }
  }

  /**
   * Every event of the socket after `connected` (signalling.js parsed it).
   * @param {ServerFrame} frame
   */
  _onFrame(frame) {
    const data = frame.data;
    if (data && typeof data === 'object' && 'roomId' in data && data.roomId !== undefined) {
      if (data.roomId !== this.roomId) return;
    }
    switch (frame.type) {
      case 'participantJoined':
        return this._onJoined(frame.data.participant);
      case 'participantLeft':
        return this._onLeft(frame.data.participantId, frame.data.reason);
      case 'signal':
        return this._onSignal(frame.data.message);
      case 'participantMuteChanged':
        return this._onMuteChanged(frame.data.participantId, !!frame.data.isMuted);
      case 'roomModeChanged': {
        const mode = frame.data.mode === 'sfu' ? 'sfu' : 'mesh';
        const epoch = Number(frame.data.epoch) || 0;
        if (this.joinPending) {
          this.pendingMode = { mode, epoch };
          return undefined;
        }
        return this._setMode(mode, epoch);
      }
      case 'speakerSlots':
        return this._onSlots(frame.data.slots || [], frame.data.speaking || []);
      case 'sfuLinks':
        this.sfuLink.setPeersDown(String(frame.data.source), frame.data.notConnected || {});
        return this._emitRoster();
      case 'floorChanged':
        this._applyFloor(frame.data.floor);
        return undefined;
      case 'moderation':
        return this._emit('onmoderation', frame.data);
      case 'talkerCut':
        return this._emit('ontalkercut', frame.data);
      case 'netChanged':
      case 'netLogged':
        return this.netLog._onFrame(frame);
      case 'recordingChanged':
      case 'transmissionRecorded':
        return this.recording._onFrame(frame);
      case 'error':
        return this._error(new VoiceError('protocol', frame.data.message || 'server error'));
      default:
        return undefined;
    }
  }

  /** @param {ParticipantInfo} participant */
  _onJoined(participant) {
    if (!participant || !participant.id || !this.identity) return;
    if (participant.id === this.identity.participantId) return;
    this.participants.set(participant.id, { ...participant });
    const link = this.links.get(participant.id);
    if (link && !this._mayPublish(participant.id)) {
      // Its audio arrived before we knew it is a listener: stop playing it.
      for (const key of link.streams.keys()) this._emitAudio(key, null, null);
      link.streams.clear();
    }
    if (this.mode === 'mesh') this._ensureLink(participant.id, false);
    this._emitRoster();
  }

  /** @param {string} id @param {string} [reason] */
  _onLeft(id, reason) {
    if (!id || !this.identity) return;
    if (id === this.identity.participantId && reason === 'room_closed') {
      // An admin removed the room: out of it, still signed in (docs/admin.md).
      this._error(new VoiceError('room-closed', 'an admin closed this room'));
      this._teardown();
      this._setStatus('left', 'room-closed');
      return;
    }
    if (id === this.identity.participantId) {
      this._error(new VoiceError('removed', 'you were removed from the room'));
      this._teardown();
      this._setStatus('left', 'removed');
      return;
    }
    this.participants.delete(id);
    this._closeLink(id);
    this._emitRoster();
  }

  /** @param {string} id @param {boolean} muted */
  _onMuteChanged(id, muted) {
    const p = this.participants.get(id);
    if (p) p.isMuted = muted;
    if (this.identity && id === this.identity.participantId && muted !== this.mic.muted) {
      this.mic.muted = muted; // e.g. muted by net control
      this.mic.applyGate();
    }
    this._emitRoster();
  }

  /** @param {SignalMessage} message */
  _onSignal(message) {
    if (!message || !message.from || !this.identity) return;
    const from = String(message.from);
    if (from === SFU_PEER) {
      if (this.sfu) this.sfu.receive(message.type, message.data);
      return;
    }
    let link = this.links.get(from);
    if (!link) {
      // Offers from peers we do not know yet (their offer beat the join answer) are fine;
      // in sfu mode mesh offers are stale and ignored (the sender re-offers if needed).
      if (message.type !== 'offer' || (this.mode === 'sfu' && this.plane === 'sfu')) return;
      if (!this.participants.has(from)) this.participants.set(from, { id: from, displayName: from });
      link = this._createLink(from);
    }
    link.receive(message.type, message.data);
  }

  /**
   * @param {string} peerId
   * @param {SignalType} type
   * @param {SessionDescription|IceCandidate|null} data
   */
  async _signal(peerId, type, data) {
    if (!this.roomId) return;
    // On the open socket (no request per candidate), without waiting for each ack: the
    // socket keeps the order, so trickled candidates leave at once instead of one per
    // round trip. REST while it is reconnecting, one request after the other.
    if (this.signalling.isOpen) {
      this.signalling
        .signal({ roomId: this.roomId, type, to: peerId, data })
        .catch((err) => this._log('signal', type, 'to', peerId, 'failed:', err.message));
    } else {
      await this.api.signal(this.roomId, { type, to: peerId, data });
    }
  }

  // ------------------------------------------------------------------ mesh links

  /** Whether a mesh connection to `id` is worth having (two listeners have nothing to say). */
  /** @param {string} id */
  _wantsLink(id) {
    if (!this.identity || id === this.identity.participantId) return false;
    const peer = this.participants.get(id);
    if (!peer) return false;
    const peerPublishes = peer.canPublish !== false && peer.role !== 'listener';
    return this.mic.canPublish || peerPublishes;
  }

  /** @param {string} peerId */
  _createLink(peerId) {
    const self = this.identity ? this.identity.participantId : '';
    return this.mesh.create(self, peerId, this.rtcConfig);
  }

  /**
   * A mesh link to `peerId`: `active` offers now, otherwise wait for the peer's offer
   * (newcomers offer) and offer only if none came.
   * @param {string} peerId
   * @param {boolean} active
   */
  _ensureLink(peerId, active) {
    if (!this._wantsLink(peerId)) return;
    const existing = this.links.get(peerId);
    if (existing && !existing.closed) return;
    const link = this._createLink(peerId);
    this.mesh.start(
      link,
      active,
      () => this._sendable(),
      () => this.mode === 'mesh',
    );
    this._emitRoster();
  }

  /** The microphone to send, if this seat publishes. @returns {Sendable|null} */
  _sendable() {
    const track = this.mic.track;
    const stream = this.mic.stream;
    return this.mic.canPublish && track && stream ? { track, stream } : null;
  }

  /** After a remote offer on a mesh link: send the mic on it too. */
  /** @param {PeerLink} link */
  _attachMic(link) {
    if (link.plane === 'mesh') attachMic(link, this._sendable());
  }

  /** @param {PeerLink} link @param {import('./peer-link.js').Trouble} why */
  _linkTrouble(link, why) {
    if (link.closed) return;
    if (!this.ws || this.status !== 'joined') return; // retried after the rejoin
    if (link.plane === 'sfu') {
      this._sfuTrouble(link, why);
      return;
    }
    link.restartIce();
  }

  /**
   * The SFU connection needs help: an ICE restart on the same connection (the worker keeps
   * the seat's slots and forwarding), or a new connection when it never connected or a
   * restart did not complete within SFU_RESTART_MS.
   * @param {PeerLink} link
   * @param {import('./peer-link.js').Trouble} why
   */
  _sfuTrouble(link, why) {
    if (!link.connectedAt) {
      this._log('SFU connection', why, 'before it ever connected; negotiating a new one');
      this._replaceSfu();
    } else if (!link.restartedAt) {
      this._log('SFU connection', why, '; ICE restart on the same connection');
      this.sfuAttempts++;
      link.restartIce();
    } else if (Date.now() - link.restartedAt >= SFU_RESTART_MS) {
      this._log('SFU ICE restart did not complete; negotiating a new connection');
      this._replaceSfu();
    }
  }

  /**
   * The network under this page changed (NetworkWatch calls this; a UI or a test may too):
   * restart ICE on every connection without leaving the room. Mesh links restart through
   * perfect negotiation; the SFU link sends an ICE-restart offer on the same connection
   * (docs/protocol.md; a new connection if that does not complete within SFU_RESTART_MS).
   * First a new socket and the seat again (kept within the grace period), so that the
   * restart offers go out, and their answers come back, on a socket that works.
   * @param {string} [reason]
   */
  restartIce(reason = 'asked') {
    if (this.status !== 'joined' && this.status !== 'reconnecting') return;
    this._log('network change (', reason, '): new socket, seat, then ICE restarts');
    // The restart offers and their answers need a live socket: the old one may be bound to
    // an address the machine no longer has (it would look silent for DEAD_AFTER_MS, and
    // answers sent to it are lost). A new socket subscribes before the offers go out.
    this.iceRestartPending = true;
    this.signalling.cancelRetry();
    this.signalling.discard();
    if (!this.disconnectedAt) this.disconnectedAt = Date.now();
    this._setStatus('reconnecting', 'the network changed');
    this._reconnect(this.session);
  }

  /** ICE restart on every connection (after a network change, on the new socket). */
  _restartAllIce() {
    this.iceRestartPending = false;
    for (const link of this.links.values()) link.restartIce();
    const sfu = this.sfu;
    if (sfu) sfu.restartIce();
  }

  /** @param {string} peerId */
  _closeLink(peerId) {
    const link = this.mesh.remove(peerId);
    if (link) this._stopPlaying(link);
  }

  _closeAllLinks() {
    for (const id of [...this.links.keys()]) this._closeLink(id);
  }

  /** Stop playing what a closed link fed. @param {PeerLink} link */
  _stopPlaying(link) {
    for (const key of link.streams.keys()) this._emitAudio(key, null, null);
    link.streams.clear();
  }

  /** @param {PeerLink} link */
  _onLinkState(link) {
    this._emit('onpeerstate', link.peerId, /** @type {LinkState} */ (link.pc.connectionState));
    if (link.plane === 'sfu') this._checkSfu(Date.now());
    this._maybeCommit();
    this._emitRoster();
  }

  /** Whether a peer may be heard at all (the server also refuses a listener's sending SDP). */
  /** @param {string} id */
  _mayPublish(id) {
    const peer = this.participants.get(id);
    return !peer || (peer.canPublish !== false && peer.role !== 'listener');
  }

  /** @param {PeerLink} link @param {RTCTrackEvent} event */
  _onTrack(link, event) {
    if (event.track.kind !== 'audio') return;
    if (link.plane === 'mesh' && !this._mayPublish(link.peerId)) {
      this._log('ignoring audio from', link.peerId, ': it may not publish');
      return;
    }
    const stream = event.streams[0] || new MediaStream([event.track]);
    if (link.plane === 'sfu') {
      const key = this.sfuLink.slotKey(link, event.transceiver);
      if (key === null) return;
      link.streams.set(key, stream);
    } else {
      link.streams.set(link.peerId, stream);
    }
    if (link.plane === this.plane) this._emitLinkAudio(link);
  }

  /** @param {PeerLink} link */
  _emitLinkAudio(link) {
    // Mesh: a peer net control muted is not played (its own client stops sending too).
    if (link.plane === 'mesh' && this._mutedByNcs(link.peerId)) return;
    for (const [key, stream] of link.streams) {
      this._emitAudio(key, stream, this._owner(key));
    }
  }

  /** Who is heard on audio key `key`. @param {string} key */
  _owner(key) {
    return this.sfuLink.owner(key);
  }

  /**
   * @param {string} key
   * @param {MediaStream|null} stream
   * @param {string|null} participantId
   */
  _emitAudio(key, stream, participantId) {
    if (stream) this.emitted.set(key, participantId);
    else if (!this.emitted.delete(key)) return;
    this._emit('onaudio', key, stream, participantId);
  }

  // ------------------------------------------------------------------ mesh <-> sfu

  /**
   * @param {Mode} mode
   * @param {number} epoch
   * @param {boolean} [fromJoin]
   */
  _setMode(mode, epoch, fromJoin = false) {
    const changed = mode !== this.mode || (mode === 'sfu' && epoch > this.epoch);
    const previousEpoch = this.epoch;
    // A new placement: the workers report their peers anew.
    if (changed) this.sfuLink.peersDown.clear();
    this.mode = mode;
    if (epoch) this.epoch = Math.max(this.epoch, epoch);
    if (mode === 'sfu') {
      if (!this.sfuLink.healthy(!!epoch && epoch > previousEpoch)) this._replaceSfu();
      if (this.plane === 'mesh') {
        this.switchStartedAt = this.switchStartedAt || Date.now();
        // Links that never carried anything are not worth keeping for the handover.
        for (const [id, link] of [...this.links]) {
          if (!link.pc.remoteDescription) this._closeLink(id);
        }
      }
    } else {
      if (this.plane === 'sfu' && this.sfu) {
        this.switchStartedAt = this.switchStartedAt || Date.now();
      } else {
        this.plane = 'mesh';
        this._closeSfu();
      }
      if (!fromJoin) {
        // join() offers to everyone itself; on a switch the impolite side offers at once and
        // the polite one waits for it (so there is no glare to resolve).
        const self = this.identity ? this.identity.participantId : '';
        for (const id of this.participants.keys()) this._ensureLink(id, self > id);
      }
    }
    if (changed || fromJoin) this._emit('onmode', this.mode, this.epoch);
    this._maybeCommit();
  }

  _replaceSfu() {
    const wasActive = this.plane === 'sfu';
    if (this.sfuDownSince) this.sfuAttempts++;
    this._closeSfu();
    this.sfuLink.open(this.rtcConfig, this._sendable());
    if (wasActive) this.plane = 'sfu';
    this._emitRoster();
  }

  _closeSfu() {
    const link = this.sfuLink.close();
    if (link) this._stopPlaying(link);
  }

  /** Flip the played plane once the new one is ready (see the media contract). */
  _maybeCommit() {
    if (this.mode === this.plane || !this.switchStartedAt) return;
    const now = Date.now();
    if (this.mode === 'sfu') {
      const sfu = this.sfu;
      if (!sfu || !this.sfuLink.readyToTakeOver(now, this.links.size)) return;
      this.plane = 'sfu';
      this.switchStartedAt = 0;
      this._closeAllLinks();
      this._emitLinkAudio(sfu);
      this._log('switched to sfu');
    } else {
      const wanted = [...this.participants.keys()].filter((id) => this._wantsLink(id));
      if (!this.mesh.readyToTakeOver(wanted, now, this.switchStartedAt)) return;
      this.plane = 'mesh';
      this.switchStartedAt = 0;
      this._closeSfu();
      this.sfuLink.clearSlots();
      for (const link of this.links.values()) this._emitLinkAudio(link);
      this._log('switched to mesh');
    }
    this._emitRoster();
  }

  /** @param {SlotAssignment[]} slots @param {string[]} speaking */
  _onSlots(slots, speaking) {
    this.sfuLink.setSlots(slots, speaking);
    this._emit('onslots', this.sfuLink.slots, this.sfuLink.speaking);
    const sfu = this.sfu;
    if (sfu && this.plane === 'sfu') {
      for (const [key, stream] of sfu.streams) {
        const owner = this._owner(key);
        if (this.emitted.get(key) !== owner) this._emitAudio(key, stream, owner);
      }
    }
  }

  // ------------------------------------------------------------------ housekeeping

  /** Once a second: keepalive, stale offers, stuck connections, pending switches. */
  _tick() {
    this.signalling.keepalive();
    if (this.status !== 'joined') return;
    const now = Date.now();
    let rosterChanged = false;
    for (const link of this._allLinks()) {
      link.resendStaleOffer();
      if (link.stuck(now)) this._linkTrouble(link, 'disconnected');
      else if (link.stallTrouble(now)) this._linkTrouble(link, 'stalled');
      const stalled = link.stalled();
      if (stalled !== this.shownStalled.has(link)) {
        if (stalled) this.shownStalled.add(link);
        else this.shownStalled.delete(link);
        rosterChanged = true;
      }
    }
    const sfu = this.sfu;
    if (sfu && sfu.restartedAt && now - sfu.restartedAt >= SFU_RESTART_MS) {
      this._sfuTrouble(sfu, 'disconnected'); // the restart did not complete: a new connection
    }
    this._checkSfu(now);
    this._maybeCommit();
    if (rosterChanged) this._emitRoster();
  }

  /**
   * Whether the SFU connection works, for the UI (`onsfuproblem`): a problem once it
   * failed, or when it has not been connected and receiving for SFU_PROBLEM_MS; over once
   * it is again.
   * @param {number} now
   */
  _checkSfu(now) {
    const sfu = this.sfu;
    /** @type {SfuProblem|null} */
    let problem = null;
    if (this.status === 'joined' && this.mode === 'sfu' && sfu) {
      const state = sfu.pc.connectionState;
      const stalled = sfu.stalled();
      if (state === 'connected' && !stalled) {
        this.sfuDownSince = 0;
        this.sfuAttempts = 0;
      } else {
        if (!this.sfuDownSince) this.sfuDownSince = now;
        if (state === 'failed' || now - this.sfuDownSince >= SFU_PROBLEM_MS) {
          const why = state === 'failed' ? 'failed' : stalled ? 'stalled' : 'unreachable';
          problem = { why, since: this.sfuDownSince, attempts: this.sfuAttempts };
        }
      }
    } else {
      this.sfuDownSince = 0;
      this.sfuAttempts = 0;
    }
    const last = this.sfuProblem;
    if (!last && !problem) return;
    if (last && problem && last.why === problem.why && last.attempts === problem.attempts) return;
    this.sfuProblem = problem;
    this._emit('onsfuproblem', problem);
  }

  async _statsTick() {
    if (this.statsBusy || this.status === 'idle' || this.status === 'left') return;
    this.statsBusy = true;
    try {
      const stats = await this.audioStats();
      const now = Date.now();
      for (const link of this.links.values()) {
        if (link.rtpGap(now)) {
          this._log('RTP from', link.peerId, 'stopped; restarting ICE');
          this._linkTrouble(link, 'stalled');
        }
      }
      const levels = levelsOf(stats, this.plane === 'sfu' ? this.sfuLink.speaking : []);
      if (this.identity) levels[this.identity.participantId] = this.mic.level();
      this._emit('onlevels', levels);
      this._maybeCommit();
    } catch (err) {
      this._log('stats failed', err);
    } finally {
      this.statsBusy = false;
    }
  }

  /**
   * Audio counters of every live connection: what the UI meters and the tests read.
   * Inbound levels combine Chrome's `audioLevel` with the energy since the last call.
   * @returns {Promise<AudioStats>}
   */
  audioStats() {
    return collectStats(
      this._allLinks(),
      this.sfuLink.slotCount,
      (key) => this._owner(key),
      () => this.mic.sentEnergy(),
    );
  }

  // ------------------------------------------------------------------ roster & UI

  /** The roster in join order, self first. @returns {RosterEntry[]} */
  roster() {
    const self = this.identity ? this.identity.participantId : '';
    /** @type {RosterEntry[]} */
    const entries = [];
    for (const p of this.participants.values()) {
      const isSelf = p.id === self;
      const role = p.role || 'operator';
      /** @type {LinkState} */
      let state = 'self';
      /** @type {'mesh'|'sfu'|null} */
      let via = null;
      if (!isSelf) {
        if (this.plane === 'sfu') {
          via = 'sfu';
          // Between two attempts there is no connection object; while the SFU path has a
          // problem (the banner shows) that gap is a failure, not a wait.
          if (this.sfu) state = linkState(this.sfu);
          else state = this.sfuProblem ? 'failed' : 'waiting';
          // Our own path is up (or quiet), but theirs may not be (their worker says so:
          // sfuLinks); that is the more telling of the two.
          if (state === 'connected' || state === 'stalled') {
            state = this.sfuLink.peerDown(p.id) || state;
          }
        } else {
          const link = this.links.get(p.id);
          via = 'mesh';
          if (link) state = linkState(link);
          else state = this._wantsLink(p.id) ? 'waiting' : 'listening';
        }
      }
      const view = floorView(this.floor, p.id, p.role);
      entries.push({
        id: p.id,
        displayName: p.displayName || p.id,
        role,
        isMuted: isSelf ? this.mic.muted : !!p.isMuted,
        isSelf,
        canPublish: isSelf ? this.mic.canPublish : p.canPublish !== false && role !== 'listener',
        state,
        via,
        mutedByNcs: view.mutedByNcs,
        netControl: view.isNetControl,
        floor: view.hasFloor ? 'holder' : view.paused ? 'paused' : view.queuePosition ? 'queued' : null,
        queuePosition: view.queuePosition,
      });
    }
    entries.sort((a, b) => Number(b.isSelf) - Number(a.isSelf));
    return entries;
  }

  _emitRoster() {
    this._emit('onroster', this.roster());
  }

  /** @param {Status} status @param {string} [detail] */
  _setStatus(status, detail) {
    this.status = status;
    this._emit('onstatus', status, detail);
    this._emitRoster();
  }

  /** @param {unknown} err */
  _error(err) {
    this._emit('onerror', asVoiceError(err));
  }

  /**
   * Call a UI callback; a throwing UI never breaks the protocol.
   * @param {string} name
   * @param {...any} args
   */
  _emit(name, ...args) {
    const fn = /** @type {any} */ (this)[name];
    if (typeof fn !== 'function') return;
    try {
      fn(...args);
    } catch (err) {
      console.error(`VoiceRoom ${name} handler threw`, err);
    }
  }

  /** @param {...unknown} args */
  _log(...args) {
    if (this.debug) console.debug('[voice]', ...args);
  }
}

/**
 * What the roster shows for a link: its connection state, unless it says connected while
 * nothing arrives (`stalled`).
 * @param {PeerLink} link
 * @returns {LinkState}
 */
function linkState(link) {
  if (link.stalled()) return 'stalled';
  return /** @type {LinkState} */ (link.pc.connectionState);
}
