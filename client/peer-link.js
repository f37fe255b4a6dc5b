// @ts-check
/**
 * One RTCPeerConnection with perfect negotiation, trickle ICE and ordered signaling.
 *
 * Used for both planes: a mesh link to one participant, and the link to the SFU (peer id
 * `sfu`). Perfect negotiation: on glare the polite side rolls back and takes the peer's
 * offer, the impolite side ignores the colliding offer. Everything the room decides (what to
 * send, what to play, what to do on trouble) goes through its {@link LinkHost}.
 */

/** @typedef {import('./protocol-types.js').SignalType} SignalType */
/** @typedef {import('./protocol-types.js').SessionDescription} SessionDescription */
/** @typedef {import('./protocol-types.js').IceCandidate} IceCandidate */
/** @typedef {import('./protocol-types.js').IceServer} IceServer */

/**
 * What a link asks of the room that owns it.
 * @typedef {object} LinkHost
 * @property {(peerId: string, type: SignalType, data: SessionDescription|IceCandidate|null) => Promise<void>} signal
 *   send a signal to the peer (rejects when it could not be sent)
 * @property {(link: PeerLink) => void} answering a remote offer is set: attach the microphone
 * @property {(link: PeerLink, event: RTCTrackEvent) => void} track a remote track arrived
 * @property {(link: PeerLink) => void} state the connection state changed
 * @property {(link: PeerLink, why: 'failed'|'disconnected') => void} trouble the connection needs a restart
 * @property {(...args: unknown[]) => void} log
 */

/** A passive mesh link offers itself if the other side has not offered by then. */
const PASSIVE_FALLBACK_MS = 4_000;
/** An offer without an answer is sent again after this long (a lost WS frame, glare). */
const OFFER_RESEND_MS = 5_000;
/** A `disconnected` connection gets an ICE restart if it stays so this long. */
const DISCONNECTED_GRACE_MS = 2_500;
/** A negotiated connection still not connected after this gets an ICE restart. */
const STUCK_RESTART_MS = 10_000;

/**
 * The server's ICE servers as RTCIceServers: a STUN entry's null username and credential
 * are left out rather than handed to the browser as the string "null".
 * @param {IceServer[]|undefined} servers
 * @returns {RTCIceServer[]}
 */
export function rtcIceServers(servers) {
  return (servers || []).map(({ urls, username, credential }) => ({
    urls,
    ...(username != null ? { username } : {}),
    ...(credential != null ? { credential } : {}),
  }));
}

export class PeerLink {
  /**
   * @param {LinkHost} host
   * @param {string} peerId a participant id (mesh) or `sfu`
   * @param {'mesh'|'sfu'} plane
   * @param {boolean} polite
   * @param {RTCConfiguration} config
   */
  constructor(host, peerId, plane, polite, config) {
    this.host = host;
    this.peerId = peerId;
    this.plane = plane;
    this.polite = polite;
    this.pc = new RTCPeerConnection(config);
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswerPending = false;
    this.closed = false;
    /** When the current unanswered local offer was sent (0: none). */
    this.offerSentAt = 0;
    /** When the connection first reached `connected` (0: not yet). */
    this.connectedAt = 0;
    /** When the last offer/answer exchange completed (0: never). */
    this.negotiatedAt = 0;
    /** An SFU link that received RTP on any slot. */
    this.hasAudio = false;
    /** Offers that arrived while we were making or holding our own (glare), for diagnostics. */
    this.collisions = 0;
    this.createdAt = Date.now();
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.fallbackTimer = null;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.restartTimer = null;
    /** Outgoing signals go out one at a time, in order (candidates never pass an offer). */
    /** @type {Promise<unknown>} */
    this.sendChain = Promise.resolve();
    /** Incoming signals are applied one at a time, in order. */
    /** @type {Promise<unknown>} */
    this.receiveChain = Promise.resolve();
    /** @type {Map<string, MediaStream>} audio keys this link feeds */
    this.streams = new Map();
    /** Last stats sample per inbound stats id, for level deltas (audio-stats.js). */
    /** @type {Map<string, {energy: number, duration: number}>} */
    this.lastSample = new Map();

    this.pc.onnegotiationneeded = () => this.negotiate();
    this.pc.onicecandidate = ({ candidate }) => {
      this.send('ice-candidate', candidate ? candidate.toJSON() : null);
    };
    this.pc.onconnectionstatechange = () => this.onState();
    this.pc.ontrack = (event) => this.host.track(this, event);
  }

