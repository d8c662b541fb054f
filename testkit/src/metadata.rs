//! An EC2 instance metadata service on loopback, IMDSv2 only (a GET without a session token is
//! refused, as on instances whose launch template requires tokens). Tests set and remove
//! paths while a worker polls it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::Router;

const TOKEN: &str = "testkit-imds-token";

type Values = Arc<Mutex<HashMap<String, String>>>;

/// A running metadata server; stopped on drop.
pub struct MetadataServer {
    values: Values,
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetadataServer {
    /// Starts a server answering `instance-id` with `instance_id`.
    pub fn start(instance_id: &str) -> Self {
        let values: Values = Arc::new(Mutex::new(HashMap::new()));
        values.lock().expect("values").insert("instance-id".into(), instance_id.into());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the metadata server");
        listener.set_nonblocking(true).expect("nonblocking");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Router::new()
            .route("/latest/api/token", put(token))
            .route("/latest/meta-data/{*path}", get(value))
            .with_state(values.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self { values, address, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`, for the worker's metadata endpoint setting.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Serves `value` at `/latest/meta-data/{path}`.
    pub fn set(&self, path: &str, value: &str) {
        self.values.lock().expect("values").insert(path.into(), value.into());
    }

    /// Serves 404 at `/latest/meta-data/{path}` again.
    pub fn remove(&self, path: &str) {
        self.values.lock().expect("values").remove(path);
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn token(headers: HeaderMap) -> Result<([(&'static str, String); 1], String), StatusCode> {
    match headers.get("x-aws-ec2-metadata-token-ttl-seconds").and_then(|t| t.to_str().ok()) {
        // The SDK reads the token's lifetime from the answer's header too.
        Some(ttl) => Ok(([("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_owned())], TOKEN.to_owned())),
        None => Err(StatusCode::BAD_REQUEST),
    }
}

async fn value(
    State(values): State<Values>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<String, StatusCode> {
    if headers.get("x-aws-ec2-metadata-token").and_then(|t| t.to_str().ok()) != Some(TOKEN) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    values.lock().ok().and_then(|v| v.get(&path).cloned()).ok_or(StatusCode::NOT_FOUND)
}
