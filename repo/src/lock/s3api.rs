//! The S3 calls object_store does not make: an object's retention (HEAD), extending it
//! (PutObjectRetention), an object's versions (ListObjectVersions) and reading one version.
//! Requests are signed with aws-sigv4 (AWS signature version 4, in the Authorization header)
//! and sent with reqwest, the HTTP client object_store already uses; responses are bounded
//! and parsed without panics.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use base64::Engine;
use bytes::Bytes;
use md5::Digest;

use crate::connection::{setting, Tuning};
use crate::{Error, Result};

/// The largest listing page read (S3 sends at most 1,000 versions, well under this).
const MAX_LISTING: usize = 16 << 20;

/// One version of an object, newest first in [`S3Api::versions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub id: String,
    /// A delete marker: the object looks deleted from here on, its older versions stay.
    pub delete_marker: bool,
}

/// The lock-related API of one S3 bucket and prefix.
#[derive(Debug)]
pub struct S3Api {
    /// `scheme://host[:port]/bucket` (path style) or `scheme://bucket.host` (virtual hosted).
    base: String,
    region: String,
    credentials: Credentials,
    /// The target's prefix inside the bucket, with a trailing slash (or empty).
    prefix: String,
    http: reqwest::Client,
}

fn storage(object: &str, e: impl std::fmt::Display) -> Error {
    Error::Storage {
        object: object.to_string(),
        source: object_store::Error::Generic {
            store: "S3",
            source: e.to_string().into(),
        },
    }
}

