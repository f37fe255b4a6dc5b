// @ts-check
/**
 * The page: turns VoiceRoom callbacks into DOM and user input into VoiceRoom calls.
 * All protocol and WebRTC logic lives in voice-room.js.
 */
import { AdminView } from './admin-view.js';
import { CheckinView } from './checkin-view.js';
import { ConsoleView } from './console-view.js';
import { $, clock, typingInto } from './dom.js';
import { RecordingView, recordingNotice } from './recording-view.js';
import { RosterView } from './roster-view.js';
import { FLOOR_KINDS, VoiceError, VoiceRoom } from './voice-room.js';

/** @typedef {import('./voice-room.js').RosterEntry} RosterEntry */
/** @typedef {import('./voice-room.js').RoomSummary} RoomSummary */
/** @typedef {import('./voice-room.js').FloorState} FloorState */
/** @typedef {import('./voice-room.js').FloorKind} FloorKind */
/** @typedef {import('./voice-room.js').ModerationData} ModerationData */
/** @typedef {import('./voice-room.js').TalkerCutData} TalkerCutData */

/** @type {Record<FloorKind, string>} */
const KIND_LABELS = { checkin: 'check-in', traffic: 'traffic', comment: 'comment', priority: 'priority' };

const TOKEN_KEY = 'yv.token';
const PREFS_KEY = 'yv.prefs';

const room = new VoiceRoom({ debug: localStorage.getItem('yv.debug') === '1' });
// For DevTools and tests (the seed's debugging section): window.yv.room.audioStats() etc.
/** @type {any} */ (window).yv = { room };

// The admin page (role admin): admin-view.js.
const adminView = new AdminView(room.api, (err) => showError(err));

/** @type {{masterVolume: number, peerVolumes: Record<string, number>, ptt: Record<string, boolean>, micId: string|null}} */
const prefs = loadPrefs();
/** @type {RoomSummary[]} */
let rooms = [];
/** @type {RoomSummary|null} */
let currentRoom = null;
/** @type {Map<string, HTMLAudioElement>} */
const sinks = new Map();
/** @type {ReturnType<typeof setInterval>|null} */
let roomsTimer = null;
let spaceHeld = false;
let pointerHeld = false;
/** Why net control removed or banned this station (for the banner that follows). */
let removal = '';
/** @type {ReturnType<typeof setTimeout>|null} */
let totTimer = null;

function loadPrefs() {
  const defaults = { masterVolume: 100, peerVolumes: {}, ptt: {}, micId: null };
  try {
    return { ...defaults, ...JSON.parse(localStorage.getItem(PREFS_KEY) || '{}') };
  } catch {
    return defaults;
  }
}

function savePrefs() {
  try {
    localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
  } catch {
    /* private mode: settings last for this visit */
  }
}

// ------------------------------------------------------------------ banners

/**
 * @typedef {{label: string, run: () => void}} BannerAction
 * @param {string} key one banner per key (a new one replaces it)
 * @param {'error'|'warn'|'info'} level
 * @param {string} text
 * @param {BannerAction[]} [actions]
 */
function showBanner(key, level, text, actions = []) {
  hideBanner(key);
  const el = document.createElement('div');
  el.className = `banner banner-${level}`;
  el.dataset.key = key;
  el.setAttribute('role', level === 'error' ? 'alert' : 'status');
  const msg = document.createElement('span');
  msg.className = 'banner-text';
  msg.textContent = text;
  el.append(msg);
  for (const action of actions) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'btn btn-small';
    button.textContent = action.label;
    button.addEventListener('click', () => {
      hideBanner(key);
      action.run();
    });
    el.append(button);
  }
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'banner-close';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '×';
  close.addEventListener('click', () => hideBanner(key));
  el.append(close);
  $('banners').append(el);
}

/** @param {string} key */
function hideBanner(key) {
  for (const el of $('banners').querySelectorAll(`[data-key="${key}"]`)) el.remove();
}

/**
 * The banner for an error from VoiceRoom or a REST call.
 * @param {unknown} err
 * @param {{roomId?: string}} [context]
 */
