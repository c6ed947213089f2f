//! The live polling endpoints (CONTRACT §2): each handler parses and
//! authorizes the request from its head, reads its body, runs one command
//! or query of the polling service, and renders the outcome (`render`).
//! The session stream is in `stream`.

pub mod export;
mod parse;
mod presenters;
pub mod qr;
mod render;
mod stream;

pub use stream::{open_session_stream, session_stream};

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use warp::reply::Response;

use super::error::ApiError;
use super::idempotency::{idempotency_key, replayed};
use super::request::{Body, RequestContext};
use super::routes::{PollAction, PollQuery, SessionAction};
use super::state::AppState;
use crate::auth::{Caller, Role};
use crate::domain::polling::ids::{ParticipantId, PollId, VoteId};
use crate::domain::polling::input::{
    display_name, required_text, PollDraft, PollDuration, PollInput, MAX_TEXT_ANSWER, MAX_TITLE,
};
use crate::domain::polling::model::{Poll, Session};
use crate::polling::join::Joiner;
use crate::polling::outcome::{Joined, Refusal};
use crate::polling::poll::{MovePoll, PollMove};
use crate::polling::queries::{GetResults, GetSnapshot, GetVoters};
use crate::polling::session::{CreatePoll, CreateSession, MoveSession, Transition};
use crate::polling::vote::{Ballot, VoteRequest};
use crate::polling::{new_session, Actor, Stamp};
use crate::store::{Answer, Idempotent};
use parse::{
    optional_json, parse_poll_id, parse_session_id, parse_session_key, presenter_of, role_of, Empty,
};
use render::Rendered;

pub use export::export;
pub use presenters::invite_presenter;
pub use qr::join_qr;

/// A store answer as a response: a fresh outcome rendered, a replayed one
/// as it was kept, a reused key refused.
fn answered<O>(
    answer: Answer<O>,
    fresh: impl FnOnce(O) -> Response,
    trace_id: &crate::domain::event::TraceId,
) -> Response {
    match answer {
        Answer::Fresh(outcome) => fresh(outcome),
        Answer::Replayed(remembered) => replayed(remembered),
        Answer::KeyReused => {
            ApiError::conflict("this Idempotency-Key was already used with a different request")
                .into_response(trace_id)
        }
    }
}

fn respond(ctx: &RequestContext, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|error| error.into_response(&ctx.trace_id))
}

fn route_of(ctx_path: &str) -> String {
    format!("POST {ctx_path}")
}

/// An Idempotency-Key of the request, if it has one, keeping what `render`
/// makes of a successful outcome.
fn idempotent<T: 'static>(
    ctx: &RequestContext,
    identity: &str,
    route: &str,
    body: &[u8],
    render: impl Fn(&T) -> Rendered + Send + Sync + 'static,
) -> Result<Option<Idempotent<crate::polling::outcome::Outcome<T>>>, ApiError> {
    Ok(
        idempotency_key(ctx, identity, route, body)?.map(|key| Idempotent {
            key,
            remember: render::remember(render),
        }),
    )
}

// ------------------------------------------------------------ sessions --

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSessionIn {
    title: String,
}

/// `POST /v1/sessions`
pub async fn create_session(state: AppState, ctx: RequestContext, body: Body) -> Response {
    let result = async {
        if state.admin_key.is_some() {
            super::admin::require_admin(&state, &ctx).map_err(|_| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "creating a session needs the admin key (X-Admin-Key)",
                )
            })?;
        }
        ctx.require_json()?;
        let body = body.read().await?;
        let input: CreateSessionIn = ctx.json(&body)?;
        let title = required_text("title", &input.title, MAX_TITLE)
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        let keys = std::sync::Arc::clone(&state.keys);
        let public_url = state.public_url.clone();
        let render = move |session: &Session| render::session_created(session, &keys, public_url.as_ref());
        let idempotency = idempotent(
            &ctx,
            "anonymous",
            &route_of("/v1/sessions"),
            &body,
            render.clone(),
        )?;
        let stamp = Stamp::new(ctx.trace_id.clone());
        let command = CreateSession {
            session: new_session(title, stamp.at),
            stamp,
        };
        let answer = state.polling.execute(command, idempotency).await?;
        Ok(answered(
            answer,
            |o| render::outcome(&o, render, &ctx.trace_id),
            &ctx.trace_id,
        ))
    }
    .await;
    respond(&ctx, result)
}

/// The body of `POST /v1/polls/{id}/hidden-answers`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HideIn {
    text: String,
}

/// The body of `POST /v1/polls/{id}/activate` (optional).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ActivateIn {
    #[serde(default)]
    duration_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JoinIn {
    #[serde(default)]
    display_name: Option<String>,
}

