// @ts-check
/**
 * The SFU plane: one connection to the peer id `sfu` with `slotCount` recvonly audio m-lines
 * (the speaker slots) then one sendonly m-line for the microphone (docs/architecture.md, SFU
 * media contract); who is heard on each slot; and when the connection may take over from
 * the mesh during a mesh->sfu switch.
 */

import { PeerLink } from './peer-link.js';

/** @typedef {import('./peer-link.js').LinkHost} LinkHost */
/** @typedef {import('./protocol-types.js').SlotAssignment} SlotAssignment */
/** @typedef {{index: number, participantId: string|null}} Slot */

export const SFU_PEER = 'sfu';
/** mesh->sfu: flip after the SFU link is connected and carries audio, or after this. */
const SFU_QUIET_COMMIT_MS = 3_000;
const SLOT_PREFIX = 'slot:';

export class SfuLink {
  /** @param {LinkHost} host */
  constructor(host) {
    this.host = host;
    /** The connection, while there is one. @type {PeerLink|null} */
    this.link = null;
    /** Speaker slots the SFU offers (JoinAnswer.sfu.slots). */
    this.slotCount = 3;
    /** @type {Slot[]} */
    this.slots = [];
    /** @type {string[]} */
    this.speaking = [];
  }

  /**
   * A new connection (replacing any): the slots, then the microphone if given.
   * @param {RTCConfiguration} config
   * @param {{track: MediaStreamTrack, stream: MediaStream}|null} mic
   * @returns {PeerLink}
   */
  open(config, mic) {
    this.close();
    const link = new PeerLink(this.host, SFU_PEER, 'sfu', true, config);
    for (let i = 0; i < this.slotCount; i++) link.pc.addTransceiver('audio', { direction: 'recvonly' });
    if (mic) link.pc.addTransceiver(mic.track, { direction: 'sendonly', streams: [mic.stream] });
    this.link = link;
    link.negotiate(); // not waiting for negotiationneeded (a task behind the page's rendering)
    return link;
  }

  /**
   * Close the connection; returns it (its `streams` are what stops playing) or null.
   * @returns {PeerLink|null}
   */
  close() {
    const link = this.link;
    if (!link) return null;
    this.link = null;
    link.close();
    return link;
  }

  /**
   * Whether the current connection can stay (it is not closed nor failing, and the room was
   * not placed on another SFU worker since: `epochBumped`).
   * @param {boolean} epochBumped
   */
  healthy(epochBumped) {
    const link = this.link;
    return (
      !!link &&
      !link.closed &&
      !epochBumped &&
      ['new', 'connecting', 'connected'].includes(link.pc.connectionState)
    );
  }

  /**
   * mesh->sfu: whether the SFU may be played instead of the mesh now: connected, and
   * carrying audio (or connected for SFU_QUIET_COMMIT_MS: nobody is talking), unless the
   * mesh plays nothing anyway (`meshLinks` 0).
   * @param {number} now
   * @param {number} meshLinks
   */
  readyToTakeOver(now, meshLinks) {
    const link = this.link;
    if (!link || link.pc.connectionState !== 'connected') return false;
    const carries = link.hasAudio || now - link.connectedAt >= SFU_QUIET_COMMIT_MS;
    return carries || !meshLinks;
  }

  /**
   * The audio key of a track arriving on the SFU connection, or null if it is not a slot.
   * @param {PeerLink} link
   * @param {RTCRtpTransceiver} transceiver
   */
  slotKey(link, transceiver) {
    const index = link.pc.getTransceivers().indexOf(transceiver);
    if (index < 0 || index >= this.slotCount) return null;
    return `${SLOT_PREFIX}${index}`;
  }

  /**
   * Who is heard on audio key `key`: a mesh key is the participant itself.
   * @param {string} key
   * @returns {string|null}
   */
  owner(key) {
    if (!key.startsWith(SLOT_PREFIX)) return key;
    const index = Number(key.slice(SLOT_PREFIX.length));
    const slot = this.slots.find((s) => s.index === index);
    return slot ? slot.participantId : null;
  }

  /**
   * The SFU's speakerSlots event.
   * @param {SlotAssignment[]} slots
   * @param {string[]} speaking
   */
  setSlots(slots, speaking) {
    this.slots = slots.map((s) => ({ index: Number(s.index), participantId: s.participantId || null }));
    this.speaking = speaking.slice();
  }

  clearSlots() {
    this.slots = [];
    this.speaking = [];
  }
}
