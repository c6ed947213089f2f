//! Live polling commands and queries, each run inside one store
//! transaction: load the state the rules need, `decide`, write the change,
//! and return the events with the HTTP answer. Because they run in the
//! writer's batch under the log lock, no two commands ever interleave.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::TokenKeys;
use crate::domain::event::{format_timestamp, NewEvent, TraceId};
use crate::domain::polling::events::{error_general, results_broadcast, vote_rejected};
use crate::domain::polling::ids::{ParticipantId, PollId, PresenterId, SessionId, VoteId};
use crate::domain::polling::input::PollDraft;
use crate::domain::polling::model::{Participant, Poll, PollStatus, Session, SessionStatus, Vote};
use crate::domain::polling::{decide, Command, DomainEvent, RejectReason, Rejection, State};
use crate::error::ApiError;
use crate::store::polling::{BallotReads, PollingTx, PresenceConnection, Voters};
use crate::store::{CommandOutput, StoreError, StoredResponse, TxCommand};

/// Open-text answers carried in a results broadcast (GET results has all).
pub const BROADCAST_TEXTS: usize = 50;
const ALL_TEXTS: usize = 100_000;

/// How a client names a session: by id or by its join code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionKey {
    Id(SessionId),
    Slug(String),
}

impl SessionKey {
    pub fn parse(raw: &str) -> Self {
        match SessionId::parse(raw) {
            Ok(id) => SessionKey::Id(id),
            Err(_) => SessionKey::Slug(raw.to_ascii_lowercase()),
        }
    }
}

/// Who is asking, as far as live polling cares.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    Presenter(SessionId, PresenterId),
    Participant(SessionId, ParticipantId),
}

pub enum Op {
    CreateSession {
        session: Session,
        keys: Arc<TokenKeys>,
    },
    Session {
        session_id: SessionId,
        presenter: PresenterId,
        command: SessionCommand,
    },
    Poll {
        poll_id: PollId,
        presenter: PresenterId,
        command: PollCommand,
    },
    Join(Joiner),
    /// Many joins decided and recorded together (see `join_batch`).
    JoinBatch {
        joiners: Vec<Joiner>,
        answers: BatchAnswers,
    },
    Vote(VoteRequest),
    /// Many votes decided and recorded together (see `vote_batch`).
    VoteBatch {
        ballots: Vec<Ballot>,
        answers: BatchAnswers,
    },
    EmitResults {
        poll_id: PollId,
    },
    StreamOpened(PresenceConnection),
    StreamClosed {
        connection_id: Uuid,
    },
    GraceExpired {
        participant_id: ParticipantId,
    },
    /// A node's heartbeat: keep its stream rows alive, expire those of
    /// nodes that stopped, and mark their participants absent.
    PresenceSweep {
        node_id: Uuid,
        ttl: chrono::Duration,
    },
    Snapshot {
        key: SessionKey,
    },
    SessionExists {
        session_id: SessionId,
    },
    Results {
        poll_id: PollId,
        actor: Actor,
    },
    Votes {
        poll_id: PollId,
        presenter: (SessionId, PresenterId),
    },
}

pub enum SessionCommand {
    Start,
    End,
    CreatePoll { poll_id: PollId, draft: PollDraft },
}

pub enum PollCommand {
    Activate,
    Close,
}

#[derive(Clone)]
pub struct VoteRequest {
    pub vote_id: VoteId,
    pub session_id: SessionId,
    pub participant_id: ParticipantId,
    pub poll_id: PollId,
    pub vote_data: Value,
    pub client_submitted_at: Option<DateTime<Utc>>,
}

/// An op plus the request's trace id and time.
pub struct Traced {
    pub op: Op,
    pub trace_id: TraceId,
    pub at: DateTime<Utc>,
}

type R<T> = Result<T, StoreError>;

/// Either the answer is decided (an error or a rejection), or the work
/// goes on; `?` on an `Answer` short-circuits with the response.
enum Stop {
    Answer(CommandOutput),
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

struct Ctx<'a> {
    tx: &'a mut dyn PollingTx,
    trace_id: TraceId,
    at: DateTime<Utc>,
}

impl Ctx<'_> {
    fn fail(&self, error: ApiError) -> Stop {
        Stop::Answer(CommandOutput::answer(error.to_stored(&self.trace_id)))
    }

    fn events(&self, events: &[DomainEvent]) -> Vec<NewEvent> {
        events
            .iter()
            .map(|e| e.to_new_event(&self.trace_id, None))
            .collect()
    }
}

