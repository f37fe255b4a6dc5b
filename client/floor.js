// @ts-check
/**
 * Net control, the client's view of it: which floor state is the latest one, and what it
 * means for one participant (holds the floor, waits in the queue at position n, is net
 * control, was muted by net control, may send its microphone now).
 *
 * Pure functions over {@link FloorState} (no DOM, no network): the room feeds them the
 * states from floorChanged frames and REST answers, the page and tests read the views.
 */

/** @typedef {import('./protocol-types.js').FloorState} FloorState */
/** @typedef {import('./protocol-types.js').FloorHolder} FloorHolder */
/** @typedef {import('./protocol-types.js').FloorEntry} FloorEntry */
/** @typedef {import('./protocol-types.js').Role} Role */

/** The kinds of floor request, in the order a page offers them. */
export const FLOOR_KINDS = /** @type {const} */ (['checkin', 'traffic', 'comment', 'priority']);

/**
 * This participant's standing in a floor state.
 * @typedef {{
 *   directed: boolean,
 *   open: boolean,
 *   holding: FloorHolder|null,
 *   hasFloor: boolean,
 *   paused: boolean,
 *   queued: FloorEntry|null,
 *   queuePosition: number,
 *   isNetControl: boolean,
 *   mutedByNcs: boolean,
 *   mayTransmit: boolean,
 * }} FloorView
 */

/**
 * Whether `value` has the shape of a FloorState (a server of another version, or a
 * route that answers `{success: true}`, gives something else).
 * @param {unknown} value
 * @returns {value is FloorState}
 */
export function isFloorState(value) {
  if (!value || typeof value !== 'object') return false;
  const v = /** @type {Record<string, unknown>} */ (value);
  return (
    typeof v.roomId === 'string' &&
    typeof v.version === 'number' &&
    Array.isArray(v.holders) &&
    Array.isArray(v.queue) &&
    Array.isArray(v.muted)
  );
}

/**
 * Whether `next` replaces `current`: another room's state never does, an older version
 * (a late REST answer after a newer floorChanged) neither.
 * @param {FloorState|null} current
 * @param {unknown} next
 * @param {string|null} roomId the room we are in
 * @returns {next is FloorState}
 */
export function isNewer(current, next, roomId) {
  if (!isFloorState(next) || next.roomId !== roomId) return false;
  return !current || current.roomId !== next.roomId || next.version > current.version;
}

/**
 * Whether a participant is net control: an `ncs` token, or appointed ncs for this net.
 * @param {FloorState|null} state
 * @param {string} participantId
 * @param {Role|undefined} role the participant's token role
 */
export function isNetControl(state, participantId, role) {
  if (role === 'ncs') return true;
  return !!state && !!state.appointed && state.appointed[participantId] === 'ncs';
}

/**
 * Whether net control muted a participant (it cannot unmute itself; nobody plays it).
 * @param {FloorState|null} state
 * @param {string} participantId
 */
export function isMutedByNcs(state, participantId) {
  return !!state && Array.isArray(state.muted) && state.muted.includes(participantId);
}

/**
 * What a floor state means for one participant. Before any state is known, nothing is
 * directed (the server's first floorChanged follows the join at once, and the SFU
 * enforces the floor whatever the client does).
 * @param {FloorState|null} state
 * @param {string} participantId
 * @param {Role|undefined} role the participant's token role
 * @returns {FloorView}
 */
export function floorView(state, participantId, role) {
  const directed = !!state && state.floor === 'directed';
  const open = !!state && !!state.open;
  const holding = (state && state.holders.find((h) => h.participantId === participantId)) || null;
  const index = state ? state.queue.findIndex((e) => e.participantId === participantId) : -1;
  const ncs = isNetControl(state, participantId, role);
  const mutedByNcs = isMutedByNcs(state, participantId);
  const hasFloor = !!holding && !holding.paused;
  return {
    directed,
    open,
    holding,
    hasFloor,
    paused: !!holding && holding.paused,
    queued: state && index >= 0 ? state.queue[index] : null,
    queuePosition: index + 1,
    isNetControl: ncs,
    mutedByNcs,
    // What the SFU forwards (floor.md): in a directed room holders, net control and,
    // during a roll call, everyone; nobody net control muted.
    mayTransmit: !mutedByNcs && (!directed || hasFloor || ncs || open),
  };
}

/**
 * A callsign for a participant id, from the floor state (holders and queue carry them).
 * @param {FloorState|null} state
 * @param {string} participantId
 * @returns {string|null}
 */
export function callsignIn(state, participantId) {
  if (!state) return null;
  const found =
    state.holders.find((h) => h.participantId === participantId) ||
    state.queue.find((e) => e.participantId === participantId);
  return found ? found.callsign : null;
}
