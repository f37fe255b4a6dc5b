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
/** @typedef {'failed'|'disconnected'|'stalled'} Trouble */

/**
 * What a link asks of the room that owns it.
 * @typedef {object} LinkHost
 * @property {(peerId: string, type: SignalType, data: SessionDescription|IceCandidate|null) => Promise<void>} signal
 *   send a signal to the peer: resolves once it is on its way (the next one may follow: order
 *   is kept), rejects when it could not be sent
 * @property {(link: PeerLink) => void} answering a remote offer is set: attach the microphone
 * @property {(link: PeerLink, event: RTCTrackEvent) => void} track a remote track arrived
 * @property {(link: PeerLink) => void} state the connection state changed
 * @property {(link: PeerLink, why: Trouble) => void} trouble the connection needs a restart
 * @property {(...args: unknown[]) => void} log
 */

/** A passive mesh link offers itself if the other side has not offered by then. */
const PASSIVE_FALLBACK_MS = 4_000;
/** An offer without an answer is sent again after this long (a lost WS frame, glare). */
const OFFER_RESEND_MS = 5_000;
/** A `disconnected` connection gets an ICE restart if it stays so this long (the browser
 * says `disconnected` after ~2.5 s without an answer; a network change ends most of them). */
const DISCONNECTED_GRACE_MS = 1_500;
/** A `connected` connection that received nothing at all (RTP, RTCP, DTLS, STUN) for this
 * long is not fine, whatever its state says (the browser pings every ~2.5 s). */
export const STALL_MS = 6_000;
/** A mesh link whose peer's RTP flowed steadily (every sender sends, silence included)
 * and then stopped for this long has most likely lost its path (a network change the
 * browser has no event for): an ICE restart now beats waiting for `disconnected`. */
const RTP_GAP_MS = 1_000;
/** ...once the RTP flowed this long, and at most once per RTP_GAP_EVERY_MS. */
const RTP_STEADY_MS = 2_000;
const RTP_GAP_EVERY_MS = 5_000;
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
    /** When the ICE restart in progress was asked for (0: none). */
    this.restartedAt = 0;
    /** ICE restarts that completed on this connection, and how long the last one took. */
    this.restarts = 0;
    this.lastRestartMs = 0;
    /** Everything received so far (stats: packets, bytes, STUN), when it last grew, and
     * when it was last read. */
    this.rxTotal = -1;
    this.rxAt = 0;
    this.rxReadAt = 0;
    /** When a stall last asked for a restart (one per STALL_MS). */
    this.stallTroubleAt = 0;
    /** Inbound RTP packets so far, when they last grew, since when they flow (0: not). */
    this.rtpTotal = -1;
    this.rtpAt = 0;
    this.rtpSince = 0;
    /** When an RTP gap last asked for a restart. */
    this.gapTroubleAt = 0;
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
      this.checkRestart();
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
      this.checkRestart();
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

  /**
   * Offer an ICE restart on this connection (the peer answers with fresh credentials); the
   * next offer, made at once or after the one in flight, carries new ice-ufrag/pwd.
   */
  restartIce() {
    if (this.closed) return;
    this.host.log('ICE restart with', this.peerId);
    this.restartedAt = Date.now();
    this.pc.restartIce();
  }

  /**
   * An ICE restart is done once an exchange after it completed, the link is connected and
   * something arrived since (a dead path can still say `connected` for seconds).
   */
  checkRestart() {
    if (!this.restartedAt || this.negotiatedAt < this.restartedAt) return;
    if (this.pc.connectionState !== 'connected' || this.rxAt <= this.negotiatedAt) return;
    this.lastRestartMs = Date.now() - this.restartedAt;
    this.restartedAt = 0;
    this.restarts++;
    this.host.log('ICE restart with', this.peerId, 'done in', this.lastRestartMs, 'ms');
  }

  /**
   * The stats' running total of what arrived (audio-stats.js): notes when it last grew.
   * @param {number} total NaN: the browser's stats cannot tell (never stalled then)
   * @param {number} now
   */
  noteReceived(total, now) {
    this.rxReadAt = now;
    if (total !== this.rxTotal || Number.isNaN(total) || this.pc.connectionState !== 'connected') {
      this.rxTotal = total;
      this.rxAt = now;
      this.checkRestart();
    }
  }

  /**
   * The stats' inbound RTP packet count (audio-stats.js).
   * @param {number} packets
   * @param {number} now
   */
  noteRtp(packets, now) {
    if (this.pc.connectionState !== 'connected') {
      this.rtpSince = 0;
    } else if (packets > this.rtpTotal) {
      if (this.rtpTotal >= 0 && !this.rtpSince) this.rtpSince = now;
      this.rtpAt = now;
    }
    this.rtpTotal = packets;
  }

  /**
   * Mesh: the peer's steady RTP stopped for RTP_GAP_MS (true once per gap and at most
   * once per RTP_GAP_EVERY_MS), for the room to restart ICE.
   * @param {number} now
   */
  rtpGap(now) {
    if (this.plane !== 'mesh' || !this.rtpSince || this.pc.connectionState !== 'connected') return false;
    if (this.rtpAt - this.rtpSince < RTP_STEADY_MS || now - this.rtpAt < RTP_GAP_MS) return false;
    if (now - this.gapTroubleAt < RTP_GAP_EVERY_MS) return false;
    this.gapTroubleAt = now;
    this.rtpSince = 0; // flowing again first before the next one
    return true;
  }

  /**
   * Whether the link says `connected` but its stats showed nothing new for STALL_MS (read a
   * few times a second in a room; between two reads far apart, as in a throttled background
   * tab, nothing new means nothing arrived all that time).
   */
  stalled() {
    return (
      this.pc.connectionState === 'connected' && this.rxAt > 0 && this.rxReadAt - this.rxAt > STALL_MS
    );
  }

  /**
   * A stalled link asks for a restart once per STALL_MS: true then.
   * @param {number} now
   */
  stallTrouble(now) {
    if (!this.stalled() || now - this.stallTroubleAt < STALL_MS) return false;
    this.stallTroubleAt = now;
    return true;
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