fn json_response(status: StatusCode, body: Value) -> StoredResponse {
    StoredResponse {
        status: status.as_u16(),
        body: body.to_string(),
    }
}

fn answer_with(events: Vec<NewEvent>, status: StatusCode, body: Value) -> CommandOutput {
    let response = json_response(status, body);
    CommandOutput {
        events,
        respond: Box::new(move |_| response),
    }
}

fn conflict_of(rejection: Rejection) -> ApiError {
    match rejection {
        Rejection::Conflict(message) => ApiError::conflict(message),
        Rejection::Vote { reason, message } => {
            let status = if reason.is_content() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::CONFLICT
            };
            ApiError::new(status, reason.as_str(), message)
        }
    }
}

#[async_trait]
impl TxCommand for Traced {
    async fn run(self: Box<Self>, tx: &mut dyn PollingTx) -> R<CommandOutput> {
        let Traced { op, trace_id, at } = *self;
        let mut ctx = Ctx { tx, trace_id, at };
        let result = match op {
            Op::CreateSession { session, keys } => create_session(&mut ctx, session, &keys).await,
            Op::Session {
                session_id,
                presenter,
                command,
            } => session_command(&mut ctx, session_id, presenter, command).await,
            Op::Poll {
                poll_id,
                presenter,
                command,
            } => poll_command(&mut ctx, poll_id, presenter, command).await,
            Op::Join(joiner) => join_batch(&mut ctx, vec![joiner]).await.map(lone_output),
            Op::JoinBatch { joiners, answers } => join_batch(&mut ctx, joiners)
                .await
                .map(|decided| batch_output(decided, &answers)),
            Op::Vote(request) => {
                let trace_id = ctx.trace_id.clone();
                vote_batch(&mut ctx, vec![Ballot { request, trace_id }])
                    .await
                    .map(lone_output)
            }
            Op::VoteBatch { ballots, answers } => vote_batch(&mut ctx, ballots)
                .await
                .map(|decided| batch_output(decided, &answers)),
            Op::EmitResults { poll_id } => emit_results(&mut ctx, poll_id).await,
            Op::StreamOpened(connection) => stream_opened(&mut ctx, connection).await,
            Op::StreamClosed { connection_id } => {
                ctx.tx.close_connection(connection_id).await?;
                Ok(CommandOutput::answer(json_response(StatusCode::OK, json!({}))))
            }
            Op::GraceExpired { participant_id } => grace_expired(&mut ctx, participant_id).await,
            Op::PresenceSweep { node_id, ttl } => presence_sweep(&mut ctx, node_id, ttl).await,
            Op::Snapshot { key } => snapshot(&mut ctx, key).await,
            Op::SessionExists { session_id } => load_session(&mut ctx, &SessionKey::Id(session_id))
                .await
                .map(|session| {
                    CommandOutput::answer(json_response(
                        StatusCode::OK,
                        json!({ "status": session.status.as_str() }),
                    ))
                }),
            Op::Results { poll_id, actor } => results(&mut ctx, poll_id, actor).await,
            Op::Votes { poll_id, presenter } => votes(&mut ctx, poll_id, presenter).await,
        };
        match result {
            Ok(output) | Err(Stop::Answer(output)) => Ok(output),
            Err(Stop::Store(error)) => Err(error),
        }
    }

    /// A vote's outcome, accepted or not, is one event on its voter's
    /// topic, so a batch of votes takes its ids with the log lock.
    fn known_event_count(&self) -> Option<usize> {
        match &self.op {
            Op::Vote(_) => Some(1),
            Op::VoteBatch { ballots, .. } => Some(ballots.len()),
            _ => None,
        }
    }
}

async fn load_session(ctx: &mut Ctx<'_>, key: &SessionKey) -> Result<Session, Stop> {
    let found = match key {
        SessionKey::Id(id) => ctx.tx.session(*id).await?,
        SessionKey::Slug(slug) => ctx.tx.session_by_slug(slug).await?,
    };
    found.ok_or_else(|| ctx.fail(ApiError::not_found("no such session")))
}

async fn load_poll(ctx: &mut Ctx<'_>, id: PollId) -> Result<Poll, Stop> {
    let found = ctx.tx.poll(id).await?;
    found.ok_or_else(|| ctx.fail(ApiError::not_found("no such poll")))
}

