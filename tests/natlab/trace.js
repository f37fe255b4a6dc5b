// The NAT lab's probe (an init script, before the client's own scripts): every
// RTCPeerConnection of the page logs what it does with wall-clock times (ms), so a run can
// say where the time to connected goes. window.yvTrace = [{t, pc, ev, ...}]; ev one of
// create, sld, srd, cand (local), addcand (remote), gather, ice, conn, rtp (first inbound
// RTP packet, polled every 10 ms from connected on), pair (the selected pair's numbers).
(() => {
  const Native = window.RTCPeerConnection;
  if (!Native || Native.yvTraced) return;
  const trace = (window.yvTrace = []);
  let next = 0;
  const now = () => performance.timeOrigin + performance.now();
  const log = (pc, ev, extra) => trace.push({ t: now(), pc: pc.yvId, ev, ...(extra || {}) });
  const parse = (line) => {
    const m = / typ (\w+)/.exec(line || '');
    const proto = /candidate:\S+ \d+ (\w+)/.exec(line || '');
    return { typ: m ? m[1] : '?', proto: proto ? proto[1].toLowerCase() : '?' };
  };
  async function pollRtp(pc) {
    for (let i = 0; i < 1000 && pc.connectionState === 'connected'; i++) {
      const report = await pc.getStats();
      let got = false;
      report.forEach((r) => {
        if (r.type === 'inbound-rtp' && r.packetsReceived > 0) got = true;
      });
      if (got) {
        log(pc, 'rtp');
        return;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  async function pair(pc) {
    const report = await pc.getStats();
    report.forEach((r) => {
      if (r.type !== 'candidate-pair' || !r.nominated) return;
      const local = report.get(r.localCandidateId) || {};
      const remote = report.get(r.remoteCandidateId) || {};
      log(pc, 'pair', {
        local: local.candidateType, relayProtocol: local.relayProtocol || null,
        remote: remote.candidateType, requests: r.requestsSent, responses: r.responsesReceived,
        rtt: r.currentRoundTripTime, state: r.state,
      });
    });
  }
  class Traced extends Native {
    constructor(config, ...rest) {
      super(config, ...rest);
      this.yvId = next++;
      this.addEventListener('negotiationneeded', () => log(this, 'negotiationneeded'));
      const urls = ((config && config.iceServers) || []).flatMap((s) => [].concat(s.urls));
      log(this, 'create', { urls, pool: (config && config.iceCandidatePoolSize) || 0,
        policy: (config && config.iceTransportPolicy) || 'all' });
      this.addEventListener('icecandidate', (e) => {
        const c = e.candidate;
        log(this, 'cand', c ? { ...parse(c.candidate), relayProtocol: c.relayProtocol || null,
          url: c.url || null } : { end: true });
      });
      this.addEventListener('icegatheringstatechange', () =>
        log(this, 'gather', { state: this.iceGatheringState }));
      this.addEventListener('iceconnectionstatechange', () =>
        log(this, 'ice', { state: this.iceConnectionState }));
      this.addEventListener('connectionstatechange', () => {
        log(this, 'conn', { state: this.connectionState });
        if (this.connectionState === 'connected') {
          pollRtp(this);
          pair(this);
        }
      });
    }
    async setLocalDescription(...args) {
      log(this, 'sld-start');
      const out = await super.setLocalDescription(...args);
      log(this, 'sld', { type: this.localDescription && this.localDescription.type });
      return out;
    }
    async setRemoteDescription(desc, ...rest) {
      log(this, 'srd-start', { type: desc && desc.type,
        cands: ((desc && desc.sdp) || '').split('\n').filter((l) => l.startsWith('a=candidate'))
          .map((l) => parse(l).typ + '/' + parse(l).proto) });
      const out = await super.setRemoteDescription(desc, ...rest);
      log(this, 'srd', { type: desc && desc.type });
      return out;
    }
    async addIceCandidate(c, ...rest) {
      const out = await super.addIceCandidate(c, ...rest);
      log(this, 'addcand', c && c.candidate ? parse(c.candidate) : { end: true });
      return out;
    }
  }
  const page = { yvId: '-' };
  Traced.yvTraced = true;
  window.RTCPeerConnection = Traced;
  // The operator's click on Join (what the time to connected counts from).
  document.addEventListener('click', (e) => {
    const el = e.target instanceof Element ? e.target.closest('.join') : null;
    if (el) log(page, 'click');
  }, true);
  // What a page can see of a network change.
  window.addEventListener('online', () => log(page, 'online'));
  window.addEventListener('offline', () => log(page, 'offline'));
  if (navigator.connection && navigator.connection.addEventListener) {
    navigator.connection.addEventListener('change', () => log(page, 'connection-change',
      { type: navigator.connection.type || null, effectiveType: navigator.connection.effectiveType }));
  }
  // The client's own waits before a connection exists: audio unlock, microphone, socket, HTTP.
  const NativeAC = window.AudioContext;
  if (NativeAC) {
    window.AudioContext = class extends NativeAC {
      constructor(...args) {
        log(page, 'audiocontext-start');
        super(...args);
        log(page, 'audiocontext');
      }
    };
  }
  const media = navigator.mediaDevices;
  if (media && media.getUserMedia) {
    const gum = media.getUserMedia.bind(media);
    media.getUserMedia = async (...args) => {
      log(page, 'gum-start');
      const stream = await gum(...args);
      log(page, 'gum');
      return stream;
    };
  }
  const nativeFetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const what = `${(init && init.method) || 'GET'} ${new URL(String(input.url || input), location.href).pathname}`;
    log(page, 'fetch-start', { what });
    const response = await nativeFetch(input, init);
    log(page, 'fetch', { what, status: response.status });
    return response;
  };
  const NativeWS = window.WebSocket;
  window.WebSocket = class extends NativeWS {
    constructor(...args) {
      super(...args);
      log(page, 'ws-start');
      this.addEventListener('open', () => log(page, 'ws-open'));
      this.addEventListener('close', (e) => log(page, 'ws-close', { code: e.code }));
      this.addEventListener('message', (e) => {
        const m = /"type":\s*"(\w+)"/.exec(String(e.data).slice(0, 200));
        log(page, 'ws-msg', { type: m ? m[1] : '?' });
      });
    }
  };
})();
