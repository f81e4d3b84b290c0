//! containerd's content store as imports and pulls use it: one blob written whole through a
//! `Content.Write` stream ([`Ingest`]: STAT, WRITE in chunks, COMMIT with the expected digest
//! and size, which containerd checks), read back, listed, and an ingest aborted.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::client::Client;
use crate::error::Error;
use crate::proto::containerd::services::content::v1 as api;
use crate::proto::containerd::services::snapshots::v1 as snap;

/// One blob on its way into the content store, under a reference of its own.
pub(crate) struct Ingest {
    client: Client,
    reference: String,
    total: u64,
    offset: u64,
    requests: mpsc::Sender<api::WriteContentRequest>,
    answers: Streaming<api::WriteContentResponse>,
}

/// How an ingest began.
pub(crate) enum Began {
    Writing(Box<Ingest>),
    /// containerd has the blob already (and added it to the call's lease).
    Exists,
}

impl Ingest {
    /// Opens an ingest of `total` bytes, which must digest to `expected` when it is known.
    pub(crate) async fn begin(
        client: &Client,
        what: &str,
        total: u64,
        expected: Option<&str>,
    ) -> Result<Began, Error> {
        let mut id = [0u8; 8];
        crate::client::random(&mut id);
        let reference = format!(
            "torc-{}-{}",
            id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            what.rsplit('/').next().unwrap_or(what)
        );
        let (requests, receiver) = mpsc::channel(2);
        let stat = api::WriteContentRequest {
            action: api::WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total: total as i64,
            expected: expected.unwrap_or_default().to_string(),
            ..Default::default()
        };
        // containerd answers (and sends the stream's headers) only after the first request.
        let _ = requests.send(stat).await;
        let mut api = client.content_api();
        let call = api.write(ReceiverStream::new(receiver));
        let mut answers = match client.unary("Content.Write", what, call).await {
            Ok(answers) => answers,
            Err(e) if e.is_already_exists() => return Ok(Began::Exists),
            Err(e) => return Err(e),
        };
        match answers.message().await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::AlreadyExists => {
                return Ok(Began::Exists);
            }
            Err(status) => return Err(client.status_error("Content.Write", what, status)),
        }
        Ok(Began::Writing(Box::new(Ingest {
            client: client.clone(),
            reference,
            total,
            offset: 0,
            requests,
            answers,
        })))
    }

    async fn exchange(
        &mut self,
        request: api::WriteContentRequest,
    ) -> Result<api::WriteContentResponse, Error> {
        let what = self.reference.clone();
        if self.requests.send(request).await.is_err() {
            // containerd ended the stream: its status says why.
        }
        match self.answers.message().await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => {
                Err(self
                    .client
                    .answer_error("Content.Write", &what, "the stream ended early"))
            }
            Err(status) => Err(self.client.status_error("Content.Write", &what, status)),
        }
    }

    /// Writes the next chunk.
    pub(crate) async fn write(&mut self, data: bytes::Bytes) -> Result<(), Error> {
        let len = data.len() as u64;
        let request = api::WriteContentRequest {
            action: api::WriteAction::Write as i32,
            r#ref: self.reference.clone(),
            total: self.total as i64,
            offset: self.offset as i64,
            data: data.to_vec(),
            ..Default::default()
        };
        self.exchange(request).await?;
        self.offset += len;
        Ok(())
    }

    /// Commits the blob as `digest` with `labels`; containerd refuses a digest or size that
    /// the bytes written do not have. Returns the digest containerd stored.
    pub(crate) async fn commit(
        mut self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<String, (Error, Ingest)> {
        let request = api::WriteContentRequest {
            action: api::WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            total: self.total as i64,
            offset: self.offset as i64,
            expected: digest.to_string(),
            labels,
            ..Default::default()
        };
        match self.exchange(request).await {
            Ok(answer) => Ok(answer.digest),
            Err(e) if e.is_already_exists() => Ok(digest.to_string()),
            Err(e) => Err((e, self)),
        }
    }

    /// Ends the ingest and removes what it wrote (`Content.Abort`).
    pub(crate) async fn abort(self) {
        let Ingest {
            client,
            reference,
            requests,
            answers,
            ..
        } = self;
        drop(requests);
        drop(answers);
        let request = api::AbortRequest {
            r#ref: reference.clone(),
        };
        if let Err(e) = client
            .unary(
                "Content.Abort",
                &reference,
                client.content_api().abort(request),
            )
            .await
            && !e.is_not_found()
        {
            tracing::warn!("{e}");
        }
    }
}

