//! The live polling endpoints (CONTRACT §2): each handler parses and
//! authorizes the request, then hands one command or query to the polling
//! service, whose answer it returns as is.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use warp::reply::Response;

use super::error::ApiError;
use super::publish::idempotency_key;
use super::request::Body;
use super::request::{stored, RequestContext};
use super::server::ConnectionInfo;
use super::stream::{sse_response, start_point, EventStream, StartPoint};
use super::AppState;
use crate::auth::{Caller, Role};
use crate::domain::event::EventId;
use crate::domain::polling::events::{participant_topic, session_topic};
use crate::domain::polling::ids::{ParticipantId, PollId, PresenterId, SessionId, VoteId};
use crate::domain::polling::input::{display_name, required_text, PollDraft, PollInput, MAX_TITLE};
use crate::domain::topic::{Selector, TopicFilter};
use crate::polling::ops::{
    new_session, Actor, Joiner, Op, PollCommand, SessionCommand, SessionKey, VoteRequest,
};

/// What each POST route does, once its path is matched.
#[derive(Debug, Clone, Copy)]
pub enum SessionAction {
    Start,
    End,
    CreatePoll,
    Join,
}

#[derive(Debug, Clone, Copy)]
pub enum PollAction {
    Activate,
    Close,
    Vote,
}

#[derive(Debug, Clone, Copy)]
pub enum PollQuery {
    Results,
    Votes,
}

fn respond(ctx: &RequestContext, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

/// A JSON body, or `{}` when the request has none (start, end, activate…).
fn optional_json<T: serde::de::DeserializeOwned>(ctx: &RequestContext, body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return ctx.json(&Bytes::from_static(b"{}"));
    }
    ctx.require_json()?;
    ctx.json(body)
}

fn parse_session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw).map_err(ApiError::bad_request)
}

fn parse_poll_id(raw: &str) -> Result<PollId, ApiError> {
    PollId::parse(raw).map_err(ApiError::bad_request)
}

/// A session id, or a join code of letters and digits.
fn parse_session_key(raw: &str) -> Result<SessionKey, ApiError> {
    let key = SessionKey::parse(raw);
    if let SessionKey::Slug(slug) = &key {
        if slug.is_empty() || slug.len() > 32 || !slug.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ApiError::bad_request("give a session id (UUID) or its join code"));
        }
    }
    Ok(key)
}

/// The caller's polling role; generic tokens have none here.
fn role_of(caller: &Caller) -> Result<Role, ApiError> {
    caller
        .role
        .ok_or_else(|| ApiError::forbidden("this token is not a presenter or participant token"))
}

fn presenter_of(caller: &Caller) -> Result<(SessionId, PresenterId), ApiError> {
    match role_of(caller)? {
        Role::Presenter { session, presenter } => Ok((session, presenter)),
        Role::Participant { .. } => Err(ApiError::forbidden("only the session's presenter may do that")),
    }
}

fn route_of(ctx_path: &str) -> String {
    format!("POST {ctx_path}")
}

// ------------------------------------------------------------ sessions --

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSessionIn {
    title: String,
}

