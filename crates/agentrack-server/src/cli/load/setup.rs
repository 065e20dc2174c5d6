//! The untimed preparation of a run: the agents' and viewers' tokens, the subscribers' streams,
//! the executions the heartbeat scenarios beat and the ws-batch agents' streams.
//!
//! Thousands of each take a while to open: they are opened `--setup-concurrency` at a time, and
//! Ctrl-C stops opening more but keeps what is open, so that teardown closes it. A failure to
//! open one is counted in the run's errors rather than ending the run.

use std::sync::Arc;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::agents::{Fleet, agent_name, user_id};
use super::stats::{Live, Stats};
use super::{LoadArgs, Scenario, Target, subscribers, ws_agents};

/// The stream's next item, or `None` once it ends or the run is interrupted: setup stops opening
/// more and keeps what it has.
async fn next_unless<S: futures_util::Stream + Unpin>(
    stream: &mut S,
    interrupt: &CancellationToken,
) -> Option<S::Item> {
    tokio::select! {
        next = stream.next() => next,
        () = interrupt.cancelled() => None,
    }
}

/// POSTs `body` to `path` with `token`; the JSON answer, or an error naming the status.
async fn admin_post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = client
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = answer["error"]["message"].as_str().unwrap_or("no details");
        bail!("POST {path} → {}: {message}", status.as_u16());
    }
    Ok(answer)
}

/// The agents' token: a fresh agent token if `token` is an admin's, else `token` itself.
pub(super) async fn agent_token(
    client: &reqwest::Client,
    target: &Target,
    tenant: &str,
) -> anyhow::Result<(String, bool)> {
    let made = admin_post(
        client,
        &target.url,
        &target.token,
        "/v1/tokens",
        json!({"role": "agent", "tenant": tenant, "label": "agentrack load"}),
    )
    .await;
    match made {
        Ok(answer) => match answer["token"].as_str() {
            Some(token) => Ok((token.to_owned(), true)),
            None => bail!("POST /v1/tokens answered without a token"),
        },
        // Not an admin token: take it for an agent token and let the first call tell.
        Err(_) if target.local.is_none() => Ok((target.token.clone(), false)),
        Err(error) => Err(error),
    }
}

/// One viewer token per user `0..users` (none without subscribers), made `concurrency` at a
/// time.
pub(super) async fn viewer_tokens(
    client: &reqwest::Client,
    target: &Target,
    tenant: &str,
    users: usize,
    concurrency: usize,
    interrupt: &CancellationToken,
) -> anyhow::Result<Vec<String>> {
    if users == 0 {
        return Ok(Vec::new());
    }
    let made = futures_util::stream::iter(0..users)
        .map(|user| async move {
            let answer = admin_post(
                client,
                &target.url,
                &target.token,
                "/v1/tokens",
                json!({"role": "viewer", "tenant": tenant, "user_id": user_id(user), "label": "agentrack load"}),
            )
            .await?;
            answer["token"]
                .as_str()
                .map(str::to_owned)
                .context("POST /v1/tokens answered without a token")
        })
        .buffered(concurrency)
        .collect::<Vec<_>>();
    let made = tokio::select! {
        made = made => made,
        () = interrupt.cancelled() => bail!("interrupted while making tokens"),
    };
    made.into_iter()
        .collect::<anyhow::Result<Vec<_>>>()
        .context("cannot make the subscribers' viewer tokens (an admin token is needed)")
}

/// The subscribers' streams, each read by its own task until `stop`.
pub(super) struct Subscribers {
    /// The readers; each returns what it received.
    pub(super) tasks: JoinSet<Stats>,
    /// Tells the readers to stop.
    pub(super) stop: CancellationToken,
    /// Streams that opened.
    pub(super) connected: usize,
}