function showError(err, context = {}) {
  const error = err instanceof VoiceError ? err : new VoiceError('server', String(err));
  switch (error.kind) {
    case 'mic-denied':
      showBanner('mic', 'error',
        'Microphone access is blocked. Allow it in the browser (the icon in the address bar), or join to listen only.',
        context.roomId ? [{ label: 'Listen only', run: () => joinRoom(context.roomId || '', true) },
          { label: 'Try again', run: () => joinRoom(context.roomId || '', false) }] : []);
      break;
    case 'mic-missing':
    case 'mic-lost':
      showBanner('mic', 'error', `Microphone problem: ${error.message}. Plug one in or join to listen only.`,
        context.roomId ? [{ label: 'Listen only', run: () => joinRoom(context.roomId || '', true) }] : []);
      break;
    case 'unreachable':
      showBanner('net', 'error', 'The voice server cannot be reached. Check your connection; we keep trying.');
      break;
    case 'room-full': {
      const full = rooms.find((r) => r.id === context.roomId);
      const what = full ? `${full.name} is full (${full.maxParticipants} places)` : 'That room is full';
      showBanner('room', 'warn', `${what}. Try another room, or again in a while.`);
      refreshRooms();
      break;
    }
    case 'auth':
      showBanner('auth', 'error', `Your session has ended (${error.message}). Please sign in again.`);
      logout(false);
      break;
    case 'room-closed':
      showBanner('room', 'warn', 'An admin closed this room; pick another one.');
      currentRoom = null;
      setPill('', 'idle');
      showView('lobby');
      break;
    case 'removed':
      showBanner('room', 'warn', removal || 'You were removed from the room.');
      removal = '';
      // The server revoked this session too: forget it at once (no lobby refresh with it,
      // no "session ended" banner on top) and go back to the sign-in form.
      sessionStorage.removeItem(TOKEN_KEY);
      room.identity = null;
      logout(false);
      break;
    case 'forbidden':
      if (error.code === 'banned') {
        showBanner('room', 'error', `You are banned from this room: ${error.message}`);
      } else if (error.code === 'muted_by_ncs') {
        showBanner('ncs-mute', 'warn', 'Net control muted you. Only net control can unmute you.');
      } else {
        showBanner('misc', 'error', error.message);
      }
      break;
    case 'aborted':
      break;
    default:
      showBanner('misc', 'error', error.message);
  }
}

// ------------------------------------------------------------------ views

/** @param {'login'|'lobby'|'room'|'admin'} name */
function showView(name) {
  if (name === 'admin' && !adminView.allowed) name = 'lobby';
  for (const view of ['login', 'lobby', 'room', 'admin']) $(`view-${view}`).hidden = view !== name;
  const loggedIn = !!room.identity;
  $('admin-open').hidden = !adminView.allowed || name === 'admin' || name === 'room';
  if (name === 'admin') adminView.show();
  else adminView.hide();
  $('whoami').hidden = !loggedIn;
  $('logout').hidden = !loggedIn;
  if (room.identity) {
    $('whoami').textContent = `${room.identity.callsign}${room.identity.role !== 'operator' ? ` · ${room.identity.role}` : ''}`;
  }
  if (roomsTimer) clearInterval(roomsTimer);
  roomsTimer = null;
  if (name === 'lobby') {
    refreshRooms();
    roomsTimer = setInterval(refreshRooms, 5000);
  }
  if (name === 'login') /** @type {HTMLInputElement} */ ($('callsign')).focus();
}

/** @param {string} text @param {'ok'|'warn'|'bad'|'idle'} tone */
function setPill(text, tone) {
  const pill = $('status-pill');
  pill.hidden = !text;
  pill.textContent = text;
  pill.className = `pill pill-${tone}`;
}

// ------------------------------------------------------------------ login

async function onLoginSubmit(/** @type {SubmitEvent} */ event) {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('callsign'));
  const button = /** @type {HTMLButtonElement} */ ($('login-button'));
  button.disabled = true;
  try {
    const identity = await room.login(input.value.trim());
    sessionStorage.setItem(TOKEN_KEY, identity.token);
    hideBanner('auth');
    hideBanner('net');
    showView('lobby');
  } catch (err) {
    if (err instanceof VoiceError && err.kind === 'bad-request') {
      showBanner('auth', 'error', `That callsign was not accepted: ${err.message}`);
    } else {
      showError(err);
    }
  } finally {
    button.disabled = false;
  }
}

