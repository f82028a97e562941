//! `--dest`: an S3 URI or a local folder.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::{LocalStore, ObjectStore, S3Store};

/// Where the export goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `s3://bucket/prefix`; the prefix has no leading or trailing `/` (may be empty).
    S3 { bucket: String, prefix: String },
    /// A local folder (created when missing).
    Local(PathBuf),
}

/// How to reach S3.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Endpoint URL (`--s3-endpoint`), overriding `AWS_ENDPOINT_URL_S3`.
    pub endpoint: Option<String>,
    /// Path-style addressing (`--s3-path-style`).
    pub path_style: bool,
    /// Server-side encryption asked for on every PutObject (`--sse`).
    pub sse: Option<Sse>,
    /// The account that must own the bucket, sent on every request
    /// (`--expected-bucket-owner`): S3 refuses a bucket of another account.
    pub expected_bucket_owner: Option<String>,
    /// The bucket's region, which every request is signed for (`--dest-region`);
    /// `None`: [`Destination::connect`] asks S3, else the SDK configuration's region.
    pub region: Option<String>,
}

/// Server-side encryption of the objects written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    Aes256,
    /// SSE-KMS with this key, or S3's AWS managed key (`aws/s3`) when `None`.
    Kms { key_id: Option<String> },
}

impl S3Options {
    /// Path-style addressing is used when asked for, or when the endpoint in use is
    /// an IP address or `localhost` (virtual-host names cannot resolve there).
    pub fn resolve(
        endpoint_flag: Option<String>,
        endpoint_env: Option<String>,
        path_style: bool,
    ) -> Self {
        let effective = endpoint_flag.clone().or(endpoint_env);
        let local_host = effective.as_deref().and_then(host_of).is_some_and(|h| {
            h == "localhost" || h.parse::<std::net::IpAddr>().is_ok() || h.starts_with('[')
        });
        S3Options {
            endpoint: endpoint_flag,
            path_style: path_style || local_host,
            ..S3Options::default()
        }
    }
}

fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port.split_inclusive(']').next();
    }
    Some(host_port.split(':').next().unwrap_or(host_port))
}

impl Destination {
    /// Parses `--dest`. Anything with a scheme other than `s3://` or `file://` is
    /// refused, as is an S3 URI without a valid bucket name.
    pub fn parse(dest: &str) -> Result<Self> {
        let bad = |why: &str| Error::BadDest {
            dest: dest.to_string(),
            why: why.to_string(),
        };
        if dest.trim().is_empty() {
            return Err(bad("it is empty"));
        }
        if let Some(rest) = dest.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            validate_bucket(bucket).map_err(|why| bad(&why))?;
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") {
                return Err(bad("the prefix may not contain '.' or '..' segments"));
            }
            return Ok(Destination::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if let Some(path) = dest.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad("file:// needs a path"));
            }
            return Ok(Destination::Local(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = dest.split_once("://") {
            return Err(bad(&format!(
                "'{scheme}://' is not supported; use s3://bucket/prefix or a local path"
            )));
        }
        Ok(Destination::Local(PathBuf::from(dest)))
    }

    /// Opens the store for this destination and checks that it can be written.
    pub async fn open(
        &self,
        sdk_config: &aws_config::SdkConfig,
        s3: &S3Options,
    ) -> Result<Arc<dyn ObjectStore>> {
        let store = self.connect(sdk_config, s3).await;
        store.check().await?;
        Ok(store)
    }

    /// The store, its S3 client signed for the bucket's own region: `s3.region`, else
    /// the region S3 names for the bucket (`HeadBucket`'s `x-amz-bucket-region`, which
    /// S3 sends also with a 301 or 403), else `sdk_config`'s. S3 refuses a request
    /// signed for another region and the SDK does not follow its redirect, so one
    /// job exporting several regions into one bucket must sign for the bucket's.
    /// Not checked that it can be written (see [`Destination::open`]).
    pub async fn connect(
        &self,
        sdk_config: &aws_config::SdkConfig,
        s3: &S3Options,
    ) -> Arc<dyn ObjectStore> {
        let Destination::S3 { bucket, .. } = self else {
            return self.store(sdk_config, s3);
        };
        if s3.region.is_some() {
            return self.store(sdk_config, s3);
        }
        let found = S3Store::bucket_region(sdk_config, s3, bucket).await;
        let region = found
            .clone()
            .or_else(|| sdk_config.region().map(ToString::to_string));
        tracing::debug!(bucket = %bucket, found = ?found, used = ?region, "the bucket's region");
        self.store(
            sdk_config,
            &S3Options {
                region,
                ..s3.clone()
            },
        )
    }

    /// The store without the check that it can be written (which writes a probe to
    /// a local folder): for reading only, as `run --dry-run` does.
    pub fn store(
        &self,
        sdk_config: &aws_config::SdkConfig,
        s3: &S3Options,
    ) -> Arc<dyn ObjectStore> {
        match self {
            Destination::S3 { bucket, prefix } => {
                Arc::new(S3Store::new(sdk_config, s3, bucket, prefix))
            }
            Destination::Local(path) => Arc::new(LocalStore::new(path.clone())),
        }
    }
}

/// S3's bucket naming rules (general purpose buckets).
fn validate_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("the S3 URI has no bucket (s3://bucket/prefix)".to_string());
    }
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ok_ends = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !(3..=63).contains(&bucket.len()) || !ok_chars || !ok_ends || bucket.contains("..") {
        return Err(format!(
            "'{bucket}' is not a valid bucket name (3-63 lower-case letters, digits, '.' and '-')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_local() {
        let s3 = |b: &str, p: &str| Destination::S3 {
            bucket: b.into(),
            prefix: p.into(),
        };
        assert_eq!(
            Destination::parse("s3://my-bucket").unwrap(),
            s3("my-bucket", "")
        );
        assert_eq!(
            Destination::parse("s3://my-bucket/a/b/").unwrap(),
            s3("my-bucket", "a/b")
        );
        assert_eq!(
            Destination::parse("./out").unwrap(),
            Destination::Local("./out".into())
        );
        assert_eq!(
            Destination::parse("file:///tmp/x").unwrap(),
            Destination::Local("/tmp/x".into())
        );
    }

    #[test]
    fn refuses_bad_destinations_by_name() {
        for dest in [
            "",
            "s3://",
            "s3:///prefix",
            "s3://Bad_Bucket/x",
            "s3://ab",
            "ftp://host/x",
            "https://b.s3.amazonaws.com/x",
            "s3://b-1/a/../b",
        ] {
            let err = Destination::parse(dest).unwrap_err().to_string();
            assert!(err.contains(&format!("'{dest}'")), "{err}");
        }
    }

    #[test]
    fn loopback_endpoints_get_path_style() {
        let r = |flag: Option<&str>, env: Option<&str>| {
            S3Options::resolve(flag.map(Into::into), env.map(Into::into), false).path_style
        };
        assert!(r(Some("http://127.0.0.1:9000"), None));
        assert!(r(None, Some("http://localhost:9000/")));
        assert!(r(None, Some("http://[::1]:9000")));
        assert!(!r(None, Some("https://s3.eu-west-1.amazonaws.com")));
        assert!(!r(None, None));
        assert!(S3Options::resolve(None, None, true).path_style);
    }
}
