// @ts-check
/**
 * The local microphone: opening it, switching devices, the transmit gate (mute, push-to-talk,
 * net control's floor and mute) and the level of what it picks up. Knows nothing of connections: the room adds the track to
 * them and asks {@link Microphone#replaceIn} to swap it.
 */

import { VoiceError } from './errors.js';

/**
 * `floorAllowed` false: a directed room where this seat does not hold the floor;
 * `mutedByNcs`: net control muted this seat (it cannot unmute itself).
 * @typedef {{muted: boolean, ptt: boolean, held: boolean, transmitting: boolean,
 *   canPublish: boolean, deviceId: string|null, floorAllowed: boolean,
 *   mutedByNcs: boolean}} LocalState
 */

/**
 * Open a microphone (the browser's default one if `deviceId` is null).
 * @param {string|null} deviceId
 * @returns {Promise<MediaStream>}
 */
export async function openMicrophone(deviceId) {
  /** @type {MediaTrackConstraints} */
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (deviceId) audio.deviceId = { exact: deviceId };
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new VoiceError('mic-missing', 'this browser offers no microphone here (HTTPS is required)');
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ audio, video: false });
  } catch (err) {
    const name = err instanceof Error ? err.name : '';
    if (name === 'NotAllowedError' || name === 'SecurityError') {
      throw new VoiceError('mic-denied', 'microphone access was denied');
    }
    if (name === 'NotFoundError' || name === 'OverconstrainedError') {
      throw new VoiceError('mic-missing', 'no microphone was found');
    }
    throw new VoiceError('mic-missing', `the microphone could not be opened (${name || err})`);
  }
}

/** @returns {Promise<MediaDeviceInfo[]>} */
export async function listMicrophones() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices.filter((d) => d.kind === 'audioinput');
}

export class Microphone {
  /**
   * @param {(state: LocalState) => void} onchange the gate or the device changed
   * @param {(error: VoiceError) => void} onlost the track ended while in use
   */
  constructor(onchange, onlost) {
    this.onchange = onchange;
    this.onlost = onlost;
    /** @type {MediaStream|null} */
    this.stream = null;
    this.muted = false;
    this.ptt = false;
    /** The push-to-talk key is down. */
    this.held = false;
    /** The seat may send audio (false: listening only). */
    this.canPublish = true;
    /** The floor lets this seat talk now (directed rooms: holder, net control, roll call). */
    this.floorAllowed = true;
    /** Net control muted this seat: closed whatever the operator does. */
    this.mutedByNcs = false;
    /** @type {string|null} */
    this.deviceId = null;
    /** @type {AudioContext|null} */
    this.audioContext = null;
    /** @type {AnalyserNode|null} */
    this.analyser = null;
    /** @type {Float32Array|null} */
    this.analyserBuf = null;
    /** What the analyser heard while the gate was open, as level² × seconds: the stats'
     * `totalAudioEnergy` for browsers whose stats have none (Firefox). */
    this.energy = 0;
    /** When the analyser was last read (performance.now(); 0: not yet). */
    this.readAt = 0;
  }

  /** The microphone track, if publishing. */
  get track() {
    return this.stream ? this.stream.getAudioTracks()[0] || null : null;
  }

  /** @param {MediaStream} stream */
  use(stream) {
    this.stream = stream;
    const track = stream.getAudioTracks()[0];
    if (track) {
      this.deviceId = track.getSettings().deviceId || this.deviceId;
      track.onended = () => {
        if (this.stream === stream) {
          this.onlost(new VoiceError('mic-lost', 'the microphone stopped (unplugged?)'));
        }
      };
    }
    this._startAnalyser(stream);
    this.applyGate();
  }

  /**
   * Switch to another device: opens it, hands its track to `replace` (which swaps it into
   * every sender), then stops the old one.
   * @param {string} deviceId
   * @param {(track: MediaStreamTrack) => Promise<void>} replace
   */
  async switchTo(deviceId, replace) {
    const old = this.stream;
    if (!old) return;
    const stream = await openMicrophone(deviceId);
    const track = stream.getAudioTracks()[0];
    track.enabled = this.gateOpen();
    await replace(track);
    old.getTracks().forEach((t) => t.stop());
    this.use(stream);
  }

  /** Stop the tracks (the device light goes off). */
  stop() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = null;
  }

  /** Stop the tracks and the level meter, and release the push-to-talk key. */
  release() {
    this.stop();
    if (this.audioContext) this.audioContext.close().catch(() => {});
    this.audioContext = null;
    this.analyser = null;
    this.held = false;
  }

  /** Whether the microphone may be on right now. */
  gateOpen() {
    return (
      this.canPublish &&
      !this.muted &&
      !this.mutedByNcs &&
      this.floorAllowed &&
      (!this.ptt || this.held)
    );
  }

  applyGate() {
    const track = this.track;
    if (track) track.enabled = this.gateOpen();
    this.onchange(this.state());
  }

  /** @returns {LocalState} */
  state() {
    return {
      muted: this.muted,
      ptt: this.ptt,
      held: this.held,
      transmitting: !!this.track && this.gateOpen(),
      canPublish: this.canPublish,
      deviceId: this.deviceId,
      floorAllowed: this.floorAllowed,
      mutedByNcs: this.mutedByNcs,
    };
  }

  /** @param {MediaStream} stream */
  _startAnalyser(stream) {
    this.analyser = null;
    this.readAt = 0;
    try {
      if (!this.audioContext) this.audioContext = new AudioContext();
      this._connectAnalyser(this.audioContext, stream);
    } catch {
      // Firefox cannot connect a microphone whose rate differs from the context's
      // (NotSupportedError): a context at the track's own rate can.
      const rate = (stream.getAudioTracks()[0]?.getSettings() || {}).sampleRate;
      if (!rate) return;
      try {
        if (this.audioContext) this.audioContext.close().catch(() => {});
        this.audioContext = new AudioContext({ sampleRate: rate });
        this._connectAnalyser(this.audioContext, stream);
      } catch {
        this.analyser = null;
      }
    }
  }

  /** @param {AudioContext} context @param {MediaStream} stream */
  _connectAnalyser(context, stream) {
    if (context.state === 'suspended') context.resume().catch(() => {});
    const source = context.createMediaStreamSource(stream);
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    this.analyserBuf = new Float32Array(analyser.fftSize);
    this.analyser = analyser;
  }

  /**
   * Read the analyser: the peak of the last ~20 ms, and `energy` grown by their mean
   * square times the time since the last read (capped: a background tab reads rarely).
   * @returns {number} the peak (0..1); 0 while the gate is closed
   */
  _read() {
    const now = performance.now();
    const elapsed = this.readAt ? Math.min(1, (now - this.readAt) / 1000) : 0;
    this.readAt = now;
    if (!this.analyser || !this.analyserBuf || !this.gateOpen()) return 0;
    const buf = /** @type {Float32Array<ArrayBuffer>} */ (this.analyserBuf);
    this.analyser.getFloatTimeDomainData(buf);
    let peak = 0;
    let squares = 0;
    for (let i = 0; i < buf.length; i++) {
      peak = Math.max(peak, Math.abs(buf[i]));
      squares += buf[i] * buf[i];
    }
    this.energy += (squares / buf.length) * elapsed;
    return Math.min(1, peak);
  }

  /** Peak level (0..1) of what is being sent now; 0 while the gate is closed. */
  level() {
    return this._read();
  }

  /** The sent energy so far (see `energy`), read now. */
  sentEnergy() {
    this._read();
    return this.energy;
  }
}