/** @param {boolean} [leaveFirst] */
async function logout(leaveFirst = true) {
  if (leaveFirst) await room.leave();
  else if (room.status !== 'idle' && room.status !== 'left') await room.leave();
  // Signing out (not an ended session) also revokes the token on the server.
  await room.logout(leaveFirst);
  sessionStorage.removeItem(TOKEN_KEY);
  currentRoom = null;
  setPill('', 'idle');
  showView('login');
}

// ------------------------------------------------------------------ lobby

async function refreshRooms() {
  if (!room.identity) return;
  try {
    rooms = await room.listRooms();
    hideBanner('net');
    renderRooms();
  } catch (err) {
    showError(err);
  }
}

function renderRooms() {
  const list = $('room-list');
  const template = /** @type {HTMLTemplateElement} */ ($('room-item'));
  const focusedId = document.activeElement && document.activeElement.closest('[data-room]')?.getAttribute('data-room');
  list.replaceChildren();
  for (const r of rooms) {
    const item = /** @type {HTMLElement} */ (template.content.firstElementChild?.cloneNode(true));
    item.dataset.room = r.id;
    /** @type {HTMLElement} */ (item.querySelector('.room-name')).textContent = r.name;
    /** @type {HTMLElement} */ (item.querySelector('.room-desc')).textContent = r.description || '';
    const full = r.participantCount >= r.maxParticipants;
    const count = /** @type {HTMLElement} */ (item.querySelector('.count'));
    count.textContent = `${r.participantCount} / ${r.maxParticipants}`;
    count.title = `${r.participantCount} on frequency, room holds ${r.maxParticipants}`;
    count.classList.toggle('badge-live', r.participantCount > 0);
    /** @type {HTMLElement} */ (item.querySelector('.mode')).textContent = r.mode === 'sfu' ? 'net (SFU)' : 'mesh';
    /** @type {HTMLElement} */ (item.querySelector('.ptt')).hidden = !r.ptt;
    // Recorded rooms say so before anyone joins; an echo test room is offered as such.
    const rec = /** @type {HTMLElement} */ (item.querySelector('.rec'));
    rec.hidden = !r.record;
    rec.textContent = r.recording ? 'REC' : 'Recorded';
    /** @type {HTMLElement} */ (item.querySelector('.parrot')).hidden = r.kind !== 'parrot';
    const notice = /** @type {HTMLElement} */ (item.querySelector('.rec-notice'));
    notice.textContent = recordingNotice(r);
    notice.hidden = !notice.textContent;
    const join = /** @type {HTMLButtonElement} */ (item.querySelector('.join'));
    join.textContent = full ? 'Full' : r.kind === 'parrot' ? 'Test your audio' : 'Join';
    join.disabled = full;
    join.setAttribute('aria-label', r.kind === 'parrot' ? `Test your audio in ${r.name}` : `Join ${r.name}`);
    join.addEventListener('click', () => {
      const listenOnly = /** @type {HTMLInputElement} */ ($('listen-only')).checked;
      joinRoom(r.id, listenOnly);
    });
    list.append(item);
    if (focusedId === r.id) join.focus();
  }
  $('room-list-empty').hidden = rooms.length > 0;
}

// ------------------------------------------------------------------ room

/**
 * Join from a click: the click is the user gesture that lets remote audio play.
 * @param {string} roomId
 * @param {boolean} listenOnly
 */
async function joinRoom(roomId, listenOnly) {
  currentRoom = rooms.find((r) => r.id === roomId) || null;
  const ptt = roomId in prefs.ptt ? prefs.ptt[roomId] : !!(currentRoom && currentRoom.ptt);
  hideBanner('mic');
  hideBanner('room');
  for (const b of document.querySelectorAll('#room-list .join')) /** @type {HTMLButtonElement} */ (b).disabled = true;
  $('room-title').textContent = currentRoom ? currentRoom.name : roomId;
  // The join starts first (microphone and socket open off the page's thread): the first
  // AudioContext of a page takes 0.2-0.4 s of it in Chromium, and that now overlaps them.
  const joining = room.join(roomId, { listenOnly, ptt, deviceId: prefs.micId });
  unlockAudio();
  try {
    await joining;
  } catch (err) {
    showError(err, { roomId });
    renderRooms();
    return;
  }
  showView('room');
  renderLocal();
  fillMicrophones();
  /** @type {HTMLElement} */ ($(room.ptt ? 'talk' : 'mute')).focus();
}

