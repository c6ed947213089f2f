"""Live polling: presenters running sessions whose participants join and
vote, and session watchers that must see each session end properly."""

from __future__ import annotations

import asyncio
import time

from .client import Stream, bearer, http, is_event, open_stream
from .cluster import Run
from .config import CFG
from .legit import Consumer
from .records import CHECKS, LEDGER, LEGIT, TALLY


class SessionWatcher(Consumer):
    """Follows one session's stream (anonymously, or with a participant
    token: presence), reconnecting now and then with Last-Event-ID, until
    the session ends. Then session:ended must be its last event and the
    stream must end right after it; reconnecting with its id must get 204."""

    def __init__(self, run: Run, name: str, session_id: str, token: str | None):
        super().__init__(name, [f"session:{session_id}", "participant:*"])
        self.run, self.session_id, self.token = run, session_id, token
        self.frames = 0
        self.end_acked_at = None        # when the presenter's end was answered 200
        self.give_up = asyncio.Event()  # the session's end could not be confirmed: stop, unjudged
        self.ended_id = None            # id of the session:ended it saw
        self.after_end = []             # events after it (must be none)
        self.end_how = None             # how its stream ended after session:ended
        self.end_s = None
        self.reconnect_status = None    # the answer to reconnecting after it
        self.judged = False

    def session_over(self, acked: bool):
        """The presenter's end was answered (200), or could not be."""
        if acked:
            self.end_acked_at = time.monotonic()
        else:
            self.give_up.set()

    def done(self) -> bool:
        if self.give_up.is_set() or self.reconnect_status is not None:
            return True
        # Told the session ended, long enough ago that it must have been seen.
        return self.end_acked_at is not None and time.monotonic() - self.end_acked_at > 10 + 3 * CFG.slack

    async def run_until_ended(self):
        while not self.done() and not self.run.readers_stop.is_set():
            headers = bearer(self.token) if self.token else {}
            if self.last:
                headers["Last-Event-ID"] = str(self.last)
            elif self.end_acked_at is not None:
                # Nothing to resume from, and the session is over: a stream
                # from now would rightly get 204 without session:ended.
                self.give_up.set()
                return
            stream = await open_stream(self.run.node(), f"/v1/sessions/{self.session_id}/events", headers)
            TALLY.add("session-stream-open", LEGIT, stream.status, getattr(stream, "body", b""))
            if not isinstance(stream, Stream):
                if stream.status == 204:
                    self.reconnect_status = 204
                    if self.ended_id is None:
                        self.end_how = "204 before session:ended was seen"
                    return
                if self.ended_id is not None and stream.known:
                    self.reconnect_status = stream.status
                    return
                await asyncio.sleep(1.0)
                continue
            if self.ended_id is not None:
                # Seen the end, and the server still opens a stream.
                self.reconnect_status = 200
                stream.close()
                return
            await self.follow(stream)

    async def follow(self, stream: Stream):
        hang_up_at = time.monotonic() + self.run.rng.uniform(*CFG.reconnect_s)
        try:
            async for frame in stream.frames(idle_timeout=2 * CFG.heartbeat_s + 10):
                self.frames += is_event(frame)
                if "id" in frame:
                    self.take(int(frame["id"]), None)
                if frame.get("event") == "session:ended":
                    self.ended_id = int(frame["id"]) if str(frame.get("id", "")).isdigit() else self.last
                    how, after, took = await stream.rest(within=CFG.slack)
                    self.after_end = [f.get("event", "data") for f in after if is_event(f)]
                    for extra in after:
                        if "id" in extra and str(extra["id"]).isdigit():
                            self.take(int(extra["id"]), None)
                    self.end_how, self.end_s = how, took
                    return
                if self.done() or time.monotonic() > hang_up_at and self.end_acked_at is None:
                    return
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
            self.ends[type(error).__name__] += 1
        finally:
            stream.close()

    def judge(self):
        """After the session ended: the checks session-end and session-204."""
        if self.give_up.is_set() or self.end_acked_at is None or self.judged:
            return
        self.judged = True
        context = f"{self.name} (session {self.session_id})"
        if self.ended_id is None:
            problems = [self.end_how or f"session:ended not seen within {10 + 3 * CFG.slack:.0f} s of the end"]
        else:
            problems = []
            if self.after_end:
                problems.append(f"events after session:ended: {self.after_end[:5]}")
            if self.end_how != "ended":
                problems.append(f"the stream did not end after session:ended ({self.end_how}, "
                                f"{self.end_s:.1f} s)")
        CHECKS.check("session-end", problems, seconds=self.end_s, context=context)
        if self.ended_id is not None:
            status = self.reconnect_status
            CHECKS.check("session-204", [] if status == 204 else [f"reconnecting answered {status}"],
                         context=context)


SESSION_WATCHERS: list[SessionWatcher] = []