/// `POST /v1/sessions/{id}/start`, `/end`, `/polls`, and
/// `POST /v1/sessions/{idOrCode}/participants`
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
            "/v1/sessions/{}/{}",
            raw_key.to_ascii_lowercase(),
            action.fingerprint_name()
        ));
        if let SessionAction::Join = action {
            return join(&state, &ctx, &raw_key, &route, body).await;
        }
        let caller = ctx.caller(&state.keys, false)?;
        let session_id = parse_session_id(&raw_key)?;
        let (token_session, presenter) = presenter_of(&caller)?;
        if token_session != session_id {
            return Err(ApiError::forbidden("this token belongs to another session"));
        }
        let body = body.read().await?;
        let stamp = Stamp::new(ctx.trace_id.clone());
        let trace_id = &ctx.trace_id;
        let response = match action {
            SessionAction::Start | SessionAction::End => {
                optional_json::<Empty>(&ctx, &body)?;
                let to = match action {
                    SessionAction::Start => Transition::Start,
                    _ => Transition::End,
                };
                let idempotency = idempotent(&ctx, &caller.identity, &route, &body, render::session_view)?;
                let command = MoveSession {
                    session_id,
                    presenter,
                    to,
                    stamp,
                };
                let answer = state.polling.execute(command, idempotency).await?;
                answered(
                    answer,
                    |o| render::outcome(&o, render::session_view, trace_id),
                    trace_id,
                )
            }
            SessionAction::CreatePoll => {
                ctx.require_json()?;
                let input: PollInput = ctx.json(&body)?;
                let draft = PollDraft::parse(input).map_err(|e| ApiError::unprocessable(e.to_string()))?;
                let created = |poll: &Poll| render::poll(poll, StatusCode::CREATED);
                let idempotency = idempotent(&ctx, &caller.identity, &route, &body, created)?;
                let command = CreatePoll {
                    session_id,
                    presenter,
                    poll_id: PollId::new(),
                    draft,
                    stamp,
                };
                let answer = state.polling.execute(command, idempotency).await?;
                answered(answer, |o| render::outcome(&o, created, trace_id), trace_id)
            }
            SessionAction::Join => unreachable!("handled above"),
        };
        Ok(response)
    }
    .await;
    respond(&ctx, result)
}

/// `POST /v1/sessions/{idOrCode}/participants`: no token, the join code is
/// the invitation.
async fn join(
    state: &AppState,
    ctx: &RequestContext,
    raw_key: &str,
    route: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let key = parse_session_key(raw_key)?;
    let body = body.read().await?;
    let input: JoinIn = optional_json(ctx, &body)?;
    let display_name =
        display_name(input.display_name.as_deref()).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let keys = std::sync::Arc::clone(&state.keys);
    let render = move |joined: &Joined| render::joined(joined, &keys);
    let idempotency = idempotent(ctx, "anonymous", route, &body, render.clone())?;
    let joiner = Joiner {
        key,
        participant_id: ParticipantId::new(),
        display_name,
        trace_id: ctx.trace_id.clone(),
    };
    let answer = state.polling.join(joiner, idempotency).await?;
    Ok(answered(
        answer,
        |o| render::outcome(&o, render, &ctx.trace_id),
        &ctx.trace_id,
    ))
}