async function leaveRoom() {
  await room.leave();
  currentRoom = null;
  setPill('', 'idle');
  showView('lobby');
}

async function fillMicrophones() {
  const select = /** @type {HTMLSelectElement} */ ($('mic-select'));
  select.replaceChildren();
  select.disabled = !room.canPublish;
  if (!room.canPublish) {
    select.append(new Option('Listening only', ''));
    return;
  }
  try {
    const mics = await room.listMicrophones();
    for (const [i, mic] of mics.entries()) {
      select.append(new Option(mic.label || `Microphone ${i + 1}`, mic.deviceId));
    }
    if (room.deviceId) select.value = room.deviceId;
  } catch {
    select.append(new Option('Default microphone', ''));
  }
}

function renderLocal() {
  const local = room.localState();
  const talk = $('talk');
  const muteButton = $('mute');
  $('mode-open').setAttribute('aria-checked', String(!local.ptt));
  $('mode-ptt').setAttribute('aria-checked', String(local.ptt));
  const muted = local.muted || local.mutedByNcs;
  muteButton.setAttribute('aria-pressed', String(muted));
  muteButton.textContent = local.mutedByNcs ? 'Muted by NCS' : local.muted ? 'Unmute' : 'Mute';
  /** @type {HTMLButtonElement} */ (muteButton).disabled = !local.canPublish || local.mutedByNcs;
  /** @type {HTMLButtonElement} */ (talk).disabled = !local.canPublish || local.mutedByNcs || !local.floorAllowed;
  $('talk-mode').hidden = !local.canPublish;
  talk.setAttribute('aria-pressed', String(local.transmitting));
  talk.classList.toggle('on-air', local.transmitting);
  talk.classList.toggle('is-ptt', local.ptt);
  talk.classList.toggle('is-muted', muted);
  let label;
  if (!local.canPublish) label = 'Listening only';
  else if (local.mutedByNcs) label = 'Muted by NCS';
  else if (!local.floorAllowed) label = 'Wait for the floor';
  else if (local.muted) label = 'Muted';
  else if (local.transmitting) label = local.ptt ? 'On air' : 'Mic live';
  else label = 'Hold to talk';
  $('talk-label').textContent = label;
  $('talk-hint').textContent = !local.canPublish
    ? 'You joined to listen. Leave and rejoin with a microphone to talk.'
    : local.mutedByNcs
      ? 'Net control muted you. Only net control can unmute you.'
      : !local.floorAllowed
        ? 'Directed net: raise your hand; you are heard once net control gives you the floor.'
        : local.ptt
      ? 'Hold Space or the button to talk; release to listen. M mutes.'
      : 'Open mic: you are heard whenever you speak. M mutes.';
}

// ------------------------------------------------------------------ the floor (directed nets)

/** @param {string} text @param {string} standing */
function setFloorStatus(text, standing) {
  const el = $('floor-status');
  el.textContent = text;
  el.dataset.standing = standing;
}

