// @ts-check
/**
 * Tells the room when the network under the page may have changed (Wi-Fi to mobile data, a
 * new address, a cable back in), so that it restarts ICE at once instead of waiting for its
 * connections to time out: the `online` event and, where the browser has it (Chromium),
 * `navigator.connection`'s `change`. A lost path without any event shows as a connection
 * `disconnected`, which peer-link.js handles. Window and navigator events only, no DOM.
 */

/** Events within this long after a report are the same change (`online` and `change`
 * often come together, `change` twice). */
const SETTLE_MS = 200;

export class NetworkWatch {
  /** @param {(reason: string) => void} onchange */
  constructor(onchange) {
    this.onchange = onchange;
    this.started = false;
    /** When the last change was reported (Date.now(); 0: none yet). */
    this.reportedAt = 0;
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
    this.reportedAt = 0;
  }

  /**
   * Report at once (every millisecond counts: the room reopens its socket on it), unless
   * offline (the `online` event that follows reports) or a `change` just after a report.
   * @param {string} reason
   */
  _fire(reason) {
    if (!this.started) return;
    if (typeof navigator !== 'undefined' && navigator.onLine === false) return;
    const now = Date.now();
    if (reason !== 'online' && now - this.reportedAt < SETTLE_MS) return;
    this.reportedAt = now;
    this.onchange(reason);
  }
}
