//! What the store runs: commands with a typed outcome, and the erased form
//! its writer batches.
//!
//! A [`Command`] decides inside one transaction: the events to append, and
//! what it decided. Once the events have ids it turns that into its
//! [`Command::Outcome`], which reaches the caller after the commit, through
//! a channel of its own type: the store never looks at it. An
//! Idempotency-Key keeps, in the same transaction, what the caller's
//! [`Remember`] function (from the HTTP edge) made of the outcome: the
//! store keeps those bytes verbatim and gives them back on a retry.
//!
//! ```text
//! execute(command) ─► Typed<C> ─► writer batch: run → ids → settle → COMMIT → deliver ─► outcome
//!                                                   └─ remembered answer (with the key)
//! ```

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::error::StoreError;
use super::tx::Tx;
use crate::domain::event::{NewEvent, StoredEvent};

/// What an Idempotency-Key keeps of a request's first answer, as the edge
/// wrote it: the store keeps it verbatim and gives it back on a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered(pub String);

/// Turns an outcome into what its Idempotency-Key keeps; `None` when the
/// outcome is not to be kept (a refusal is decided afresh on a retry).
pub type Remember<O> = Box<dyn Fn(&O) -> Option<Remembered> + Send + Sync>;

/// A unit of work run inside one store transaction: in the writer's batch
/// by `store::execute`, or on a read-only snapshot by `store::query`.
#[async_trait]
pub trait Command: Send + Sync + 'static {
    /// What the caller gets once the transaction has committed.
    type Outcome: Send + Sync + 'static;
    /// What [`Command::run`] decided, before its events have ids.
    type Decided: Send + Sync + 'static;

    /// Reads and writes what it needs and decides: the events to append,
    /// and the rest of its outcome.
    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError>;

    /// The outcome, once the events have their ids (a publish answers with
    /// its stored event; most commands only pass `decided` on).
    fn outcome(decided: Self::Decided, events: &[StoredEvent]) -> Self::Outcome;

    /// Called when the store takes the command for a transaction, before
    /// anything of that transaction runs. A command that gathers its work
    /// late (a batch box's waiting votes or joins) takes it here, so that
    /// its `known_event_count` counts it and everything that came while the
    /// store was busy rides along.
    fn start(&mut self) {}

    /// Whether `run` reads or writes tables. Such a command runs behind a
    /// savepoint in the writer's batch, so that if the database refuses
    /// what it writes, only it fails and the rest of the batch commits.
    /// A command that only returns events (a plain publish) needs none.
    fn touches_tables(&self) -> bool {
        true
    }

    /// How many events `run` will return, when that is known before it
    /// runs. A batch of such commands takes its ids in the same round trip
    /// as the log lock instead of one more after the commands.
    fn known_event_count(&self) -> Option<usize> {
        None
    }
}

/// A command as the store's writer sees it: its outcome's type erased.
#[async_trait]
pub trait TxCommand: Send + Sync {
    /// See [`Command::start`].
    fn start(&mut self);
    /// See [`Command::touches_tables`].
    fn touches_tables(&self) -> bool;
    /// See [`Command::known_event_count`].
    fn known_event_count(&self) -> Option<usize>;
    /// Runs the command; its events, to be given ids.
    async fn run(&mut self, tx: &mut dyn Tx) -> Result<Vec<NewEvent>, StoreError>;
    /// Inside the transaction, once the events have ids: settles the
    /// outcome, and says what an Idempotency-Key keeps of it.
    fn settle(&mut self, events: &[StoredEvent]) -> Option<Remembered>;
    /// After the commit: hands the outcome to whoever waits for it.
    fn deliver(self: Box<Self>);
}

/// A [`Command`] with the channel its outcome goes back by.
pub struct Typed<C: Command> {
    command: C,
    decided: Option<C::Decided>,
    outcome: Option<C::Outcome>,
    remember: Option<Remember<C::Outcome>>,
    reply: Option<oneshot::Sender<C::Outcome>>,
}

impl<C: Command> Typed<C> {
    /// The command, and where its outcome will arrive.
    pub fn new(command: C, remember: Option<Remember<C::Outcome>>) -> (Self, oneshot::Receiver<C::Outcome>) {
        let (reply, outcome) = oneshot::channel();
        let typed = Typed {
            command,
            decided: None,
            outcome: None,
            remember,
            reply: Some(reply),
        };
        (typed, outcome)
    }
}

#[async_trait]
impl<C: Command> TxCommand for Typed<C> {
    fn start(&mut self) {
        self.command.start();
    }

    fn touches_tables(&self) -> bool {
        self.command.touches_tables()
    }

    fn known_event_count(&self) -> Option<usize> {
        self.command.known_event_count()
    }

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<Vec<NewEvent>, StoreError> {
        let (events, decided) = self.command.run(tx).await?;
        self.decided = Some(decided);
        Ok(events)
    }

    fn settle(&mut self, events: &[StoredEvent]) -> Option<Remembered> {
        let decided = self.decided.take()?;
        let outcome = C::outcome(decided, events);
        let remembered = self.remember.as_ref().and_then(|remember| remember(&outcome));
        self.outcome = Some(outcome);
        remembered
    }

    fn deliver(mut self: Box<Self>) {
        if let (Some(reply), Some(outcome)) = (self.reply.take(), self.outcome.take()) {
            let _ = reply.send(outcome);
        }
    }
}

/// The simplest command: append these events; its outcome is the events
/// as stored, with their ids.
pub struct Append {
    pub events: Vec<NewEvent>,
}

#[async_trait]
impl Command for Append {
    type Outcome = Vec<StoredEvent>;
    type Decided = ();

    async fn run(&mut self, _tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, ()), StoreError> {
        Ok((std::mem::take(&mut self.events), ()))
    }

    fn outcome(_: (), events: &[StoredEvent]) -> Vec<StoredEvent> {
        events.to_vec()
    }

    fn touches_tables(&self) -> bool {
        false
    }

    fn known_event_count(&self) -> Option<usize> {
        Some(self.events.len())
    }
}