/** The floor panel, the talk button and the NCS-mute banner from `room.floor`. */
function renderFloor() {
  const state = room.floor;
  const view = room.floorView();
  if (view.mutedByNcs) {
    if (!$('banners').querySelector('[data-key="ncs-mute"]')) {
      showBanner('ncs-mute', 'warn', 'Net control muted you. Only net control can unmute you.');
    }
  } else {
    hideBanner('ncs-mute');
  }
  renderLocal();
  $('floor-panel').hidden = !view.directed;
  if (!state || !view.directed) return;

  if (view.mutedByNcs) setFloorStatus('Net control muted you', 'muted');
  else if (view.hasFloor) setFloorStatus(`You have the floor${room.ptt ? ': hold to talk' : ': go ahead'}`, 'holder');
  else if (view.isNetControl) setFloorStatus('You are net control: you can always talk', 'ncs');
  else if (view.paused) setFloorStatus('Your floor is paused for priority traffic', 'paused');
  else if (view.queued) {
    setFloorStatus(`You are #${view.queuePosition} in the queue (${KIND_LABELS[view.queued.kind]})`, 'queued');
  } else if (view.open) setFloorStatus('Roll call: the floor is open, go ahead when called', 'open');
  else if (!room.canPublish) setFloorStatus('Listening only', 'listening');
  else setFloorStatus('Raise your hand to talk', 'none');

  $('floor-open').hidden = !state.open;
  $('floor-holders').textContent = state.holders.length
    ? state.holders
      .map((h) => `${h.callsign}${h.participantId === selfId() ? ' (you)' : ''}${h.paused ? ' (paused)' : ''}`)
      .join(', ')
    : 'nobody';

  const raise = /** @type {HTMLButtonElement} */ ($('raise-hand'));
  const lower = /** @type {HTMLButtonElement} */ ($('lower-hand'));
  $('floor-request').hidden = !room.canPublish || (view.isNetControl && !view.queued && !view.holding);
  raise.hidden = !!view.holding;
  /** @type {HTMLElement} */ ($('floor-request').querySelector('.floor-kind')).hidden = !!view.holding;
  raise.textContent = view.queued ? 'Change request' : 'Raise hand';
  lower.hidden = !view.queued && !view.holding;
  lower.textContent = view.holding ? 'Release floor' : 'Cancel request';

  const list = $('floor-queue');
  list.replaceChildren();
  for (const entry of state.queue) {
    const li = document.createElement('li');
    li.dataset.id = entry.participantId;
    li.classList.toggle('is-self', entry.participantId === selfId());
    const call = document.createElement('span');
    call.className = 'q-call';
    call.textContent = entry.participantId === selfId() ? `${entry.callsign} (you)` : entry.callsign;
    const kind = document.createElement('span');
    kind.className = 'badge q-kind';
    kind.dataset.kind = entry.kind;
    kind.textContent = KIND_LABELS[entry.kind];
    li.append(call, kind);
    list.append(li);
  }
  $('queue-count').textContent = state.queue.length ? `(${state.queue.length})` : '';
  $('floor-queue-empty').hidden = state.queue.length > 0;
  renderFloorTime();
}

/** The room's time-out timer in seconds (0: none). */
function roomTot() {
  return currentRoom && typeof currentRoom.tot === 'number' ? currentRoom.tot : 0;
}

/**
 * "You have the floor": the time left of this transmission against the TOT (not
 * aria-live: it changes every second; the floor status above is what is announced).
 */
function renderFloorTime() {
  const el = $('floor-time');
  const view = room.floorView();
  const tot = roomTot();
  const show = view.directed && view.hasFloor && !view.isNetControl;
  el.hidden = !show;
  if (!show) return;
  const talking = rosterView.clock.seconds(selfId());
  let text;
  if (!tot) text = 'No time-out timer in this room.';
  else if (talking) text = `${clock(Math.max(0, tot - talking))} left of this transmission (${clock(tot)} max).`;
  else text = `Up to ${clock(tot)} per transmission; pause briefly to reset it.`;
  if (el.textContent !== text) el.textContent = text;
  el.dataset.level = tot && talking >= tot - Math.min(30, tot * 0.2) ? 'warn' : '';
}

function selfId() {
  return room.identity ? room.identity.participantId : '';
}

/**
 * Run one floor or net-log action from a button; its refusal becomes a banner.
 * @param {() => Promise<unknown>} action
 * @returns {Promise<boolean>} whether it went through
 */
async function floorCall(action) {
  try {
    await action();
    return true;
  } catch (err) {
    // 409 (a net already open, a callsign already checked in) and 404 (no net, no such
    // entry) are about the net, not the room: say what the server said.
    if (err instanceof VoiceError && (err.status === 409 || err.status === 404)) {
      showBanner('net-log', 'warn', err.message);
    } else {
      showError(err, { roomId: room.roomId || undefined });
    }
    return false;
  }
}

function raiseHand() {
  const select = /** @type {HTMLSelectElement} */ ($('floor-kind'));
  const kind = /** @type {FloorKind} */ (FLOOR_KINDS.find((k) => k === select.value) || 'comment');
  floorCall(() => room.net.requestFloor(kind));
}

