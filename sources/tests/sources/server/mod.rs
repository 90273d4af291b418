//! A small real HTTP/1.1 server for the tests, on 127.0.0.1 with an ephemeral port.
//!
//! Each path has a script of replies; each request takes the next one, and the last one
//! repeats. Connections are closed after every reply, each handled on its own thread so a
//! hanging reply does not hold up the others.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this body.
    Ok(Vec<u8>),
    /// This status with a short text body.
    Status(u16),
    /// Read the request, then say nothing for this long.
    Hang(Duration),
    /// Announce the full length, send only the first `n` bytes, close.
    Truncated(Vec<u8>, usize),
    /// Send the head and the first half of the body, then stall for this long.
    StallMidBody(Vec<u8>, Duration),
}

#[derive(Debug, Default)]
struct State {
    scripts: HashMap<String, Vec<Reply>>,
    hits: HashMap<String, usize>,
}

#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    thread::spawn(move || serve(conn, &state));
                }
            })
        };
        Server {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The base URL of a "directory" on this server.
    pub fn url(&self, dir: &str) -> String {
        format!("http://{}/{dir}", self.addr)
    }

    /// Sets the replies for `path` (e.g. "/m1/a.tar.gz").
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        let mut s = self.state.lock().unwrap();
        s.scripts.insert(path.to_owned(), replies);
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Stops accepting connections; later connections are refused.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let reply = {
        let mut s = state.lock().unwrap();
        let n = *s
            .hits
            .entry(path.clone())
            .and_modify(|n| *n += 1)
            .or_insert(1);
        match s.scripts.get(&path) {
            Some(script) if !script.is_empty() => script[(n - 1).min(script.len() - 1)].clone(),
            _ => Reply::Status(404),
        }
    };
    let mut out = conn;
    let head = |status: u16, len: usize| {
        format!("HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let _ = match reply {
        Reply::Ok(body) => out
            .write_all(head(200, body.len()).as_bytes())
            .and_then(|_| out.write_all(&body)),
        Reply::Status(code) => {
            let body = format!("status {code}\n");
            out.write_all(head(code, body.len()).as_bytes())
                .and_then(|_| out.write_all(body.as_bytes()))
        }
        Reply::Hang(d) => {
            thread::sleep(d);
            Ok(())
        }
        Reply::Truncated(body, n) => out
            .write_all(head(200, body.len()).as_bytes())
            .and_then(|_| out.write_all(&body[..n])),
        Reply::StallMidBody(body, d) => {
            let r = out
                .write_all(head(200, body.len()).as_bytes())
                .and_then(|_| out.write_all(&body[..body.len() / 2]))
                .and_then(|_| out.flush());
            thread::sleep(d);
            r
        }
    };
    let _ = out.flush();
}