class Presenter:
    """Runs polling sessions one after another: create (admin key), start,
    three polls, participants joining by code or id on random nodes, each
    poll opened in turn with every participant voting once, then end."""

    def __init__(self, run: Run, index: int):
        self.run, self.index = run, index
        self.sessions = 0

    async def run_forever(self):
        while not self.run.load_stopped.is_set():
            await self.one_session()
            self.sessions += 1

    async def one_session(self):
        created = await http(self.run.node(), "POST", "/v1/sessions", headers=self.run.cluster.admin(),
                             body={"title": f"soak {self.index}.{self.sessions}"}, kind="session-create")
        if created.status != 201:
            if not created.known:
                LEDGER.unknown["sessions"] += 1
            await self.run.sleep(2)
            return
        session = created.json()
        sid, slug, token = session["sessionId"], session["slug"], session["presenterToken"]
        LEDGER.sessions.add(sid)
        presenter = bearer(token)
        await http(self.run.node(), "POST", f"/v1/sessions/{sid}/start", headers=presenter, body={},
                   kind="session-start")
        polls = []
        for body in ({"question": "Which?", "pollType": "multiple_choice", "options": ["A", "B", "C"]},
                     {"question": "How much?", "pollType": "rating_scale", "minRating": 1, "maxRating": 5},
                     {"question": "Why?", "pollType": "open_text", "isAnonymous": False}):
            response = await http(self.run.node(), "POST", f"/v1/sessions/{sid}/polls",
                                  headers=presenter, body=body, kind="poll-create")
            if response.status == 201:
                polls.append(response.json())
                LEDGER.polls.add(polls[-1]["pollId"])
            elif not response.known:
                LEDGER.unknown["polls"] += 1
        watchers = [SessionWatcher(self.run, f"watch-{sid[:8]}", sid, None)]
        participants = []
        watching = [asyncio.create_task(w.run_until_ended()) for w in watchers]
        joining = asyncio.create_task(self.join_all(sid, slug, participants, watchers, watching))
        try:
            for poll in polls:
                if self.run.load_stopped.is_set():
                    break
                await self.run_poll(poll, presenter, participants)
        finally:
            joining.cancel()
            await asyncio.gather(joining, return_exceptions=True)
            ended = await self.end(sid, presenter)
            for watcher in watchers:
                watcher.session_over(ended)
            _, pending = await asyncio.wait(watching, timeout=20 + 3 * CFG.slack)
            for task in pending:
                task.cancel()
            await asyncio.gather(*watching, return_exceptions=True)
            for watcher in watchers:
                watcher.judge()
            SESSION_WATCHERS.extend(watchers)

    async def end(self, sid: str, presenter: dict) -> bool:
        """Ends the session; True once the server said so (200, or 409 on a
        retry after an unknown outcome)."""
        for attempt in range(3):
            response = await http(self.run.node(), "POST", f"/v1/sessions/{sid}/end", headers=presenter, body={},
                                  kind="session-end")
            if response.status == 200 or (response.status == 409 and attempt > 0):
                return True
            if response.known and response.status not in (429, 503):
                return False
            await asyncio.sleep(1.0)
        return False

    async def join_all(self, sid, slug, participants, watchers, watching):
        for n in range(CFG.participants_per_session):
            key = slug if n % 2 else sid
            body = {"displayName": f"p{n}"} if n % 5 else None
            response = await http(self.run.node(), "POST", f"/v1/sessions/{key}/participants",
                                  body=body, kind="join")
            if response.status == 201:
                joined = response.json()
                LEDGER.participants.add(joined["participantId"])
                participants.append(joined)
                if len(watchers) < 3 and n % 7 == 3:   # a few participants watch with their token
                    watcher = SessionWatcher(self.run, f"part-{joined['participantId'][:8]}", sid,
                                             joined["participantToken"])
                    watchers.append(watcher)
                    watching.append(asyncio.create_task(watcher.run_until_ended()))
            elif not response.known:
                LEDGER.unknown["participants"] += 1
            if not await self.run.sleep(self.run.rng.uniform(0.5, 2.5)):
                return

    async def run_poll(self, poll, presenter, participants):
        pid = poll["pollId"]
        await http(self.run.node(), "POST", f"/v1/polls/{pid}/activate", headers=presenter, body={},
                   kind="poll-activate")
        window_end = time.monotonic() + CFG.poll_seconds
        voted = set()
        while time.monotonic() < window_end and not self.run.load_stopped.is_set():
            waiting = [p for p in participants if p["participantId"] not in voted]
            if not waiting:
                await self.run.sleep(1)
                continue
            participant = self.run.rng.choice(waiting)
            voted.add(participant["participantId"])
            await self.vote(poll, participant)
            if self.run.rng.random() < 0.05:    # a double click: must be 409, one row
                await self.vote(poll, participant, kind="vote-again")
            await self.run.sleep(self.run.rng.uniform(0.3, 1.2))
        await http(self.run.node(), "POST", f"/v1/polls/{pid}/close", headers=presenter, body={},
                   kind="poll-close")

    async def vote(self, poll, participant, kind="vote"):
        if poll["pollType"] == "multiple_choice":
            data = {"selectedOptionIds": [self.run.rng.choice(poll["options"])["optionId"]]}
        elif poll["pollType"] == "rating_scale":
            data = {"ratingValue": self.run.rng.randint(1, 5)}
        else:
            data = {"textResponse": f"because {self.run.rng.random()}"}
        response = await http(self.run.node(), "POST", f"/v1/polls/{poll['pollId']}/votes",
                              headers=bearer(participant["participantToken"]),
                              body={"voteData": data}, kind=kind)
        if response.status == 201:
            LEDGER.votes.add(response.json()["voteId"])
        elif not response.known and kind == "vote":
            LEDGER.unknown["votes"] += 1
