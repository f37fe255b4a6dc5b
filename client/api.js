// @ts-check
/**
 * The REST half of the protocol: the identity (login, invite token) and every HTTP call.
 *
 * Errors come out as {@link VoiceError}s whose `kind` the page maps to a banner.
 */

import { VoiceError, kindOfStatus } from './errors.js';

/** @typedef {import('./protocol-types.js').Role} Role */
/** @typedef {import('./protocol-types.js').SessionAnswer} SessionAnswer */
/** @typedef {import('./protocol-types.js').SessionInfo} SessionInfo */
/** @typedef {import('./protocol-types.js').IceConfigAnswer} IceConfigAnswer */
/** @typedef {import('./protocol-types.js').RoomSummary} RoomSummary */
/** @typedef {import('./protocol-types.js').RoomDetail} RoomDetail */
/** @typedef {import('./protocol-types.js').JoinRequest} JoinRequest */
/** @typedef {import('./protocol-types.js').JoinAnswer} JoinAnswer */
/** @typedef {import('./protocol-types.js').SignalRequest} SignalRequest */
/** @typedef {import('./protocol-types.js').SignalAnswer} SignalAnswer */
/** @typedef {import('./protocol-types.js').Success} Success */
/** @typedef {import('./protocol-types.js').FloorState} FloorState */
/** @typedef {import('./protocol-types.js').FloorRequestBody} FloorRequestBody */
/** @typedef {import('./protocol-types.js').FloorTarget} FloorTarget */
/** @typedef {import('./protocol-types.js').FloorOrder} FloorOrder */
/** @typedef {import('./protocol-types.js').ModerationMute} ModerationMute */
/** @typedef {import('./protocol-types.js').ModerationRemove} ModerationRemove */
/** @typedef {import('./protocol-types.js').ModerationBan} ModerationBan */
/** @typedef {import('./protocol-types.js').ModerationAppoint} ModerationAppoint */
/** @typedef {import('./protocol-types.js').ModerationUnban} ModerationUnban */
/**
 * What a floor or moderation route answers: the new floor state, or a plain success
 * (the floorChanged frame brings the state then).
 * @typedef {FloorState|Success} FloorAnswer
 */
/** @typedef {'request'|'release'|'grant'|'revoke'|'queue'|'clear'|'open'|'close'} FloorAction */
/** @typedef {'mute'|'remove'|'ban'|'unban'|'appoint'} ModerationRoute */

/** @typedef {{participantId: string, callsign: string, role: Role, expiresAt: number, token: string}} Identity */

const BAD_INVITE = 'this invite link does not contain a valid token';

/**
 * The claims of a JWT, unverified: only to show who an invite link is for.
 * @param {string} token
 * @returns {Identity}
 */
export function identityFromToken(token) {
  const part = token.split('.')[1];
  if (!part) throw new VoiceError('auth', BAD_INVITE);
  let claims;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
  } catch {
    throw new VoiceError('auth', BAD_INVITE);
  }
  if (typeof claims.sub !== 'string' || typeof claims.name !== 'string') {
    throw new VoiceError('auth', BAD_INVITE);
  }
  return {
    participantId: claims.sub,
    callsign: claims.name,
    role: claims.role,
    expiresAt: Number(claims.exp) * 1000,
    token,
  };
}

/** The server's REST API on behalf of one identity. */
export class Api {
  /** @param {string} [baseUrl] origin of the server ('' = this page's) */
  constructor(baseUrl = '') {
    this.baseUrl = baseUrl.replace(/\/$/, '');
    /** @type {Identity|null} */
    this.identity = null;
  }

