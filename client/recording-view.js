// @ts-check
/**
 * The recording as a member sees it: a REC badge and an announced status line while the
 * room is recorded (every member must know), "say again" (the last transmissions, each
 * with a play button; one <audio> element plays the file from the server), and net
 * control's start and stop buttons in the console of a `record: ncs` room. The room list's
 * notice before joining is app.js's (renderRooms).
 */

import { $, h, utcTime } from './dom.js';

/** @typedef {import('./voice-room.js').VoiceRoom} VoiceRoom */
/** @typedef {import('./protocol-types.js').RoomSummary} RoomSummary */
/** @typedef {import('./protocol-types.js').Transmission} Transmission */
/**
 * @typedef {{
 *   room: VoiceRoom,
 *   summary: () => RoomSummary|null,
 *   act: (action: () => Promise<unknown>) => Promise<boolean>,
 * }} RecordingHost
 */

/**
 * What the room list says about recording before anyone joins ('' for a room that is
 * never recorded).
 * @param {RoomSummary} r
 */
export function recordingNotice(r) {
  if (r.kind === 'parrot') return 'Test your audio: what you say is played back to you alone.';
  if (r.record === true) return r.recording ? 'Being recorded now. Everything said here is recorded.' : 'Recorded whenever in use.';
  if (r.record === 'ncs') return r.recording ? 'Being recorded now (net control started it).' : 'Net control may record this room.';
  return '';
}

export class RecordingView {
  /** @param {RecordingHost} host */
  constructor(host) {
    this.host = host;
    this.room = host.room;
    /** @type {HTMLAudioElement} */
    this.audio = /** @type {HTMLAudioElement} */ ($('replay-audio'));
    /** The transmission playing (its index), -1: none. */
    this.playing = -1;
    /** The blob: url the <audio> element plays, '' before the first. */
    this.blobUrl = '';
    /** What the status line last announced (it is aria-live: only changes are read). */
    this.announced = '';
    $('rec-start').addEventListener('click', () => this.host.act(() => this.room.recording.start()));
    $('rec-stop').addEventListener('click', () => this.host.act(() => this.room.recording.stop()));
    for (const type of ['ended', 'pause', 'error']) {
      this.audio.addEventListener(type, () => {
        this.playing = -1;
        this.renderList();
      });
    }
  }

  /** Everything, from room.recording and the room's summary. */
  render() {
    const rec = this.room.recording;
    const summary = this.host.summary();
    const recorded = !!summary && (summary.record === true || summary.record === 'ncs');
    const seated = this.room.status === 'joined' || this.room.status === 'reconnecting';
    $('recording-panel').hidden = !seated || (!recorded && !rec.latest);
    $('rec-badge').hidden = !rec.active;
    let text = '';
    if (rec.active) text = 'This room is being recorded.';
    else if (rec.latest && rec.latest.state === 'failed') {
      text = `Recording failed${rec.latest.reason ? `: ${rec.latest.reason}` : ''}.`;
    } else if (rec.latest) text = 'Recording stopped.';
    else if (summary && summary.record === 'ncs') text = 'Not recorded now; net control may start recording.';
    else if (recorded) text = 'This room is recorded while in use.';
    if (text !== this.announced) {
      $('rec-status').textContent = text;
      this.announced = text;
    }
    $('replay').hidden = !rec.latest;
    this.renderList();

    const ncsRoom = !!summary && summary.record === 'ncs';
    const controls = seated && ncsRoom && this.room.isNetControl;
    $('rec-controls').hidden = !controls;
    $('rec-start').hidden = rec.active;
    $('rec-stop').hidden = !rec.active;
    $('rec-controls-state').textContent = rec.active ? 'Recording' : 'Not recording';
  }

  renderList() {
    const list = $('replay-list');
    const txs = this.room.recording.transmissions;
    list.replaceChildren(
      ...txs.map((tx) => {
        const play = h('button', { className: 'btn btn-small replay-play', type: 'button' }, 'Play');
        play.setAttribute('aria-label', `Say again: ${tx.callsign} at ${utcTime(tx.start)}`);
        play.addEventListener('click', () => this.play(tx));
        const li = h(
          'li',
          { 'data-index': String(tx.index), 'data-playing': String(tx.index === this.playing) },
          play,
          h('span', { className: 'replay-call' }, tx.callsign),
          h('span', { className: 'muted' }, `${utcTime(tx.start)} · ${tx.duration.toFixed(1)} s`),
        );
        return li;
      }),
    );
    $('replay-empty').hidden = txs.length > 0;
  }

  /**
   * Fetch the transmission (Authorization header, no token in any URL) and play it from a
   * blob: url; the previous one is released.
   * @param {Transmission} tx
   */
  async play(tx) {
    this.playing = tx.index;
    this.renderList();
    let blob;
    try {
      blob = await this.room.recording.replayBlob(tx);
    } catch (err) {
      this.room._log('replay fetch failed', err);
      if (this.playing === tx.index) this.playing = -1;
      this.renderList();
      return;
    }
    if (this.playing !== tx.index) return; // another one was asked for meanwhile
    if (this.blobUrl) URL.revokeObjectURL(this.blobUrl);
    this.blobUrl = URL.createObjectURL(blob);
    this.audio.src = this.blobUrl;
    this.audio.play().catch(() => {
      this.playing = -1;
      this.renderList();
    });
  }
}