/** @param {ModerationData} data */
function onModeration(data) {
  const me = room.identity;
  if (!me) return;
  const by = data.by ? ` (${data.by})` : '';
  const why = data.reason ? `: ${data.reason}` : '';
  const aboutMe = data.participantId === me.participantId;
  switch (data.action) {
    case 'mute':
      if (aboutMe) showBanner('ncs-mute', 'warn', `Net control${by} muted you${why}. Only net control can unmute you.`);
      break;
    case 'unmute':
      if (aboutMe) {
        hideBanner('ncs-mute');
        const next = room.muted ? ' Press Unmute when you are ready to talk.' : '';
        showBanner('ncs', 'info', `Net control${by} lifted your mute.${next}`);
      }
      break;
    case 'remove':
      if (aboutMe) removal = `Net control${by} removed you from the net${why}.`;
      break;
    case 'ban':
      if (aboutMe || (data.callsign && data.callsign === me.callsign)) {
        const until = data.until ? ` until ${new Date(data.until).toLocaleString()}` : '';
        removal = `Net control${by} banned you from this net${until}${why}.`;
      }
      break;
    case 'appoint':
    case 'dismiss':
      if (aboutMe) {
        const role = data.role === 'ncs' ? 'net control' : data.role === 'logger' ? 'logger' : '';
        showBanner('ncs', 'info', role && data.action === 'appoint'
          ? `Net control${by} appointed you ${role} for this net.`
          : `Net control${by} ended your appointment.`);
      }
      break;
    default:
      break;
  }
}

/** @param {TalkerCutData} data */
function onTalkerCut(data) {
  if (data.participantId !== selfId()) return;
  const seconds = Math.max(0, Number(data.resetAfter) || 0);
  showBanner('tot', 'warn',
    `Time-out timer: you transmitted too long and were cut off. Stop for ${seconds} s to be heard again.`);
  if (totTimer) clearTimeout(totTimer);
  totTimer = setTimeout(() => hideBanner('tot'), (seconds + 15) * 1000);
}

/** @param {FloorState|null} state */
function onFloor(state) {
  if (!state) {
    // Left the room: its net control notices go with it.
    for (const key of ['ncs', 'ncs-mute', 'tot', 'net-log']) hideBanner(key);
    rosterView.clock.clear();
  }
  renderFloor();
  consoleView.render();
  recordingView.render(); // net control's start/stop buttons
}

// ------------------------------------------------------------------ audio out

let audioUnlocked = false;

/**
 * Prime audio playback inside a user gesture (autoplay policies): the first one on the page
 * (typing a callsign, the login click), else the click on Join. Done early because the
 * page's first AudioContext takes 0.2-0.4 s of its thread in Chromium (docs/turn.md).
 */
function unlockAudio() {
  if (audioUnlocked) return;
  audioUnlocked = true;
  try {
    const AC = window.AudioContext;
    const ctx = new AC();
    ctx.resume().finally(() => ctx.close());
  } catch {
    /* nothing to unlock */
  }
}
for (const type of ['pointerdown', 'keydown']) {
  document.addEventListener(type, unlockAudio, { once: true, capture: true });
}

/**
 * @param {string} key
 * @param {MediaStream|null} stream
 * @param {string|null} participantId
 */
function onAudio(key, stream, participantId) {
  let el = sinks.get(key);
  if (!stream) {
    if (el) {
      el.pause();
      el.srcObject = null;
      el.remove();
      sinks.delete(key);
    }
    return;
  }
  if (!el) {
    el = document.createElement('audio');
    el.autoplay = true;
    el.setAttribute('data-voice-peer', key);
    $('audio-sinks').append(el);
    sinks.set(key, el);
  }
  el.dataset.participant = participantId || '';
  if (el.srcObject !== stream) el.srcObject = stream;
  applyVolumes();
  const audio = el;
  audio.play().catch(() => {
    showBanner('sound', 'warn', 'Your browser paused the room audio.', [
      { label: 'Play sound', run: () => { for (const s of sinks.values()) s.play().catch(() => {}); } },
    ]);
  });
}

function applyVolumes() {
  const master = prefs.masterVolume / 100;
  for (const el of sinks.values()) {
    const pid = el.dataset.participant || '';
    const p = room.participants.get(pid);
    const peer = p ? prefs.peerVolumes[p.displayName] ?? 100 : 100;
    el.volume = Math.max(0, Math.min(1, master * (peer / 100)));
  }
}

// ------------------------------------------------------------------ push-to-talk keys

function updateTalk() {
  room.talk(spaceHeld || pointerHeld);
}

