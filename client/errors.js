// @ts-check
/**
 * The one error type the client raises: the page picks a banner by its `kind`.
 */

/**
 * @typedef {'auth'|'room-full'|'unreachable'|'mic-denied'|'mic-missing'|'mic-lost'|'not-found'|
 *   'forbidden'|'bad-request'|'server'|'protocol'|'removed'|'room-closed'|'aborted'} ErrorKind
 */

/**
 * An error the UI can show: `kind` picks the banner, `status` is the HTTP status if any,
 * `code` the server's machine-readable reason (`banned`, `muted_by_ncs`, ...) if it gave one.
 */
export class VoiceError extends Error {
  /**
   * @param {ErrorKind} kind
   * @param {string} message
   * @param {number} [status]
   * @param {string} [code]
   */
  constructor(kind, message, status, code) {
    super(message);
    this.name = 'VoiceError';
    this.kind = kind;
    this.status = status;
    this.code = code || '';
  }
}

/**
 * The kind of a refused REST call, by HTTP status.
 * @param {number} status
 * @returns {ErrorKind}
 */
export function kindOfStatus(status) {
  if (status === 401) return 'auth';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not-found';
  if (status === 409) return 'room-full';
  if (status === 502 || status === 503 || status === 504) return 'unreachable';
  if (status >= 500) return 'server';
  return 'bad-request';
}

/**
 * Any thrown value as a VoiceError (a bug or a browser error becomes `server`).
 * @param {unknown} err
 * @returns {VoiceError}
 */
export function asVoiceError(err) {
  return err instanceof VoiceError ? err : new VoiceError('server', String(err));
}
