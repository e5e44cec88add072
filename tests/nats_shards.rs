//! Sharded scale-out with real processes: three `voicerag serve` replicas (tiny fixture embedder,
//! real stores) on a nats-server with the partition mappings of `examples/nats/partitions.conf`,
//! 3 namespace partitions each owned by two replicas. Under traffic from several namespaces one
//! replica is killed with SIGKILL: every query and every final is still answered (retried as an
//! agent retries: a request or a final without an answer in time is sent again, the same final
//! with the same utterance id), no hit comes from a foreign namespace, and every memory the stream
//! acknowledged is findable afterwards.

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use voicerag::bus::server::LocalNatsServer;

mod serve_support;
use serve_support::Serve;

const PARTITIONS_CONF: &str = include_str!("../examples/nats/partitions.conf");
/// How long an agent waits for an answer before sending again.
const AGENT_RETRY_AFTER: Duration = Duration::from_secs(8);
/// How often it tries before the test calls the answer lost.
const AGENT_ATTEMPTS: usize = 6;
/// Requests and finals sent again, over all agents (reported, not asserted: whether one was in
/// flight at the killed replica is chance).
static RETRIES: AtomicU64 = AtomicU64::new(0);

/// Waits for a heartbeat of `replica` showing a consumer for each of its two partitions: it sends
/// heartbeats once its subscriptions are in place, and the consumers follow.
async fn serving(nc: &async_nats::Client, replica: &str) {
    let mut beats = nc
        .subscribe(format!("voice.health.{replica}"))
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, beats.next())
            .await
            .unwrap_or_else(|_| panic!("{replica} never served its partitions"))
            .unwrap();
        let beat: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(beat["partition_count"], 3, "{beat}");
        if beat["stream"]["consumers"].as_array().map(Vec::len) == Some(2) {
            return;
        }
    }
}

/// A query as an agent sends it: again when no answer comes in time (its replica died with it,
/// or no owner was subscribed for a moment).
async fn query(nc: &async_nats::Client, namespace: &str, payload: &Value) -> Value {
    let body = serde_json::to_vec(payload).unwrap();
    for attempt in 0..AGENT_ATTEMPTS {
        if attempt > 0 {
            RETRIES.fetch_add(1, Ordering::SeqCst);
        }
        let request = nc.request(format!("voice.query.{namespace}"), body.clone().into());
        match tokio::time::timeout(AGENT_RETRY_AFTER, request).await {
            Ok(Ok(reply)) => return serde_json::from_slice(&reply.payload).unwrap(),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => {}
        }
    }
    panic!("query of {namespace} never answered: {payload}");
}

/// The conversation every memory of `namespace` is in: a hit of another conversation is foreign.
fn conversation_of(namespace: &str) -> String {
    format!("c-{namespace}")
}

fn foreign_hits(namespace: &str, answer: &Value) -> Vec<Value> {
    answer["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits in {answer}"))
        .iter()
        .filter(|h| h["conversation"] != conversation_of(namespace).as_str())
        .cloned()
        .collect()
}

/// The memory text that only memory `k` of `namespace` has: one BM25 term finds it.
fn marker_word(namespace: &str, k: usize) -> String {
    format!("mark{namespace}n{k}")
}