fn require_presenter(ctx: &Ctx<'_>, session: &Session, presenter: PresenterId) -> Result<(), Stop> {
    if session.presenter_id == presenter {
        Ok(())
    } else {
        Err(ctx.fail(ApiError::forbidden("only this session's presenter may do that")))
    }
}

/// The state `decide` reads, for one session. Counting participants is
/// the one cost that grows with the session, so only commands that report
/// a count pay for it.
async fn state_of(ctx: &mut Ctx<'_>, session: Session, polls: Vec<Poll>) -> R<State> {
    let mut state = bare_state_of(ctx, session, polls).await?;
    state.participant_count = ctx.tx.present_count(state.session.id).await?;
    Ok(state)
}

async fn bare_state_of(ctx: &mut Ctx<'_>, session: Session, polls: Vec<Poll>) -> R<State> {
    let mut polls = polls;
    if let Some(open) = ctx.tx.open_poll(session.id).await? {
        if !polls.iter().any(|p| p.id == open.id) {
            polls.push(open);
        }
    }
    Ok(State {
        poll_count: ctx.tx.poll_count(session.id).await?,
        participant_count: 0,
        session,
        polls,
        participant: None,
        has_voted: false,
    })
}

/// Writes what the events say happened.
async fn apply(ctx: &mut Ctx<'_>, state: &State, events: &[DomainEvent]) -> R<()> {
    for event in events {
        match event {
            DomainEvent::SessionCreated(session) => ctx.tx.insert_session(session).await?,
            DomainEvent::SessionStarted { at, .. } => {
                let session = Session {
                    status: SessionStatus::Active,
                    started_at: Some(*at),
                    ..state.session.clone()
                };
                ctx.tx.update_session(&session).await?;
            }
            DomainEvent::SessionEnded { at, .. } => {
                let session = Session {
                    status: SessionStatus::Ended,
                    ended_at: Some(*at),
                    ..state.session.clone()
                };
                ctx.tx.update_session(&session).await?;
            }
            DomainEvent::PollCreated(poll) => ctx.tx.insert_poll(poll).await?,
            DomainEvent::PollActivated { poll_id, at, .. } => {
                if let Some(poll) = state.polls.iter().find(|p| p.id == *poll_id) {
                    let open = Poll {
                        status: PollStatus::Open,
                        activated_at: Some(*at),
                        ..poll.clone()
                    };
                    ctx.tx.update_poll(&open).await?;
                }
            }
            DomainEvent::PollClosed { poll_id, at, .. } => {
                if let Some(poll) = state.polls.iter().find(|p| p.id == *poll_id) {
                    let closed = Poll {
                        status: PollStatus::Closed,
                        closed_at: Some(*at),
                        ..poll.clone()
                    };
                    ctx.tx.update_poll(&closed).await?;
                }
            }
            DomainEvent::ParticipantJoined { participant, .. } => {
                if ctx.tx.participant(participant.id).await?.is_some() {
                    ctx.tx.set_present(participant.id, true).await?;
                } else {
                    ctx.tx.insert_participant(participant).await?;
                }
            }
            DomainEvent::ParticipantDisconnected { participant_id, .. } => {
                ctx.tx.set_present(*participant_id, false).await?
            }
            // Recorded by `vote` itself, which needs the insert's verdict.
            DomainEvent::VoteAccepted { .. } => {}
        }
    }
    Ok(())
}

/// A short join code: 6 letters and digits, without look-alikes (0/o, 1/l/i).
fn new_slug() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..6)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect()
}

async fn create_session(
    ctx: &mut Ctx<'_>,
    mut session: Session,
    keys: &TokenKeys,
) -> Result<CommandOutput, Stop> {
    while ctx.tx.session_by_slug(&session.slug).await?.is_some() {
        session.slug = new_slug();
    }
    let event = DomainEvent::SessionCreated(session.clone());
    ctx.tx.insert_session(&session).await?;
    let mut body = session.to_json();
    body["presenterToken"] = json!(keys.presenter_token(session.id, session.presenter_id));
    Ok(answer_with(ctx.events(&[event]), StatusCode::CREATED, body))
}

pub fn new_session(title: String, at: DateTime<Utc>) -> Session {
    Session {
        id: SessionId::new(),
        title,
        slug: new_slug(),
        presenter_id: PresenterId::new(),
        status: SessionStatus::Draft,
        created_at: at,
        started_at: None,
        ended_at: None,
    }
}

