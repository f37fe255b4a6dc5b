// @ts-check
/**
 * The wire models of yahaml_voice/core/protocol.py as JSDoc types, for the client only.
 *
 * PLACEHOLDER, hand-written: it will be replaced by the file generated from the pydantic
 * models' JSON Schema (one @typedef per model, same names). Fields with a default in the
 * model are optional here, as in the validation schema. Types only: nothing to import at run
 * time; modules use `/** @typedef {import('./protocol-types.js').X} X *\/`.
 */

// ---------------------------------------------------------------- literals

/** @typedef {'ncs'|'operator'|'listener'} Role */
/** @typedef {'mesh'|'sfu'} Mode */
/** @typedef {'offer'|'answer'|'ice-candidate'} SignalType */
/** @typedef {'microphone'|'radio'|'janus'|'http-stream'|'system'} AudioSource */

// ---------------------------------------------------------------- REST request bodies

/**
 * @typedef {object} SessionRequest
 * @property {string} callsign
 * @property {string|null} [stationId]
 * @property {string|null} [browserId]
 * @property {string|null} [sourceType]
 * @property {unknown} [sourceInfo]
 */

/**
 * @typedef {object} JoinRequest
 * @property {AudioSource} [audioSourceType]
 * @property {'operator'|'listener'} [joinMode]
 */

/**
 * RTCSessionDescriptionInit.
 * @typedef {object} SessionDescription
 * @property {'offer'|'answer'|'pranswer'|'rollback'} type
 * @property {string} [sdp]
 */

/**
 * RTCIceCandidateInit (an empty candidate string marks end of candidates).
 * @typedef {object} IceCandidate
 * @property {string} [candidate]
 * @property {string|null} [sdpMid]
 * @property {number|null} [sdpMLineIndex]
 * @property {string|null} [usernameFragment]
 */

/**
 * @typedef {object} SignalRequest
 * @property {SignalType} type
 * @property {string|null} [to]
 * @property {SessionDescription|IceCandidate|null} [data]
 */

/**
 * @typedef {object} MuteRequest
 * @property {boolean} isMuted
 */

/**
 * @typedef {object} VolumeRequest
 * @property {number} volume
 */

// ---------------------------------------------------------------- REST answers

/**
 * GET /api/sessions/me: who a token speaks for.
 * @typedef {object} SessionInfo
 * @property {string} participantId
 * @property {string} callsign
 * @property {Role} role
 * @property {string[]|'*'} rooms
 * @property {string} expiresAt
 * @property {string} sessionId
 */

/**
 * @typedef {object} IceServer
 * @property {string[]} urls
 * @property {string|null} [username]
 * @property {string|null} [credential]
 */

/**
 * @typedef {object} IceConfigAnswer
 * @property {IceServer[]} iceServers
 * @property {'all'|'relay'} [iceTransportPolicy]
 * @property {number|null} [ttl]
 */

/**
 * @typedef {object} SessionAnswer
 * @property {string} token
 * @property {string} expiresAt
 * @property {string} sessionId
 * @property {string} participantId
 * @property {string} callsign
 * @property {Role} role
 */

/**
 * @typedef {object} Participant
 * @property {string} id
 * @property {string} displayName
 * @property {Role} [role]
 * @property {string} joinedAt
 * @property {boolean} [isActive]
 * @property {boolean} [isMuted]
 * @property {number} [volume]
 * @property {AudioSource} [audioSourceType]
 * @property {boolean} [canPublish]
 */

/**
 * @typedef {object} Peer
 * @property {string} id
 * @property {string} displayName
 * @property {AudioSource} [audioSourceType]
 * @property {Role} [role]
 * @property {boolean} [isMuted]
 * @property {boolean} [canPublish]
 */

/**
 * @typedef {object} RoomSummary
 * @property {string} id
 * @property {string} name
 * @property {string} description
 * @property {string|null} [radioId]
 * @property {number} participantCount
 * @property {number} maxParticipants
 * @property {string} createdAt
 * @property {boolean} isActive
 * @property {Mode} mode
 * @property {number} sfuThreshold
 * @property {boolean} ptt
 */

/** @typedef {RoomSummary & {participants: Participant[]}} RoomDetail */

/**
 * @typedef {object} SfuInfo
 * @property {number} slots
 */

/**
 * @typedef {object} JoinAnswer
 * @property {boolean} [success]
 * @property {Participant} participant
 * @property {Peer[]} peers
 * @property {Mode} mode
 * @property {number} [epoch]
 * @property {IceServer[]} iceServers
 * @property {'all'|'relay'} [iceTransportPolicy]
 * @property {SfuInfo} sfu
 * @property {number} gracePeriod
 * @property {number|null} [iceTtl]
 */

/**
 * @typedef {object} Success
 * @property {boolean} [success]
 */

/**
 * @typedef {object} SignalAnswer
 * @property {boolean} [success]
 * @property {number} delivered
 */

/**
 * @typedef {object} ErrorAnswer
 * @property {string} error
 * @property {string} message
 */

// ---------------------------------------------------------------- relayed messages

/**
 * A signal as delivered to a peer.
 * @typedef {object} SignalMessage
 * @property {SignalType} type
 * @property {string} from
 * @property {string|null} [to]
 * @property {{[key: string]: any}|null} [data]
 * @property {string} timestamp
 */

/**
 * @typedef {object} SlotAssignment
 * @property {number} index
 * @property {string|null} [participantId]
 */

// ---------------------------------------------------------------- client WebSocket

/**
 * What a client may send on /ws.
 * @typedef {object} WsClientFrame
 * @property {'subscribe'|'unsubscribe'|'ping'} type
 * @property {string|null} [channel]
 * @property {{[key: string]: any}|null} [filters]
 * @property {unknown} [data]
 */

// The `data` of each server -> client event. No model holds these yet (server/rooms.py and
// server/connections.py build them as dicts): named here after the event type.

/**
 * @typedef {object} ConnectedEvent
 * @property {string} participantId
 * @property {string} callsign
 * @property {Role} role
 * @property {number} protocolVersion
 * @property {string} [expiresAt]
 */

/**
 * @typedef {object} ParticipantJoinedEvent
 * @property {string} roomId
 * @property {Participant} participant
 */

/**
 * @typedef {object} ParticipantLeftEvent
 * @property {string} roomId
 * @property {string} participantId
 * @property {'left'|'logout'|'removed'|'timeout'|'no_media'} [reason]
 */

/**
 * @typedef {object} SignalEvent
 * @property {string} roomId
 * @property {SignalMessage} message
 */

/**
 * @typedef {object} ParticipantMuteChangedEvent
 * @property {string} roomId
 * @property {string} participantId
 * @property {boolean} isMuted
 */

/**
 * @typedef {object} ParticipantVolumeChangedEvent
 * @property {string} roomId
 * @property {string} participantId
 * @property {number} volume
 */

/**
 * @typedef {object} RoomModeChangedEvent
 * @property {string} roomId
 * @property {Mode} mode
 * @property {number} epoch
 */

/**
 * @typedef {object} SpeakerSlotsEvent
 * @property {string} roomId
 * @property {SlotAssignment[]} slots
 * @property {string[]} [speaking]
 */

/**
 * @typedef {object} WsError
 * @property {string} code
 * @property {string} message
 */

export {};