/// Writes a blob held in memory (a manifest, an index, a config).
pub(crate) async fn write_bytes(
    client: &Client,
    digest: &str,
    bytes: &[u8],
    labels: HashMap<String, String>,
) -> Result<(), Error> {
    let mut ingest = match Ingest::begin(client, digest, bytes.len() as u64, Some(digest)).await? {
        Began::Exists => {
            return label_blob(client, digest, labels).await;
        }
        Began::Writing(ingest) => ingest,
    };
    for chunk in bytes.chunks(CHUNK) {
        if let Err(e) = ingest.write(bytes::Bytes::copy_from_slice(chunk)).await {
            ingest.abort().await;
            return Err(e);
        }
    }
    match ingest.commit(digest, labels).await {
        Ok(_) => Ok(()),
        Err((e, ingest)) => {
            ingest.abort().await;
            Err(e)
        }
    }
}

/// The chunk size of a write: containerd's own clients use 1 MiB.
pub(crate) const CHUNK: usize = 1 << 20;

/// `Content.Read` of a whole blob (manifests, indexes, configs: small).
pub(crate) async fn read(client: &Client, digest: &str) -> Result<Vec<u8>, Error> {
    let request = api::ReadContentRequest {
        digest: digest.into(),
        offset: 0,
        size: 0,
    };
    let mut stream = client
        .unary("Content.Read", digest, client.content_api().read(request))
        .await?;
    let mut bytes = Vec::new();
    drain(client, "Content.Read", digest, &mut stream, |chunk| {
        bytes.extend_from_slice(&chunk.data)
    })
    .await?;
    Ok(bytes)
}

/// Reads a server stream to its end, handing each message to `each`.
async fn drain<T>(
    client: &Client,
    call: &'static str,
    target: &str,
    stream: &mut Streaming<T>,
    mut each: impl FnMut(T),
) -> Result<(), Error> {
    loop {
        match stream.message().await {
            Ok(Some(message)) => each(message),
            Ok(None) => return Ok(()),
            Err(status) => return Err(client.status_error(call, target, status)),
        }
    }
}

/// Whether the content store has `digest` (visible in the client's namespace).
pub(crate) async fn has(client: &Client, digest: &str) -> Result<bool, Error> {
    let request = api::InfoRequest {
        digest: digest.into(),
    };
    Ok(crate::error::found(
        client
            .unary("Content.Info", digest, client.content_api().info(request))
            .await,
    )?
    .is_some())
}

/// Every blob of the namespace: digest and size (`Content.List`).
pub async fn list(client: &Client) -> Result<Vec<(String, u64)>, Error> {
    let mut stream = client
        .unary(
            "Content.List",
            "",
            client
                .content_api()
                .list(api::ListContentRequest::default()),
        )
        .await?;
    let mut blobs = Vec::new();
    drain(client, "Content.List", "", &mut stream, |answer| {
        blobs.extend(
            answer
                .info
                .into_iter()
                .map(|i| (i.digest, i.size.max(0) as u64)),
        )
    })
    .await?;
    Ok(blobs)
}

/// Every unfinished write of the namespace (`Content.ListStatuses`): their references.
pub async fn ingests(client: &Client) -> Result<Vec<String>, Error> {
    let answer = client
        .unary(
            "Content.ListStatuses",
            "",
            client
                .content_api()
                .list_statuses(api::ListStatusesRequest::default()),
        )
        .await?;
    Ok(answer.statuses.into_iter().map(|s| s.r#ref).collect())
}

/// Every overlayfs snapshot of the namespace, by name (`Snapshots.List`).
pub async fn snapshots(client: &Client) -> Result<Vec<String>, Error> {
    let request = snap::ListSnapshotsRequest {
        snapshotter: crate::OVERLAYFS.into(),
        filters: vec![],
    };
    let mut stream = client
        .unary("Snapshots.List", "", client.snapshots_api().list(request))
        .await?;
    let mut names = Vec::new();
    drain(client, "Snapshots.List", "", &mut stream, |answer| {
        names.extend(answer.info.into_iter().map(|i| i.name))
    })
    .await?;
    Ok(names)
}

/// Every lease of the namespace, by id (`Leases.List`).
pub async fn leases(client: &Client) -> Result<Vec<String>, Error> {
    use crate::proto::containerd::services::leases::v1::ListRequest;
    let answer = client
        .unary(
            "Leases.List",
            "",
            client.leases_api().list(ListRequest::default()),
        )
        .await?;
    Ok(answer.leases.into_iter().map(|l| l.id).collect())
}

/// Sets labels on a blob (`Content.Update` with one field path per label).
pub(crate) async fn label_blob(
    client: &Client,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<(), Error> {
    if labels.is_empty() {
        return Ok(());
    }
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    let request = api::UpdateRequest {
        info: Some(api::Info {
            digest: digest.into(),
            labels,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths }),
    };
    client
        .unary(
            "Content.Update",
            digest,
            client.content_api().update(request),
        )
        .await
        .map(|_| ())
}