async fn session_command(
    ctx: &mut Ctx<'_>,
    session_id: SessionId,
    presenter: PresenterId,
    command: SessionCommand,
) -> Result<CommandOutput, Stop> {
    let session = load_session(ctx, &SessionKey::Id(session_id)).await?;
    require_presenter(ctx, &session, presenter)?;
    let state = state_of(ctx, session, Vec::new()).await?;
    let at = ctx.at;
    let (command, created) = match command {
        SessionCommand::Start => (Command::StartSession { at }, None),
        SessionCommand::End => (Command::EndSession { at }, None),
        SessionCommand::CreatePoll { poll_id, draft } => {
            (Command::CreatePoll { poll_id, draft, at }, Some(poll_id))
        }
    };
    let ends = matches!(command, Command::EndSession { .. });
    let events = decide(&state, command).map_err(|r| ctx.fail(conflict_of(r)))?;
    // The open poll's last results go out before the session ends, whose
    // streams end with `session:ended`: a coalesced broadcast still waiting
    // for its interval would reach nobody.
    let final_results = match state.open_poll().filter(|_| ends) {
        Some(poll) => final_results(ctx, poll).await?,
        None => None,
    };
    apply(ctx, &state, &events).await?;
    let new_events: Vec<NewEvent> = final_results.into_iter().chain(ctx.events(&events)).collect();
    let (status, body) = match created {
        Some(poll_id) => {
            let poll = load_poll(ctx, poll_id).await?;
            (StatusCode::CREATED, poll.to_json())
        }
        None => {
            let session = load_session(ctx, &SessionKey::Id(session_id)).await?;
            let mut body = session.to_json();
            body["participantCount"] = json!(state.participant_count);
            (StatusCode::OK, body)
        }
    };
    Ok(answer_with(new_events, status, body))
}

async fn poll_command(
    ctx: &mut Ctx<'_>,
    poll_id: PollId,
    presenter: PresenterId,
    command: PollCommand,
) -> Result<CommandOutput, Stop> {
    let poll = load_poll(ctx, poll_id).await?;
    // The session comes from the poll, so the rules never see a poll of
    // another session.
    let session = load_session(ctx, &SessionKey::Id(poll.session_id)).await?;
    require_presenter(ctx, &session, presenter)?;
    let state = state_of(ctx, session, vec![poll]).await?;
    let at = ctx.at;
    let command = match command {
        PollCommand::Activate => Command::ActivatePoll { poll_id, at },
        PollCommand::Close => Command::ClosePoll { poll_id, at },
    };
    let events = decide(&state, command).map_err(|r| ctx.fail(conflict_of(r)))?;
    apply(ctx, &state, &events).await?;
    let poll = load_poll(ctx, poll_id).await?;
    Ok(answer_with(ctx.events(&events), StatusCode::OK, poll.to_json()))
}

/// What a batch of votes or joins came to: its events, and one answer per
/// request in order.
type Decided = (Vec<NewEvent>, Vec<StoredResponse>);

/// A batch of one run on its own (it has an Idempotency-Key): its one
/// answer is the command's, recorded with the key.
fn lone_output((events, mut answers): Decided) -> CommandOutput {
    let answer = answers.pop().expect("one answer per request");
    CommandOutput {
        events,
        respond: Box::new(move |_| answer),
    }
}

/// A batch box's batch: the answers go to `slot` for the task that
/// submitted it, which hands each to its request once the batch commits.
fn batch_output((events, answers): Decided, slot: &BatchAnswers) -> CommandOutput {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(answers);
    answer_with(events, StatusCode::OK, json!({}))
}

/// One participant joining: the session it names, its new id, the keys
/// its token is signed with (the token names the session, which a join
/// code only reveals inside the transaction) and its request's trace id.
#[derive(Clone)]
pub struct Joiner {
    pub key: SessionKey,
    pub participant_id: ParticipantId,
    pub display_name: Option<String>,
    pub keys: Arc<TokenKeys>,
    pub trace_id: TraceId,
}

