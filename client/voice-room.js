// @ts-check
/**
 * yahaml-voice client protocol: login, rooms, the signaling WebSocket and WebRTC.
 *
 * No DOM access here (Galène's protocol.js split): the page (app.js) assigns the `on*`
 * callbacks of a {@link VoiceRoom} and turns them into elements. A second UI, a test or a
 * YAHAML panel can drive the same class.
 *
 * Media planes:
 * - mesh: one RTCPeerConnection per publishing peer, "perfect negotiation" (the polite
 *   side rolls back on glare, the impolite side ignores the colliding offer);
 * - sfu:  one RTCPeerConnection to the peer id `sfu`: `slots` recvonly audio m-lines, then
 *   one sendonly m-line for the microphone (docs/architecture.md, SFU media contract).
 * A mode switch builds the new plane while the old one keeps playing and flips over only
 * when the new one carries audio, so operators hear no gap.
 */

export const PROTOCOL_VERSION = 1;
/** WebSocket subprotocols: ours, and the one that carries the token (server/protocol.py). */
export const WS_SUBPROTOCOL = 'yahaml-voice';
export const WS_TOKEN_PREFIX = 'yahaml-voice.token.';
export const SFU_PEER = 'sfu';

/** Ping the server after this much silence, drop the socket after DEAD_AFTER. */
const PING_EVERY_MS = 20_000;
const DEAD_AFTER_MS = 45_000;
/** Reconnect backoff: first delay, cap. */
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
/** A passive mesh link offers itself if the other side has not offered by then. */
const PASSIVE_FALLBACK_MS = 4_000;
/** An offer without an answer is sent again after this long (a lost WS frame, glare). */
const OFFER_RESEND_MS = 5_000;
/** A `disconnected` connection gets an ICE restart if it stays so this long. */
const DISCONNECTED_GRACE_MS = 2_500;
/** mesh->sfu: flip after the SFU link is connected and carries audio, or after this. */
const SFU_QUIET_COMMIT_MS = 3_000;
/** sfu->mesh: flip when every mesh link is connected, or after this. */
const MESH_COMMIT_MS = 6_000;
const STATS_EVERY_MS = 250;
/** A negotiated connection still not connected after this gets an ICE restart. */
const STUCK_RESTART_MS = 10_000;
/** TURN credentials are renewed after this share of their lifetime, and at least
 * ICE_RENEW_MARGIN_S seconds before it ends (a relay allocation started then still works). */
const ICE_RENEW_AT = 0.8;
const ICE_RENEW_MARGIN_S = 2;
/** A failed renewal is retried after this long. */
const ICE_RETRY_MS = 10_000;
/** A level (0..1) above this counts as speaking. */
export const SPEAKING_LEVEL = 0.02;

/**
 * @typedef {'ncs'|'operator'|'listener'} Role
 * @typedef {'mesh'|'sfu'} Mode
 * @typedef {{participantId: string, callsign: string, role: Role, expiresAt: number, token: string}} Identity
 * @typedef {{id: string, name: string, description: string, participantCount: number,
 *   maxParticipants: number, mode: Mode, sfuThreshold: number, ptt: boolean}} RoomSummary
 * @typedef {{id: string, displayName: string, role?: Role, isMuted?: boolean,
 *   audioSourceType?: string, canPublish?: boolean, joinedAt?: string}} ParticipantInfo
 * @typedef {'self'|'waiting'|'new'|'connecting'|'connected'|'disconnected'|'failed'|'closed'|'listening'} LinkState
 * @typedef {{id: string, displayName: string, role: Role, isMuted: boolean, isSelf: boolean,
 *   canPublish: boolean, state: LinkState, via: 'mesh'|'sfu'|null}} RosterEntry
 * @typedef {'idle'|'joining'|'joined'|'reconnecting'|'left'} Status
 * @typedef {'auth'|'room-full'|'unreachable'|'mic-denied'|'mic-missing'|'mic-lost'|'not-found'|
 *   'forbidden'|'bad-request'|'server'|'protocol'|'removed'|'aborted'} ErrorKind
 * @typedef {{index: number, participantId: string|null}} Slot
 * @typedef {{muted: boolean, ptt: boolean, held: boolean, transmitting: boolean,
 *   canPublish: boolean, deviceId: string|null}} LocalState
 * @typedef {{packetsReceived: number, bytesReceived: number, audioEnergy: number,
 *   audioLevel: number, participantId: string|null}} InboundStats
 * @typedef {{packetsSent: number, bytesSent: number, audioEnergy: number}} OutboundStats
 */

/** An error the UI can show: `kind` picks the banner, `status` is the HTTP status if any. */
export class VoiceError extends Error {
  /**
   * @param {ErrorKind} kind
   * @param {string} message
   * @param {number} [status]
   */
  constructor(kind, message, status) {
    super(message);
    this.name = 'VoiceError';
    this.kind = kind;
    this.status = status;
  }
}

/** @param {number} status @returns {ErrorKind} */
function kindOfStatus(status) {
  if (status === 401) return 'auth';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not-found';
  if (status === 409) return 'room-full';
  if (status >= 500) return 'server';
  return 'bad-request';
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The claims of a JWT, unverified: only to show who an invite link is for.
 * @param {string} token
 * @returns {Identity}
 */
export function identityFromToken(token) {
  const part = token.split('.')[1];
  if (!part) throw new VoiceError('auth', 'this invite link does not contain a valid token');
  let claims;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
  } catch {
    throw new VoiceError('auth', 'this invite link does not contain a valid token');
  }
  if (typeof claims.sub !== 'string' || typeof claims.name !== 'string') {
    throw new VoiceError('auth', 'this invite link does not contain a valid token');
  }
  return {
    participantId: claims.sub,
    callsign: claims.name,
    role: claims.role,
    expiresAt: Number(claims.exp) * 1000,
    token,
  };
}

