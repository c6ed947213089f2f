//! Participants joining and leaving: presence with its grace period, a
//! room joining at once, and a crashed node's streams expiring.

use std::collections::HashSet;

use super::*;

async fn a_returning_participant_is_counted_again(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.grace_period = Duration::from_millis(200)).await;
    let session = create_session(&app, "Presence").await;
    session.start(&app).await;
    let mut room = session.watch(&app, None, None).await;
    room.next().await;
    let cleo = session.join(&app, None).await;
    let dan = session.join(&app, None).await; // never opens a stream: stays present
    expect(&mut room, &["participant:joined", "participant:joined"]).await;

    let stream = session.watch(&app, Some(&cleo.token), None).await;
    // A quick reconnect within the grace period does not flap.
    drop(stream);
    let again = session.watch(&app, Some(&cleo.token), None).await;
    assert!(
        room.next_within(Duration::from_millis(500)).await.is_none(),
        "no flap within the grace period"
    );
    drop(again);
    let left = expect(&mut room, &["participant:disconnected"]).await;
    assert_eq!(left[0]["participantCount"], 1, "Dan is still present");
    assert_eq!(session.snapshot(&app).await["participantCount"], 1);

    let _back = session.watch(&app, Some(&cleo.token), None).await;
    let rejoined = expect(&mut room, &["participant:joined"]).await;
    assert_eq!(rejoined[0]["participantId"], cleo.id);
    assert_eq!(rejoined[0]["participantCount"], 2);
    let _ = dan;
}
on_both_stores!(presence, a_returning_participant_is_counted_again);

/// A room joins at once, by id and by join code, mixed with joins to an
/// ended session and to one that does not exist: every join to the live
/// session is answered 201 with its own id, working token and the count
/// after it (1 to N, each once); the others get their own 409 or 404
/// without disturbing anyone; the room sees one `participant:joined` per
/// participant and the session counts exactly N.
async fn a_room_joining_at_once_is_counted_exactly(backend: Backend) {
    const ROOM: usize = 150;
    let app = TestApp::spawn(backend).await;
    let (session, poll) = session_with_open_poll(&app, "Keynote", true).await;
    let over = create_session(&app, "Yesterday").await;
    over.start(&app).await;
    over.end(&app).await;
    let mut room = session.watch(&app, None, None).await;
    room.next().await;

    let unknown = uuid::Uuid::new_v4().to_string();
    let mut paths: Vec<(&str, String)> = (0..ROOM)
        .map(|n| {
            let key = if n % 2 == 0 {
                session.id.clone()
            } else {
                session.slug.to_uppercase()
            };
            ("live", key)
        })
        .collect();
    paths.extend((0..10).map(|_| ("ended", over.slug.clone())));
    paths.extend((0..10).map(|_| ("unknown", unknown.clone())));
    let joins: Vec<_> = paths
        .into_iter()
        .enumerate()
        .map(|(n, (kind, key))| {
            let http = app.http.clone();
            let url = app.url(&format!("/v1/sessions/{key}/participants"));
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .json(&json!({ "displayName": format!("guest {n}") }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (kind, status, response.json::<Value>().await.unwrap())
            })
        })
        .collect();

    let mut joined = Vec::new();
    for join in joins {
        let (kind, status, body) = join.await.unwrap();
        match kind {
            "live" => {
                assert_eq!(status, 201, "{body}");
                assert_eq!(body["sessionId"], session.id.as_str());
                joined.push(body);
            }
            "ended" => assert_eq!(
                (status, &body["error"]["code"]),
                (409, &json!("conflict")),
                "{body}"
            ),
            _ => assert_eq!(
                (status, &body["error"]["code"]),
                (404, &json!("not_found")),
                "{body}"
            ),
        }
    }
    let ids: HashSet<&str> = joined
        .iter()
        .map(|b| b["participantId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), ROOM, "each participant has its own id");
    let mut counts: Vec<i64> = joined
        .iter()
        .map(|b| b["participantCount"].as_i64().unwrap())
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        (1..=ROOM as i64).collect::<Vec<_>>(),
        "each join counted once, in order"
    );
    assert_eq!(session.snapshot(&app).await["participantCount"], ROOM);

    let announced = expect(&mut room, &["participant:joined"; ROOM]).await;
    let announced_ids: HashSet<&str> = announced
        .iter()
        .map(|e| e["participantId"].as_str().unwrap())
        .collect();
    assert_eq!(announced_ids, ids);
    let last = announced.last().unwrap();
    assert_eq!(
        last["participantCount"], ROOM,
        "the room's last count is the total: {last}"
    );

    // The tokens are the participants': they vote as themselves.
    let option = option_id(&poll, 0);
    for body in joined.iter().take(3) {
        let participant = Participant::from_joined(body);
        let (status, vote) = vote(
            &app,
            &participant,
            &poll,
            json!({"selectedOptionIds": [option.clone()]}),
        )
        .await;
        assert_eq!(status, 201, "{vote}");
        assert_eq!(vote["participantId"], participant.id.as_str());
    }
}
on_both_stores!(join_storm, a_room_joining_at_once_is_counted_exactly);

/// The stream rows of a node that stopped heartbeating (it crashed) expire
/// after the TTL, and their participants are reported gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_streams_expire_and_their_participants_leave() {
    let app = TestApp::spawn_with(Backend::Postgres, |c| c.presence_ttl = Duration::from_millis(900)).await;
    let session = create_session(&app, "Crash").await;
    session.start(&app).await;
    let ghost = session.join(&app, None).await;
    let mut room = session.watch(&app, None, None).await;
    room.next().await;
    // A row as a dead node left it: its last heartbeat long ago.
    let db = app.db.as_ref().unwrap().client().await;
    db.execute(
        "INSERT INTO presence_connections (id, node_id, session_id, participant_id, opened_at, last_seen)
         VALUES (gen_random_uuid(), gen_random_uuid(), $1::text::uuid, $2::text::uuid, now() - interval '1 hour', now() - interval '1 hour')",
        &[&session.id, &ghost.id],
    )
    .await
    .unwrap();
    let left = expect(&mut room, &["participant:disconnected"]).await;
    assert_eq!(left[0]["participantId"], ghost.id);
    assert_eq!(left[0]["participantCount"], 0);
    assert_eq!(count(&db, "SELECT count(*) FROM presence_connections").await, 0);
}