/// Decides and records many joins with a few statements, whatever their
/// number: each session named is read once with its present count, the
/// joins are decided in order on that state (so each answer and event
/// carries the count after its own join), and the new participants are
/// inserted by one statement. Answers come out in joiner order; a join
/// refused (no such session, or it ended) has no event.
async fn join_batch(ctx: &mut Ctx<'_>, joiners: Vec<Joiner>) -> Result<Decided, Stop> {
    let JoinStates { sessions, mut states } = read_join_states(ctx, &joiners).await?;
    let mut joined = Vec::with_capacity(joiners.len());
    let mut events = Vec::with_capacity(joiners.len());
    let mut answers = Vec::with_capacity(joiners.len());
    for joiner in &joiners {
        let state = sessions
            .get(&joiner.key)
            .copied()
            .flatten()
            .and_then(|id| states.get_mut(&id));
        match admit(joiner, ctx.at, state) {
            Ok((event, participant, answer)) => {
                events.push(event);
                joined.push(participant);
                answers.push(answer);
            }
            Err(error) => answers.push(error.to_stored(&joiner.trace_id)),
        }
    }
    ctx.tx.insert_participants(&joined).await?;
    Ok((events, answers))
}

/// The sessions a join batch names, each read once.
struct JoinStates {
    /// What each key (an id, or a join code) names, if anything.
    sessions: HashMap<SessionKey, Option<SessionId>>,
    /// Each named session's state, shared by the joins that name it by
    /// id or by code.
    states: HashMap<SessionId, State>,
}

async fn read_join_states(ctx: &mut Ctx<'_>, joiners: &[Joiner]) -> R<JoinStates> {
    let mut sessions = HashMap::new();
    let mut states = HashMap::new();
    for joiner in joiners {
        if sessions.contains_key(&joiner.key) {
            continue;
        }
        let session = match &joiner.key {
            SessionKey::Id(id) => ctx.tx.session(*id).await?,
            SessionKey::Slug(slug) => ctx.tx.session_by_slug(slug).await?,
        };
        sessions.insert(joiner.key.clone(), session.as_ref().map(|s| s.id));
        if let Some(session) = session {
            if let Entry::Vacant(slot) = states.entry(session.id) {
                let present = ctx.tx.present_count(session.id).await?;
                slot.insert(join_state(session, present));
            }
        }
    }
    Ok(JoinStates { sessions, states })
}

/// The state a join is decided on: its session and how many are present.
fn join_state(session: Session, participant_count: i64) -> State {
    State {
        poll_count: 0,
        participant_count,
        session,
        polls: Vec::new(),
        participant: None,
        has_voted: false,
    }
}

/// One join decided on its session's state, which then counts it: the
/// `participant:joined` event, the participant to insert and the answer.
fn admit(
    joiner: &Joiner,
    at: DateTime<Utc>,
    state: Option<&mut State>,
) -> Result<(NewEvent, Participant, StoredResponse), ApiError> {
    let state = state.ok_or_else(|| ApiError::not_found("no such session"))?;
    let command = Command::Join {
        participant_id: joiner.participant_id,
        display_name: joiner.display_name.clone(),
        at,
    };
    let events = decide(state, command).map_err(conflict_of)?;
    let Some(
        joined @ DomainEvent::ParticipantJoined {
            participant,
            participant_count,
            ..
        },
    ) = events.first()
    else {
        return Err(ApiError::internal());
    };
    state.participant_count = *participant_count;
    let body = json!({
        "participantId": participant.id.to_string(),
        "sessionId": state.session.id.to_string(),
        "displayName": participant.display_name,
        "joinedAt": format_timestamp(&participant.joined_at),
        "participantCount": participant_count,
        "participantToken": joiner.keys.participant_token(state.session.id, participant.id),
    });
    let answer = json_response(StatusCode::CREATED, body);
    Ok((
        joined.to_new_event(&joiner.trace_id, None),
        participant.clone(),
        answer,
    ))
}

/// One vote in a batch, with the trace id of its request.
#[derive(Clone)]
pub struct Ballot {
    pub request: VoteRequest,
    pub trace_id: TraceId,
}

/// The answers of a batch (one per request, in order), filled in by the
/// command and read by whoever submitted it once the batch has committed.
pub type BatchAnswers = Arc<std::sync::Mutex<Option<Vec<StoredResponse>>>>;

enum Verdict {
    Accept(Vote),
    Refuse(RejectReason, String),
    Fail(ApiError),
}