/** @param {KeyboardEvent} event */
function onKeyDown(event) {
  if ($('view-room').hidden || typingInto(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.code === 'Space') {
    event.preventDefault(); // no page scroll, no button click
    if (!event.repeat && room.ptt) {
      spaceHeld = true;
      updateTalk();
    }
  } else if (event.key === 'm' || event.key === 'M') {
    if (!event.repeat) toggleMute();
  }
}

/** @param {KeyboardEvent} event */
function onKeyUp(event) {
  if (event.code === 'Space') {
    if (!$('view-room').hidden && !typingInto(event.target)) event.preventDefault();
    if (spaceHeld) {
      spaceHeld = false;
      updateTalk();
    }
  }
}

function releaseAll() {
  spaceHeld = false;
  pointerHeld = false;
  updateTalk();
}

function wireTalkButton() {
  const talk = $('talk');
  talk.addEventListener('pointerdown', (event) => {
    if (!room.ptt) return;
    event.preventDefault();
    talk.setPointerCapture(event.pointerId);
    pointerHeld = true;
    updateTalk();
  });
  for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) {
    talk.addEventListener(type, () => {
      if (!pointerHeld) return;
      pointerHeld = false;
      updateTalk();
    });
  }
  talk.addEventListener('contextmenu', (event) => event.preventDefault());
  talk.addEventListener('click', () => {
    // Open mic: the big button toggles mute. (Space is push-to-talk, handled globally.)
    if (!room.ptt) toggleMute();
  });
}

// ------------------------------------------------------------------ wiring

/**
 * @param {import('./voice-room.js').Status} status
 * @param {string} [detail]
 */
function onStatus(status, detail) {
  recordingView.render();
  if (status === 'joined') {
    hideBanner('reconnect');
    hideBanner('net');
    setPill(`Connected · ${room.plane === 'sfu' ? 'net' : 'mesh'}`, 'ok');
  } else if (status === 'reconnecting') {
    showBanner('reconnect', 'warn', `Connection to the server lost. Reconnecting${detail ? ` (${detail})` : ''}… Audio keeps flowing where it can.`);
    setPill('Reconnecting…', 'warn');
  } else if (status === 'joining') {
    setPill('Joining…', 'warn');
  } else if (status === 'idle') {
    setPill('', 'idle');
  } else if (status === 'left') {
    hideBanner('reconnect');
    releaseAll();
    for (const key of [...sinks.keys()]) onAudio(key, null, null);
    if (room.identity && !$('view-room').hidden) {
      currentRoom = null;
      setPill('', 'idle');
      showView('lobby');
    }
  }
}

/**
 * The SFU connection stopped working, or works again (null): a banner saying what is
 * wrong and that it keeps being retried (the seat is kept meanwhile).
 * @param {import('./voice-room.js').SfuProblem|null} problem
 */
function onSfuProblem(problem) {
  if (!problem) {
    hideBanner('sfu');
    return;
  }
  const what = {
    failed: 'The audio connection to the voice server failed.',
    stalled: 'The audio connection to the voice server carries nothing.',
    unreachable: 'The voice server cannot be reached for audio (a firewall may block it).',
  }[problem.why];
  const attempt = problem.attempts ? ` (attempt ${problem.attempts + 1})` : '';
  showBanner('sfu', 'error', `${what} Retrying${attempt}… You keep your place in the room.`);
}

/** @param {import('./voice-room.js').Mode} mode */
function onMode(mode) {
  const badge = $('room-mode');
  badge.textContent = mode === 'sfu' ? 'net (SFU)' : 'mesh';
  badge.title = mode === 'sfu' ? 'Audio goes through the server' : 'Audio goes directly between operators';
  if (room.status === 'joined') setPill(`Connected · ${mode === 'sfu' ? 'net' : 'mesh'}`, 'ok');
}

room.onstatus = onStatus;
/** @param {string} displayName */
function volumeOf(displayName) {
  return prefs.peerVolumes[displayName] ?? 100;
}

/** @param {string} displayName @param {number} volume */
function setVolume(displayName, volume) {
  prefs.peerVolumes[displayName] = volume;
  savePrefs();
  applyVolumes();
}

