//! Turns PostgreSQL `NOTIFY`s from any process into local commit hints.
//!
//! A committing transaction notifies the slots of the keys it wrote (`*` for all, after a range
//! clear). One dedicated connection per store listens and wakes the local subscribers of those
//! slots. A notification sent while the listener is disconnected is lost, so after every
//! (re)connect the listener wakes everyone, and subscriptions also re-check periodically.

use super::super::watch::Notifier;
use crate::error::{Error, Result};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_postgres::{AsyncMessage, NoTls};

/// Starts the listener; returns once it listens (or the first connection failed).
pub(super) async fn spawn(
    config: tokio_postgres::Config,
    url: String,
    channel: String,
    notifier: Arc<Notifier>,
) -> Result<tokio::task::JoinHandle<()>> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let handle = tokio::spawn(run(config, url, channel, notifier, ready_tx));
    match ready_rx.await {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Backend {
            backend: super::BACKEND,
            detail: "the notification listener stopped while starting".into(),
        }),
    }
}

async fn run(
    config: tokio_postgres::Config,
    url: String,
    channel: String,
    notifier: Arc<Notifier>,
    ready: oneshot::Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(50);
    loop {
        match listen_once(&config, &url, &channel, &notifier, &mut ready).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e));
                    return;
                }
                tracing::warn!(error = %e, "store notification listener disconnected; reconnecting");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection's life: LISTEN, then forward notifications until the connection ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    url: &str,
    channel: &str,
    notifier: &Notifier,
    ready: &mut Option<oneshot::Sender<Result<()>>>,
) -> Result<()> {
    let (client, mut connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| Error::Unreachable {
            url: url.to_string(),
            detail: super::describe(&e),
        })?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen_sql = format!("LISTEN {channel}");
    let listen = client.batch_execute(&listen_sql);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            result = &mut listen, if !listening => {
                result.map_err(|e| super::classify(e, false))?;
                listening = true;
                // Anything committed while we were not listening went unheard.
                notifier.notify_all();
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                }
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => dispatch(notifier, n.payload()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(super::classify(e, false)),
                None => return Ok(()),
            },
        }
    }
}

fn dispatch(notifier: &Notifier, payload: &str) {
    if payload == "*" {
        notifier.notify_all();
    } else if let Ok(slot) = payload.parse::<usize>() {
        notifier.notify_slot(slot);
    }
}
