// @ts-check
/**
 * The signalling WebSocket: opening it (token in a subprotocol), the `connected` handshake,
 * auth refusals, keepalive, reconnect backoff, and the one place incoming frames are parsed.
 */

import { VoiceError, kindOfStatus } from './errors.js';

/** @typedef {import('./api.js').Api} Api */
/** @typedef {import('./protocol-types.js').ConnectedData} ConnectedData */
/** @typedef {import('./protocol-types.js').ParticipantJoinedData} ParticipantJoinedData */
/** @typedef {import('./protocol-types.js').ParticipantLeftData} ParticipantLeftData */
/** @typedef {import('./protocol-types.js').SignalData} SignalData */
/** @typedef {import('./protocol-types.js').MuteChangedData} MuteChangedData */
/** @typedef {import('./protocol-types.js').VolumeChangedData} VolumeChangedData */
/** @typedef {import('./protocol-types.js').RoomModeChangedData} RoomModeChangedData */
/** @typedef {import('./protocol-types.js').SpeakerSlotsData} SpeakerSlotsData */
/** @typedef {import('./protocol-types.js').ErrorData} ErrorData */
/** @typedef {import('./protocol-types.js').WsClientFrame} WsClientFrame */
/** @typedef {import('./protocol-types.js').WsSignalFrame} WsSignalFrame */
/** @typedef {import('./protocol-types.js').WsSignal} WsSignal */
/** @typedef {import('./protocol-types.js').AckData} AckData */

/** @typedef {import('./protocol-types.js').ServerFrame} ServerFrame */

export const PROTOCOL_VERSION = 1;
/** WebSocket subprotocols: ours, and the one that carries the token (core/protocol.py). */
export const WS_SUBPROTOCOL = 'yahaml-voice';
export const WS_TOKEN_PREFIX = 'yahaml-voice.token.';

/** Ping the server after this much silence, drop the socket after DEAD_AFTER. */
const PING_EVERY_MS = 20_000;
const DEAD_AFTER_MS = 45_000;
/** Reconnect backoff: first delay, cap. */
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
/** A signal frame not answered within this long fails (the socket is likely dead). */
const REQUEST_TIMEOUT_MS = 15_000;
/** Close codes that mean "this token is done": do not reconnect with it. */
const AUTH_CLOSE_CODES = [4401, 4001, 1008];

/**
 * A frame from the server, or null for anything that is not one (bad JSON, not an object,
 * no string `type`). Types the client does not know pass through; `data` is always an object.
 * @param {unknown} text
 * @returns {ServerFrame|null}
 */
export function parseFrame(text) {
  if (typeof text !== 'string') return null;
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    return null;
  }
  if (!frame || typeof frame !== 'object' || typeof frame.type !== 'string') return null;
  if (!frame.data || typeof frame.data !== 'object') frame.data = {};
  return /** @type {ServerFrame} */ (frame);
}

/**
 * The delay before reconnect attempt `attempt` (0-based): quick at first, then doubling
 * with jitter, never so long that the seat's grace period runs out between two attempts.
 * @param {number} attempt
 * @param {number} gracePeriod seconds
 */
export function backoffDelay(attempt, gracePeriod) {
  const cap = Math.max(BACKOFF_FIRST_MS, Math.min(BACKOFF_MAX_MS, (gracePeriod * 1000) / 3));
  const base = Math.min(cap, BACKOFF_FIRST_MS * 2 ** attempt);
  return attempt === 0 ? 200 : base * (0.75 + Math.random() * 0.5);
}

/** One participant's signalling socket, reopened after losses. */
export class Signalling {
  /**
   * @param {Api} api whose identity's token opens the socket
   * @param {(...args: unknown[]) => void} log
   */
  constructor(api, log) {
    this.api = api;
    this.log = log;
    /** @type {WebSocket|null} */
    this.ws = null;
    /** Rejects the socket being opened (close() while joining). @type {((e: Error) => void)|null} */
    this.abortOpen = null;
    this.lastMessageAt = 0;
    /** Reconnect attempts since the last success. */
    this.attempts = 0;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.retryTimer = null;
    /** Every frame after `connected`, except auth refusals. @type {(frame: ServerFrame) => void} */
    this.onframe = () => {};
    /**
     * The open socket closed: `auth` set when the token is done (do not reconnect).
     * @type {(auth: VoiceError|null, code: number, reason: string) => void}
     */
    this.onlost = () => {};
    /**
     * Signal frames sent and not yet answered, by id.
     * @type {Map<string, {resolve: (d: AckData) => void, reject: (e: VoiceError) => void, timer: ReturnType<typeof setTimeout>}>}
     */
    this.pending = new Map();
    this.nextRequest = 0;
  }

