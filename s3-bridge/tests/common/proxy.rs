//! A fault-injecting TCP proxy between the S3 client and the real gateway.
//!
//! Each *new* connection is handled by the current mode: pass through, reset (RST at once),
//! answer `503 SlowDown` without contacting the gateway, or stall (accept, read, never answer).
//! A mode may apply to the next N connections only, then revert to pass-through. Changing the
//! mode also cuts open pass-through connections: the SDK pools keep-alive connections, and a
//! fault must reach the next request, not only the next connection the pool happens to open.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Reset,
    SlowDown,
    Stall,
}

/// How long a stalled connection is held before the proxy lets go (bounds the test's lifetime).
const STALL_HOLD: Duration = Duration::from_secs(30);
/// Time for a client to notice that its pooled connections were cut.
const SETTLE: Duration = Duration::from_millis(50);

struct Mode {
    fault: Fault,
    /// Connections left to fault; `None` = until changed.
    remaining: Option<u32>,
}

pub struct Proxy {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    generation: watch::Sender<u64>,
    counts: Arc<[AtomicU64; 4]>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let mode = Arc::new(Mutex::new(Mode {
            fault: Fault::Pass,
            remaining: None,
        }));
        let (generation, _) = watch::channel(0u64);
        let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
        let (m, g, c) = (mode.clone(), generation.clone(), counts.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let fault = next_fault(&m);
                c[fault as usize].fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handle(conn, fault, upstream, g.subscribe()));
            }
        });
        Proxy {
            addr,
            mode,
            generation,
            counts,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to every new connection until changed; cuts current connections.
    pub async fn set(&self, fault: Fault) {
        self.set_mode(fault, None).await;
    }

    /// Applies `fault` to the next `n` connections, then passes through again.
    pub async fn set_for(&self, fault: Fault, n: u32) {
        self.set_mode(fault, Some(n)).await;
    }

    async fn set_mode(&self, fault: Fault, remaining: Option<u32>) {
        *self.mode.lock().expect("proxy mode") = Mode { fault, remaining };
        self.generation.send_modify(|g| *g += 1);
        // Let the client's pool see the cut connections close; otherwise its next request may
        // still pick one and fail with an error that is not the fault under test.
        tokio::time::sleep(SETTLE).await;
    }

    /// Connections handled with `fault` so far.
    pub fn connections(&self, fault: Fault) -> u64 {
        self.counts[fault as usize].load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

fn next_fault(mode: &Mutex<Mode>) -> Fault {
    let mut m = mode.lock().expect("proxy mode");
    match m.remaining {
        Some(0) => Fault::Pass,
        Some(ref mut n) => {
            *n -= 1;
            m.fault
        }
        None => m.fault,
    }
}

async fn handle(mut conn: TcpStream, fault: Fault, upstream: SocketAddr, mut cut: watch::Receiver<u64>) {
    match fault {
        Fault::Pass => {
            let Ok(mut up) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut conn, &mut up) => {}
                _ = cut.changed() => {}
            }
        }
        Fault::Reset => {
            // Linger 0 turns close into an RST: the client sees "connection reset by peer".
            let _ = conn.set_zero_linger();
        }
        Fault::SlowDown => {
            if read_request(&mut conn).await.is_some() {
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                            <Message>Please reduce your request rate.</Message></Error>";
                let head = format!(
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(format!("{head}{body}").as_bytes()).await;
                let _ = conn.shutdown().await;
            }
        }
        Fault::Stall => {
            let mut sink = [0u8; 64 * 1024];
            let hold = tokio::time::sleep(STALL_HOLD);
            tokio::pin!(hold);
            loop {
                tokio::select! {
                    r = conn.read(&mut sink) => if matches!(r, Ok(0) | Err(_)) { break },
                    _ = &mut hold => break,
                }
            }
        }
    }
}

/// Reads one request's head and its Content-Length body (so the answer is not sent while the
/// client is still writing, which it could see as a broken pipe instead of a 503).
async fn read_request(conn: &mut TcpStream) -> Option<()> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 64 * 1024];
    let head_end = loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        have += n;
    }
    Some(())
}
