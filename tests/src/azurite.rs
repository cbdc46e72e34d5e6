//! Azurite (Microsoft's Azure Storage emulator, from npm) on loopback for the conformance suite.
//! `scripts/test` installs it; a test that needs it fails with that hint when it is missing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drvault_repo::remote::Tuning;
use drvault_repo::target::Target;

/// One Azurite blob service with its own port and data directory, and one container.
pub struct Azurite {
    pub port: u16,
    pub container: String,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Azurite {
    pub fn start(container: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::s3::free_ports(1)[0];
        let child = Command::new("azurite-blob")
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.path())
            .args(["--silent", "--skipApiVersionCheck"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite-blob (npm install -g azurite; scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Azurite did not start on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("azurite_container.py");
        let made = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(container)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "creating container {container}: {}",
            String::from_utf8_lossy(&made.stdout)
        );
        Azurite {
            port,
            container: container.to_string(),
            _dir: dir,
            child,
        }
    }

    /// A target on this Azurite under `prefix`. object_store reads the emulator's address
    /// from AZURITE_BLOB_STORAGE_URL only, so this sets it for the test process (one Azurite
    /// per process).
    pub fn target(&self, prefix: &str) -> Target {
        std::env::set_var(
            "AZURITE_BLOB_STORAGE_URL",
            format!("http://127.0.0.1:{}", self.port),
        );
        let options = [("use_emulator".to_string(), "true".to_string())].into();
        let tuning = Tuning {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            max_retries: 1,
        };
        Target::open_url(
            "azurite",
            &format!("az://{}/{prefix}", self.container),
            &options,
            &tuning,
            false,
        )
        .unwrap()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
