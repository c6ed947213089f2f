"""schemathesis hooks for scripts/schemathesis.sh: every request carries the
token that its ids call for.

pollcast's live-polling commands take the presenter or participant token of
the session they name (by its id, or by one of its polls), so a fixed token
per operation only fits the fixture sessions. Tokens here follow the ids:

- `after_call` learns from the answers: the presenter token of each session
  created, the first participant token of each session joined, the session
  of each poll created, opened or closed;
- the auth provider gives each request the token of the session its path
  names (sessionId, or pollId through the poll's session): a presenter
  token for presenter commands, a participant token (else the presenter's)
  for votes, results and the session stream; the generic token for the
  topic operations; for ids nobody answered with (random ones), the
  operation's fixture token, so that the request still gets past the role
  check to its 404; endSession on a session to keep gets that fallback
  too, so that it fails. A token the request already carries and that pollcast
  issued in this run is kept: an OpenAPI link of the stateful phase brought
  it (createSession and joinSession answer with one);
- createSession and the admin operations get the server's admin key
  (`X-Admin-Key`). Their generated `jti`, `sub` and connection ids are
  random, so a revocation never names a fixture token and an admin close
  never ends a fixture stream.

Why not `headers = { Authorization = ... }` per operation in the
configuration: schemathesis 4.32 builds one HTTP session per worker thread
with the headers of the first operation it sends, and those headers then go
with every request of that thread, overriding the tokens that links bring.
And why not `[auth.openapi.*]` for the admin key: any auth in the
configuration makes schemathesis drop the auth registered here.

The fixtures come from the JSON file named by POLLCAST_SCHEMATHESIS_TOKENS:
{"admin_key": key, "generic": token, "fallback": {operationId: token},
 "presenters": {sessionId: token}, "participants": {sessionId: token},
 "polls": {pollId: sessionId}, "keep": [sessionId]}.
"""

import json
import os
import threading

import schemathesis

with open(os.environ["POLLCAST_SCHEMATHESIS_TOKENS"], encoding="utf-8") as _file:
    _fixtures = json.load(_file)

_lock = threading.Lock()
_admin_key = _fixtures["admin_key"]
_generic = _fixtures["generic"]
_fallback = _fixtures["fallback"]
_presenters = dict(_fixtures["presenters"])
_participants = dict(_fixtures["participants"])
_polls = dict(_fixtures["polls"])
_keep = set(_fixtures["keep"])
_issued = set(_presenters.values()) | set(_participants.values())

_TOPIC_OPERATIONS = {
    "publishEvent", "publishEvents", "listEvents", "streamEvents", "joinTopic", "leaveTopic",
    "getPresence", "presenceHeartbeat",
}
_PRESENTER_OPERATIONS = {
    "startSession", "endSession", "createPoll", "activatePoll", "closePoll", "listVotes",
    "revealPollResults", "hidePollAnswer", "invitePresenter", "exportSessionJson",
    "exportSessionCsv",
}
_PARTICIPANT_OPERATIONS = {"submitVote", "getPollResults", "streamSession"}
_POLL_ANSWERS = {"createPoll", "activatePoll", "closePoll"}
_ADMIN_OPERATIONS = {"createSession", "revokeTokens", "listRevocations", "closeConnection"}
# The admin console's operations.
_ADMIN_OPERATIONS |= {"adminNodes", "adminConnections", "adminTail", "adminPublish"}
# Webhooks.
_ADMIN_OPERATIONS |= {
    "createWebhook", "listWebhooks", "getWebhook", "updateWebhook", "deleteWebhook", "replayWebhook",
}


def _operation_id(case):
    return case.operation.definition.raw.get("operationId")


@schemathesis.hook
def after_call(context, case, response):
    operation = _operation_id(case)
    if operation not in ("createSession", "joinSession") and operation not in _POLL_ANSWERS:
        return
    if response.status_code not in (200, 201):
        return
    try:
        body = response.json()
        session = body["sessionId"]
    except (ValueError, TypeError, KeyError):
        return
    with _lock:
        if operation == "createSession":
            _presenters[session] = body["presenterToken"]
            _issued.add(body["presenterToken"])
        elif operation == "joinSession":
            _participants.setdefault(session, body["participantToken"])
            _issued.add(body["participantToken"])
        else:
            _polls[body["pollId"]] = session


def _carried_token(case):
    for name, value in (case.headers or {}).items():
        if name.lower() == "authorization" and isinstance(value, str):
            return value.removeprefix("Bearer ")
    return None


def _session_of(case):
    path = case.path_parameters or {}
    session = path.get("sessionId")
    if isinstance(session, str):
        return session
    poll = path.get("pollId")
    return _polls.get(poll) if isinstance(poll, str) else None


@schemathesis.auth(refresh_interval=None)
class SessionTokens:
    """Gives the header to send, as (name, value), or None to send none."""

    def get(self, case, context):
        operation = _operation_id(case)
        if operation in _ADMIN_OPERATIONS:
            return ("X-Admin-Key", _admin_key)
        if operation in _TOPIC_OPERATIONS:
            return ("Authorization", f"Bearer {_generic}")
        if operation not in _PRESENTER_OPERATIONS and operation not in _PARTICIPANT_OPERATIONS:
            return None  # no token needed (getSession, joinSession, operator endpoints)
        with _lock:
            carried = _carried_token(case)
            if carried in _issued:
                # Given back rather than left alone, so that schemathesis takes
                # it for configured auth, not for a random one.
                return ("Authorization", f"Bearer {carried}")
            session = _session_of(case)
            if operation == "endSession" and session in _keep:
                token = None
            elif operation in _PRESENTER_OPERATIONS:
                token = _presenters.get(session)
            else:
                token = _participants.get(session) or _presenters.get(session)
        return ("Authorization", f"Bearer {token or _fallback[operation]}")

    def set(self, case, data, context):
        name, value = data
        if case.headers is None:
            case.headers = {}
        case.headers[name] = value
