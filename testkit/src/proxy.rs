//! A TCP proxy on loopback that can stall: put it in front of a server (PostgreSQL) and tell it
//! to hold every reply for a while, as a database that hangs (a failover, a lock pile-up) does.
//! Connections stay open and requests still reach the server; only the answers wait. It also
//! counts the connections through it: open now, and opened since it started (a test of a
//! process that should let its database go, so that a serverless one can pause).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct StallingProxy {
    port: u16,
    held_until: Arc<Mutex<Option<Instant>>>,
    stopped: Arc<AtomicBool>,
    counts: Arc<Counts>,
}

/// Connections through the proxy.
#[derive(Debug, Default)]
struct Counts {
    open: AtomicUsize,
    opened: AtomicUsize,
}

/// One proxied connection, counted open until both of its directions have ended.
struct Counted(Arc<Counts>);

impl Counted {
    fn new(counts: &Arc<Counts>) -> Arc<Self> {
        counts.opened.fetch_add(1, Ordering::SeqCst);
        counts.open.fetch_add(1, Ordering::SeqCst);
        Arc::new(Self(counts.clone()))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StallingProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let held_until = Arc::new(Mutex::new(None));
        let stopped = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let (held, stop, upstream, counting) =
            (held_until.clone(), stopped.clone(), upstream.to_owned(), counts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (Ok(client_read), Ok(server_write)) = (client.try_clone(), server.try_clone()) else { continue };
                let counted = Counted::new(&counting);
                let other = counted.clone();
                std::thread::spawn(move || {
                    pipe(client_read, server_write, None);
                    drop(other);
                });
                let held = held.clone();
                std::thread::spawn(move || {
                    pipe(server, client, Some(held));
                    drop(counted);
                });
            }
        });
        Self { port, held_until, stopped, counts }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections open through the proxy now (until both directions have closed).
    pub fn open_connections(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    /// Connections opened through the proxy since it started.
    pub fn connections_opened(&self) -> usize {
        self.counts.opened.load(Ordering::SeqCst)
    }

    /// Holds every reply (those in transit and those to come) for `duration` from now.
    pub fn hold_replies_for(&self, duration: Duration) {
        if let Ok(mut held) = self.held_until.lock() {
            *held = Some(Instant::now() + duration);
        }
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`; with `held`, each chunk first waits out a stall.
fn pipe(mut from: TcpStream, mut to: TcpStream, held: Option<Arc<Mutex<Option<Instant>>>>) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(held) = &held {
            loop {
                let until = held.lock().ok().and_then(|h| *h);
                match until {
                    Some(until) if until > Instant::now() => {
                        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)))
                    }
                    _ => break,
                }
            }
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
