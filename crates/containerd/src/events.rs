//! containerd's events (`Events.Subscribe`), as a subscription that starts again by itself
//! after the stream breaks (containerd restarted, the socket went away).
//!
//! containerd sends a stream's first bytes (its HTTP/2 headers) only with its first event, so
//! a client cannot tell from the call alone when its subscription is in place; yet a caller
//! that reconciles ("subscribe, then list the tasks") needs to know, or an exit between the
//! list and the subscription is lost. While a subscription is being made, this module
//! therefore publishes a marker event (topic [`topic::SUBSCRIBED`], in the client's namespace)
//! until the stream answers; the marker is never handed to the caller. From [`Notice::Live`]
//! on, every event matching the filters arrives.
//!
//! Events are the client's namespace's only: every filter is prefixed with
//! `namespace=="<ns>"`.

use std::time::{Duration, SystemTime};

use prost::Message;
use tonic::Streaming;

use crate::client::{Client, time};
use crate::error::Error;
use crate::proto::containerd::events as ev;
use crate::proto::containerd::services::events::v1 as pb;

/// Topics torc follows, and its marker's.
pub mod topic {
    pub const TASK_START: &str = "/tasks/start";
    pub const TASK_EXIT: &str = "/tasks/exit";
    pub const TASK_OOM: &str = "/tasks/oom";
    /// The marker a subscription publishes until its stream answers.
    pub const SUBSCRIBED: &str = "/torc/subscribed";
}

/// An event's content, decoded when it is one torc acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    TaskStart {
        container_id: String,
        pid: u32,
    },
    /// A process of a task ended: the init process when `id` is the container id.
    TaskExit {
        container_id: String,
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: Option<SystemTime>,
    },
    /// The kernel's OOM killer acted in the task's cgroup (a hint: the cgroup's `oom_kill`
    /// counter is the record, design §1).
    TaskOom {
        container_id: String,
    },
    /// Any other event: its type (`containerd.events.ContainerCreate`, ...).
    Other {
        type_url: String,
    },
}

/// An event with containerd's envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub timestamp: Option<SystemTime>,
    pub namespace: String,
    pub topic: String,
    pub event: Event,
}

/// What [`Subscription::next`] says.
#[derive(Debug)]
pub enum Notice {
    /// The subscription is in place (first, and again after each [`Notice::Lost`]): events
    /// from now on arrive. Those since the loss may have been missed: reconcile now.
    Live,
    Event(Envelope),
    /// The stream broke or could not be made; the subscription tries again with back-off
    /// and says [`Notice::Live`] when it is back. Said once per outage.
    Lost(Error),
}

enum State {
    Connecting,
    Streaming(Box<Streaming<pb::Envelope>>),
    Backoff,
}

/// A subscription to containerd's events that survives containerd's restarts.
pub struct Subscription {
    client: Client,
    filters: Vec<String>,
    state: State,
    backoff: Duration,
    /// A loss was reported and no `Live` since.
    lost: bool,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Client {
    /// A subscription to this namespace's events matching any of `filters` (containerd's
    /// syntax, e.g. `topic=="/tasks/exit"`; all of the namespace's events when empty). Does
    /// nothing until [`Subscription::next`].
    pub fn subscribe(&self, filters: Vec<String>) -> Subscription {
        let namespace = format!("namespace=={}", quote(self.namespace().as_str()));
        let mut scoped: Vec<String> = if filters.is_empty() {
            vec![namespace.clone()]
        } else {
            filters.iter().map(|f| format!("{namespace},{f}")).collect()
        };
        scoped.push(format!("{namespace},topic=={}", quote(topic::SUBSCRIBED)));
        Subscription {
            client: self.clone(),
            filters: scoped,
            state: State::Connecting,
            backoff: FIRST_BACKOFF,
            lost: false,
        }
    }
}

impl Subscription {
    /// The next notice: [`Notice::Live`] first, then events; a loss and a new `Live` when the
    /// stream breaks. Never ends; cancel-safe between notices only (drop it to stop).
    pub async fn next(&mut self) -> Notice {
        loop {
            match &mut self.state {
                State::Connecting => match self.connect().await {
                    Ok(stream) => {
                        self.state = State::Streaming(Box::new(stream));
                        self.backoff = FIRST_BACKOFF;
                        self.lost = false;
                        return Notice::Live;
                    }
                    Err(error) => {
                        self.state = State::Backoff;
                        if !self.lost {
                            self.lost = true;
                            return Notice::Lost(error);
                        }
                        tracing::debug!(%error, "containerd events: still no subscription");
                    }
                },
                State::Streaming(stream) => {
                    let error = match stream.message().await {
                        Ok(Some(envelope)) => {
                            if envelope.topic == topic::SUBSCRIBED {
                                continue;
                            }
                            return Notice::Event(decode(envelope));
                        }
                        Ok(None) => self.client.answer_error(
                            "Events.Subscribe",
                            "",
                            "the event stream ended",
                        ),
                        Err(status) => self.client.status_error("Events.Subscribe", "", status),
                    };
                    self.state = State::Backoff;
                    self.lost = true;
                    return Notice::Lost(error);
                }
                State::Backoff => {
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.state = State::Connecting;
                }
            }
        }
    }