/// Decides and records many votes with a handful of statements, whatever
/// their number: the polls, sessions, participants and earlier votes they
/// need are read at once, the accepted votes are inserted by one statement
/// (whose unique constraint has the last word on duplicates), and each
/// poll's results are read with it. Events and answers come out in ballot
/// order.
async fn vote_batch(ctx: &mut Ctx<'_>, ballots: Vec<Ballot>) -> Result<Decided, Stop> {
    let mut poll_ids: Vec<PollId> = ballots.iter().map(|b| b.request.poll_id).collect();
    poll_ids.sort();
    poll_ids.dedup();
    let mut pairs: Vec<(ParticipantId, PollId)> = ballots
        .iter()
        .map(|b| (b.request.participant_id, b.request.poll_id))
        .collect();
    pairs.sort();
    pairs.dedup();
    let BallotReads { mut polls, voters } = ctx.tx.ballot_reads(&poll_ids, &pairs).await?;
    let mut states: HashMap<PollId, Option<State>> = poll_ids
        .iter()
        .map(|id| {
            (
                *id,
                polls.remove(id).map(|(session, poll)| vote_state(session, poll)),
            )
        })
        .collect();
    let Voters {
        participants,
        mut voted,
    } = voters;
    let at = ctx.at;
    let mut verdicts: Vec<Verdict> = ballots
        .iter()
        .map(|b| judge(&b.request, at, &mut states, &participants, &mut voted))
        .collect();

    let accepted: Vec<Vote> = verdicts
        .iter()
        .filter_map(|v| match v {
            Verdict::Accept(vote) => Some(vote.clone()),
            _ => None,
        })
        .collect();
    let voted_polls: Vec<&Poll> = poll_ids
        .iter()
        .filter(|id| accepted.iter().any(|vote| vote.poll_id == **id))
        .filter_map(|id| {
            states
                .get(id)
                .and_then(Option::as_ref)
                .map(|state| &state.polls[0])
        })
        .collect();
    let (recorded, tallies) = ctx
        .tx
        .record_votes_and_tally(&accepted, &voted_polls, BROADCAST_TEXTS)
        .await?;
    let mut recorded = recorded.into_iter();
    for verdict in verdicts.iter_mut() {
        if matches!(verdict, Verdict::Accept(_)) && recorded.next() == Some(false) {
            *verdict = Verdict::Refuse(RejectReason::DuplicateVote, DUPLICATE.into());
        }
    }
    let results: HashMap<PollId, Value> = voted_polls
        .iter()
        .zip(&tallies)
        .map(|(poll, tally)| (poll.id, tally.results_json(poll)))
        .collect();
    let mut events = Vec::with_capacity(ballots.len());
    let mut answers = Vec::with_capacity(ballots.len());
    for (ballot, verdict) in ballots.iter().zip(verdicts) {
        let (event, answer) = ballot_outcome(at, ballot, verdict, &states, &results);
        events.push(event);
        answers.push(answer);
    }
    Ok((events, answers))
}

const DUPLICATE: &str = "participant already voted on this poll";

/// The state a vote is decided on: its session and poll. A vote reads
/// nothing else (not the session's open poll nor its poll count), so a
/// batch does not spend round trips loading them.
fn vote_state(session: Session, poll: Poll) -> State {
    State {
        poll_count: 0,
        participant_count: 0,
        session,
        polls: vec![poll],
        participant: None,
        has_voted: false,
    }
}

fn judge(
    request: &VoteRequest,
    at: DateTime<Utc>,
    states: &mut HashMap<PollId, Option<State>>,
    participants: &HashMap<ParticipantId, Participant>,
    voted: &mut HashSet<(PollId, ParticipantId)>,
) -> Verdict {
    let Some(Some(state)) = states.get_mut(&request.poll_id) else {
        return Verdict::Fail(ApiError::not_found("no such poll"));
    };
    if state.session.id != request.session_id {
        return Verdict::Fail(ApiError::forbidden("this poll belongs to another session"));
    }
    let Some(participant) = participants.get(&request.participant_id) else {
        return Verdict::Fail(ApiError::forbidden("unknown participant"));
    };
    // The token names both; only a participant of the poll's session votes.
    if participant.session_id != request.session_id {
        return Verdict::Fail(ApiError::forbidden(
            "this participant is not in the poll's session",
        ));
    }
    let key = (request.poll_id, request.participant_id);
    // The poll's state is shared by the batch's ballots; only the voter's
    // part changes from one ballot to the next (no copy of the poll each).
    state.participant = Some(participant.clone());
    state.has_voted = voted.contains(&key);
    let command = Command::SubmitVote {
        vote_id: request.vote_id,
        participant_id: request.participant_id,
        poll_id: request.poll_id,
        vote_data: request.vote_data.clone(),
        at,
        client_submitted_at: request.client_submitted_at,
    };
    match decide(state, command) {
        Ok(events) => match events.into_iter().next() {
            Some(DomainEvent::VoteAccepted { vote, .. }) => {
                voted.insert(key);
                Verdict::Accept(vote)
            }
            _ => Verdict::Fail(ApiError::internal()),
        },
        Err(Rejection::Vote { reason, message }) => Verdict::Refuse(reason, message),
        Err(other) => Verdict::Fail(conflict_of(other)),
    }
}