  /**
   * Open-auth login: the server issues a token for a callsign.
   * @param {string} callsign
   * @returns {Promise<Identity>}
   */
  async login(callsign) {
    /** @type {SessionAnswer} */
    const answer = await this.request('POST', '/api/sessions', { callsign }, false);
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
   * (best effort: an unreachable server only forgets it here).
   * @param {boolean} [revoke]
   */
  async logout(revoke = false) {
    if (revoke && this.identity) {
      await this.request('POST', '/api/sessions/logout', undefined, true, true).catch(() => null);
    }
    this.identity = null;
  }

  /** @returns {Promise<SessionInfo>} */
  me() {
    return this.request('GET', '/api/sessions/me');
  }

  /** Fresh TURN credentials (only for a participant holding a seat). @returns {Promise<IceConfigAnswer>} */
  iceServers() {
    return this.request('GET', '/api/ice-servers');
  }

  /** @returns {Promise<RoomSummary[]>} */
  listRooms() {
    return this.request('GET', '/api/voice-rooms');
  }

  /** @param {string} roomId @returns {Promise<RoomDetail>} */
  getRoom(roomId) {
    return this.request('GET', `/api/voice-rooms/${encodeURIComponent(roomId)}`);
  }

  /**
   * Take (or keep: idempotent for a seat still held) a seat in a room.
   * @param {string} roomId
   * @param {JoinRequest} body
   * @returns {Promise<JoinAnswer>}
   */
  join(roomId, body) {
    return this.request('POST', roomPath(roomId, 'join'), body);
  }

  /**
   * Give the seat up; `keepalive` so that it still goes out when the page closes.
   * @param {string} roomId
   * @returns {Promise<Success>}
   */
  leave(roomId) {
    return this.request('POST', roomPath(roomId, 'leave'), undefined, true, true);
  }

  /**
   * @param {string} roomId
   * @param {SignalRequest} body
   * @returns {Promise<SignalAnswer>}
   */
  signal(roomId, body) {
    return this.request('POST', roomPath(roomId, 'signal'), body);
  }

  /**
   * @param {string} roomId
   * @param {boolean} isMuted
   * @returns {Promise<Success>}
   */
  mute(roomId, isMuted) {
    return this.request('POST', roomPath(roomId, 'mute'), { isMuted });
  }

  /**
   * The room's floor: holders, queue, NCS mutes and appointments (GET floor).
   * @param {string} roomId
   * @returns {Promise<FloorState>}
   */
  floor(roomId) {
    return this.request('GET', roomPath(roomId, 'floor'));
  }

  /**
   * One floor route (POST floor/{action}): request and release for anyone who may publish,
   * the others for net control only (403 otherwise).
   * @overload
   * @param {string} roomId
   * @param {'request'} action
   * @param {FloorRequestBody} body
   * @returns {Promise<FloorAnswer>}
   *
   * @overload
   * @param {string} roomId
   * @param {'grant'|'revoke'} action
   * @param {FloorTarget} body
   * @returns {Promise<FloorAnswer>}
   *
   * @overload
   * @param {string} roomId
   * @param {'queue'} action
   * @param {FloorOrder} body
   * @returns {Promise<FloorAnswer>}
   *
   * @overload
   * @param {string} roomId
   * @param {'release'|'clear'|'open'|'close'} action
   * @returns {Promise<FloorAnswer>}
   *
   * @param {string} roomId
   * @param {FloorAction} action
   * @param {FloorRequestBody|FloorTarget|FloorOrder} [body]
   * @returns {Promise<FloorAnswer>}
   */
  floorAction(roomId, action, body) {
    return this.request('POST', roomPath(roomId, `floor/${action}`), body);
  }

  /**
   * One moderation route (POST moderation/{action}), net control only.
   * @overload
   * @param {string} roomId
   * @param {'mute'} action
   * @param {ModerationMute} body
   * @returns {Promise<FloorAnswer>}
   *
   * @overload
   * @param {string} roomId
   * @param {'remove'} action
   * @param {ModerationRemove} body
   * @returns {Promise<FloorAnswer>}
   *
   * @overload
   * @param {string} roomId
   * @param {'ban'} action
   * @param {ModerationBan} body
   * @returns {Promise<FloorAnswer>}
   *
   * @overload
   * @param {string} roomId
   * @param {'unban'} action
   * @param {ModerationUnban} body
   * @returns {Promise<FloorAnswer>}
   *
   * @overload
   * @param {string} roomId
   * @param {'appoint'} action
   * @param {ModerationAppoint} body
   * @returns {Promise<FloorAnswer>}
   *
   * @param {string} roomId
   * @param {ModerationRoute} action
   * @param {ModerationMute|ModerationRemove|ModerationBan|ModerationAppoint|ModerationUnban} body
   * @returns {Promise<FloorAnswer>}
   */
  moderate(roomId, action, body) {
    return this.request('POST', roomPath(roomId, `moderation/${action}`), body);
  }

  /**
   * GET a file (an export) with the Bearer token: its body as a Blob and the name the
   * server gave it (Content-Disposition), or `fallback`.
   * @param {string} path
   * @param {string} fallback
   * @returns {Promise<{blob: Blob, filename: string}>}
   */
  async download(path, fallback) {
    if (!this.identity) throw new VoiceError('auth', 'not logged in', 401);
    let response;
    try {
      response = await fetch(this.baseUrl + path, {
        headers: { Authorization: `Bearer ${this.identity.token}` },
      });
    } catch {
      throw new VoiceError('unreachable', 'the voice server cannot be reached');
    }
    if (!response.ok) {
      /** @type {any} */
      let payload = null;
      try {
        payload = JSON.parse(await response.text());
      } catch {
        payload = null;
      }
      const message =
        (payload && (payload.message || payload.error)) || `${response.status} ${response.statusText}`;
      const code = payload && typeof payload.error === 'string' ? payload.error : '';
      throw new VoiceError(kindOfStatus(response.status), message, response.status, code);
    }
    const blob = await response.blob();
    return { blob, filename: filenameOf(response.headers.get('Content-Disposition')) || fallback };
  }

  /**
   * One JSON call; a refusal becomes a VoiceError carrying the server's message.
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {boolean} [auth]
   * @param {boolean} [keepalive]
   * @returns {Promise<any>}
   */
  async request(method, path, body, auth = true, keepalive = false) {
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
      const code = payload && typeof payload.error === 'string' ? payload.error : '';
      throw new VoiceError(kindOfStatus(response.status), message, response.status, code);
    }
    return payload;
  }
}

/**
 * The file name of a Content-Disposition header (`filename*=UTF-8''...` or `filename="..."`).
 * @param {string|null} header
 * @returns {string}
 */
export function filenameOf(header) {
  if (!header) return '';
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      /* fall through to the plain form */
    }
  }
  const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(header);
  return plain ? plain[1].trim() : '';
}

/** @param {string} roomId @param {string} what */
export function roomPath(roomId, what) {
  return `/api/voice-rooms/${encodeURIComponent(roomId)}/${what}`;
}
