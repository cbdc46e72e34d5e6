//! Remote targets (S3 and S3-compatible servers, Google Cloud Storage, Azure Blob Storage),
//! opened through object_store's own builders and configuration keys.
//!
//! object_store's defaults wait up to 30 s per request and retry for up to 180 s, so one stalled
//! server could hold a backup for minutes per object. drvault sets its own, shorter limits
//! ([`Tuning`], docs/DECISIONS.md) and marks a target that exhausts them as degraded for the rest
//! of the run (see [`crate::target::Target`]).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, ObjectStoreScheme};
use reqwest::header::{HeaderMap, HeaderValue};

use crate::connection::setting;
pub use crate::connection::Tuning;
use crate::lock::LockPolicy;
use crate::{Error, Result};

/// True for URLs this module opens (as opposed to local paths and `file://`).
pub fn is_remote(url: &str) -> bool {
    url.contains("://") && !url.starts_with("file://")
}

fn bad_key(url: &str, key: &str, e: object_store::Error) -> Error {
    Error::Invalid(format!(
        "target {url}: option {key:?} is not a configuration key of this backend ({e})"
    ))
}

/// object_store refuses plain HTTP only when a request is sent, with "builder error"; say why
/// up front instead.
fn refuse_plain_http(url: &str, options: &BTreeMap<String, String>) -> Result<()> {
    let endpoint = setting(options, &["aws_endpoint", "aws_endpoint_url", "endpoint"]);
    let allowed = setting(options, &["aws_allow_http", "allow_http"])
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    match endpoint {
        Some(e) if e.starts_with("http://") && !allowed => Err(Error::Invalid(format!(
            "target {url}: endpoint {e} is plain HTTP; use https, or set aws_allow_http = \"true\" \
             (only for a server on loopback or a trusted network)"
        ))),
        _ => Ok(()),
    }
}

/// An S3 client whose every request carries the lock: S3 applies the `x-amz-object-lock-*`
/// headers to what a request creates (PutObject, CreateMultipartUpload, CopyObject). The date
/// is fixed when the target is opened, which every command and agent job does anew; the
/// retention is then at least `policy.retention` minus the job's run time. S3 requires a
/// checksum with these headers: SHA-256. Client settings from the environment are replaced
/// here, so plain HTTP is taken from the options or `$AWS_ALLOW_HTTP` explicitly.
fn locked(
    b: AmazonS3Builder,
    options: &BTreeMap<String, String>,
    policy: &LockPolicy,
) -> Result<AmazonS3Builder> {
    let mut headers = HeaderMap::new();
    let until = crate::lock::s3_time(policy.until(chrono::Utc::now()));
    for (k, v) in [
        ("x-amz-object-lock-mode", policy.mode.as_s3().to_string()),
        ("x-amz-object-lock-retain-until-date", until),
        // With the SHA-256 checksum object_store sends: what S3 asks of a locked upload.
        ("x-amz-sdk-checksum-algorithm", "SHA256".to_string()),
    ] {
        let value = HeaderValue::from_str(&v)
            .map_err(|e| Error::Internal(format!("lock header {k}: {e}")))?;
        headers.insert(k, value);
    }
    let allow_http = setting(options, &["aws_allow_http", "allow_http"])
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let client = ClientOptions::new()
        .with_default_headers(headers)
        .with_allow_http(allow_http);
    Ok(b.with_client_options(client)
        .with_config(AmazonS3ConfigKey::Checksum, "sha256"))
}

/// Opens the object store behind a remote URL such as `s3://bucket/prefix`. `options` are
/// object_store configuration keys; credentials not given there come from the environment
/// (and the cloud's other standard sources).
pub fn open(
    url: &str,
    options: &BTreeMap<String, String>,
    tuning: &Tuning,
    lock: Option<&LockPolicy>,
) -> Result<Arc<dyn ObjectStore>> {
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::Invalid(format!("target URL {url} is not valid: {e}")))?;
    let (scheme, prefix) = ObjectStoreScheme::parse(&parsed)
        .map_err(|e| Error::Invalid(format!("target URL {url} is not a supported store: {e}")))?;
    let prefix = object_store::path::Path::parse(prefix)
        .map_err(|e| Error::Invalid(format!("target URL {url} has an invalid path: {e}")))?;
    let built: object_store::Result<Arc<dyn ObjectStore>> = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            refuse_plain_http(url, options)?;
            let mut b = AmazonS3Builder::from_env().with_url(url).with_retry(tuning.retry());
            if let Some(policy) = lock {
                b = locked(b, options, policy)?;
            }
            for (k, v) in tuning.client_settings() {
                b = b.with_config(AmazonS3ConfigKey::Client(k), v);
            }
            for (k, v) in options {
                let key = AmazonS3ConfigKey::from_str(k).map_err(|e| bad_key(url, k, e))?;
                b = b.with_config(key, v);
            }
            b.build().map(|s| Arc::new(s) as _)
        }
        ObjectStoreScheme::GoogleCloudStorage if lock.is_none() => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url).with_retry(tuning.retry());
            for (k, v) in tuning.client_settings() {
                b = b.with_config(GoogleConfigKey::Client(k), v);
            }
            for (k, v) in options {
                let key = GoogleConfigKey::from_str(k).map_err(|e| bad_key(url, k, e))?;
                b = b.with_config(key, v);
            }
            b.build().map(|s| Arc::new(s) as _)
        }
        ObjectStoreScheme::MicrosoftAzure if lock.is_none() => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url).with_retry(tuning.retry());
            for (k, v) in tuning.client_settings() {
                b = b.with_config(AzureConfigKey::Client(k), v);
            }
            for (k, v) in options {
                let key = AzureConfigKey::from_str(k).map_err(|e| bad_key(url, k, e))?;
                b = b.with_config(key, v);
            }
            b.build().map(|s| Arc::new(s) as _)
        }
        _ if lock.is_some() => {
            return Err(Error::Invalid(format!(
                "target {url}: object lock is supported on s3:// targets only (GCS retention and \
                 Azure immutability policies are not yet)"
            )))
        }
        other => {
            return Err(Error::Invalid(format!(
                "target URL {url}: {other:?} stores are not supported; use s3://, gs://, az:// or file://"
            )))
        }
    };
    let store = built.map_err(|e| Error::Invalid(format!("cannot configure target {url}: {e}")))?;
    Ok(if prefix.as_ref().is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
}
