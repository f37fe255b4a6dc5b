// @ts-check
/**
 * Who is transmitting, and for how long without a break: the client's reading of the
 * time-out timer the SFU runs (a transmission ends after `resetAfter` seconds of silence).
 * Fed with the audio levels the room reports a few times a second. No DOM.
 */

import { SPEAKING_LEVEL } from './audio-stats.js';

export class TalkClock {
  /** @param {number} [resetAfter] seconds of silence that end a transmission */
  constructor(resetAfter = 2) {
    this.resetAfter = resetAfter;
    /** When each participant's current transmission started (ms). @type {Map<string, number>} */
    this.since = new Map();
    /** When each was last heard (ms). @type {Map<string, number>} */
    this.heard = new Map();
  }

  /**
   * @param {Record<string, number>} levels 0..1 by participant id
   * @param {number} [now] ms
   */
  feed(levels, now = Date.now()) {
    const gap = this.resetAfter * 1000;
    for (const [id, level] of Object.entries(levels)) {
      if (level <= SPEAKING_LEVEL) continue;
      const last = this.heard.get(id);
      if (last === undefined || now - last > gap) this.since.set(id, now);
      this.heard.set(id, now);
    }
    for (const [id, last] of this.heard) {
      if (now - last > gap) {
        this.heard.delete(id);
        this.since.delete(id);
      }
    }
  }

  /** Seconds `id` has been transmitting (0: not now). @param {string} id @param {number} [now] */
  seconds(id, now = Date.now()) {
    const since = this.since.get(id);
    return since === undefined ? 0 : (now - since) / 1000;
  }

  /**
   * Who was heard within `within` seconds (a steadier "now talking" than one level sample).
   * @param {number} [within]
   * @param {number} [now]
   * @returns {string[]}
   */
  talking(within = 1.5, now = Date.now()) {
    return [...this.heard].filter(([, last]) => now - last <= within * 1000).map(([id]) => id);
  }

  clear() {
    this.since.clear();
    this.heard.clear();
  }
}