    /// Makes the call and publishes markers until containerd answers it (with the headers it
    /// sends along its first event).
    async fn connect(&self) -> Result<Streaming<pb::Envelope>, Error> {
        let request = pb::SubscribeRequest {
            filters: self.filters.clone(),
        };
        let mut api = self.client.events_api();
        let call = api.subscribe(request);
        tokio::pin!(call);
        let mut pause = Duration::from_millis(5);
        loop {
            tokio::select! {
                answer = &mut call => {
                    return answer
                        .map(tonic::Response::into_inner)
                        .map_err(|s| self.client.status_error("Events.Subscribe", "", s));
                }
                published = self.publish_marker() => {
                    published?;
                    // Wait for the answer a while before publishing again: the marker may
                    // have gone out before containerd registered the subscription.
                    if let Ok(answer) = tokio::time::timeout(pause, &mut call).await {
                        return answer
                            .map(tonic::Response::into_inner)
                            .map_err(|s| self.client.status_error("Events.Subscribe", "", s));
                    }
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    async fn publish_marker(&self) -> Result<(), Error> {
        // An empty `google.protobuf.Empty`: a type every containerd client can decode, so a
        // `ctr events` watching the namespace shows the marker rather than an error.
        let request = pb::PublishRequest {
            topic: topic::SUBSCRIBED.into(),
            event: Some(prost_types::Any {
                type_url: "google.protobuf.Empty".into(),
                value: Vec::new(),
            }),
        };
        self.client
            .unary(
                "Events.Publish",
                topic::SUBSCRIBED,
                self.client.events_api().publish(request),
            )
            .await
    }
}

/// A value in a containerd filter: quoted, so that `.`, `-` and `/` are taken literally.
pub(crate) fn quote(value: &str) -> String {
    let mut text = String::with_capacity(value.len() + 2);
    text.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            text.push('\\');
        }
        text.push(c);
    }
    text.push('"');
    text
}

fn decode(envelope: pb::Envelope) -> Envelope {
    let event = match envelope.event {
        Some(any) => decode_event(any),
        None => Event::Other {
            type_url: String::new(),
        },
    };
    Envelope {
        timestamp: time(envelope.timestamp),
        namespace: envelope.namespace,
        topic: envelope.topic,
        event,
    }
}

fn decode_event(any: prost_types::Any) -> Event {
    // containerd names event types by their proto name, with or without a URL prefix.
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let bytes = any.value.as_slice();
    let decoded = match name {
        "containerd.events.TaskStart" => ev::TaskStart::decode(bytes).map(|e| Event::TaskStart {
            container_id: e.container_id,
            pid: e.pid,
        }),
        "containerd.events.TaskExit" => ev::TaskExit::decode(bytes).map(|e| Event::TaskExit {
            container_id: e.container_id,
            id: e.id,
            pid: e.pid,
            exit_status: e.exit_status,
            exited_at: time(e.exited_at),
        }),
        "containerd.events.TaskOOM" => ev::TaskOom::decode(bytes).map(|e| Event::TaskOom {
            container_id: e.container_id,
        }),
        _ => {
            return Event::Other {
                type_url: any.type_url,
            };
        }
    };
    decoded.unwrap_or(Event::Other {
        type_url: any.type_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_task_events() {
        let exit = ev::TaskExit {
            container_id: "dns.0a1b2c".into(),
            id: "dns.0a1b2c".into(),
            pid: 42,
            exit_status: 137,
            exited_at: None,
        };
        let any = prost_types::Any {
            type_url: "containerd.events.TaskExit".into(),
            value: exit.encode_to_vec(),
        };
        assert_eq!(
            decode_event(any),
            Event::TaskExit {
                container_id: "dns.0a1b2c".into(),
                id: "dns.0a1b2c".into(),
                pid: 42,
                exit_status: 137,
                exited_at: None
            }
        );
        // Bytes that are not the named type are another event, not a panic.
        let junk = prost_types::Any {
            type_url: "types.containerd.io/containerd.events.TaskOOM".into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert!(matches!(decode_event(junk), Event::Other { .. }));
    }
}