pub async fn create_session(state: AppState, ctx: RequestContext, body: Body) -> Response {
    let result = async {
        if let Some(required) = &state.polling.settings().admin_key {
            let given = ctx.header("x-admin-key").or_else(|| ctx.bearer(false).ok());
            if !given.is_some_and(|given| super::admin::same_secret(given, required)) {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "creating a session needs the admin key (X-Admin-Key)",
                ));
            }
        }
        ctx.require_json()?;
        let body = body.read().await?;
        let input: CreateSessionIn = ctx.json(&body)?;
        let title = required_text("title", &input.title, MAX_TITLE)
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        let idempotency = idempotency_key(&ctx, "anonymous", &route_of("/v1/sessions"), &body)?;
        let op = Op::CreateSession {
            session: new_session(title, crate::domain::event::now_millis()),
            keys: state.polling.keys().clone(),
        };
        Ok(stored(
            state.polling.execute(op, &ctx.trace_id, idempotency).await?,
        ))
    }
    .await;
    respond(&ctx, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JoinIn {
    #[serde(default)]
    display_name: Option<String>,
}

pub async fn session_action(
    action: SessionAction,
    raw_key: String,
    state: AppState,
    ctx: RequestContext,
    body: Body,
) -> Response {
    let result = async {
        // Normalized, so a retry by join code in other letters is the same request.
        let route = route_of(&format!(
            "/v1/sessions/{}/{action:?}",
            raw_key.to_ascii_lowercase()
        ));
        if let SessionAction::Join = action {
            let key = parse_session_key(&raw_key)?;
            let body = body.read().await?;
            let input: JoinIn = optional_json(&ctx, &body)?;
            let display_name = display_name(input.display_name.as_deref())
                .map_err(|e| ApiError::unprocessable(e.to_string()))?;
            let idempotency = idempotency_key(&ctx, "anonymous", &route, &body)?;
            let joiner = Joiner {
                key,
                participant_id: ParticipantId::new(),
                display_name,
                keys: Arc::clone(state.polling.keys()),
                trace_id: ctx.trace_id.clone(),
            };
            return Ok(stored(state.polling.join(joiner, idempotency).await?));
        }
        let caller = ctx.caller(&state.keys, false)?;
        let session_id = parse_session_id(&raw_key)?;
        let (token_session, presenter) = presenter_of(&caller)?;
        if token_session != session_id {
            return Err(ApiError::forbidden("this token belongs to another session"));
        }
        let body = body.read().await?;
        let command = match action {
            SessionAction::Start => {
                optional_json::<Empty>(&ctx, &body)?;
                SessionCommand::Start
            }
            SessionAction::End => {
                optional_json::<Empty>(&ctx, &body)?;
                SessionCommand::End
            }
            SessionAction::CreatePoll => {
                ctx.require_json()?;
                let input: PollInput = ctx.json(&body)?;
                let draft = PollDraft::parse(input).map_err(|e| ApiError::unprocessable(e.to_string()))?;
                SessionCommand::CreatePoll {
                    poll_id: PollId::new(),
                    draft,
                }
            }
            SessionAction::Join => unreachable!("handled above"),
        };
        let idempotency = idempotency_key(&ctx, &caller.identity, &route, &body)?;
        let op = Op::Session {
            session_id,
            presenter,
            command,
        };
        Ok(stored(
            state.polling.execute(op, &ctx.trace_id, idempotency).await?,
        ))
    }
    .await;
    respond(&ctx, result)
}

pub async fn get_session(raw_key: String, state: AppState, ctx: RequestContext) -> Response {
    let result = async {
        let key = parse_session_key(&raw_key)?;
        Ok(stored(
            state.polling.query(Op::Snapshot { key }, &ctx.trace_id).await?,
        ))
    }
    .await;
    respond(&ctx, result)
}

// --------------------------------------------------------------- polls --

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VoteIn {
    #[serde(default)]
    vote_data: Value,
    #[serde(default)]
    submitted_at: Option<String>,
    /// Accepted for clients that send the catalog's `vote:submitted`
    /// shape; must name the caller and the path's poll.
    #[serde(default)]
    participant_id: Option<String>,
    #[serde(default)]
    poll_id: Option<String>,
}

pub async fn poll_action(
    action: PollAction,
    raw_poll: String,
    state: AppState,
    ctx: RequestContext,
    body: Body,
) -> Response {
    let result = async {
        let caller = ctx.caller(&state.keys, false)?;
        let poll_id = parse_poll_id(&raw_poll)?;
        let route = route_of(&format!("/v1/polls/{poll_id}/{action:?}"));
        // Who may do what is decided from the head; the body only after.
        match (action, role_of(&caller)?) {
            (PollAction::Vote, Role::Presenter { .. }) => {
                return Err(ApiError::forbidden("only participants vote"))
            }
            (PollAction::Activate | PollAction::Close, Role::Participant { .. }) => {
                return Err(ApiError::forbidden("only the session's presenter may do that"))
            }
            _ => {}
        }
        let body = body.read().await?;
        // The key's syntax is checked after the token's role and the body,
        // in the documented order: a token with the wrong role is 403, not
        // 400, whatever key it sends.
        let command = match action {
            PollAction::Activate => PollCommand::Activate,
            PollAction::Close => PollCommand::Close,
            PollAction::Vote => {
                let request = vote_request(&state, &ctx, &caller, poll_id, &body)?;
                let idempotency = idempotency_key(&ctx, &caller.identity, &route, &body)?;
                let response = state.polling.vote(request, &ctx.trace_id, idempotency).await?;
                if response.status == StatusCode::CREATED.as_u16() {
                    state.polling.vote_committed(poll_id);
                }
                return Ok(stored(response));
            }
        };
        let (_, presenter) = presenter_of(&caller)?;
        optional_json::<Empty>(&ctx, &body)?;
        let idempotency = idempotency_key(&ctx, &caller.identity, &route, &body)?;
        let op = Op::Poll {
            poll_id,
            presenter,
            command,
        };
        let response = state.polling.execute(op, &ctx.trace_id, idempotency).await?;
        Ok(stored(response))
    }
    .await;
    respond(&ctx, result)
}

fn vote_request(
    state: &AppState,
    ctx: &RequestContext,
    caller: &Caller,
    poll_id: PollId,
    body: &Bytes,
) -> Result<VoteRequest, ApiError> {
    let (session_id, participant_id) = match role_of(caller)? {
        Role::Participant { session, participant } => (session, participant),
        Role::Presenter { .. } => return Err(ApiError::forbidden("only participants vote")),
    };
    if let Err(wait) = state.polling.take_vote_budget(participant_id) {
        return Err(ApiError::rate_limited("too many votes; slow down", wait));
    }
    ctx.require_json()?;
    let input: VoteIn = ctx.json(body)?;
    if input
        .participant_id
        .as_deref()
        .is_some_and(|p| p != participant_id.to_string())
    {
        return Err(ApiError::forbidden("a participant votes only as itself"));
    }
    if input
        .poll_id
        .as_deref()
        .is_some_and(|p| PollId::parse(p) != Ok(poll_id))
    {
        return Err(ApiError::unprocessable(
            "pollId: does not match the poll in the path",
        ));
    }
    let client_submitted_at = match input.submitted_at.as_deref() {
        None => None,
        Some(raw) => Some(
            chrono::DateTime::parse_from_rfc3339(raw)
                .map_err(|_| ApiError::unprocessable("submittedAt: must be an RFC 3339 timestamp"))?
                .with_timezone(&chrono::Utc),
        ),
    };
    Ok(VoteRequest {
        vote_id: VoteId::new(),
        session_id,
        participant_id,
        poll_id,
        vote_data: input.vote_data,
        client_submitted_at,
    })
}

pub async fn poll_query(
    query: PollQuery,
    raw_poll: String,
    state: AppState,
    ctx: RequestContext,
) -> Response {
    let result = async {
        let caller = ctx.caller(&state.keys, true)?;
        let poll_id = parse_poll_id(&raw_poll)?;
        let op = match query {
            PollQuery::Results => {
                let actor = match role_of(&caller)? {
                    Role::Presenter { session, presenter } => Actor::Presenter(session, presenter),
                    Role::Participant { session, participant } => Actor::Participant(session, participant),
                };
                Op::Results { poll_id, actor }
            }
            PollQuery::Votes => Op::Votes {
                poll_id,
                presenter: presenter_of(&caller)?,
            },
        };
        Ok(stored(state.polling.query(op, &ctx.trace_id).await?))
    }
    .await;
    respond(&ctx, result)
}

// -------------------------------------------------------------- stream --

/// `GET /v1/sessions/{id}/events`: the session's topic, plus the caller's
/// own topic with a participant token. No token is needed to watch.
pub async fn session_stream(
    raw_session: String,
    state: AppState,
    ctx: RequestContext,
    closer: Option<ConnectionInfo>,
) -> Response {
    match open_session_stream(&raw_session, &state, &ctx, closer.map(|c| c.closer)).await {
        Ok(stream) => sse_response(stream),
        Err(refusal) => refusal,
    }
}

/// Whether a client reconnecting to an ended session has events it has
/// not seen (its `session:ended` among them): a fresh client, or one whose
/// last event is the latest, has not.
async fn missed_anything(state: &AppState, start: &StartPoint, filter: &TopicFilter) -> bool {
    let StartPoint::After(last) = start else {
        return false;
    };
    match state.store.read_range(*last, EventId::MAX, filter, 1).await {
        Ok(events) => !events.is_empty(),
        // Unsure: serve the stream, which replays whatever there is.
        Err(_) => true,
    }
}

/// Authorizes a session stream request and opens its stream, or renders
/// why not (401/403/404/503…).
pub async fn open_session_stream(
    raw_session: &str,
    state: &AppState,
    ctx: &RequestContext,
    on_slow: Option<CancellationToken>,
) -> Result<EventStream, Response> {
    let result = async {
        let session_id = parse_session_id(raw_session)?;
        let caller = match ctx.bearer(true) {
            Err(crate::auth::AuthError::Missing) => None,
            _ => {
                let caller = ctx.caller(&state.keys, true)?;
                if role_of(&caller)?.session() != session_id {
                    return Err(ApiError::forbidden("this token belongs to another session"));
                }
                Some(caller)
            }
        };
        let role = caller.as_ref().and_then(|c| c.role);
        let exists = state
            .polling
            .query(Op::SessionExists { session_id }, &ctx.trace_id)
            .await;
        let mut ended = false;
        if let Ok(response) = &exists {
            if response.status == StatusCode::NOT_FOUND.as_u16() {
                return Ok(Err(stored(response.clone())));
            }
            ended = serde_json::from_str::<Value>(&response.body).is_ok_and(|body| body["status"] == "ended");
        }
        let start = start_point(ctx)?;
        let mut topics = vec![Selector::exact(&session_topic(session_id))];
        if let Some(Role::Participant { participant, .. }) = role {
            topics.push(Selector::exact(&participant_topic(participant)));
        }
        let filter = TopicFilter::new(topics, None);
        if ended && !missed_anything(state, &start, &filter).await {
            // Over, and the client has seen its end: 204 tells EventSource
            // to stop reconnecting.
            let mut response = Response::new(Default::default());
            *response.status_mut() = StatusCode::NO_CONTENT;
            return Ok(Err(response));
        }
        let permit = super::stream::address_permit(state, ctx)?;
        let guard = match role {
            Some(Role::Participant { participant, .. }) if !ended => {
                Some(state.polling.presence().opened(session_id, participant))
            }
            _ => None,
        };
        let snapshot_url = format!("/v1/sessions/{session_id}");
        let token = caller.as_ref().map(|c| &c.token);
        Ok(Ok(EventStream::new(
            state,
            filter,
            start,
            snapshot_url,
            on_slow,
            token,
        )
        .with_presence(guard)
        .with_permit(permit)
        .ending_with_session(session_topic(session_id), ended)))
    }
    .await;
    match result {
        Ok(opened) => opened,
        Err(error) => Err(error.into_response(&ctx.trace_id)),
    }
}