/// Opens `--subscribers` streams, subscriber i on node i mod N with the viewer token of user i mod the number
/// of tokens; a stream that does not open is counted in `errors`.
pub(super) async fn open_subscribers(
    args: &LoadArgs,
    nodes: &[String],
    tokens: &[String],
    live: &Arc<Live>,
    interrupt: &CancellationToken,
    errors: &mut Stats,
) -> anyhow::Result<Subscribers> {
    let mut opened = Subscribers {
        tasks: JoinSet::new(),
        stop: CancellationToken::new(),
        connected: 0,
    };
    if args.subscribers == 0 || interrupt.is_cancelled() {
        return Ok(opened);
    }
    let urls = nodes
        .iter()
        .map(|node| subscribers::events_url(node))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let urls = &urls;
    let mut opening = futures_util::stream::iter(0..args.subscribers)
        .map(|index| async move {
            let user = index % tokens.len().max(1);
            let token = tokens.get(user).map(String::as_str).unwrap_or_default();
            let url = &urls[index % urls.len()];
            (user, subscribers::connect(url, token).await)
        })
        .buffer_unordered(args.setup_concurrency);
    while let Some((user, socket)) = next_unless(&mut opening, interrupt).await {
        match socket {
            Ok(socket) => {
                opened.connected += 1;
                opened.tasks.spawn(subscribers::run(
                    socket,
                    user_id(user),
                    Arc::clone(live),
                    opened.stop.clone(),
                ));
            }
            Err(kind) => {
                errors.error(None, kind);
                Live::bump(&live.errors);
            }
        }
    }
    Ok(opened)
}

/// The heartbeat and batch scenarios' executions, opened before the window: agent i owns the
/// i-th list (empty for the golden scenario, which opens its own). Setup calls are not part of
/// the window's figures, but their failures are counted in `errors`.
pub(super) async fn open_executions(
    args: &LoadArgs,
    agents: &Fleet,
    interrupt: &CancellationToken,
    errors: &mut Stats,
) -> anyhow::Result<Vec<Vec<String>>> {
    let per_agent = args.scenario.executions_per_agent(args.batch_size);
    let mut open = vec![Vec::new(); args.agents];
    if per_agent == 0 || interrupt.is_cancelled() {
        return Ok(open);
    }
    let mut setup = Stats::default();
    let mut opened = futures_util::stream::iter((0..args.agents).flat_map(|index| (0..per_agent).map(move |_| index)))
        .map(|index| {
            let agents = agents.home(index);
            async move {
                let mut stats = Stats::default();
                let mut slot = None;
                let id = agents.open(&mut stats, &agent_name(index), &mut slot).await;
                (index, id, stats)
            }
        })
        .buffer_unordered(args.setup_concurrency);
    while let Some((index, id, stats)) = next_unless(&mut opened, interrupt).await {
        setup.merge(stats);
        if let (Ok(id), Some(owned)) = (id, open.get_mut(index)) {
            owned.push(id);
        }
    }
    for (kind, count) in setup.errors {
        *errors.errors.entry(kind).or_default() += count;
    }
    if open.iter().all(Vec::is_empty) && !interrupt.is_cancelled() {
        bail!("could not open any execution for the {} scenario", args.scenario.name());
    }
    Ok(open)
}

/// The ws-batch agents' streams, opened with the agents' `token`: agent i's is the i-th (`None`:
/// it has no executions, or its stream did not open). Empty for the other scenarios.
pub(super) async fn open_agent_streams(
    args: &LoadArgs,
    nodes: &[String],
    token: &str,
    open: &[Vec<String>],
    live: &Live,
    interrupt: &CancellationToken,
    errors: &mut Stats,
) -> anyhow::Result<Vec<Option<subscribers::Socket>>> {
    let mut sockets: Vec<Option<subscribers::Socket>> = (0..args.agents).map(|_| None).collect();
    if args.scenario != Scenario::WsBatch || interrupt.is_cancelled() {
        return Ok(sockets);
    }
    let urls = nodes
        .iter()
        .map(|node| subscribers::events_url(node))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let urls = &urls;
    let mut opening = futures_util::stream::iter(
        open.iter()
            .enumerate()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(index, _)| index),
    )
    .map(|index| async move {
        let stream = ws_agents::stream_url(&urls[index % urls.len()], &agent_name(index));
        (index, subscribers::connect(&stream, token).await)
    })
    .buffer_unordered(args.setup_concurrency);
    while let Some((index, socket)) = next_unless(&mut opening, interrupt).await {
        match (socket, sockets.get_mut(index)) {
            (Ok(socket), Some(slot)) => *slot = Some(socket),
            (Ok(_), None) => {}
            (Err(kind), _) => {
                errors.error(None, kind);
                Live::bump(&live.errors);
            }
        }
    }
    if sockets.iter().all(Option::is_none) && !interrupt.is_cancelled() {
        bail!("could not open any agent's event stream for the ws-batch scenario");
    }
    Ok(sockets)
}
