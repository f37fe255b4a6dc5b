// @ts-check
/**
 * The admin API (docs/admin.md) for a token with the role `admin`: rooms at runtime,
 * invites, the live overview. No DOM here (admin-view.js draws the page).
 */

/** @typedef {import('./api.js').Api} Api */
/** @typedef {import('./protocol-types.js').InviteRequest} InviteRequest */
/** @typedef {import('./protocol-types.js').InviteInfo} InviteInfo */
/** @typedef {import('./protocol-types.js').InviteMinted} InviteMinted */
/** @typedef {import('./protocol-types.js').InviteList} InviteList */
/** @typedef {import('./protocol-types.js').AdminOverview} AdminOverview */
/** @typedef {import('./protocol-types.js').Success} Success */

/**
 * A room definition as the admin API takes and gives it: a `rooms:` entry of the
 * configuration file (docs/configuration.md), snake_case. Keys left out get the file's
 * defaults.
 * @typedef {{id: string, name?: string, description?: string, max_participants?: number,
 *   sfu_threshold?: number, mesh_threshold?: number|null, ptt?: boolean,
 *   floor?: 'open'|'directed', max_talkers?: number, record?: boolean|'ncs',
 *   kind?: 'voice'|'parrot', [key: string]: unknown}} RoomDefinition
 */

/** @param {string} id */
const roomPath = (id) => `/api/admin/rooms/${encodeURIComponent(id)}`;

export class AdminApi {
  /** @param {Api} api the page's API (its identity's token is used) */
  constructor(api) {
    this.api = api;
  }

  /** Whether the signed-in identity may use this API at all. */
  get allowed() {
    return !!this.api.identity && this.api.identity.role === 'admin';
  }

  /** @returns {Promise<RoomDefinition[]>} */
  rooms() {
    return this.api.request('GET', '/api/admin/rooms');
  }

  /** @param {RoomDefinition} room @returns {Promise<RoomDefinition>} */
  createRoom(room) {
    return this.api.request('POST', '/api/admin/rooms', room);
  }

  /** @param {RoomDefinition} room the whole definition (same id) @returns {Promise<RoomDefinition>} */
  updateRoom(room) {
    return this.api.request('PUT', roomPath(room.id), room);
  }

  /** Members are told `room_closed` and lose their seats. @param {string} id @returns {Promise<Success>} */
  removeRoom(id) {
    return this.api.request('DELETE', roomPath(id));
  }

  /** @returns {Promise<InviteList>} */
  invites() {
    return this.api.request('GET', '/api/admin/invites');
  }

  /** The token and link are in the answer only. @param {InviteRequest} request @returns {Promise<InviteMinted>} */
  mintInvite(request) {
    return this.api.request('POST', '/api/admin/invites', request);
  }

  /** @param {string} id @returns {Promise<InviteInfo>} */
  revokeInvite(id) {
    return this.api.request('POST', `/api/admin/invites/${encodeURIComponent(id)}/revoke`);
  }

  /** @returns {Promise<AdminOverview>} */
  overview() {
    return this.api.request('GET', '/api/admin/overview');
  }
}
