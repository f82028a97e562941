//! S3 with conditional writes: `If-None-Match: *` to create, `If-Match: <etag>` to
//! replace. 412 `PreconditionFailed`, 409 `ConditionalRequestConflict` and a
//! vanished object (`NoSuchKey` on `If-Match`) are reported as conflicts.

use appflow_aws::Service;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use bytes::Bytes;

use super::{Object, ObjectStore, PutMode, PutOutcome, local_file};
use crate::dest::{S3Options, Sse};
use crate::error::{Error, Result};
use aws_sdk_s3::types::ServerSideEncryption;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    sse: Option<Sse>,
    expected_owner: Option<String>,
    /// The region requests are signed for.
    region: Option<String>,
    /// How a read whose body breaks off is retried: the SDK's own policy for calls
    /// (it retries a failed call, not a body cut short after the headers came).
    reads: ReadRetry,
}

#[derive(Debug, Clone, Copy)]
struct ReadRetry {
    attempts: u32,
    initial: Duration,
    max: Duration,
}

impl ReadRetry {
    /// Exponential with jitter: `initial * 2^(n-1)`, at most `max`, times a factor in
    /// [0.5, 1) (the SDK's own jitter goes down to 0; a floor keeps a retry from
    /// coming at once).
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1_u32 << attempt.saturating_sub(1).min(16))
            .min(self.max);
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() % 1000);
        exp.mul_f64(0.5 + f64::from(jitter) / 2000.0)
    }
}

/// One line a person can act on for a failed call of `action`.
fn context<E, R>(action: &str, e: SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    appflow_aws::explain(Service::S3, action, &e)
}

impl S3Store {
    pub fn new(
        sdk_config: &aws_config::SdkConfig,
        options: &S3Options,
        bucket: &str,
        prefix: &str,
    ) -> Self {
        let mut config = Self::config(sdk_config, options);
        if let Some(region) = &options.region {
            config = config.region(aws_sdk_s3::config::Region::new(region.clone()));
        }
        let retry = sdk_config.retry_config();
        let reads = ReadRetry {
            attempts: retry.map_or(3, |r| r.max_attempts()).max(1),
            initial: retry.map_or(Duration::from_secs(1), |r| r.initial_backoff()),
            max: retry.map_or(Duration::from_secs(20), |r| r.max_backoff()),
        };
        S3Store {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            sse: options.sse.clone(),
            expected_owner: options.expected_bucket_owner.clone(),
            region: options
                .region
                .clone()
                .or_else(|| sdk_config.region().map(ToString::to_string)),
            reads,
        }
    }

    fn config(
        sdk_config: &aws_config::SdkConfig,
        options: &S3Options,
    ) -> aws_sdk_s3::config::Builder {
        let mut config =
            aws_sdk_s3::config::Builder::from(sdk_config).force_path_style(options.path_style);
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        config
    }

    /// The region S3 says `bucket` is in: `HeadBucket`'s `x-amz-bucket-region`, which S3
    /// sends with a 200, and also with the 301 of a request signed for another region
    /// and a 403 (credentials without s3:ListBucket on it). `None` when S3 names none
    /// (no such bucket, an unreachable endpoint): the caller's region is used then, and
    /// the destination's check reports what is wrong.
    pub async fn bucket_region(
        sdk_config: &aws_config::SdkConfig,
        options: &S3Options,
        bucket: &str,
    ) -> Option<String> {
        // Few attempts: a wrong region is a 301, which is not retried anyway, and a
        // lookup that fails leaves the destination's check to say why.
        let config = Self::config(sdk_config, options)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
        let client = Client::from_conf(config.build());
        let header = |headers: &aws_smithy_runtime_api::http::Headers| {
            headers.get("x-amz-bucket-region").map(str::to_string)
        };
        match client
            .head_bucket()
            .bucket(bucket)
            .set_expected_bucket_owner(options.expected_bucket_owner.clone())
            .send()
            .await
        {
            Ok(out) => out.bucket_region().map(str::to_string),
            Err(e) => e.raw_response().and_then(|r| header(r.headers())),
        }
    }