/// A ballot's event (on the voter's own topic) and HTTP answer.
fn ballot_outcome(
    at: DateTime<Utc>,
    ballot: &Ballot,
    verdict: Verdict,
    states: &HashMap<PollId, Option<State>>,
    results: &HashMap<PollId, Value>,
) -> (NewEvent, StoredResponse) {
    let request = &ballot.request;
    let trace_id = &ballot.trace_id;
    match verdict {
        Verdict::Accept(vote) => {
            let results = results.get(&vote.poll_id);
            let accepted = DomainEvent::VoteAccepted {
                vote: vote.clone(),
                session_id: request.session_id,
            };
            // The voter's answer is the event's payload: built and
            // serialized once, on the writer's path.
            let event = accepted.to_new_event(trace_id, results);
            let answer = StoredResponse {
                status: StatusCode::CREATED.as_u16(),
                body: event.payload.get().to_owned(),
            };
            (event, answer)
        }
        Verdict::Refuse(reason, message) => {
            let session_id = match states.get(&request.poll_id) {
                Some(Some(state)) => state.session.id,
                _ => request.session_id,
            };
            let event = vote_rejected(
                request.poll_id,
                session_id,
                request.participant_id,
                reason,
                &message,
                at,
                trace_id,
            );
            let status = if reason.is_content() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::CONFLICT
            };
            (
                event,
                ApiError::new(status, reason.as_str(), message).to_stored(trace_id),
            )
        }
        Verdict::Fail(error) => {
            // The voter's stream hears about it too, as error:general.
            let context = json!({ "eventName": "vote:submitted", "entityId": request.poll_id.to_string() });
            let event = error_general(
                request.participant_id,
                request.session_id,
                error.code,
                &error.message,
                context,
                at,
                trace_id,
            );
            (event, error.to_stored(trace_id))
        }
    }
}

/// The results broadcast of `poll` as its tally stands in this
/// transaction; none for a poll without votes (its results never moved).
async fn final_results(ctx: &mut Ctx<'_>, poll: &Poll) -> Result<Option<NewEvent>, Stop> {
    let tally = ctx.tx.tally(poll, BROADCAST_TEXTS).await?;
    if tally.vote_count == 0 {
        return Ok(None);
    }
    let latest = ctx.tx.latest_vote(poll.id).await?;
    let results = tally.results_json(poll);
    Ok(Some(results_broadcast(poll, &results, latest, &ctx.trace_id)))
}

async fn emit_results(ctx: &mut Ctx<'_>, poll_id: PollId) -> Result<CommandOutput, Stop> {
    let poll = load_poll(ctx, poll_id).await?;
    let tally = ctx.tx.tally(&poll, BROADCAST_TEXTS).await?;
    let latest = ctx.tx.latest_vote(poll.id).await?;
    let results = tally.results_json(&poll);
    let event = results_broadcast(&poll, &results, latest, &ctx.trace_id);
    Ok(answer_with(vec![event], StatusCode::OK, json!({})))
}

async fn stream_opened(ctx: &mut Ctx<'_>, connection: PresenceConnection) -> Result<CommandOutput, Stop> {
    ctx.tx.open_connection(&connection).await?;
    presence_change(ctx, connection.participant_id, true).await
}

async fn grace_expired(ctx: &mut Ctx<'_>, participant_id: ParticipantId) -> Result<CommandOutput, Stop> {
    if ctx.tx.connection_count(participant_id).await? > 0 {
        return Ok(CommandOutput::answer(json_response(StatusCode::OK, json!({}))));
    }
    presence_change(ctx, participant_id, false).await
}

