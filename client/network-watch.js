// @ts-check
/**
 * Tells the room when the network under the page may have changed (Wi-Fi to mobile data, a
 * new address, a cable back in), so that it restarts ICE at once instead of waiting for its
 * connections to time out: the `online` event and, where the browser has it (Chromium),
 * `navigator.connection`'s `change`. A lost path without any event shows as a connection
 * `disconnected`, which peer-link.js handles. Window and navigator events only, no DOM.
 */

/** Events within this long are one change (`online` and `change` often come together). */
const SETTLE_MS = 200;

export class NetworkWatch {
  /** @param {(reason: string) => void} onchange */
  constructor(onchange) {
    this.onchange = onchange;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.timer = null;
    this.started = false;
    /** @type {string[]} what fired since the last report */
    this.reasons = [];
    this._online = () => this._fire('online');
    this._connection = () => this._fire('connection change');
  }

  /** `navigator.connection` where the browser has one (NetworkInformation). */
  get connection() {
    const nav = /** @type {any} */ (typeof navigator === 'undefined' ? null : navigator);
    const connection = nav && nav.connection;
    return connection && typeof connection.addEventListener === 'function' ? connection : null;
  }

  start() {
    if (this.started || typeof window === 'undefined') return;
    this.started = true;
    window.addEventListener('online', this._online);
    const connection = this.connection;
    if (connection) connection.addEventListener('change', this._connection);
  }

  stop() {
    if (!this.started) return;
    this.started = false;
    window.removeEventListener('online', this._online);
    const connection = this.connection;
    if (connection) connection.removeEventListener('change', this._connection);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.reasons = [];
  }

  /** @param {string} reason */
  _fire(reason) {
    if (!this.reasons.includes(reason)) this.reasons.push(reason);
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      const reasons = this.reasons.join(', ');
      this.reasons = [];
      if (this.started) this.onchange(reasons);
    }, SETTLE_MS);
  }
}
