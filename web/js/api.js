// REST calls to pollcast and the per-tab storage of tokens.
//
// Every call is same-origin. Errors come back as ApiError with the
// contract's error code (`duplicate_vote`, `conflict`, …) or `network` when
// the server could not be reached at all.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, { token, body, headers = {} } = {}) {
  const init = { method, headers: { accept: 'application/json', ...headers }, cache: 'no-store' };
  if (token) init.headers.authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached right now. Try again in a moment.');
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON: keep null */
  }
  if (!response.ok) {
    const error = data && data.error;
    throw new ApiError(
      response.status,
      (error && error.code) || `http_${response.status}`,
      (error && error.message) || response.statusText || 'request failed',
    );
  }
  return data;
}

const seg = encodeURIComponent;

export const api = {
  createSession: (title, adminKey) =>
    call('POST', '/v1/sessions', { body: { title }, headers: adminKey ? { 'x-admin-key': adminKey } : {} }),
  snapshot: (idOrSlug) => call('GET', `/v1/sessions/${seg(idOrSlug)}`),
  startSession: (sessionId, token) => call('POST', `/v1/sessions/${seg(sessionId)}/start`, { token }),
  endSession: (sessionId, token) => call('POST', `/v1/sessions/${seg(sessionId)}/end`, { token }),
  createPoll: (sessionId, token, poll) => call('POST', `/v1/sessions/${seg(sessionId)}/polls`, { token, body: poll }),
  activatePoll: (pollId, token) => call('POST', `/v1/polls/${seg(pollId)}/activate`, { token }),
  closePoll: (pollId, token) => call('POST', `/v1/polls/${seg(pollId)}/close`, { token }),
  join: (code, displayName) =>
    call('POST', `/v1/sessions/${seg(code)}/participants`, { body: displayName ? { displayName } : {} }),
  vote: (pollId, token, voteData) =>
    call('POST', `/v1/polls/${seg(pollId)}/votes`, {
      token,
      body: { voteData, submittedAt: new Date().toISOString() },
    }),
};

/** A join code as typed: letters and digits only, lowercase. */
export function normalizeCode(raw) {
  return String(raw ?? '').replace(/[^A-Za-z0-9]/g, '').toLowerCase().slice(0, 32);
}

/** A session id from a URL, or null when it is not a UUID. */
export function parseSessionId(raw) {
  const id = String(raw ?? '').trim().toLowerCase();
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id) ? id : null;
}

// Tokens live in sessionStorage: per tab, so that several tabs of one
// browser are several participants, and a reload keeps the tab's role.
function read(key) {
  try {
    return JSON.parse(sessionStorage.getItem(key) ?? 'null');
  } catch {
    return null;
  }
}

function write(key, value) {
  sessionStorage.setItem(key, JSON.stringify(value));
}

export const tabStore = {
  presenter: (sessionId) => read(`pollcast:presenter:${sessionId}`),
  savePresenter: (session) => write(`pollcast:presenter:${session.sessionId}`, session),
  participant: (code) => read(`pollcast:participant:${code}`),
  saveParticipant: (code, participant) => write(`pollcast:participant:${code}`, participant),
  votedPolls: (participantId) => new Set(read(`pollcast:voted:${participantId}`) ?? []),
  saveVoted: (participantId, polls) => write(`pollcast:voted:${participantId}`, [...polls]),
};
