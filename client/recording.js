// @ts-check
/**
 * The room's recording from a VoiceRoom (docs/protocol.md "Recording"): whether it is
 * being recorded now (join answer, then `recordingChanged`), its last transmissions for
 * "say again" (GET .../transmissions, then `transmissionRecorded`), net control's start
 * and stop in `record: ncs` rooms. `room.recording` holds one. No DOM here: the page
 * assigns `onchange` and plays `replayBlob(tx)` in an <audio> element (as a blob: url).
 * The file is fetched with the Authorization header rather than an <audio src> carrying
 * `?token=`, so the seat's token never lands in a proxy's or browser's URL history.
 */

import { roomPath } from './api.js';

/** @typedef {import('./voice-room.js').VoiceRoom} VoiceRoom */
/** @typedef {import('./protocol-types.js').RecordingState} RecordingState */
/** @typedef {import('./protocol-types.js').Transmission} Transmission */
/** @typedef {import('./protocol-types.js').RecordingList} RecordingList */
/** @typedef {import('./protocol-types.js').TransmissionList} TransmissionList */
/** @typedef {import('./protocol-types.js').RecordingChangedData} RecordingChangedData */
/** @typedef {import('./protocol-types.js').TransmissionRecordedData} TransmissionRecordedData */
/** @typedef {import('./protocol-types.js').ServerFrame} ServerFrame */
/** @typedef {'started'|'stopped'|'failed'|'transmission'|'refresh'|'reset'} RecordingChange */

/** Transmissions kept for "say again" (the server lists recording.replay_last). */
export const MAX_REPLAYS = 20;

export class Recording {
  /** @param {VoiceRoom} room */
  constructor(room) {
    this.room = room;
    /** The room's latest recording (running or ended), null if none known. @type {RecordingState|null} */
    this.latest = null;
    /** Its last transmissions, oldest first. @type {Transmission[]} */
    this.transmissions = [];
    /** Bumped by reset(): answers of an earlier room are dropped. */
    this.epoch = 0;
    /** Something changed. @type {((change: RecordingChange) => void)|null} */
    this.onchange = null;
  }

  /** Recorded right now. */
  get active() {
    return !!this.latest && this.latest.state === 'recording';
  }

  /**
   * The join answer's recording (null: not recorded now); the list is fetched afresh.
   * @param {RecordingState|null|undefined} state
   */
  take(state) {
    if (state) this.latest = state;
    else if (this.latest && this.latest.state === 'recording') this.latest = null;
    this._emit('refresh');
    this.refresh().catch(() => {});
  }

  /** GET the newest recording and its last transmissions (members only). */
  async refresh() {
    const epoch = this.epoch;
    /** @type {RecordingList} */
    const list = await this._call('GET', 'recordings');
    if (epoch !== this.epoch) return;
    const newest = list.recordings[0] || null;
    if (newest && (!this.latest || newest.id >= this.latest.id)) this.latest = newest;
    if (!this.latest) return this._emit('refresh');
    /** @type {TransmissionList} */
    const txs = await this._call('GET', `recordings/${this.latest.id}/transmissions`);
    if (epoch !== this.epoch || !this.latest || txs.recordingId !== this.latest.id) return;
    this.transmissions = txs.transmissions.slice(-MAX_REPLAYS);
    this._emit('refresh');
  }

  /** Net control (a `record: ncs` room): start recording. @returns {Promise<RecordingState>} */
  async start() {
    const state = await this._call('POST', 'recording/start');
    this._takeState(state);
    return state;
  }

  /** Net control: stop recording. @returns {Promise<RecordingState>} */
  async stop() {
    const state = await this._call('POST', 'recording/stop');
    this._takeState(state);
    return state;
  }

  /**
   * A transmission's audio (Ogg Opus, a few seconds), fetched with this seat's token in
   * the Authorization header; the page plays it from a blob: url.
   * @param {Transmission} tx
   * @returns {Promise<Blob>}
   */
  async replayBlob(tx) {
    const { blob } = await this.room.api.download(tx.url || '', `transmission-${tx.index}.ogg`);
    return blob;
  }

  /** Left the room: forget it all. */
  reset() {
    this.epoch += 1;
    this.latest = null;
    this.transmissions = [];
    this._emit('reset');
  }

  /** @param {ServerFrame} frame */
  _onFrame(frame) {
    if (frame.type === 'recordingChanged') {
      if (frame.data.roomId === this.room.roomId) this._takeState(frame.data.recording);
    } else if (frame.type === 'transmissionRecorded') {
      const data = frame.data;
      if (data.roomId !== this.room.roomId) return;
      if (!this.latest || this.latest.id !== data.recordingId) return;
      const tx = data.transmission;
      if (this.transmissions.some((t) => t.index === tx.index)) return;
      this.transmissions = [...this.transmissions, tx].slice(-MAX_REPLAYS);
      this._emit('transmission');
    }
  }

  /** @param {RecordingState} state */
  _takeState(state) {
    const fresh = !this.latest || this.latest.id !== state.id;
    if (!fresh && this.latest && this.latest.state !== 'recording' && state.state === 'recording') return;
    if (this.latest && state.id < this.latest.id) return; // an older recording's news
    if (fresh) this.transmissions = [];
    this.latest = state;
    this._emit(state.state === 'recording' ? 'started' : state.state);
  }

  /** @param {RecordingChange} change */
  _emit(change) {
    if (this.onchange) this.onchange(change);
  }

  /**
   * @param {string} method
   * @param {string} what
   * @returns {Promise<any>}
   */
  _call(method, what) {
    return this.room.api.request(method, roomPath(this.room.roomId || '', what));
  }
}