async fn presence_sweep(
    ctx: &mut Ctx<'_>,
    node_id: Uuid,
    ttl: chrono::Duration,
) -> Result<CommandOutput, Stop> {
    ctx.tx.touch_connections(node_id, ctx.at).await?;
    let live_nodes = ctx.tx.live_nodes(node_id, ctx.at, ctx.at - ttl).await?;
    let orphaned = ctx.tx.expire_connections(ctx.at - ttl).await?;
    let mut events = Vec::new();
    for participant_id in orphaned {
        if ctx.tx.connection_count(participant_id).await? == 0 {
            let output = presence_change(ctx, participant_id, false).await?;
            events.extend(output.events);
        }
    }
    Ok(answer_with(
        events,
        StatusCode::OK,
        json!({ "liveNodes": live_nodes }),
    ))
}

async fn presence_change(
    ctx: &mut Ctx<'_>,
    participant_id: ParticipantId,
    present: bool,
) -> Result<CommandOutput, Stop> {
    let Some(participant) = ctx.tx.participant(participant_id).await? else {
        return Ok(CommandOutput::answer(json_response(StatusCode::OK, json!({}))));
    };
    let session = load_session(ctx, &SessionKey::Id(participant.session_id)).await?;
    let mut state = state_of(ctx, session, Vec::new()).await?;
    state.participant = Some(participant);
    let at = ctx.at;
    let command = if present {
        Command::MarkPresent { participant_id, at }
    } else {
        Command::MarkAbsent { participant_id, at }
    };
    let events = decide(&state, command).map_err(|r| ctx.fail(conflict_of(r)))?;
    apply(ctx, &state, &events).await?;
    Ok(answer_with(ctx.events(&events), StatusCode::OK, json!({})))
}

async fn snapshot(ctx: &mut Ctx<'_>, key: SessionKey) -> Result<CommandOutput, Stop> {
    let session = load_session(ctx, &key).await?;
    let polls = ctx.tx.polls_of(session.id).await?;
    let mut poll_views = Vec::with_capacity(polls.len());
    for poll in &polls {
        let tally = ctx.tx.tally(poll, BROADCAST_TEXTS).await?;
        let mut view = poll.to_json();
        view["results"] = tally.results_json(poll);
        poll_views.push(view);
    }
    let mut body = session.to_json();
    body["activePollId"] = json!(polls
        .iter()
        .find(|p| p.status == PollStatus::Open)
        .map(|p| p.id.to_string()));
    body["polls"] = json!(poll_views);
    body["participantCount"] = json!(ctx.tx.present_count(session.id).await?);
    body["lastEventId"] = json!(ctx.tx.head_event_id().await?.to_string());
    Ok(answer_with(Vec::new(), StatusCode::OK, body))
}

async fn results(ctx: &mut Ctx<'_>, poll_id: PollId, actor: Actor) -> Result<CommandOutput, Stop> {
    let poll = load_poll(ctx, poll_id).await?;
    let session = match actor {
        Actor::Presenter(session, _) | Actor::Participant(session, _) => session,
    };
    if poll.session_id != session {
        return Err(ctx.fail(ApiError::forbidden("this poll belongs to another session")));
    }
    let tally = ctx.tx.tally(&poll, ALL_TEXTS).await?;
    Ok(answer_with(Vec::new(), StatusCode::OK, tally.results_json(&poll)))
}

async fn votes(
    ctx: &mut Ctx<'_>,
    poll_id: PollId,
    presenter: (SessionId, PresenterId),
) -> Result<CommandOutput, Stop> {
    let poll = load_poll(ctx, poll_id).await?;
    let session = load_session(ctx, &SessionKey::Id(poll.session_id)).await?;
    if session.id != presenter.0 {
        return Err(ctx.fail(ApiError::forbidden("this poll belongs to another session")));
    }
    require_presenter(ctx, &session, presenter.1)?;
    if poll.is_anonymous {
        return Err(ctx.fail(ApiError::forbidden(
            "the poll is anonymous: its voters are shown to no one",
        )));
    }
    let records = ctx.tx.votes_of(poll_id).await?;
    let votes: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "voteId": r.vote.id.to_string(),
                "participantId": r.vote.participant_id.to_string(),
                "displayName": r.display_name,
                "voteData": r.vote.choice.to_json(),
                "submittedAt": format_timestamp(&r.vote.submitted_at),
                "clientSubmittedAt": r.vote.client_submitted_at.as_ref().map(format_timestamp),
            })
        })
        .collect();
    let body =
        json!({ "pollId": poll_id.to_string(), "sessionId": poll.session_id.to_string(), "votes": votes });
    Ok(answer_with(Vec::new(), StatusCode::OK, body))
}