/// One namespace's agent: per round, a memory published on the stream (acked), a partial and a
/// final transcript (the final answered, sent again if not), a query (answered, sent again if
/// not). Returns the ids the stream acked and the foreign hits it saw.
async fn agent(
    nc: async_nats::Client,
    namespace: String,
    rounds: usize,
    progress: Arc<AtomicU64>,
) -> (Vec<(usize, String)>, Vec<Value>) {
    let js = jetstream::new(nc.clone());
    let conversation = conversation_of(&namespace);
    let mut contexts = nc
        .subscribe(format!("voice.context.{namespace}.{conversation}"))
        .await
        .unwrap();
    nc.flush().await.unwrap();
    let mut acked = Vec::new();
    let mut foreign = Vec::new();
    for k in 0..rounds {
        let id = format!("m{k}");
        let text = format!(
            "{} the spare key number {k} is under the blue pot",
            marker_word(&namespace, k)
        );
        let memory = serde_json::to_vec(&json!({"v": 2, "id": id, "text": text})).unwrap();
        // A JetStream publish, retried with the same message id until the stream acks it.
        let mut stored = false;
        for _ in 0..AGENT_ATTEMPTS {
            let publish = js
                .send_publish(
                    format!("voice.memory.{namespace}.{conversation}"),
                    PublishMessage::build()
                        .payload(memory.clone().into())
                        .message_id(format!("{namespace}.{id}")),
                )
                .await;
            if let Ok(ack) = publish
                && tokio::time::timeout(AGENT_RETRY_AFTER, ack)
                    .await
                    .is_ok_and(|a| a.is_ok())
            {
                stored = true;
                break;
            }
        }
        assert!(stored, "{namespace}: memory {id} never acked");
        acked.push((k, id));

        let utterance = format!("u{k}");
        let partial =
            json!({"v": 2, "utterance": utterance, "text": "where is the", "final": false});
        let fin = json!({"v": 2, "utterance": utterance, "text": "where is the spare key", "final": true});
        let subject = format!("voice.transcript.{namespace}.{conversation}");
        nc.publish(
            subject.clone(),
            serde_json::to_vec(&partial).unwrap().into(),
        )
        .await
        .unwrap();
        let mut answered = None;
        'attempts: for attempt in 0..AGENT_ATTEMPTS {
            if attempt > 0 {
                RETRIES.fetch_add(1, Ordering::SeqCst);
            }
            nc.publish(subject.clone(), serde_json::to_vec(&fin).unwrap().into())
                .await
                .unwrap();
            let until = Instant::now() + AGENT_RETRY_AFTER;
            while let Ok(Some(m)) = tokio::time::timeout_at(until.into(), contexts.next()).await {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                foreign.extend(foreign_hits(&namespace, &v));
                if v["utterance"] == utterance.as_str() && v["final"] == true {
                    answered = Some(v);
                    break 'attempts;
                }
            }
        }
        let answer =
            answered.unwrap_or_else(|| panic!("{namespace}: final {utterance} never answered"));
        assert_eq!(answer["namespace"], namespace.as_str(), "{answer}");

        let v = query(
            &nc,
            &namespace,
            &json!({"v": 2, "text": "spare key blue pot", "top_k": 10}),
        )
        .await;
        assert_eq!(v["namespace"], namespace.as_str(), "{v}");
        foreign.extend(foreign_hits(&namespace, &v));
        progress.fetch_add(1, Ordering::SeqCst);
    }
    (acked, foreign)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_of_three_sharded_replicas_loses_no_answer_and_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalNatsServer::start_with_config(dir.path(), Some(PARTITIONS_CONF)).unwrap();
    let url = server.url();
    let nc = async_nats::connect(url.clone()).await.unwrap();
    // Each partition owned twice, round robin.
    let owners = [("r0", "[0,1]"), ("r1", "[1,2]"), ("r2", "[2,0]")];
    let mut replicas: HashMap<&str, Serve> = owners
        .iter()
        .map(|(id, owned)| {
            (
                *id,
                Serve::start_with(
                    &url,
                    &dir.path().join(id),
                    id,
                    owned,
                    &[("VOICERAG_NATS__PARTITION_COUNT", "3")],
                ),
            )
        })
        .collect();
    for (id, _) in owners {
        serving(&nc, id).await;
    }

    let namespaces: Vec<String> = (0..6).map(|i| format!("user{i}")).collect();
    let rounds = 12;
    let progress = Arc::new(AtomicU64::new(0));
    let agents: Vec<_> = namespaces
        .iter()
        .map(|ns| tokio::spawn(agent(nc.clone(), ns.clone(), rounds, progress.clone())))
        .collect();
    // Kill one replica once a third of the traffic is through.
    let third = (namespaces.len() * rounds / 3) as u64;
    let until = Instant::now() + Duration::from_secs(300);
    while progress.load(Ordering::SeqCst) < third {
        assert!(Instant::now() < until, "traffic never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replicas.get_mut("r1").unwrap().sigkill();

    let mut acked = Vec::new();
    let mut foreign = Vec::new();
    for (ns, task) in namespaces.iter().zip(agents) {
        let (ids, hits) = task.await.unwrap();
        acked.extend(ids.into_iter().map(|(k, id)| (ns.clone(), k, id)));
        foreign.extend(hits);
    }
    assert!(
        foreign.is_empty(),
        "hits from foreign namespaces: {foreign:?}"
    );
    assert_eq!(acked.len(), namespaces.len() * rounds);
    eprintln!(
        "{} agent retries after the SIGKILL",
        RETRIES.load(Ordering::SeqCst)
    );

    // Nothing lost: every acked memory is found by its own word, in its own namespace, by the
    // surviving owners of its partition.
    let mut missing: HashSet<(String, String)> = acked
        .iter()
        .map(|(ns, _, id)| (ns.clone(), id.clone()))
        .collect();
    let until = Instant::now() + Duration::from_secs(120);
    while !missing.is_empty() {
        for (ns, k, id) in &acked {
            if !missing.contains(&(ns.clone(), id.clone())) {
                continue;
            }
            let v = query(
                &nc,
                ns,
                &json!({"v": 2, "text": marker_word(ns, *k), "top_k": 10, "mode": "bm25"}),
            )
            .await;
            assert!(foreign_hits(ns, &v).is_empty(), "foreign hit: {v}");
            if v["hits"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["id"] == id.as_str())
            {
                missing.remove(&(ns.clone(), id.clone()));
            }
        }
        if !missing.is_empty() {
            assert!(
                Instant::now() < until,
                "acked memories never found: {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(replicas);
}