    /// A GetObject of `key`: `None` when there is no such object.
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .set_expected_bucket_owner(self.expected_owner.clone())
            .send()
            .await
        {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(Error::read(self.location(key), context("s3:GetObject", e))),
        }
    }

    /// Reads the object at `key` into `sink`, returning its tag (`None`: no such
    /// object). A body that breaks off (a reset, a truncated response) is read again
    /// from the start, under the SDK's attempts and backoff (the SDK retries a failed
    /// call, not a body cut short after the headers came); after the last attempt the
    /// error names the key.
    async fn read_into(&self, key: &str, sink: &mut Sink<'_>) -> Result<Option<String>> {
        let mut attempt = 1;
        loop {
            let Some(resp) = self.get_object(key).await? else {
                return Ok(None);
            };
            let etag = resp.e_tag().unwrap_or_default().to_string();
            sink.restart().await?;
            let mut body = resp.body;
            let broke = loop {
                match body.try_next().await {
                    Ok(Some(chunk)) => sink.write(&chunk).await?,
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            match broke {
                None => {
                    sink.finish().await?;
                    return Ok(Some(etag));
                }
                Some(e) if attempt < self.reads.attempts => {
                    tracing::debug!(key, attempt, error = %e, "the body broke off; reading it again");
                    tokio::time::sleep(self.reads.backoff(attempt)).await;
                    attempt += 1;
                }
                Some(e) => {
                    return Err(Error::read(
                        self.location(key),
                        format!("the body broke off on each of {attempt} attempts: {e}"),
                    ));
                }
            }
        }
    }

    /// A conditional PutObject of `body` at `key`.
    async fn put_stream(&self, key: &str, body: ByteStream, mode: PutMode) -> Result<PutOutcome> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .set_expected_bucket_owner(self.expected_owner.clone())
            .body(body);
        let req = match &self.sse {
            None => req,
            Some(Sse::Aes256) => req.server_side_encryption(ServerSideEncryption::Aes256),
            Some(Sse::Kms { key_id }) => req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key_id.clone()),
        };
        let req = match &mode {
            PutMode::Create => req.if_none_match("*"),
            PutMode::Replace(etag) => req.if_match(etag),
        };
        match req.send().await {
            Ok(out) => Ok(PutOutcome::Written {
                etag: out.e_tag().unwrap_or_default().to_string(),
            }),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let code = e.code().unwrap_or_default().to_string();
                let conflict = matches!(status, Some(412 | 409))
                    || code == "PreconditionFailed"
                    || code == "ConditionalRequestConflict"
                    || (matches!(mode, PutMode::Replace(_))
                        && (code == "NoSuchKey" || status == Some(404)));
                if conflict {
                    tracing::debug!(key, code, "conditional put lost a race");
                    Ok(PutOutcome::Conflict)
                } else {
                    Err(Error::write(self.location(key), context("s3:PutObject", e)))
                }
            }
        }
    }

    fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

/// Where a read's body goes: memory (small objects) or a local file (day files).
enum Sink<'a> {
    Memory(Vec<u8>),
    File(tokio::fs::File, &'a Path),
}

impl Sink<'_> {
    /// Drops what an earlier attempt wrote.
    async fn restart(&mut self) -> Result<()> {
        match self {
            Sink::Memory(bytes) => bytes.clear(),
            Sink::File(file, path) => {
                file.set_len(0).await.map_err(|e| local_file(path, e))?;
                file.rewind().await.map_err(|e| local_file(path, e))?;
            }
        }
        Ok(())
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        match self {
            Sink::Memory(bytes) => bytes.extend_from_slice(chunk),
            Sink::File(file, path) => file
                .write_all(chunk)
                .await
                .map_err(|e| local_file(path, e))?,
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        if let Sink::File(file, path) = self {
            file.flush().await.map_err(|e| local_file(path, e))?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, key: &str) -> Result<Option<Object>> {
        let mut body = Sink::Memory(Vec::new());
        let etag = self.read_into(key, &mut body).await?;
        Ok(etag.map(|etag| Object {
            body: match body {
                Sink::Memory(bytes) => Bytes::from(bytes),
                Sink::File(..) => Bytes::new(),
            },
            etag,
        }))
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutOutcome> {
        self.put_stream(key, ByteStream::from(body), mode).await
    }

    async fn get_file(&self, key: &str, path: &Path) -> Result<Option<String>> {
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|e| local_file(path, e))?;
        self.read_into(key, &mut Sink::File(file, path)).await
    }

    /// The SDK streams the file and reopens it when it retries the call.
    async fn put_file(&self, key: &str, path: &Path, mode: PutMode) -> Result<PutOutcome> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| Error::stage(format!("temporary file {}: {e}", path.display())))?;
        self.put_stream(key, body, mode).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let full = self.key(prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| Error::read(self.location(prefix), context("s3:ListBucket", e)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter_map(|k| k.get(strip..))
                    .map(str::to_string),
            );
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .set_expected_bucket_owner(self.expected_owner.clone())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Error::write(self.location(key), context("s3:DeleteObject", e)))
    }

    async fn check(&self) -> Result<()> {
        let dest = format!("s3://{}/{}", self.bucket, self.prefix);
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.key(""))
            .max_keys(1)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let in_region = e
                    .raw_response()
                    .and_then(|r| r.headers().get("x-amz-bucket-region"))
                    .map(str::to_string);
                let why = match e.code() {
                    Some("NoSuchBucket") => format!("bucket '{}' does not exist", self.bucket),
                    Some("AuthorizationHeaderMalformed" | "PermanentRedirect") => {
                        let bucket_region = in_region.as_deref().unwrap_or("another region");
                        let signed = self.region.as_deref().unwrap_or("another");
                        format!(
                            "bucket '{}' is in {bucket_region}, and the requests were signed for {signed}: pass --dest-region {bucket_region}, or leave --dest-region out to have S3 asked",
                            self.bucket
                        )
                    }
                    Some("AccessDenied") => match &self.expected_owner {
                        Some(owner) => format!(
                            "access to bucket '{}' is denied: it is not owned by account {owner} (--expected-bucket-owner), or the credentials lack s3:ListBucket",
                            self.bucket
                        ),
                        None => format!(
                            "access to bucket '{}' is denied (s3:ListBucket)",
                            self.bucket
                        ),
                    },
                    _ => format!(
                        "bucket '{}' cannot be reached: {}",
                        self.bucket,
                        context("s3:ListBucket", e)
                    ),
                };
                Error::BadDest { dest, why }
            })
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(key))
    }
}