  /** Whether the socket is open (signals can go on it). */
  get isOpen() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * Send a signal on the open socket (POST .../signal's rules and rate limit); resolves
   * on its `ack`, rejects with the VoiceError its `error` frame describes.
   * @param {WsSignal} data
   * @returns {Promise<AckData>}
   */
  signal(data) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new VoiceError('unreachable', 'the signaling socket is not open'));
    }
    const id = `s${++this.nextRequest}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new VoiceError('unreachable', 'the server did not answer the signal'));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify(/** @type {WsSignalFrame} */ ({ type: 'signal', id, data })));
    });
  }

  /**
   * Settle the request an `ack` or `error` frame answers; whether it answered one.
   * @param {ServerFrame} frame
   */
  _settle(frame) {
    if ((frame.type !== 'ack' && frame.type !== 'error') || typeof frame.id !== 'string') return false;
    const entry = this.pending.get(frame.id);
    if (!entry) return false;
    this.pending.delete(frame.id);
    clearTimeout(entry.timer);
    if (frame.type === 'ack') {
      entry.resolve(frame.data);
    } else {
      const status = frame.data.status || 400;
      entry.reject(new VoiceError(kindOfStatus(status), frame.data.message || frame.data.code, status));
    }
    return true;
  }

  /** Fail every unanswered signal (the socket closed). */
  _failPending() {
    for (const entry of this.pending.values()) {
      clearTimeout(entry.timer);
      entry.reject(new VoiceError('unreachable', 'the signaling socket closed'));
    }
    this.pending.clear();
  }

  /**
   * Open the socket; resolves on the server's `connected` frame. `isCurrent` false: the
   * session that opened it is over, its events are dropped.
   * @param {() => boolean} isCurrent
   * @returns {Promise<void>}
   */
  open(isCurrent) {
    const identity = this.api.identity;
    if (!identity) return Promise.reject(new VoiceError('auth', 'log in first', 401));
    const base = this.api.baseUrl || location.origin;
    // The token travels in a subprotocol, never in the URL (proxies log URLs).
    const url = `${base.replace(/^http/, 'ws')}/ws`;
    const protocols = [WS_SUBPROTOCOL, WS_TOKEN_PREFIX + identity.token];
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
        if (!isCurrent()) return;
        this.lastMessageAt = Date.now();
        const frame = parseFrame(event.data);
        if (!frame) return;
        if (!opened && frame.type === 'connected') {
          opened = true;
          this.abortOpen = null;
          const version = frame.data.protocolVersion;
          if (version && version !== PROTOCOL_VERSION) {
            this.log('server speaks protocol', version, 'we speak', PROTOCOL_VERSION);
          }
          // rosterBatch: a big room's roster changes come coalesced (one frame per window).
          ws.send(
            JSON.stringify(/** @type {WsClientFrame} */ ({ type: 'subscribe', channel: 'voice', rosterBatch: true })),
          );
          resolve();
          return;
        }
        if (this._settle(frame)) return;
        if (frame.type === 'rosterBatch') {
          // The participantJoined/participantLeft frames it holds, in order.
          for (const inner of frame.data.frames || []) this.onframe(inner);
          return;
        }
        if (frame.type === 'error') {
          const refusal = authRefusal(frame.data);
          if (refusal) {
            // The 4401 close follows; it reports this error.
            authError = refusal;
            return;
          }
        }
        this.onframe(frame);
      };
      ws.onclose = (event) => {
        if (this.ws === ws) {
          this.ws = null;
          this._failPending();
        }
        if (!isCurrent()) return;
        const auth =
          authError ||
          (AUTH_CLOSE_CODES.includes(event.code)
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
        this.onlost(auth, event.code, event.reason);
      };
    });
  }

  /**
   * Why the socket could not open: an auth problem if the REST API says so.
   * @returns {Promise<VoiceError>}
   */
  async _whyRefused() {
    try {
      await this.api.me();
    } catch (err) {
      if (err instanceof VoiceError && err.kind === 'auth') return err;
    }
    return new VoiceError('unreachable', 'the voice server cannot be reached');
  }

  /** @param {WsClientFrame} frame */
  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  /** Once a second: ping a quiet socket, drop a dead one (its close reconnects). */
  keepalive() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    const quiet = now - this.lastMessageAt;
    if (quiet > DEAD_AFTER_MS) {
      this.log('socket silent for', quiet, 'ms; reconnecting');
      ws.close(4000, 'no traffic');
    } else if (quiet > PING_EVERY_MS) {
      this.send({ type: 'ping' });
    }
  }

  /**
   * Run `attempt` after the next backoff delay; returns the delay, or null if an attempt is
   * already pending.
   * @param {number} gracePeriod seconds the server keeps the seat
   * @param {() => void} attempt
   * @returns {number|null}
   */
  scheduleRetry(gracePeriod, attempt) {
    if (this.retryTimer) return null;
    const delay = backoffDelay(this.attempts++, gracePeriod);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      attempt();
    }, delay);
    return delay;
  }

  /** Drop a pending reconnect attempt (one is being made now instead). */
  cancelRetry() {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /** A reconnect succeeded: the next loss starts the backoff afresh. */
  reconnected() {
    this.attempts = 0;
  }

  /** Close a socket whose reconnect failed half-way (or one being opened), without
   * reporting its close. */
  discard() {
    const ws = this.ws;
    if (this.abortOpen) this.abortOpen(new VoiceError('aborted', 'the socket was replaced'));
    this.abortOpen = null;
    if (!ws) return;
    this.ws = null;
    this._failPending();
    ws.onclose = null;
    ws.close();
  }

  /** Close for good (leaving): no close report, an open() in progress rejects, no retry. */
  close() {
    const ws = this.ws;
    if (ws) {
      this.ws = null;
      this._failPending();
      ws.onclose = null;
      ws.onmessage = null;
      ws.onerror = null;
      ws.close(1000, 'leaving');
    }
    if (this.abortOpen) this.abortOpen(new VoiceError('aborted', 'left before the join completed'));
    this.abortOpen = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.attempts = 0;
  }
}

/**
 * The auth error an `error` frame announces (the socket closes with 4401 next), or null.
 * @param {ErrorData} data
 * @returns {VoiceError|null}
 */
function authRefusal(data) {
  const code = data.code || '';
  if (code === 'token_expired' || code === 'unauthorized') {
    return new VoiceError(
      'auth',
      code === 'token_expired' ? 'your session has expired; log in again' : 'not authorized',
      401,
    );
  }
  if (code === 'revoked' || code === 'removed') {
    // Logged out elsewhere or removed by net control.
    return new VoiceError(
      code === 'removed' ? 'removed' : 'auth',
      data.message || 'your session was revoked; log in again',
      401,
    );
  }
  return null;
}
