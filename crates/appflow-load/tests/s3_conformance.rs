//! The storage conformance suite against a real S3 server: moto, started here on
//! an ephemeral loopback port from the project's virtualenv (`make venv`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use appflow_load::{Destination, S3Options, conformance};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;

/// Stops the server when the test ends, however it ends.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server() -> PathBuf {
    std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server")
        })
}

fn start_moto() -> Moto {
    let path = moto_server();
    assert!(
        path.exists(),
        "{} is missing: run `make venv` (or set MOTO_SERVER)",
        path.display()
    );
    let mut child = Command::new(&path)
        .args(["-H", "127.0.0.1", "-p", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start moto_server");
    let stderr = child.stderr.take().expect("moto stderr");
    let mut lines = BufReader::new(stderr).lines();
    let endpoint = loop {
        let line = lines
            .next()
            .expect("moto_server exited before listening")
            .expect("read moto stderr");
        if let Some(pos) = line.find("http://127.0.0.1:") {
            let url: String = line[pos..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || ":/.".contains(*c))
                .collect();
            break url;
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Moto { child, endpoint }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms_on_moto() {
    let moto = start_moto();
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    let options = S3Options::resolve(Some(moto.endpoint.clone()), None, false);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .endpoint_url(&moto.endpoint)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket()
        .bucket("conformance")
        .send()
        .await
        .expect("create bucket");

    let dest = Destination::parse("s3://conformance/some/prefix").unwrap();
    let store = dest.open(&sdk, &options).await.expect("open s3 store");
    conformance::run(Arc::clone(&store)).await;
    let listed = s3
        .list_objects_v2()
        .bucket("conformance")
        .send()
        .await
        .unwrap();
    assert!(
        listed
            .contents()
            .iter()
            .all(|o| o.key().unwrap_or_default().starts_with("some/prefix/")),
        "every object is under the prefix"
    );

    let missing = Destination::parse("s3://no-such-bucket/x").unwrap();
    let err = missing.open(&sdk, &options).await.unwrap_err().to_string();
    assert!(
        err.contains("no-such-bucket") && err.contains("does not exist"),
        "{err}"
    );
}
