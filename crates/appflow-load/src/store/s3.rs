//! S3 with conditional writes: `If-None-Match: *` to create, `If-Match: <etag>` to
//! replace. 412 `PreconditionFailed`, 409 `ConditionalRequestConflict` and a
//! vanished object (`NoSuchKey` on `If-Match`) are reported as conflicts.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::{Object, ObjectStore, PutMode, PutOutcome};
use crate::dest::S3Options;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

fn context<E: std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> String {
    DisplayErrorContext(e).to_string()
}

impl S3Store {
    pub fn new(
        sdk_config: &aws_config::SdkConfig,
        options: &S3Options,
        bucket: &str,
        prefix: &str,
    ) -> Self {
        let mut config =
            aws_sdk_s3::config::Builder::from(sdk_config).force_path_style(options.path_style);
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        S3Store {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
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

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, key: &str) -> Result<Option<Object>> {
        let resp = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(Error::read(self.location(key), context(e))),
        };
        let etag = resp.e_tag().unwrap_or_default().to_string();
        let body = resp
            .body
            .collect()
            .await
            .map_err(|e| Error::read(self.location(key), e))?;
        Ok(Some(Object {
            body: body.into_bytes(),
            etag,
        }))
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutOutcome> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .body(ByteStream::from(body));
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
                    Err(Error::write(self.location(key), context(e)))
                }
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let full = self.key(prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::read(self.location(prefix), context(e)))?;
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
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Error::write(self.location(key), context(e)))
    }

    async fn check(&self) -> Result<()> {
        let dest = format!("s3://{}/{}", self.bucket, self.prefix);
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.key(""))
            .max_keys(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let why = match e.code() {
                    Some("NoSuchBucket") => format!("bucket '{}' does not exist", self.bucket),
                    Some("AccessDenied") => format!(
                        "access to bucket '{}' is denied (s3:ListBucket)",
                        self.bucket
                    ),
                    _ => format!("bucket '{}' cannot be reached: {}", self.bucket, context(e)),
                };
                Error::BadDest { dest, why }
            })
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(key))
    }
}