const rosterView = new RosterView({ room, volumeOf, setVolume, act: floorCall });
const checkinView = new CheckinView({ room, act: floorCall });
const consoleView = new ConsoleView({ room, clock: rosterView.clock, tot: roomTot, act: floorCall });
const recordingView = new RecordingView({ room, summary: () => currentRoom, act: floorCall });

/** The net log changed (room.netLog.onNetChange): the views that show it. */
function onNetChange() {
  rosterView.schedule();
  checkinView.render();
  consoleView.render();
}

/** @param {Record<string, number>} levels */
function onLevels(levels) {
  rosterView.setLevels(levels);
  renderFloorTime();
  consoleView.tick();
}

room.onroster = (roster) => {
  rosterView.update(roster);
  if (consoleView.allowed !== consoleView.visible) consoleView.render(); // joined, left, appointed
};
room.onlevels = onLevels;
room.netLog.onNetChange = onNetChange;
room.recording.onchange = () => recordingView.render();
room.onerror = (/** @type {VoiceError} */ error) => showError(error, { roomId: room.roomId || undefined });
room.onlocal = renderLocal;
room.onaudio = onAudio;
room.onmode = onMode;
room.onslots = applyVolumes;
room.onfloor = onFloor;
room.onmoderation = onModeration;
room.ontalkercut = onTalkerCut;
room.onsfuproblem = onSfuProblem;

function init() {
  $('login-form').addEventListener('submit', onLoginSubmit);
  $('logout').addEventListener('click', () => logout(true));
  $('refresh-rooms').addEventListener('click', refreshRooms);
  $('admin-open').addEventListener('click', () => showView('admin'));
  $('admin-close').addEventListener('click', () => showView('lobby'));
  $('leave').addEventListener('click', leaveRoom);
  $('mute').addEventListener('click', toggleMute);
  $('raise-hand').addEventListener('click', raiseHand);
  $('lower-hand').addEventListener('click', () => floorCall(() => room.net.releaseFloor()));
  $('mode-open').addEventListener('click', () => setPtt(false));
  $('mode-ptt').addEventListener('click', () => setPtt(true));
  const master = /** @type {HTMLInputElement} */ ($('master-volume'));
  master.value = String(prefs.masterVolume);
  $('master-volume-out').textContent = `${prefs.masterVolume} %`;
  master.addEventListener('input', () => {
    prefs.masterVolume = Number(master.value);
    $('master-volume-out').textContent = `${master.value} %`;
    savePrefs();
    applyVolumes();
  });
  const mic = /** @type {HTMLSelectElement} */ ($('mic-select'));
  mic.addEventListener('change', async () => {
    prefs.micId = mic.value || null;
    savePrefs();
    try {
      await room.setMicrophone(mic.value);
    } catch (err) {
      showError(err);
    }
  });
  wireTalkButton();
  window.addEventListener('keydown', onKeyDown);
  window.addEventListener('keyup', onKeyUp);
  window.addEventListener('blur', releaseAll);
  document.addEventListener('visibilitychange', () => { if (document.hidden) releaseAll(); });
  window.addEventListener('pagehide', () => { room.leave(); });

  window.addEventListener('hashchange', () => {
    const invite = inviteToken();
    if (invite) start(invite);
  });
  start(inviteToken());
}

/** The token of an invite link (#token=...), taken out of the address bar. */
function inviteToken() {
  const invite = new URLSearchParams(location.hash.slice(1)).get('token');
  if (invite) history.replaceState(null, '', location.pathname + location.search);
  return invite;
}

/**
 * Sign in from an invite link or the stored session, else show the login form.
 * @param {string|null} invite
 */
async function start(invite) {
  if (invite && room.status !== 'idle' && room.status !== 'left') await room.leave();
  const token = invite || sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    try {
      room.useToken(token);
      sessionStorage.setItem(TOKEN_KEY, token);
      hideBanner('auth');
      showView('lobby');
      return;
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      showError(err);
    }
  }
  showView('login');
}

/** Mute or unmute; net control's mute cannot be lifted here (a banner says so). */
function toggleMute() {
  room.setMuted(!room.muted).catch((err) => showError(err));
}

/** @param {boolean} on */
function setPtt(on) {
  if (room.roomId) {
    prefs.ptt[room.roomId] = on;
    savePrefs();
  }
  releaseAll();
  room.setPushToTalk(on);
  renderFloor(); // "hold to talk" or "go ahead"
}

init();
