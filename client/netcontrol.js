// @ts-check
/**
 * Net control from a VoiceRoom: asking for the floor and, for net control, running it
 * (grant, revoke, queue, roll call) and moderating (mute, remove, ban, appoint).
 * `room.net` holds one; answers and floorChanged frames land in `room.floor`.
 * No DOM here (docs/protocol.md "Net control").
 */

import { VoiceError } from './errors.js';
import { FLOOR_KINDS } from './floor.js';

/** @typedef {import('./voice-room.js').VoiceRoom} VoiceRoom */
/** @typedef {import('./protocol-types.js').FloorState} FloorState */
/** @typedef {import('./protocol-types.js').FloorRequestBody} FloorRequestBody */
/** @typedef {NonNullable<FloorRequestBody['kind']>} FloorKind */
/** @typedef {NonNullable<import('./protocol-types.js').ModerationAppoint['role']>} NetRole */

export class NetControl {
  /** @param {VoiceRoom} room */
  constructor(room) {
    this.room = room;
  }

  /**
   * Raise the hand: ask net control for the floor. Asking again changes the kind (the
   * place in the queue stays, unless it became priority).
   * @param {FloorKind} [kind]
   * @returns {Promise<FloorState|null>} the new state if the server answered with it
   */
  requestFloor(kind = 'comment') {
    if (!FLOOR_KINDS.includes(kind)) {
      return Promise.reject(new VoiceError('bad-request', `unknown floor request kind: ${kind}`, 400));
    }
    if (!this.room.mic.canPublish) {
      return Promise.reject(new VoiceError('forbidden', 'listening only: you cannot ask for the floor', 403));
    }
    return this.room._floorCall((roomId) => this.room.api.floorAction(roomId, 'request', { kind }));
  }

  /** Lower the hand and/or give the floor back. @returns {Promise<FloorState|null>} */
  releaseFloor() {
    return this.room._floorCall((roomId) => this.room.api.floorAction(roomId, 'release'));
  }

  /**
   * Net control: give the floor to `participantId`, or (null) to the head of the queue.
   * @param {string|null} [participantId]
   * @returns {Promise<FloorState|null>}
   */
  grantFloor(participantId = null) {
    return this.room._floorCall((roomId) => this.room.api.floorAction(roomId, 'grant', { participantId }));
  }

  /**
   * Net control: take the floor from `participantId`, or (null) from every holder.
   * @param {string|null} [participantId]
   * @returns {Promise<FloorState|null>}
   */
  revokeFloor(participantId = null) {
    return this.room._floorCall((roomId) => this.room.api.floorAction(roomId, 'revoke', { participantId }));
  }

  /**
   * Net control: these participants first in the queue, in this order (the rest after).
   * @param {string[]} order
   * @returns {Promise<FloorState|null>}
   */
  reorderQueue(order) {
    return this.room._floorCall((roomId) => this.room.api.floorAction(roomId, 'queue', { order: [...order] }));
  }

  /** Net control: empty the queue. @returns {Promise<FloorState|null>} */
  clearQueue() {
    return this.room._floorCall((roomId) => this.room.api.floorAction(roomId, 'clear'));
  }

  /** Net control: open the floor to everyone who may publish (roll call). @returns {Promise<FloorState|null>} */
  openFloor() {
    return this.room._floorCall((roomId) => this.room.api.floorAction(roomId, 'open'));
  }

  /** Net control: close the roll call. @returns {Promise<FloorState|null>} */
  closeFloor() {
    return this.room._floorCall((roomId) => this.room.api.floorAction(roomId, 'close'));
  }

  /**
   * Net control: mute (or release the mute of) a participant; it cannot unmute itself.
   * @param {string} participantId
   * @param {boolean} [muted]
   * @returns {Promise<FloorState|null>}
   */
  muteParticipant(participantId, muted = true) {
    return this.room._floorCall((roomId) => this.room.api.moderate(roomId, 'mute', { participantId, muted: !!muted }));
  }

  /**
   * Net control: remove a participant; its callsign is banned from the room for the
   * room's ban_time.
   * @param {string} participantId
   * @param {string} [reason]
   * @returns {Promise<FloorState|null>}
   */
  removeParticipant(participantId, reason = '') {
    return this.room._floorCall((roomId) => this.room.api.moderate(roomId, 'remove', { participantId, reason }));
  }

  /**
   * Net control: ban a callsign from the room for `duration` seconds (null: the room's
   * ban_time).
   * @param {string} callsign
   * @param {number|null} [duration]
   * @param {string} [reason]
   * @returns {Promise<FloorState|null>}
   */
  ban(callsign, duration = null, reason = '') {
    return this.room._floorCall((roomId) => this.room.api.moderate(roomId, 'ban', { callsign, duration, reason }));
  }

  /** Net control: lift a ban. @param {string} callsign @returns {Promise<FloorState|null>} */
  unban(callsign) {
    return this.room._floorCall((roomId) => this.room.api.moderate(roomId, 'unban', { callsign }));
  }

  /**
   * Net control: appoint a participant net control or logger for this net (null dismisses).
   * @param {string} participantId
   * @param {NetRole|null} role
   * @returns {Promise<FloorState|null>}
   */
  appoint(participantId, role) {
    return this.room._floorCall((roomId) => this.room.api.moderate(roomId, 'appoint', { participantId, role }));
  }

  /** GET the floor now (after a join; the floorChanged frames keep it current). */
  /** @returns {Promise<FloorState|null>} */
  refreshFloor() {
    return this.room._floorCall((roomId) => this.room.api.floor(roomId));
  }
}