/**
 * One RTCPeerConnection with perfect negotiation, trickle ICE and ordered signaling.
 * `peerId` is a participant id (mesh) or `sfu`.
 */
class Link {
  /**
   * @param {VoiceRoom} room
   * @param {string} peerId
   * @param {'mesh'|'sfu'} plane
   * @param {boolean} polite
   * @param {RTCConfiguration} config
   */
  constructor(room, peerId, plane, polite, config) {
    this.room = room;
    this.peerId = peerId;
    this.plane = plane;
    this.polite = polite;
    this.pc = new RTCPeerConnection(config);
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswerPending = false;
    this.closed = false;
    /** When the current unanswered local offer was sent (0: none). */
    this.offerSentAt = 0;
    /** When the connection first reached `connected` (0: not yet). */
    this.connectedAt = 0;
    /** When the last offer/answer exchange completed (0: never). */
    this.negotiatedAt = 0;
    /** An SFU link that received RTP on any slot. */
    this.hasAudio = false;
    /** Offers that arrived while we were making or holding our own (glare), for diagnostics. */
    this.collisions = 0;
    this.createdAt = Date.now();
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.fallbackTimer = null;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.restartTimer = null;
    /** Outgoing signals go out one at a time, in order (candidates never pass an offer). */
    /** @type {Promise<unknown>} */
    this.sendChain = Promise.resolve();
    /** Incoming signals are applied one at a time, in order. */
    /** @type {Promise<unknown>} */
    this.receiveChain = Promise.resolve();
    /** @type {Map<string, MediaStream>} audio keys this link feeds */
    this.streams = new Map();
    /** Last stats sample per inbound stats id, for level deltas. */
    /** @type {Map<string, {energy: number, duration: number}>} */
    this.lastSample = new Map();

    this.pc.onnegotiationneeded = () => this.negotiate();
    this.pc.onicecandidate = ({ candidate }) => {
      this.send('ice-candidate', candidate ? candidate.toJSON() : null);
    };
    this.pc.onconnectionstatechange = () => this.onState();
    this.pc.ontrack = (event) => this.room._onTrack(this, event);
  }

