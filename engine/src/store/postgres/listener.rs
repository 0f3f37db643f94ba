//! Turns PostgreSQL `NOTIFY`s from any process into local commit hints.
//!
//! A committing transaction sends one notification naming the slots of the keys it wrote, as
//! decimal numbers separated by commas (`*` for all, after a range clear). One dedicated
//! connection per store listens and wakes the local subscribers of those slots. A notification
//! sent while the listener is disconnected is lost, so after every (re)connect the listener
//! wakes everyone, and subscriptions also re-check periodically.
//!
//! Nodes older than the slot lists sent one notification per slot. A new listener reads those
//! as lists of one; an old listener ignores a list, so during a rolling upgrade its waiters
//! wake by their re-check (1 s) until it is upgraded.

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

/// The payload of a commit's notification: `*` after a range clear, else the written slots
/// (`None`: nothing to notify). Every slot at once fits well within PostgreSQL's 8,000 bytes.
pub(super) fn payload<'a>(
    cleared_range: bool,
    slots: impl IntoIterator<Item = &'a usize>,
) -> Option<String> {
    if cleared_range {
        return Some("*".into());
    }
    use std::fmt::Write;
    let mut out = String::new();
    for slot in slots {
        let sep = if out.is_empty() { "" } else { "," };
        let _ = write!(out, "{sep}{slot}");
    }
    (!out.is_empty()).then_some(out)
}

/// Wakes the slots a notification names. A payload that is not ours (another program on the
/// channel) wakes nothing: a subscriber's periodic re-check still finds any change.
fn dispatch(notifier: &Notifier, payload: &str) {
    if payload == "*" {
        notifier.notify_all();
        return;
    }
    for slot in payload.split(',') {
        if let Ok(slot) = slot.parse::<usize>() {
            notifier.notify_slot(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::watch::SLOTS;
    use super::*;

    #[test]
    fn a_commits_payload_names_its_slots_and_always_fits() {
        assert_eq!(payload(false, &[]), None);
        assert_eq!(payload(true, &[3]).as_deref(), Some("*"));
        assert_eq!(payload(false, &[3, 17, 1023]).as_deref(), Some("3,17,1023"));
        let every: Vec<usize> = (0..SLOTS).collect();
        let all = payload(false, &every).unwrap();
        assert!(all.len() < 8000, "{} bytes", all.len());
    }

    #[test]
    fn dispatch_wakes_exactly_the_slots_named() {
        use futures::FutureExt;
        let notifier = Notifier::default();
        let keys: Vec<Vec<u8>> = (0..64u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let named = Notifier::slot_of(&keys[0]);
        let other = keys
            .iter()
            .find(|k| Notifier::slot_of(k) != named)
            .expect("64 keys use more than one slot");
        let mut woken = notifier.subscribe(&keys[0]);
        let mut quiet = notifier.subscribe(other);
        dispatch(&notifier, &payload(false, &[named, SLOTS + 5]).unwrap());
        dispatch(&notifier, "not ours");
        assert!(
            woken.changed().now_or_never().is_some(),
            "the named slot is woken"
        );
        assert!(quiet.changed().now_or_never().is_none(), "no other slot is");
    }
}