/// `GET /v1/sessions/{idOrCode}`
pub async fn get_session(raw_key: String, state: AppState, ctx: RequestContext) -> Response {
    let result = async {
        let key = parse_session_key(&raw_key)?;
        // A token is optional: with one, the caller sees what its role may
        // (a presenter every result, a participant its own votes).
        // A token, when sent, must be valid and of this session (checked
        // once the session is found), as on the session's stream.
        let viewer = match ctx.bearer(true) {
            Err(crate::auth::AuthError::Missing) => None,
            _ => {
                let caller = ctx.caller(&state.keys, true)?;
                Some(actor_of(role_of(&caller)?))
            }
        };
        let stamp = Stamp::new(ctx.trace_id.clone());
        let query = GetSnapshot { key, viewer, stamp };
        let snapshot = state.polling.query(query).await?;
        let public_url = state.public_url.as_ref();
        let storage = state.store.kind();
        if matches!(snapshot, Err(Refusal::NotFound(_))) && state.store.kind() == "memory" {
            // The likeliest reason on the memory store, said plainly.
            return Err(ApiError::not_found(
                "no such session: this server keeps sessions in memory only (no --database-url), \
                 so a restart since the session was created has lost it",
            ));
        }
        if let (Ok(found), Some(Actor::Presenter(session, _) | Actor::Participant(session, _))) =
            (&snapshot, viewer)
        {
            if found.session.id != session {
                return Err(ApiError::forbidden("this token belongs to another session"));
            }
        }
        Ok(render::outcome(
            &snapshot,
            |s| render::snapshot(s, public_url, storage),
            &ctx.trace_id,
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

/// `POST /v1/polls/{id}/activate`, `/close`, `/votes`
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
        let route = route_of(&format!("/v1/polls/{poll_id}/{}", action.fingerprint_name()));
        // Who may do what is decided from the head; the body only after.
        match (action, role_of(&caller)?) {
            (PollAction::Vote, Role::Presenter { .. }) => {
                return Err(ApiError::forbidden("only participants vote"))
            }
            (
                PollAction::Activate | PollAction::Close | PollAction::Reveal | PollAction::HideAnswer,
                Role::Participant { .. },
            ) => return Err(ApiError::forbidden("only the session's presenter may do that")),
            _ => {}
        }
        let body = body.read().await?;
        let trace_id = &ctx.trace_id;
        // The key's syntax is checked after the token's role and the body,
        // in the documented order: a token with the wrong role is 403, not
        // 400, whatever key it sends.
        let to = match action {
            PollAction::Activate => {
                let ActivateIn { duration_seconds } = optional_json(&ctx, &body)?;
                let duration = duration_seconds
                    .map(PollDuration::parse)
                    .transpose()
                    .map_err(|e| ApiError::unprocessable(e.to_string()))?;
                PollMove::Activate { duration }
            }
            PollAction::Close => PollMove::Close,
            PollAction::Reveal => PollMove::Reveal,
            PollAction::HideAnswer => {
                ctx.require_json()?;
                let HideIn { text } = ctx.json(&body)?;
                let answer = required_text("text", &text, MAX_TEXT_ANSWER)
                    .map_err(|e| ApiError::unprocessable(e.to_string()))?;
                PollMove::HideAnswer { answer }
            }
            PollAction::Vote => {
                let request = vote_request(&state, &ctx, &caller, poll_id, &body)?;
                let idempotency = idempotent(&ctx, &caller.identity, &route, &body, render::accepted)?;
                let ballot = Ballot {
                    request,
                    trace_id: ctx.trace_id.clone(),
                };
                let answer = state.polling.vote(ballot, idempotency).await?;
                return Ok(answered(
                    answer,
                    |o| render::outcome(&o, render::accepted, trace_id),
                    trace_id,
                ));
            }
        };
        let (_, presenter) = presenter_of(&caller)?;
        if matches!(to, PollMove::Close | PollMove::Reveal) {
            optional_json::<Empty>(&ctx, &body)?;
        }
        let moved = |poll: &Poll| render::poll(poll, StatusCode::OK);
        let idempotency = idempotent(&ctx, &caller.identity, &route, &body, moved)?;
        let timed = matches!(to, PollMove::Activate { duration: Some(_) });
        let hid = matches!(to, PollMove::HideAnswer { .. });
        let command = MovePoll {
            poll_id,
            presenter,
            to,
            stamp: Stamp::new(ctx.trace_id.clone()),
        };
        let answer = state.polling.execute(command, idempotency).await?;
        if timed {
            state.polling.timed_poll_opened();
        }
        if hid && matches!(answer, Answer::Fresh(Ok(_))) {
            // The results change without a vote: broadcast them again.
            state.polling.results_changed(poll_id);
        }
        Ok(answered(
            answer,
            |o| render::outcome(&o, moved, trace_id),
            trace_id,
        ))
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

fn actor_of(role: Role) -> Actor {
    match role {
        Role::Presenter { session, presenter } => Actor::Presenter(session, presenter),
        Role::Participant { session, participant } => Actor::Participant(session, participant),
    }
}

/// `GET /v1/polls/{id}/results` and `GET /v1/polls/{id}/votes`
pub async fn poll_query(
    query: PollQuery,
    raw_poll: String,
    state: AppState,
    ctx: RequestContext,
) -> Response {
    let result = async {
        let caller = ctx.caller(&state.keys, true)?;
        let poll_id = parse_poll_id(&raw_poll)?;
        let stamp = Stamp::new(ctx.trace_id.clone());
        let response = match query {
            PollQuery::Results => {
                let actor = actor_of(role_of(&caller)?);
                let results = state
                    .polling
                    .query(GetResults {
                        poll_id,
                        actor,
                        stamp,
                    })
                    .await?;
                render::outcome(&results, render::results, &ctx.trace_id)
            }
            PollQuery::Votes => {
                let (session_id, presenter) = presenter_of(&caller)?;
                let query = GetVoters {
                    poll_id,
                    session_id,
                    presenter,
                    stamp,
                };
                let voters = state.polling.query(query).await?;
                render::outcome(&voters, render::voters, &ctx.trace_id)
            }
        };
        Ok(response)
    }
    .await;
    respond(&ctx, result)
}