/// Percent-encodes all but S3's unreserved characters (and `/` in a path).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl S3Api {
    /// From a target's `s3://bucket/prefix` URL and options (credentials, endpoint and region
    /// as object_store reads them: the options first, then the environment). Static
    /// credentials only: instance profiles and web identities are object_store's alone.
    pub fn new(url: &str, options: &BTreeMap<String, String>, tuning: &Tuning) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::Invalid(format!("target URL {url} is not valid: {e}")))?;
        let bucket = parsed
            .host_str()
            .filter(|_| parsed.scheme() == "s3")
            .ok_or_else(|| Error::Invalid(format!("object lock needs an s3:// target, not {url}")))?
            .to_string();
        // The prefix as object_store reads it (decoded), so both address the same keys.
        let (_, path) = object_store::ObjectStoreScheme::parse(&parsed)
            .map_err(|e| Error::Invalid(format!("target URL {url}: {e}")))?;
        let prefix = path.as_ref().trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let region = setting(options, &["aws_region", "region", "aws_default_region"])
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = setting(options, &["aws_endpoint", "aws_endpoint_url", "endpoint"]);
        let virtual_hosted = setting(options, &["aws_virtual_hosted_style_request"])
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        // The bucket's URL exactly as object_store builds it (an endpoint given with virtual
        // hosting already names the bucket).
        let base = match (endpoint, virtual_hosted) {
            (Some(e), true) => e.trim_end_matches('/').to_string(),
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        url::Url::parse(&base)
            .map_err(|e| Error::Invalid(format!("target {url}: endpoint {base}: {e}")))?;
        let key = setting(options, &["aws_access_key_id", "access_key_id"]);
        let secret = setting(options, &["aws_secret_access_key", "secret_access_key"]);
        let token = setting(
            options,
            &["aws_session_token", "aws_token", "session_token"],
        );
        let credentials = match (key, secret) {
            (Some(k), Some(s)) => Credentials::new(k, s, token, None, "drvault"),
            _ => {
                return Err(Error::Invalid(format!(
                    "target {url}: object lock needs an access key and secret (options \
                     aws_access_key_id and aws_secret_access_key, or $AWS_ACCESS_KEY_ID and \
                     $AWS_SECRET_ACCESS_KEY) to read and extend retentions"
                )))
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(tuning.connect_timeout)
            .timeout(tuning.request_timeout.max(Duration::from_secs(30)))
            .build()
            .map_err(|e| Error::Invalid(format!("target {url}: HTTP client: {e}")))?;
        Ok(S3Api {
            base,
            region,
            credentials,
            prefix,
            http,
        })
    }

    /// The URL of an object (`name` inside the prefix), or of the bucket (`None`), with a
    /// query (already in order; values encoded here).
    fn url(&self, name: Option<&str>, query: &[(&str, &str)]) -> String {
        let mut url = match name {
            Some(n) => format!(
                "{}/{}",
                self.base,
                encode(&format!("{}{n}", self.prefix), true)
            ),
            None => format!("{}/", self.base),
        };
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&encode(k, false));
            url.push('=');
            url.push_str(&encode(v, false));
        }
        url
    }

    /// A signed request: `headers` are sent and signed, with the signature's own.
    fn request(
        &self,
        object: &str,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder> {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let identity = self.credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| storage(object, format!("signing: {e}")))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            url,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| storage(object, format!("signing: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| storage(object, format!("signing: {e}")))?
            .into_parts();
        let mut req = self.http.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        for (k, v) in instructions.headers() {
            req = req.header(k, v);
        }
        Ok(req.body(body))
    }

    async fn send(&self, name: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| storage(name, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        Err(match status.as_u16() {
            404 => Error::NotFound {
                name: name.to_string(),
            },
            403 => Error::Storage {
                object: name.to_string(),
                source: object_store::Error::PermissionDenied {
                    path: name.to_string(),
                    source: format!("HTTP {status}: {body}").into(),
                },
            },
            _ => storage(name, format!("HTTP {status}: {body}")),
        })
    }

    /// The object's lock (mode, retained until), from a HEAD of its current version or of
    /// `version`; `None` when it has none.
    pub async fn retention(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<(String, chrono::DateTime<chrono::Utc>)>> {
        let query: Vec<(&str, &str)> = version.map(|v| ("versionId", v)).into_iter().collect();
        let url = self.url(Some(name), &query);
        let req = self.request(name, reqwest::Method::HEAD, &url, &[], Vec::new())?;
        let resp = self.send(name, req).await?;
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (Some(mode), Some(until)) = (
            header("x-amz-object-lock-mode"),
            header("x-amz-object-lock-retain-until-date"),
        ) else {
            return Ok(None);
        };
        let until = chrono::DateTime::parse_from_rfc3339(&until)
            .map_err(|e| storage(name, format!("retain-until date {until:?}: {e}")))?;
        Ok(Some((mode, until.with_timezone(&chrono::Utc))))
    }

    /// Sets the object's retention (current version, or `version`) to `until` in `mode`.
    /// S3 refuses to shorten a compliance-mode retention, so a later date only ever extends it.
    pub async fn extend(
        &self,
        name: &str,
        version: Option<&str>,
        mode: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{mode}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            super::s3_time(until)
        );
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let mut query = vec![("retention", "")];
        if let Some(v) = version {
            query.push(("versionId", v));
        }
        let url = self.url(Some(name), &query);
        let headers = [
            ("content-md5", md5.as_str()),
            ("content-type", "application/xml"),
        ];
        let req = self.request(
            name,
            reqwest::Method::PUT,
            &url,
            &headers,
            body.into_bytes(),
        )?;
        self.send(name, req).await.map(|_| ())
    }

    /// The versions of `name`, newest first (delete markers included).
    pub async fn versions(&self, name: &str) -> Result<Vec<Version>> {
        Ok(self
            .versions_under(name)
            .await?
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect())
    }

    /// Every version of every object whose name starts with `start` (inside the target's
    /// prefix; "" for all): (name, version), each object's newest first. Delete markers
    /// included, so objects that look deleted are there too.
    pub async fn versions_under(&self, start: &str) -> Result<Vec<(String, Version)>> {
        let key = format!("{}{start}", self.prefix);
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        // A hostile server could page for ever: 100,000 pages is 100 million versions.
        for _ in 0..100_000 {
            // In the canonical (sorted) order, as signing wants it.
            let mut query = Vec::new();
            if let Some((k, _)) = &markers {
                query.push(("key-marker", k.as_str()));
            }
            query.push(("prefix", key.as_str()));
            if let Some((_, v)) = &markers {
                query.push(("version-id-marker", v.as_str()));
            }
            query.push(("versions", ""));
            let url = self.url(None, &query);
            let req = self.request(start, reqwest::Method::GET, &url, &[], Vec::new())?;
            let resp = self.send(start, req).await?;
            if resp
                .content_length()
                .is_some_and(|n| n as usize > MAX_LISTING)
            {
                return Err(storage(start, "version listing larger than any S3 sends"));
            }
            let body = resp.bytes().await.map_err(|e| storage(start, e))?;
            let text = String::from_utf8_lossy(&body);
            let page = parse_versions(&text).map_err(|e| storage(start, e))?;
            out.extend(page.entries.into_iter().filter_map(|(k, v)| {
                k.strip_prefix(self.prefix.as_str())
                    .map(|n| (n.to_string(), v))
            }));
            match page.next {
                Some(next) if page.truncated => {
                    if markers.as_ref() == Some(&next) {
                        return Err(storage(start, "the version listing does not advance"));
                    }
                    markers = Some(next);
                }
                _ => return Ok(out),
            }
        }
        Err(storage(start, "the version listing does not end"))
    }

    /// One version's bytes (or a range of them).
    pub async fn get_version(
        &self,
        name: &str,
        version: &str,
        range: Option<Range<u64>>,
    ) -> Result<Bytes> {
        let url = self.url(Some(name), &[("versionId", version)]);
        let range_header = match &range {
            Some(r) if r.end <= r.start => return Ok(Bytes::new()),
            Some(r) => Some(format!("bytes={}-{}", r.start, r.end - 1)),
            None => None,
        };
        let headers: Vec<(&str, &str)> =
            range_header.iter().map(|r| ("range", r.as_str())).collect();
        let req = self.request(name, reqwest::Method::GET, &url, &headers, Vec::new())?;
        let resp = self.send(name, req).await?;
        let max = crate::format::paths::max_size(name) as usize;
        let body = resp.bytes().await.map_err(|e| storage(name, e))?;
        if body.len() > max {
            return Err(storage(
                name,
                "a version larger than any object of its kind",
            ));
        }
        Ok(body)
    }
}

struct Page {
    /// (key, version) in the order S3 lists them.
    entries: Vec<(String, Version)>,
    truncated: bool,
    next: Option<(String, String)>,
}

/// Reads a ListVersionsResult document.
fn parse_versions(xml: &str) -> std::result::Result<Page, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut page = Page {
        entries: Vec::new(),
        truncated: false,
        next: None,
    };
    let (mut key, mut id) = (String::new(), String::new());
    let (mut next_key, mut next_id) = (None, None);
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if tag == "Version" || tag == "DeleteMarker" {
                    key.clear();
                    id.clear();
                }
                path.push(tag);
            }
            Event::End(_) => {
                if let Some(tag) = path.pop() {
                    if path.len() == 1 && (tag == "Version" || tag == "DeleteMarker") {
                        page.entries.push((
                            key.clone(),
                            Version {
                                id: id.clone(),
                                delete_marker: tag == "DeleteMarker",
                            },
                        ));
                    }
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| e.to_string())?.into_owned();
                let inside = path.iter().map(String::as_str).collect::<Vec<_>>();
                match inside.as_slice() {
                    [_, "Version" | "DeleteMarker", "Key"] => key = text,
                    [_, "Version" | "DeleteMarker", "VersionId"] => id = text,
                    [_, "IsTruncated"] => page.truncated = text == "true",
                    [_, "NextKeyMarker"] => next_key = Some(text),
                    [_, "NextVersionIdMarker"] => next_id = Some(text),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    page.next = next_key.zip(next_id);
    Ok(page)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_version_listing_is_read_in_order_and_bad_xml_is_an_error() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>p/k</Prefix><IsTruncated>true</IsTruncated>
  <NextKeyMarker>p/k</NextKeyMarker><NextVersionIdMarker>v1</NextVersionIdMarker>
  <DeleteMarker><Key>p/k</Key><VersionId>v3</VersionId><IsLatest>true</IsLatest></DeleteMarker>
  <Version><Key>p/k</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest><Size>4</Size></Version>
  <Version><Key>p/k2</Key><VersionId>x</VersionId></Version>
  <Version><Key>p/k</Key><VersionId>v1</VersionId></Version>
</ListVersionsResult>"#;
        let page = parse_versions(xml).unwrap();
        let got: Vec<(&str, &str, bool)> = page
            .entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.id.as_str(), v.delete_marker))
            .collect();
        assert_eq!(
            got,
            vec![
                ("p/k", "v3", true),
                ("p/k", "v2", false),
                ("p/k2", "x", false),
                ("p/k", "v1", false)
            ]
        );
        assert!(page.truncated);
        assert_eq!(page.next, Some(("p/k".into(), "v1".into())));
        assert!(parse_versions("<a><b></a>").is_err());
    }
}
