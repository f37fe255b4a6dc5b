// @ts-check
/**
 * The mesh plane: one {@link PeerLink} per peer, keyed by participant id, and the local
 * microphone on them. Which peers deserve a link and whose audio may be played is the room's
 * call (it knows the participants); this holds the links, creates them with the right
 * politeness and first transceiver, and says when the mesh may take over from the SFU.
 */

import { PeerLink } from './peer-link.js';

/** @typedef {import('./peer-link.js').LinkHost} LinkHost */
/** @typedef {{track: MediaStreamTrack, stream: MediaStream}} Sendable */

/** sfu->mesh: flip when every mesh link is connected, or after this. */
const MESH_COMMIT_MS = 6_000;

/**
 * Give a link its first transceiver: the mic (addTrack, so that glare merges m-lines) or,
 * with nothing to send, a recvonly one. Either starts negotiation (this side offers).
 * @param {PeerLink} link
 * @param {Sendable|null} mic
 */
export function addLocalMedia(link, mic) {
  if (mic) {
    link.pc.addTrack(mic.track, mic.stream);
  } else {
    link.pc.addTransceiver('audio', { direction: 'recvonly' });
  }
}

/**
 * After a remote offer: send the mic on its audio m-line if the link does not already.
 * @param {PeerLink} link
 * @param {Sendable|null} mic
 */
export function attachMic(link, mic) {
  if (!mic) return;
  const transceivers = link.pc.getTransceivers().filter(
    (t) => t.receiver.track.kind === 'audio' && t.currentDirection !== 'stopped',
  );
  if (transceivers.some((t) => t.sender.track)) return;
  const first = transceivers[0];
  if (!first) return;
  first.sender.replaceTrack(mic.track).catch(() => {});
  if (first.sender.setStreams) first.sender.setStreams(mic.stream);
  first.direction = 'sendrecv';
}

export class Mesh {
  /** @param {LinkHost} host */
  constructor(host) {
    this.host = host;
    /** Links by peer id. @type {Map<string, PeerLink>} */
    this.links = new Map();
  }

  /**
   * A new link to `peerId` (replacing any); the side with the smaller id is the polite one.
   * @param {string} selfId
   * @param {string} peerId
   * @param {RTCConfiguration} config
   */
  create(selfId, peerId, config) {
    const link = new PeerLink(this.host, peerId, 'mesh', selfId < peerId, config);
    this.links.set(peerId, link);
    return link;
  }

  /**
   * Start a new link: `active` offers now; otherwise it waits for the peer's offer (newcomers
   * offer) and offers only if none came while `stillWanted`.
   * @param {PeerLink} link
   * @param {boolean} active
   * @param {() => Sendable|null} mic what to send, asked when the offer is made
   * @param {() => boolean} stillWanted
   */
  start(link, active, mic, stillWanted) {
    if (active) {
      addLocalMedia(link, mic());
      link.negotiate(); // not waiting for negotiationneeded (a task behind the page's rendering)
    } else link.awaitOffer(stillWanted, () => addLocalMedia(link, mic()));
  }

  /**
   * Take the link to `peerId` out and close it; returns it (what it fed stops playing).
   * @param {string} peerId
   * @returns {PeerLink|null}
   */
  remove(peerId) {
    const link = this.links.get(peerId);
    if (!link) return null;
    this.links.delete(peerId);
    link.close();
    return link;
  }

  /**
   * sfu->mesh: whether the mesh may be played instead of the SFU now: every `wanted` peer
   * has a connected link, or the switch started MESH_COMMIT_MS ago (some never will).
   * @param {string[]} wanted
   * @param {number} now
   * @param {number} startedAt
   */
  readyToTakeOver(wanted, now, startedAt) {
    const connected = wanted.every((id) => {
      const link = this.links.get(id);
      return link && link.pc.connectionState === 'connected';
    });
    return connected || now - startedAt >= MESH_COMMIT_MS;
  }
}