  /** Create and send an offer (also used for ICE restarts). */
  async negotiate() {
    // Called at once by whoever adds the first media (gathering starts while the page is
    // still busy rendering), and again by negotiationneeded: one offer at a time.
    if (this.closed || this.makingOffer || this.pc.signalingState !== 'stable') return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      const desc = this.pc.localDescription;
      if (desc && desc.type === 'offer') {
        this.offerSentAt = Date.now();
        this.send('offer', { type: desc.type, sdp: desc.sdp });
      }
    } catch (err) {
      if (!this.closed) this.host.log('negotiation with', this.peerId, 'failed:', err);
    } finally {
      this.makingOffer = false;
    }
  }

  /**
   * @param {SignalType} type
   * @param {SessionDescription|IceCandidate|null} data
   */
  send(type, data) {
    if (this.closed) return;
    this.sendChain = this.sendChain.then(() =>
      this.host.signal(this.peerId, type, data).catch((err) => {
        if (!this.closed) this.host.log('signal to', this.peerId, 'failed:', err.message);
      }),
    );
  }

  /**
   * Apply a signal from the peer, in arrival order.
   * @param {string} type
   * @param {any} data
   */
  receive(type, data) {
    this.receiveChain = this.receiveChain.then(() =>
      this.apply(type, data).catch((err) => {
        if (!this.closed) this.host.log('signal from', this.peerId, 'failed:', err);
      }),
    );
    return this.receiveChain;
  }

  /** @param {string} type @param {any} data */
  async apply(type, data) {
    if (this.closed) return;
    const pc = this.pc;
    if (type === 'offer' || type === 'answer') {
      if (!data || typeof data.sdp !== 'string') return;
      const readyForOffer =
        !this.makingOffer && (pc.signalingState === 'stable' || this.settingRemoteAnswerPending);
      const collision = type === 'offer' && !readyForOffer;
      if (collision) this.collisions++;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      if (type === 'answer' && pc.signalingState !== 'have-local-offer') return; // stale answer
      this.clearFallback();
      this.settingRemoteAnswerPending = type === 'answer';
      try {
        await pc.setRemoteDescription({ type, sdp: data.sdp });
      } finally {
        this.settingRemoteAnswerPending = false;
      }
      if (type === 'offer') {
        this.host.answering(this);
        await pc.setLocalDescription();
        const desc = pc.localDescription;
        if (desc) this.send('answer', { type: desc.type, sdp: desc.sdp });
      } else {
        this.offerSentAt = 0;
      }
      this.negotiatedAt = Date.now();
    } else if (type === 'ice-candidate') {
      try {
        // null / empty candidate: end of candidates.
        await pc.addIceCandidate(data && data.candidate ? data : undefined);
      } catch (err) {
        if (!this.ignoreOffer && pc.remoteDescription) throw err;
      }
    }
  }

  onState() {
    if (this.closed) return;
    const state = this.pc.connectionState;
    if (state === 'connected') {
      if (!this.connectedAt) this.connectedAt = Date.now();
      this.clearRestart();
    } else if (state === 'failed') {
      this.host.trouble(this, 'failed');
    } else if (state === 'disconnected') {
      this.clearRestart();
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        if (!this.closed && this.pc.connectionState === 'disconnected') {
          this.host.trouble(this, 'disconnected');
        }
      }, DISCONNECTED_GRACE_MS);
    }
    this.host.state(this);
  }

  /** Offer an ICE restart (the peer answers with fresh credentials). */
  restartIce() {
    if (this.closed) return;
    this.host.log('ICE restart with', this.peerId);
    this.pc.restartIce();
  }

  /** Use new ICE servers (fresh TURN credentials) for candidates gathered from now on. */
  /** @param {RTCIceServer[]} iceServers */
  setIceServers(iceServers) {
    this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
  }

  /** Re-send an offer nobody answered (lost while a socket was down, or dropped on glare). */
  resendStaleOffer() {
    if (this.closed || this.makingOffer || this.pc.signalingState !== 'have-local-offer') return;
    if (!this.offerSentAt || Date.now() - this.offerSentAt < OFFER_RESEND_MS) return;
    const desc = this.pc.localDescription;
    if (!desc) return;
    this.offerSentAt = Date.now();
    this.send('offer', { type: desc.type, sdp: desc.sdp });
  }

  /**
   * Negotiated but never connected (candidates lost while a socket was down): true once per
   * STUCK_RESTART_MS, for the room to restart it.
   * @param {number} now
   */
  stuck(now) {
    const state = this.pc.connectionState;
    if (
      (state === 'new' || state === 'connecting') &&
      this.negotiatedAt &&
      this.pc.signalingState === 'stable' &&
      now - this.negotiatedAt > STUCK_RESTART_MS
    ) {
      this.negotiatedAt = now;
      return true;
    }
    return false;
  }

  /**
   * A passive link: wait for the peer's offer, and if none came in time (and `stillWanted`),
   * call `offer` (which adds local media, so that negotiation starts from this side).
   * @param {() => boolean} stillWanted
   * @param {() => void} offer
   */
  awaitOffer(stillWanted, offer) {
    this.clearFallback();
    this.fallbackTimer = setTimeout(() => {
      this.fallbackTimer = null;
      if (this.closed || this.pc.remoteDescription || this.pc.signalingState !== 'stable') return;
      if (!stillWanted()) return;
      offer();
    }, PASSIVE_FALLBACK_MS);
  }

  clearFallback() {
    if (this.fallbackTimer) clearTimeout(this.fallbackTimer);
    this.fallbackTimer = null;
  }

  clearRestart() {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.clearFallback();
    this.clearRestart();
    this.pc.onnegotiationneeded = null;
    this.pc.onicecandidate = null;
    this.pc.onconnectionstatechange = null;
    this.pc.ontrack = null;
    this.pc.close();
  }
}
