// REST calls to pollcast and the browser-side storage of tokens.
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
  /** With a token the server answers for that caller: full results for a presenter, `myVote` for a participant. */
  snapshot: (idOrSlug, token) => call('GET', `/v1/sessions/${seg(idOrSlug)}`, { token }),
  startSession: (sessionId, token) => call('POST', `/v1/sessions/${seg(sessionId)}/start`, { token }),
  endSession: (sessionId, token) => call('POST', `/v1/sessions/${seg(sessionId)}/end`, { token }),
  invitePresenter: (sessionId, token) => call('POST', `/v1/sessions/${seg(sessionId)}/presenters`, { token }),
  createPoll: (sessionId, token, poll) => call('POST', `/v1/sessions/${seg(sessionId)}/polls`, { token, body: poll }),
  activatePoll: (pollId, token, durationSeconds) =>
    call('POST', `/v1/polls/${seg(pollId)}/activate`, { token, body: durationSeconds ? { durationSeconds } : undefined }),
  closePoll: (pollId, token) => call('POST', `/v1/polls/${seg(pollId)}/close`, { token }),
  revealPoll: (pollId, token) => call('POST', `/v1/polls/${seg(pollId)}/reveal`, { token }),
  /** Hides an open-text answer (and its case/spacing variants) from every result. */
  hideAnswer: (pollId, token, text) =>
    call('POST', `/v1/polls/${seg(pollId)}/hidden-answers`, { token, body: { text } }),
  /** A poll's results for this caller; 403 `results_withheld` while it may not see them. */
  results: (pollId, token) => call('GET', `/v1/polls/${seg(pollId)}/results`, { token }),
  join: (code, displayName) =>
    call('POST', `/v1/sessions/${seg(code)}/participants`, { body: displayName ? { displayName } : {} }),
  vote: (pollId, token, voteData) =>
    call('POST', `/v1/polls/${seg(pollId)}/votes`, {
      token,
      body: { voteData, submittedAt: new Date().toISOString() },
    }),
};

/**
 * Downloads a file that needs the Authorization header (a plain link cannot
 * send one): fetch it, then save the Blob under the server's file name.
 */
export async function downloadWithToken(path, token, fallbackName) {
  let response;
  try {
    response = await fetch(path, { headers: { authorization: `Bearer ${token}` }, cache: 'no-store' });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached right now. Try again in a moment.');
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, body?.error?.code ?? `http_${response.status}`, body?.error?.message ?? 'download failed');
  }
  const disposition = response.headers.get('content-disposition') ?? '';
  const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement('a'), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return name;
}

/** A join code as typed: letters and digits only, lowercase. */
export function normalizeCode(raw) {
  return String(raw ?? '').replace(/[^A-Za-z0-9]/g, '').toLowerCase().slice(0, 32);
}

/** A session id from a URL, or null when it is not a UUID. */
export function parseSessionId(raw) {
  const id = String(raw ?? '').trim().toLowerCase();
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id) ? id : null;
}

// Participant tokens live in sessionStorage: per tab, so that several tabs
// of one browser are several participants, and a reload keeps the tab's role.
function read(storage, key) {
  try {
    return JSON.parse(storage.getItem(key) ?? 'null');
  } catch {
    return null;
  }
}

function write(storage, key, value) {
  try {
    storage.setItem(key, JSON.stringify(value));
  } catch {
    /* storage full or disabled: the page still works until it is closed */
  }
}

export const tabStore = {
  participant: (code) => read(sessionStorage, `pollcast:participant:${code}`),
  saveParticipant: (code, participant) => write(sessionStorage, `pollcast:participant:${code}`, participant),
  forgetParticipant: (code) => sessionStorage.removeItem(`pollcast:participant:${code}`),
  votedPolls: (participantId) => new Set(read(sessionStorage, `pollcast:voted:${participantId}`) ?? []),
  saveVoted: (participantId, polls) => write(sessionStorage, `pollcast:voted:${participantId}`, [...polls]),
};

// The presenter key (the presenter token) lives in localStorage under
// `pollcast:presenter:<sessionId>` as {token}: every tab and window of the
// browser shares it (the screen view reads it too), and it outlives the tab
// that created the session. Older pages kept it per tab in sessionStorage
// under the same key; it is still read from there.
const presenterKey = (sessionId) => `pollcast:presenter:${sessionId}`;

export const presenterStore = {
  token(sessionId) {
    const stored = read(localStorage, presenterKey(sessionId)) ?? read(sessionStorage, presenterKey(sessionId));
    return typeof stored?.token === 'string' && stored.token ? stored.token : null;
  },
  save(sessionId, token) {
    write(localStorage, presenterKey(sessionId), { token });
  },
  forget(sessionId) {
    localStorage.removeItem(presenterKey(sessionId));
    sessionStorage.removeItem(presenterKey(sessionId));
  },
};

/** The presenter key in a pasted presenter link (`…#key=…`) or the key itself. */
export function keyFromPaste(raw) {
  const text = String(raw ?? '').trim();
  const inLink = /[#&?]key=([^&\s]+)/.exec(text);
  const key = inLink ? decodeURIComponent(inLink[1]) : text;
  return /^[A-Za-z0-9_.-]{20,}$/.test(key) ? key : null;
}