  /** Create and send an offer (also used for ICE restarts). */
  async negotiate() {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      const desc = this.pc.localDescription;
      if (desc && desc.type === 'offer') {
        this.offerSentAt = Date.now();
        this.send('offer', { type: desc.type, sdp: desc.sdp });
      }
    } catch (err) {
      if (!this.closed) this.room._log('negotiation with', this.peerId, 'failed:', err);
    } finally {
      this.makingOffer = false;
    }
  }

  /**
   * @param {'offer'|'answer'|'ice-candidate'} type
   * @param {RTCSessionDescriptionInit|RTCIceCandidateInit|null} data
   */
  send(type, data) {
    if (this.closed) return;
    this.sendChain = this.sendChain.then(() =>
      this.room._signal(this.peerId, type, data).catch((err) => {
        if (!this.closed) this.room._log('signal to', this.peerId, 'failed:', err.message);
      }),
    );
  }

  /**
   * Apply a signal from the peer, in arrival order.
   * @param {string} type
   * @param {any} data
   */
  receive(type, data) {
    this.receiveChain = this.receiveChain.then(() =>
      this.apply(type, data).catch((err) => {
        if (!this.closed) this.room._log('signal from', this.peerId, 'failed:', err);
      }),
    );
    return this.receiveChain;
  }

  /** @param {string} type @param {any} data */
  async apply(type, data) {
    if (this.closed) return;
    const pc = this.pc;
    if (type === 'offer' || type === 'answer') {
      if (!data || typeof data.sdp !== 'string') return;
      const readyForOffer =
        !this.makingOffer && (pc.signalingState === 'stable' || this.settingRemoteAnswerPending);
      const collision = type === 'offer' && !readyForOffer;
      if (collision) this.collisions++;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      if (type === 'answer' && pc.signalingState !== 'have-local-offer') return; // stale answer
      this.clearFallback();
      this.settingRemoteAnswerPending = type === 'answer';
      try {
        await pc.setRemoteDescription({ type, sdp: data.sdp });
      } finally {
        this.settingRemoteAnswerPending = false;
      }
      if (type === 'offer') {
        this.room._attachMic(this);
        await pc.setLocalDescription();
        const desc = pc.localDescription;
        if (desc) this.send('answer', { type: desc.type, sdp: desc.sdp });
      } else {
        this.offerSentAt = 0;
      }
      this.negotiatedAt = Date.now();
    } else if (type === 'ice-candidate') {
      try {
        // null / empty candidate: end of candidates.
        await pc.addIceCandidate(data && data.candidate ? data : undefined);
      } catch (err) {
        if (!this.ignoreOffer && pc.remoteDescription) throw err;
      }
    }
  }

  onState() {
    if (this.closed) return;
    const state = this.pc.connectionState;
    if (state === 'connected') {
      if (!this.connectedAt) this.connectedAt = Date.now();
      this.clearRestart();
    } else if (state === 'failed') {
      this.room._linkTrouble(this, 'failed');
    } else if (state === 'disconnected') {
      this.clearRestart();
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        if (!this.closed && this.pc.connectionState === 'disconnected') {
          this.room._linkTrouble(this, 'disconnected');
        }
      }, DISCONNECTED_GRACE_MS);
    }
    this.room._onLinkState(this);
  }

  /** Offer an ICE restart (the peer answers with fresh credentials). */
  restartIce() {
    if (this.closed) return;
    this.room._log('ICE restart with', this.peerId);
    this.pc.restartIce();
  }

  /** Re-send an offer nobody answered (lost while a socket was down, or dropped on glare). */
  resendStaleOffer() {
    if (this.closed || this.makingOffer || this.pc.signalingState !== 'have-local-offer') return;
    if (!this.offerSentAt || Date.now() - this.offerSentAt < OFFER_RESEND_MS) return;
    const desc = this.pc.localDescription;
    if (!desc) return;
    this.offerSentAt = Date.now();
    this.send('offer', { type: desc.type, sdp: desc.sdp });
  }

  clearFallback() {
    if (this.fallbackTimer) clearTimeout(this.fallbackTimer);
    this.fallbackTimer = null;
  }

  clearRestart() {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.clearFallback();
    this.clearRestart();
    this.pc.onnegotiationneeded = null;
    this.pc.onicecandidate = null;
    this.pc.onconnectionstatechange = null;
    this.pc.ontrack = null;
    this.pc.close();
  }
}

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
    /** Origin of the server ('' = this page's). */
    this.baseUrl = (options.baseUrl || '').replace(/\/$/, '');
    this.debug = !!options.debug;

    /** @type {Identity|null} */
    this.identity = null;
    /** @type {string|null} */
    this.roomId = null;
    /** @type {Status} */
    this.status = 'idle';
    /** The room's mode as the server last said. @type {Mode} */
    this.mode = 'mesh';
    /** The plane whose audio is played (lags `mode` during a switch). @type {Mode} */
    this.plane = 'mesh';
    this.epoch = 0;
    this.slotCount = 3;
    this.gracePeriod = 15;
    /** @type {RTCConfiguration} */
    this.rtcConfig = {};
    /** Participants of the room, self included. @type {Map<string, ParticipantInfo>} */
    this.participants = new Map();
    /** Mesh links by peer id. @type {Map<string, Link>} */
    this.links = new Map();
    /** @type {Link|null} */
    this.sfu = null;
    /** @type {Slot[]} */
    this.slots = [];
    /** @type {string[]} */
    this.speaking = [];
    /** When the current mode switch started (0: none). */
    this.switchStartedAt = 0;
    /** joinedAt of our seat: a different one after a rejoin means the seat was lost. */
    this.seatJoinedAt = '';

    /** @type {MediaStream|null} */
    this.localStream = null;
    this.muted = false;
    this.ptt = false;
    this.held = false;
    this.canPublish = true;
    this.listenOnly = false;
    /** @type {string|null} */
    this.deviceId = null;

    /** @type {WebSocket|null} */
    this.ws = null;
    /** Rejects the socket being opened (leave() while joining). @type {((e: Error) => void)|null} */
    this.abortOpen = null;
    this.lastMessageAt = 0;
    this.reconnectAttempt = 0;
    this.disconnectedAt = 0;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.reconnectTimer = null;
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

    /** @type {AudioContext|null} */
    this.audioContext = null;
    /** @type {AnalyserNode|null} */
    this.analyser = null;
    /** @type {Float32Array|null} */
    this.analyserBuf = null;

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
  }

  // ------------------------------------------------------------------ identity & REST

  /**
   * Open-auth login: the server issues a token for a callsign.
   * @param {string} callsign
   * @returns {Promise<Identity>}
   */
  async login(callsign) {
    const answer = await this._request('POST', '/api/sessions', { callsign }, false);
    this.identity = {
      participantId: answer.participantId,
      callsign: answer.callsign,
      role: answer.role,
      expiresAt: Date.parse(answer.expiresAt) || 0,
      token: answer.token,
    };
    return this.identity;
  }

  /**
   * Use a token from an invite link (`#token=...`) or storage.
   * @param {string} token
   * @returns {Identity}
   */
  useToken(token) {
    const identity = identityFromToken(token);
    if (identity.expiresAt && identity.expiresAt <= Date.now()) {
      throw new VoiceError('auth', 'this token has expired; ask for a new invite link', 401);
    }
    this.identity = identity;
    return identity;
  }

  /**
   * Forget the identity; with `revoke`, the server also denies the token from now on
   * (POST /api/sessions/logout; best effort: an unreachable server only forgets it here).
   * @param {boolean} [revoke]
   */
  async logout(revoke = false) {
    if (revoke && this.identity) {
      await this._request('POST', '/api/sessions/logout', undefined, true, true).catch(() => null);
    }
    this.identity = null;
  }

  /** @returns {Promise<RoomSummary[]>} */
  async listRooms() {
    return this._request('GET', '/api/voice-rooms');
  }

  /** @param {string} roomId */
  async getRoom(roomId) {
    return this._request('GET', `/api/voice-rooms/${encodeURIComponent(roomId)}`);
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {boolean} [auth]
   * @param {boolean} [keepalive]
   */
  async _request(method, path, body, auth = true, keepalive = false) {
    /** @type {Record<string, string>} */
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (auth) {
      if (!this.identity) throw new VoiceError('auth', 'not logged in', 401);
      headers.Authorization = `Bearer ${this.identity.token}`;
    }
    let response;
    try {
      response = await fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        keepalive,
      });
    } catch {
      throw new VoiceError('unreachable', 'the voice server cannot be reached');
    }
    let payload = null;
    const text = await response.text().catch(() => '');
    if (text) {
      try {
        payload = JSON.parse(text);
      } catch {
        payload = null;
      }
    }
    if (!response.ok) {
      const message =
        (payload && (payload.message || payload.error)) || `${response.status} ${response.statusText}`;
      if (response.status === 502 || response.status === 503 || response.status === 504) {
        throw new VoiceError('unreachable', message, response.status);
      }
      throw new VoiceError(kindOfStatus(response.status), message, response.status);
    }
    return payload;
  }

  // ------------------------------------------------------------------ local audio

  /** @returns {Promise<MediaDeviceInfo[]>} */
  async listMicrophones() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    return devices.filter((d) => d.kind === 'audioinput');
  }

  /** @param {string|null} deviceId */
  async _getMic(deviceId) {
    /** @type {MediaTrackConstraints} */
    const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if (deviceId) audio.deviceId = { exact: deviceId };
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new VoiceError('mic-missing', 'this browser offers no microphone here (HTTPS is required)');
    }
    try {
      return await navigator.mediaDevices.getUserMedia({ audio, video: false });
    } catch (err) {
      const name = err instanceof Error ? err.name : '';
      if (name === 'NotAllowedError' || name === 'SecurityError') {
        throw new VoiceError('mic-denied', 'microphone access was denied');
      }
      if (name === 'NotFoundError' || name === 'OverconstrainedError') {
        throw new VoiceError('mic-missing', 'no microphone was found');
      }
      throw new VoiceError('mic-missing', `the microphone could not be opened (${name || err})`);
    }
  }

  /** The microphone track, if publishing. */
  get micTrack() {
    return this.localStream ? this.localStream.getAudioTracks()[0] || null : null;
  }

  /** @param {MediaStream} stream */
  _useStream(stream) {
    this.localStream = stream;
    const track = stream.getAudioTracks()[0];
    if (track) {
      this.deviceId = track.getSettings().deviceId || this.deviceId;
      track.onended = () => {
        if (this.localStream === stream) {
          this._error(new VoiceError('mic-lost', 'the microphone stopped (unplugged?)'));
        }
      };
    }
    this._startAnalyser(stream);
    this._applyGate();
  }

  /**
   * Switch microphones without renegotiating (replaceTrack on every sender).
   * @param {string} deviceId
   */
  async setMicrophone(deviceId) {
    this.deviceId = deviceId;
    if (!this.localStream || this.status === 'idle' || this.status === 'left') return;
    const old = this.localStream;
    const stream = await this._getMic(deviceId);
    const track = stream.getAudioTracks()[0];
    track.enabled = this._gateOpen();
    const links = [...this.links.values(), ...(this.sfu ? [this.sfu] : [])];
    for (const link of links) {
      for (const sender of link.pc.getSenders()) {
        if (sender.track && sender.track.kind === 'audio') await sender.replaceTrack(track);
      }
    }
    old.getTracks().forEach((t) => t.stop());
    this._useStream(stream);
  }

  /** Whether the microphone may be on right now. */
  _gateOpen() {
    return this.canPublish && !this.muted && (!this.ptt || this.held);
  }

  _applyGate() {
    const track = this.micTrack;
    if (track) track.enabled = this._gateOpen();
    this._emit('onlocal', this.localState());
  }

  /** @returns {LocalState} */
  localState() {
    return {
      muted: this.muted,
      ptt: this.ptt,
      held: this.held,
      transmitting: !!this.micTrack && this._gateOpen(),
      canPublish: this.canPublish,
      deviceId: this.deviceId,
    };
  }

  /**
   * Mute or unmute (told to the room). Muted wins over a held push-to-talk.
   * @param {boolean} muted
   */
  async setMuted(muted) {
    this.muted = !!muted;
    this._applyGate();
    const self = this.identity && this.participants.get(this.identity.participantId);
    if (self) self.isMuted = this.muted;
    this._emitRoster();
    if (this.roomId && (this.status === 'joined' || this.status === 'reconnecting')) {
      await this._request('POST', this._roomPath('mute'), { isMuted: this.muted }).catch((err) =>
        this._error(err),
      );
    }
  }

  /**
   * Push-to-talk mode: the mic track is enabled only while talk(true) is held.
   * @param {boolean} on
   */
  setPushToTalk(on) {
    this.ptt = !!on;
    this.held = false;
    this._applyGate();
  }

  /**
   * Press (true) or release (false) the push-to-talk key.
   * @param {boolean} down
   */
  talk(down) {
    if (this.held === !!down) return;
    this.held = !!down;
    this._applyGate();
  }

  /** @param {MediaStream} stream */
  _startAnalyser(stream) {
    try {
      if (!this.audioContext) this.audioContext = new AudioContext();
      if (this.audioContext.state === 'suspended') this.audioContext.resume().catch(() => {});
      const source = this.audioContext.createMediaStreamSource(stream);
      this.analyser = this.audioContext.createAnalyser();
      this.analyser.fftSize = 1024;
      this.analyserBuf = new Float32Array(this.analyser.fftSize);
      source.connect(this.analyser);
    } catch {
      this.analyser = null;
    }
  }

  _selfLevel() {
    if (!this.analyser || !this.analyserBuf || !this._gateOpen()) return 0;
    const buf = /** @type {Float32Array<ArrayBuffer>} */ (this.analyserBuf);
    this.analyser.getFloatTimeDomainData(buf);
    let peak = 0;
    for (let i = 0; i < buf.length; i++) peak = Math.max(peak, Math.abs(buf[i]));
    return Math.min(1, peak);
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
    this.roomId = roomId;
    this.listenOnly = !!options.listenOnly || this.identity.role === 'listener';
    this.canPublish = !this.listenOnly;
    if (options.deviceId !== undefined) this.deviceId = options.deviceId;
    if (options.ptt !== undefined) this.ptt = !!options.ptt;
    this.held = false;
    this._setStatus('joining');
    try {
      if (this.canPublish) {
        const stream = await this._getMic(this.deviceId);
        if (session !== this.session) {
          stream.getTracks().forEach((t) => t.stop());
          return;
        }
        this._useStream(stream);
      }
      await this._openSocket(session);
      await this._join(session);
    } catch (err) {
      if (session === this.session) {
        this._teardown();
        this._setStatus('idle');
      }
      throw err;
    }
    if (session !== this.session) throw new VoiceError('aborted', 'left before the join completed');
    this.tickTimer = setInterval(() => this._tick(), 1000);
    this.statsTimer = setInterval(() => this._statsTick(), STATS_EVERY_MS);
  }

  /** @param {string} what */
  _roomPath(what) {
    return `/api/voice-rooms/${encodeURIComponent(this.roomId || '')}/${what}`;
  }

  /**
   * POST join (idempotent for a seat we still hold) and reconcile links with its answer.
   * @param {number} session
   */
  async _join(session) {
    const answer = await this._request('POST', this._roomPath('join'), {
      audioSourceType: 'microphone',
      joinMode: this.listenOnly ? 'listener' : 'operator',
    });
    if (session !== this.session) return;
    const me = answer.participant;
    const seatKept = !!this.seatJoinedAt && this.seatJoinedAt === me.joinedAt;
    if (this.seatJoinedAt && !seatKept) {
      this._log('seat was lost while disconnected; joining afresh');
      this._closeAllLinks();
    }
    this.seatJoinedAt = me.joinedAt;
    this.canPublish = me.canPublish !== false && !this.listenOnly;
    if (!this.canPublish && this.localStream) {
      this.localStream.getTracks().forEach((t) => t.stop());
      this.localStream = null;
    }
    this.rtcConfig = {
      iceServers: answer.iceServers || [],
      iceTransportPolicy: answer.iceTransportPolicy || 'all',
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    };
    this._scheduleIceRenewal(session, Number(answer.iceTtl) || 0);
    this.slotCount = (answer.sfu && answer.sfu.slots) || 3;
    this.gracePeriod = Number(answer.gracePeriod) || this.gracePeriod;
    this.muted = !!me.isMuted || this.muted;

    this.participants = new Map();
    this.participants.set(me.id, { ...me });
    for (const peer of answer.peers || []) this.participants.set(peer.id, { ...peer });

    // Links to peers that left while we were away go; existing ones get refreshed.
    for (const [id, link] of [...this.links]) {
      if (!this.participants.has(id)) this._closeLink(id);
      else {
        link.pc.setConfiguration({ ...link.pc.getConfiguration(), iceServers: this.rtcConfig.iceServers });
        const state = link.pc.connectionState;
        if (state === 'failed' || state === 'disconnected') link.restartIce();
      }
    }
    this._setStatus('joined');
    this._applyGate();
    const mode = answer.mode === 'sfu' ? 'sfu' : 'mesh';
    if (!this.links.size && !this.sfu) this.plane = mode; // nothing to hand over from
    this._setMode(mode, this.epoch, true);
    if (mode === 'mesh') {
      for (const id of this.participants.keys()) {
        if (!this.links.has(id)) this._ensureLink(id, true);
      }
    }
    this._emitRoster();
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
      const ice = await this._request('GET', '/api/ice-servers');
      if (session !== this.session) return;
      this.rtcConfig = {
        ...this.rtcConfig,
        iceServers: ice.iceServers || [],
        iceTransportPolicy: ice.iceTransportPolicy || this.rtcConfig.iceTransportPolicy,
      };
      for (const link of [...this.links.values(), ...(this.sfu ? [this.sfu] : [])]) {
        try {
          link.pc.setConfiguration({ ...link.pc.getConfiguration(), iceServers: this.rtcConfig.iceServers });
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
        ? this._request('POST', this._roomPath('leave'), undefined, true, true).catch(() => null)
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
    if (this.localStream) this.localStream.getTracks().forEach((t) => t.stop());
    this.localStream = null;
    this._closeAllLinks();
    if (this.sfu) this._closeSfu();
    for (const key of [...this.emitted.keys()]) this._emitAudio(key, null, null);
    this.emitted.clear();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.onmessage = null;
      ws.onerror = null;
      ws.close(1000, 'leaving');
    }
    if (this.abortOpen) this.abortOpen(new VoiceError('aborted', 'left before the join completed'));
    this.abortOpen = null;
    for (const timer of [this.tickTimer, this.statsTimer]) if (timer) clearInterval(timer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.iceTimer) clearTimeout(this.iceTimer);
    this.tickTimer = this.statsTimer = this.reconnectTimer = this.iceTimer = null;
    if (this.audioContext) this.audioContext.close().catch(() => {});
    this.audioContext = null;
    this.analyser = null;
    this.participants = new Map();
    this.slots = [];
    this.speaking = [];
    this.held = false;
    this.seatJoinedAt = '';
    this.switchStartedAt = 0;
    this.reconnectAttempt = 0;
    this.mode = this.plane = 'mesh';
    this.epoch = 0;
    this._emitRoster();
  }

  // ------------------------------------------------------------------ WebSocket

  /**
   * Open the socket; resolves on the server's `connected` frame.
   * @param {number} session
   * @returns {Promise<void>}
   */
  _openSocket(session) {
    if (!this.identity) return Promise.reject(new VoiceError('auth', 'log in first', 401));
    const base = this.baseUrl || location.origin;
    // The token travels in a subprotocol, never in the URL (proxies log URLs).
    const url = `${base.replace(/^http/, 'ws')}/ws`;
    const protocols = [WS_SUBPROTOCOL, WS_TOKEN_PREFIX + this.identity.token];
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(url, protocols);
      } catch {
        reject(new VoiceError('unreachable', 'cannot open the signaling socket'));
        return;
      }
      this.ws = ws;
      this.abortOpen = reject;
      let opened = false;
      /** @type {VoiceError|null} */
      let authError = null;
      ws.onmessage = (event) => {
        if (session !== this.session) return;
        this.lastMessageAt = Date.now();
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return;
        }
        if (!frame || typeof frame !== 'object') return;
        if (!opened && frame.type === 'connected') {
          opened = true;
          this.abortOpen = null;
          const version = frame.data && frame.data.protocolVersion;
          if (version && version !== PROTOCOL_VERSION) {
            this._log('server speaks protocol', version, 'we speak', PROTOCOL_VERSION);
          }
          ws.send(JSON.stringify({ type: 'subscribe', channel: 'voice' }));
          resolve();
          return;
        }
        if (frame.type === 'error' && frame.data) {
          const code = frame.data.code || '';
          if (code === 'token_expired' || code === 'unauthorized') {
            authError = new VoiceError(
              'auth',
              code === 'token_expired' ? 'your session has expired; log in again' : 'not authorized',
              401,
            );
            return;
          }
          if (code === 'revoked' || code === 'removed') {
            // Logged out elsewhere or removed by net control: the 4401 close follows.
            authError = new VoiceError(
              code === 'removed' ? 'removed' : 'auth',
              frame.data.message || 'your session was revoked; log in again',
              401,
            );
            return;
          }
        }
        this._onFrame(frame);
      };
      ws.onclose = (event) => {
        if (this.ws === ws) this.ws = null;
        if (session !== this.session) return;
        const auth =
          authError ||
          (event.code === 4401 || event.code === 4001 || event.code === 1008
            ? new VoiceError('auth', event.reason || 'your session has expired; log in again', 401)
            : null);
        if (!opened) {
          this.abortOpen = null;
          if (auth) {
            reject(auth);
            return;
          }
          // A refused upgrade (bad token: HTTP 401) shows only as 1006 to a page: ask why.
          this._whyRefused().then(reject);
          return;
        }
        this._onSocketLost(auth, event.code, event.reason);
      };
    });
  }

  /**
   * Why the socket could not open: an auth problem if the REST API says so.
   * @returns {Promise<VoiceError>}
   */
  async _whyRefused() {
    try {
      await this._request('GET', '/api/sessions/me');
    } catch (err) {
      if (err instanceof VoiceError && err.kind === 'auth') return err;
    }
    return new VoiceError('unreachable', 'the voice server cannot be reached');
  }

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
    if (this.reconnectTimer) return;
    const attempt = this.reconnectAttempt++;
    // Never wait so long that the seat's grace period runs out between two attempts.
    const cap = Math.max(BACKOFF_FIRST_MS, Math.min(BACKOFF_MAX_MS, (this.gracePeriod * 1000) / 3));
    const base = Math.min(cap, BACKOFF_FIRST_MS * 2 ** attempt);
    const delay = attempt === 0 ? 200 : base * (0.75 + Math.random() * 0.5);
    this._setStatus('reconnecting', `retrying in ${Math.round(delay / 100) / 10} s`);
    const session = this.session;
    this.reconnectTimer = setTimeout(async () => {
      this.reconnectTimer = null;
      if (session !== this.session) return;
      try {
        await this._openSocket(session);
        await this._join(session);
        this.reconnectAttempt = 0;
        this.disconnectedAt = 0;
      } catch (err) {
        if (session !== this.session) return;
        const error = err instanceof VoiceError ? err : new VoiceError('server', String(err));
        if (this.ws) {
          const ws = this.ws;
          this.ws = null;
          ws.onclose = null;
          ws.close();
        }
        if (error.kind === 'auth' || error.kind === 'room-full' || error.kind === 'forbidden') {
          this._error(error);
          this._teardown();
          this._setStatus('left', error.kind);
          return;
        }
        if (error.kind === 'unreachable' && this.reconnectAttempt >= 2) this._error(error);
        this._scheduleReconnect();
      }
    }, delay);
  }

  /** @param {any} frame */
  _onFrame(frame) {
    const data = frame.data || {};
    if (data.roomId !== undefined && data.roomId !== this.roomId) return;
    switch (frame.type) {
      case 'participantJoined':
        return this._onJoined(data.participant);
      case 'participantLeft':
        return this._onLeft(data.participantId);
      case 'signal':
        return this._onSignal(data.message);
      case 'participantMuteChanged':
        return this._onMuteChanged(data.participantId, !!data.isMuted);
      case 'roomModeChanged':
        return this._setMode(data.mode === 'sfu' ? 'sfu' : 'mesh', Number(data.epoch) || 0);
      case 'speakerSlots':
        return this._onSlots(data.slots || [], data.speaking || []);
      case 'error':
        return this._error(new VoiceError('protocol', data.message || 'server error'));
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

  /** @param {string} id */
  _onLeft(id) {
    if (!id || !this.identity) return;
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
    if (this.identity && id === this.identity.participantId && muted !== this.muted) {
      this.muted = muted; // e.g. muted by net control
      this._applyGate();
    }
    this._emitRoster();
  }

  /** @param {any} message */
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
   * @param {'offer'|'answer'|'ice-candidate'} type
   * @param {RTCSessionDescriptionInit|RTCIceCandidateInit|null} data
   */
  async _signal(peerId, type, data) {
    if (!this.roomId) return;
    await this._request('POST', this._roomPath('signal'), { type, to: peerId, data });
  }

  // ------------------------------------------------------------------ links

  /** Whether a mesh connection to `id` is worth having (two listeners have nothing to say). */
  /** @param {string} id */
  _wantsLink(id) {
    if (!this.identity || id === this.identity.participantId) return false;
    const peer = this.participants.get(id);
    if (!peer) return false;
    const peerPublishes = peer.canPublish !== false && peer.role !== 'listener';
    return this.canPublish || peerPublishes;
  }

  /** @param {string} peerId */
  _createLink(peerId) {
    const self = this.identity ? this.identity.participantId : '';
    const link = new Link(this, peerId, 'mesh', self < peerId, this.rtcConfig);
    this.links.set(peerId, link);
    return link;
  }

  /**
   * A mesh link to `peerId`: `active` offers now, otherwise wait for the peer's offer
   * (newcomers offer) and offer only if none came.
   * @param {string} peerId
   * @param {boolean} active
   */
  _ensureLink(peerId, active) {
    if (!this._wantsLink(peerId)) return;
    let link = this.links.get(peerId);
    if (link && !link.closed) return;
    link = this._createLink(peerId);
    if (active) {
      this._addLocalMedia(link);
    } else {
      const l = link;
      l.fallbackTimer = setTimeout(() => {
        l.fallbackTimer = null;
        if (l.closed || l.pc.remoteDescription || l.pc.signalingState !== 'stable') return;
        if (this.mode !== 'mesh') return;
        this._addLocalMedia(l);
      }, PASSIVE_FALLBACK_MS);
    }
    this._emitRoster();
  }

  /** Give a link its transceiver: the mic (addTrack, so that glare merges m-lines) or recvonly. */
  /** @param {Link} link */
  _addLocalMedia(link) {
    const track = this.micTrack;
    if (this.canPublish && track && this.localStream) {
      link.pc.addTrack(track, this.localStream);
    } else {
      link.pc.addTransceiver('audio', { direction: 'recvonly' });
    }
  }

  /** After a remote offer: send the mic on its audio m-line if we do not already. */
  /** @param {Link} link */
  _attachMic(link) {
    if (link.plane !== 'mesh' || !this.canPublish) return;
    const track = this.micTrack;
    if (!track || !this.localStream) return;
    const transceivers = link.pc.getTransceivers().filter(
      (t) => t.receiver.track.kind === 'audio' && t.currentDirection !== 'stopped',
    );
    if (transceivers.some((t) => t.sender.track)) return;
    const first = transceivers[0];
    if (!first) return;
    first.sender.replaceTrack(track).catch(() => {});
    if (first.sender.setStreams) first.sender.setStreams(this.localStream);
    first.direction = 'sendrecv';
  }

  /** @param {Link} link @param {'failed'|'disconnected'} why */
  _linkTrouble(link, why) {
    if (link.closed) return;
    if (!this.ws || this.status !== 'joined') return; // retried after the rejoin
    if (link.plane === 'sfu') {
      this._log('SFU connection', why, '; negotiating a new one');
      this._replaceSfu();
      return;
    }
    link.restartIce();
  }

  /** @param {string} peerId */
  _closeLink(peerId) {
    const link = this.links.get(peerId);
    if (!link) return;
    this.links.delete(peerId);
    link.close();
    for (const key of link.streams.keys()) this._emitAudio(key, null, null);
    link.streams.clear();
  }

  _closeAllLinks() {
    for (const id of [...this.links.keys()]) this._closeLink(id);
  }

  /** @param {Link} link */
  _onLinkState(link) {
    this._emit('onpeerstate', link.peerId, /** @type {LinkState} */ (link.pc.connectionState));
    this._maybeCommit();
    this._emitRoster();
  }

  /** Whether a peer may be heard at all (the server also refuses a listener's sending SDP). */
  /** @param {string} id */
  _mayPublish(id) {
    const peer = this.participants.get(id);
    return !peer || (peer.canPublish !== false && peer.role !== 'listener');
  }

  /** @param {Link} link @param {RTCTrackEvent} event */
  _onTrack(link, event) {
    if (event.track.kind !== 'audio') return;
    if (link.plane === 'mesh' && !this._mayPublish(link.peerId)) {
      this._log('ignoring audio from', link.peerId, ': it may not publish');
      return;
    }
    const stream = event.streams[0] || new MediaStream([event.track]);
    if (link.plane === 'sfu') {
      const index = link.pc.getTransceivers().indexOf(event.transceiver);
      if (index < 0 || index >= this.slotCount) return;
      link.streams.set(`slot:${index}`, stream);
    } else {
      link.streams.set(link.peerId, stream);
    }
    if (link.plane === this.plane) this._emitLinkAudio(link);
  }

  /** @param {Link} link */
  _emitLinkAudio(link) {
    for (const [key, stream] of link.streams) {
      this._emitAudio(key, stream, this._owner(key));
    }
  }

  /** Who is heard on audio key `key`. @param {string} key */
  _owner(key) {
    if (!key.startsWith('slot:')) return key;
    const index = Number(key.slice(5));
    const slot = this.slots.find((s) => s.index === index);
    return slot ? slot.participantId : null;
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
    this.mode = mode;
    if (epoch) this.epoch = Math.max(this.epoch, epoch);
    if (mode === 'sfu') {
      const healthy =
        this.sfu &&
        !this.sfu.closed &&
        !(epoch && epoch > previousEpoch) &&
        ['new', 'connecting', 'connected'].includes(this.sfu.pc.connectionState);
      if (!healthy) {
        this._replaceSfu();
      }
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
        if (this.sfu) this._closeSfu();
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
    if (this.sfu) this._closeSfu();
    const link = new Link(this, SFU_PEER, 'sfu', true, this.rtcConfig);
    for (let i = 0; i < this.slotCount; i++) link.pc.addTransceiver('audio', { direction: 'recvonly' });
    const track = this.micTrack;
    if (this.canPublish && track && this.localStream) {
      link.pc.addTransceiver(track, { direction: 'sendonly', streams: [this.localStream] });
    }
    this.sfu = link;
    if (wasActive) this.plane = 'sfu';
    this._emitRoster();
  }

  _closeSfu() {
    const link = this.sfu;
    if (!link) return;
    this.sfu = null;
    link.close();
    for (const key of link.streams.keys()) this._emitAudio(key, null, null);
    link.streams.clear();
  }

  /** Flip the played plane once the new one is ready (see the media contract). */
  _maybeCommit() {
    if (this.mode === this.plane || !this.switchStartedAt) return;
    const now = Date.now();
    if (this.mode === 'sfu') {
      const sfu = this.sfu;
      if (!sfu || sfu.pc.connectionState !== 'connected') return;
      const carries = sfu.hasAudio || now - sfu.connectedAt >= SFU_QUIET_COMMIT_MS;
      if (!carries && this.links.size) return;
      this.plane = 'sfu';
      this.switchStartedAt = 0;
      this._closeAllLinks();
      this._emitLinkAudio(sfu);
      this._log('switched to sfu');
    } else {
      const wanted = [...this.participants.keys()].filter((id) => this._wantsLink(id));
      const ready = wanted.every((id) => {
        const link = this.links.get(id);
        return link && link.pc.connectionState === 'connected';
      });
      if (!ready && now - this.switchStartedAt < MESH_COMMIT_MS) return;
      this.plane = 'mesh';
      this.switchStartedAt = 0;
      this._closeSfu();
      this.slots = [];
      this.speaking = [];
      for (const link of this.links.values()) this._emitLinkAudio(link);
      this._log('switched to mesh');
    }
    this._emitRoster();
  }

  /** @param {Slot[]} slots @param {string[]} speaking */
  _onSlots(slots, speaking) {
    this.slots = slots.map((s) => ({ index: Number(s.index), participantId: s.participantId || null }));
    this.speaking = speaking.slice();
    this._emit('onslots', this.slots, this.speaking);
    if (this.sfu && this.plane === 'sfu') {
      for (const [key, stream] of this.sfu.streams) {
        const owner = this._owner(key);
        if (this.emitted.get(key) !== owner) this._emitAudio(key, stream, owner);
      }
    }
  }

  // ------------------------------------------------------------------ housekeeping

  /** Once a second: keepalive, stale offers, pending switches. */
  _tick() {
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      const quiet = Date.now() - this.lastMessageAt;
      if (quiet > DEAD_AFTER_MS) {
        this._log('socket silent for', quiet, 'ms; reconnecting');
        ws.close(4000, 'no traffic');
      } else if (quiet > PING_EVERY_MS) {
        ws.send(JSON.stringify({ type: 'ping' }));
      }
    }
    if (this.status !== 'joined') return;
    const now = Date.now();
    for (const link of [...this.links.values(), ...(this.sfu ? [this.sfu] : [])]) {
      link.resendStaleOffer();
      // Negotiated but never connected (candidates lost while a socket was down): restart.
      const state = link.pc.connectionState;
      if (
        (state === 'new' || state === 'connecting') &&
        link.negotiatedAt &&
        link.pc.signalingState === 'stable' &&
        now - link.negotiatedAt > STUCK_RESTART_MS
      ) {
        link.negotiatedAt = now;
        this._linkTrouble(link, 'disconnected');
      }
    }
    this._maybeCommit();
  }

  async _statsTick() {
    if (this.statsBusy || this.status === 'idle' || this.status === 'left') return;
    this.statsBusy = true;
    try {
      const stats = await this.audioStats();
      /** @type {Record<string, number>} */
      const levels = {};
      for (const inbound of Object.values(stats.inbound)) {
        if (!inbound.participantId) continue;
        levels[inbound.participantId] = Math.max(levels[inbound.participantId] || 0, inbound.audioLevel);
      }
      if (this.plane === 'sfu') {
        for (const id of this.speaking) levels[id] = Math.max(levels[id] || 0, SPEAKING_LEVEL * 2);
      }
      if (this.identity) levels[this.identity.participantId] = this._selfLevel();
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
   * @returns {Promise<{inbound: Record<string, InboundStats>, outbound: OutboundStats}>}
   */
  async audioStats() {
    /** @type {Record<string, InboundStats>} */
    const inbound = {};
    /** @type {OutboundStats} */
    const outbound = { packetsSent: 0, bytesSent: 0, audioEnergy: 0 };
    const links = [...this.links.values(), ...(this.sfu ? [this.sfu] : [])];
    await Promise.all(
      links.map(async (link) => {
        let report;
        try {
          report = await link.pc.getStats();
        } catch {
          return;
        }
        /** @type {Map<string, number>} mid -> transceiver index */
        const midIndex = new Map();
        link.pc.getTransceivers().forEach((t, i) => {
          if (t.mid !== null) midIndex.set(t.mid, i);
        });
        let sourceEnergy = 0;
        report.forEach((r) => {
          if (r.type === 'inbound-rtp' && r.kind === 'audio') {
            let key = link.peerId;
            if (link.plane === 'sfu') {
              const index = midIndex.get(r.mid);
              if (index === undefined || index >= this.slotCount) return;
              key = `slot:${index}`;
            }
            const energy = r.totalAudioEnergy || 0;
            const duration = r.totalSamplesDuration || 0;
            const last = link.lastSample.get(r.id);
            link.lastSample.set(r.id, { energy, duration });
            let level = r.audioLevel || 0;
            if (last && duration > last.duration) {
              level = Math.max(level, Math.sqrt((energy - last.energy) / (duration - last.duration)));
            }
            if ((r.packetsReceived || 0) > 0 && link.plane === 'sfu') link.hasAudio = true;
            inbound[key] = {
              packetsReceived: r.packetsReceived || 0,
              bytesReceived: r.bytesReceived || 0,
              audioEnergy: energy,
              audioLevel: Math.min(1, level),
              participantId: link.plane === 'sfu' ? this._owner(key) : link.peerId,
            };
          } else if (r.type === 'outbound-rtp' && r.kind === 'audio') {
            outbound.packetsSent += r.packetsSent || 0;
            outbound.bytesSent += r.bytesSent || 0;
          } else if (r.type === 'media-source' && r.kind === 'audio') {
            sourceEnergy = Math.max(sourceEnergy, r.totalAudioEnergy || 0);
          }
        });
        outbound.audioEnergy = Math.max(outbound.audioEnergy, sourceEnergy);
      }),
    );
    return { inbound, outbound };
  }

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
          state = this.sfu ? /** @type {LinkState} */ (this.sfu.pc.connectionState) : 'waiting';
        } else {
          const link = this.links.get(p.id);
          via = 'mesh';
          if (link) state = /** @type {LinkState} */ (link.pc.connectionState);
          else state = this._wantsLink(p.id) ? 'waiting' : 'listening';
        }
      }
      entries.push({
        id: p.id,
        displayName: p.displayName || p.id,
        role,
        isMuted: isSelf ? this.muted : !!p.isMuted,
        isSelf,
        canPublish: isSelf ? this.canPublish : p.canPublish !== false && role !== 'listener',
        state,
        via,
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
    const error = err instanceof VoiceError ? err : new VoiceError('server', String(err));
    this._emit('onerror', error);
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
