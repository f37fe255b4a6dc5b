// @ts-check
/**
 * Audio counters and levels from getStats(): what the page's meters show and the tests read.
 */

/** @typedef {import('./peer-link.js').PeerLink} PeerLink */

/**
 * @typedef {{packetsReceived: number, bytesReceived: number, audioEnergy: number,
 *   audioLevel: number, participantId: string|null}} InboundStats
 * @typedef {{packetsSent: number, bytesSent: number, audioEnergy: number}} OutboundStats
 * @typedef {{inbound: Record<string, InboundStats>, outbound: OutboundStats}} AudioStats
 */

/** A level (0..1) above this counts as speaking. */
export const SPEAKING_LEVEL = 0.02;

/**
 * Audio counters of every link, inbound by audio key (a peer id on mesh, `slot:<i>` on the
 * SFU). Inbound levels combine Chrome's `audioLevel` with the energy since the last call
 * (kept per link in `lastSample`); an SFU link with RTP on a slot is marked `hasAudio`.
 * @param {PeerLink[]} links
 * @param {number} slotCount SFU m-lines below this index are speaker slots
 * @param {(key: string) => string|null} owner who is heard on a slot key
 * @param {() => number} [sentEnergy] the sent energy measured locally, for browsers whose
 *   media-source stats have no `totalAudioEnergy` (Firefox)
 * @returns {Promise<AudioStats>}
 */
export async function collectStats(links, slotCount, owner, sentEnergy) {
  /** @type {Record<string, InboundStats>} */
  const inbound = {};
  /** @type {OutboundStats} */
  const outbound = { packetsSent: 0, bytesSent: 0, audioEnergy: 0 };
  let hasEnergy = false;
  await Promise.all(
    links.map(async (link) => {
      let report;
      try {
        report = await link.pc.getStats();
      } catch {
        return;
      }
      /** @type {Map<string, number>} mid -> transceiver index */
      const midIndex = new Map();
      link.pc.getTransceivers().forEach((t, i) => {
        if (t.mid !== null) midIndex.set(t.mid, i);
      });
      let sourceEnergy = 0;
      // Anything at all that arrived (media, RTCP, DTLS, STUN): a link that says
      // `connected` while this stands still is not fine (PeerLink.stalled).
      let received = 0;
      let countsStun = false;
      let rtp = 0;
      report.forEach((r) => {
        if (r.type === 'transport' || r.type === 'candidate-pair') {
          received += (r.bytesReceived || 0) + (r.requestsReceived || 0) + (r.responsesReceived || 0);
          if (typeof r.responsesReceived === 'number') countsStun = true;
        } else if (r.type === 'inbound-rtp') {
          received += r.packetsReceived || 0;
          rtp += r.packetsReceived || 0;
        }
        if (r.type === 'inbound-rtp' && r.kind === 'audio') {
          let key = link.peerId;
          if (link.plane === 'sfu') {
            const index = midIndex.get(r.mid);
            if (index === undefined || index >= slotCount) return;
            key = `slot:${index}`;
          }
          const energy = r.totalAudioEnergy || 0;
          const duration = r.totalSamplesDuration || 0;
          const last = link.lastSample.get(r.id);
          link.lastSample.set(r.id, { energy, duration });
          let level = r.audioLevel || 0;
          if (last && duration > last.duration) {
            level = Math.max(level, Math.sqrt((energy - last.energy) / (duration - last.duration)));
          }
          if ((r.packetsReceived || 0) > 0 && link.plane === 'sfu') link.hasAudio = true;
          inbound[key] = {
            packetsReceived: r.packetsReceived || 0,
            bytesReceived: r.bytesReceived || 0,
            audioEnergy: energy,
            audioLevel: Math.min(1, level),
            participantId: link.plane === 'sfu' ? owner(key) : link.peerId,
          };
        } else if (r.type === 'outbound-rtp' && r.kind === 'audio') {
          outbound.packetsSent += r.packetsSent || 0;
          outbound.bytesSent += r.bytesSent || 0;
        } else if (r.type === 'media-source' && r.kind === 'audio') {
          if (typeof r.totalAudioEnergy === 'number') hasEnergy = true;
          sourceEnergy = Math.max(sourceEnergy, r.totalAudioEnergy || 0);
        }
      });
      outbound.audioEnergy = Math.max(outbound.audioEnergy, sourceEnergy);
      // Without STUN counters a quiet SFU connection would look stalled: not judged then.
      link.noteReceived(countsStun ? received : NaN, Date.now());
      link.noteRtp(rtp, Date.now());
    }),
  );
  if (!hasEnergy && sentEnergy) outbound.audioEnergy = sentEnergy();
  return { inbound, outbound };
}

/**
 * Levels (0..1) by participant: the loudest inbound stream of each, and on the SFU plane
 * at least a "speaking" level for those the SFU says are speaking (its slots mix may be
 * quiet at the moment of sampling).
 * @param {AudioStats} stats
 * @param {string[]} speaking
 * @returns {Record<string, number>}
 */
export function levelsOf(stats, speaking) {
  /** @type {Record<string, number>} */
  const levels = {};
  for (const inbound of Object.values(stats.inbound)) {
    if (!inbound.participantId) continue;
    levels[inbound.participantId] = Math.max(levels[inbound.participantId] || 0, inbound.audioLevel);
  }
  for (const id of speaking) levels[id] = Math.max(levels[id] || 0, SPEAKING_LEVEL * 2);
  return levels;
}
