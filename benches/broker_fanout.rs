//! Load on the running broker binary (not a criterion bench: it measures a
//! server): raw WebSocket clients on loopback, JSON protocol, key auth.
//!   cargo bench --bench broker_fanout
//! Scenarios: 1 publisher -> 100 subscribers on one channel; 1000 channels x
//! 2 clients (one publishes, one subscribes). Reports deliveries per second
//! and publish-to-delivery latency p50/p99. Env: DURATION_SECS (default 10).

use std::cell::RefCell;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::ws::{Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

const KEY: &str = "bench.key:bench-secret";

struct Stats {
    latencies_us: Vec<u64>,
    deliveries: u64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_broker(port: u16) -> Child {
    let dir = std::env::temp_dir().join(format!("broker-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!("[ably]\napi_key = \"{KEY}\"\n[broker]\nbind = \"127.0.0.1:{port}\"\nhistory_max_messages = 100\n[log]\nlevel = \"warn\"\n"),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_ably-tokend"))
        .args(["broker", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

type Socket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

async fn connect(port: u16, client: &str) -> Socket {
    for _ in 0..100 {
        let url =
            format!("ws://127.0.0.1:{port}/?format=json&echo=false&key={KEY}&clientId={client}");
        if let Ok((_, mut socket)) = awc::Client::new().ws(url).connect().await {
            let _connected = socket.next().await;
            return socket;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the broker did not accept connections");
}

async fn recv(socket: &mut Socket) -> Option<Value> {
    loop {
        match socket.next().await? {
            Ok(Frame::Text(bytes)) => return serde_json::from_slice(&bytes).ok(),
            Ok(Frame::Ping(_)) | Ok(Frame::Pong(_)) => continue,
            _ => return None,
        }
    }
}

async fn attach(socket: &mut Socket, channel: &str) {
    socket
        .send(Message::Text(
            json!({"action": 10, "channel": channel}).to_string().into(),
        ))
        .await
        .unwrap();
    while recv(socket).await.expect("ATTACHED")["action"] != 11 {}
}

/// Receives until the deadline, recording each message's age.
fn spawn_subscriber(mut socket: Socket, epoch: Instant, stats: Rc<RefCell<Stats>>, until: Instant) {
    actix_web::rt::spawn(async move {
        while Instant::now() < until {
            let Ok(Some(frame)) =
                actix_web::rt::time::timeout(Duration::from_millis(200), recv(&mut socket)).await
            else {
                continue;
            };
            if frame["action"] != 15 {
                continue;
            }
            let now = epoch.elapsed().as_micros() as u64;
            let mut s = stats.borrow_mut();
            for m in frame["messages"].as_array().into_iter().flatten() {
                if let Some(sent) = m["data"].as_u64() {
                    s.latencies_us.push(now.saturating_sub(sent));
                    s.deliveries += 1;
                }
            }
        }
    });
}

#[derive(Clone, Copy)]
enum Pace {
    /// As fast as the broker acknowledges, with this many messages unacknowledged.
    Window(u64),
    /// A fixed rate per publisher, whatever the broker does (open loop).
    PerSecond(f64),
}

fn spawn_publisher(socket: Socket, channel: String, epoch: Instant, until: Instant, pace: Pace) {
    match pace {
        Pace::Window(window) => spawn_windowed(socket, channel, epoch, until, window),
        Pace::PerSecond(rate) => spawn_paced(socket, channel, epoch, until, rate),
    }
}

fn spawn_paced(mut socket: Socket, channel: String, epoch: Instant, until: Instant, rate: f64) {
    actix_web::rt::spawn(async move {
        let interval = Duration::from_secs_f64(1.0 / rate);
        // Spread publishers over the first interval so they do not fire together.
        let offset = Duration::from_nanos(rand_nanos(interval));
        let mut next = Instant::now() + offset;
        let mut serial = 0u64;
        while next < until {
            loop {
                let left = next.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let _ = actix_web::rt::time::timeout(left, recv(&mut socket)).await;
            }
            let sent = epoch.elapsed().as_micros() as u64;
            let frame = json!({"action": 15, "channel": channel, "msgSerial": serial, "messages": [{"name": "tick", "data": sent}]});
            if socket
                .send(Message::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
            serial += 1;
            next += interval;
        }
    });
}

fn rand_nanos(max: Duration) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() % max.as_nanos().max(1) as u64
}

/// Publishes with up to `window` messages awaiting their ACK.
fn spawn_windowed(
    mut socket: Socket,
    channel: String,
    epoch: Instant,
    until: Instant,
    window: u64,
) {
    actix_web::rt::spawn(async move {
        let mut serial = 0u64;
        let mut acked = 0u64;
        while Instant::now() < until {
            while serial - acked < window {
                let sent = epoch.elapsed().as_micros() as u64;
                let frame = json!({"action": 15, "channel": channel, "msgSerial": serial, "messages": [{"name": "tick", "data": sent}]});
                if socket
                    .send(Message::Text(frame.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
                serial += 1;
            }
            match actix_web::rt::time::timeout(Duration::from_millis(200), recv(&mut socket)).await
            {
                Ok(Some(frame)) if frame["action"] == 1 => {
                    acked = frame["msgSerial"].as_u64().unwrap() + frame["count"].as_u64().unwrap();
                }
                _ => {}
            }
        }
    });
}

fn report(name: &str, stats: &Stats, seconds: f64) {
    let mut l = stats.latencies_us.clone();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{name:<58} deliveries/s {:>10.0}   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} deliveries)",
        stats.deliveries as f64 / seconds,
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        stats.deliveries
    );
}

/// 1 publisher -> 100 subscribers on one channel.
async fn fanout(port: u16, epoch: Instant, seconds: u64, pace: Pace) {
    let stats = Rc::new(RefCell::new(Stats {
        latencies_us: Vec::new(),
        deliveries: 0,
    }));
    let channel = format!("fanout-{}", epoch.elapsed().as_nanos());
    let mut subscribers = Vec::new();
    for i in 0..100 {
        let mut s = connect(port, &format!("sub-{i}")).await;
        attach(&mut s, &channel).await;
        subscribers.push(s);
    }
    let publisher = connect(port, "pub").await;
    let until = Instant::now() + Duration::from_secs(seconds);
    for s in subscribers {
        spawn_subscriber(s, epoch, stats.clone(), until + Duration::from_millis(500));
    }
    spawn_publisher(publisher, channel, epoch, until, pace);
    actix_web::rt::time::sleep(Duration::from_secs(seconds) + Duration::from_secs(1)).await;
    report(
        &format!("1 publisher -> 100 subscribers {}", pace.label()),
        &stats.borrow(),
        seconds as f64,
    );
}

/// 1000 channels, each with one publisher and one subscriber.
async fn pairs(port: u16, epoch: Instant, seconds: u64, pace: Pace) {
    let stats = Rc::new(RefCell::new(Stats {
        latencies_us: Vec::new(),
        deliveries: 0,
    }));
    let run = epoch.elapsed().as_nanos();
    let mut pairs = Vec::new();
    for i in 0..1000 {
        let channel = format!("pair-{run}-{i}");
        let mut sub = connect(port, &format!("s{i}")).await;
        attach(&mut sub, &channel).await;
        let publisher = connect(port, &format!("p{i}")).await;
        pairs.push((channel, sub, publisher));
    }
    let until = Instant::now() + Duration::from_secs(seconds);
    for (channel, sub, publisher) in pairs {
        spawn_subscriber(
            sub,
            epoch,
            stats.clone(),
            until + Duration::from_millis(500),
        );
        spawn_publisher(publisher, channel, epoch, until, pace);
    }
    actix_web::rt::time::sleep(Duration::from_secs(seconds) + Duration::from_secs(1)).await;
    report(
        &format!("1000 channels x 2 clients {}", pace.label()),
        &stats.borrow(),
        seconds as f64,
    );
}

impl Pace {
    fn label(self) -> String {
        match self {
            Pace::Window(w) => format!("(window {w})"),
            Pace::PerSecond(r) => format!("({r} msg/s per publisher)"),
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing
    // useful either: this only runs when asked to.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds: u64 = std::env::var("DURATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let port = free_port();
    let mut broker = start_broker(port);
    actix_web::rt::System::new().block_on(async move {
        let epoch = Instant::now();
        println!("saturation (closed loop: publishers keep a window of unacknowledged messages)");
        fanout(port, epoch, seconds, Pace::Window(20)).await;
        pairs(port, epoch, seconds, Pace::Window(2)).await;
        println!("latency at a fixed offered load (open loop)");
        fanout(port, epoch, seconds, Pace::PerSecond(500.0)).await;
        pairs(port, epoch, seconds, Pace::PerSecond(10.0)).await;
    });
    let _ = broker.kill();
    let _ = broker.wait();
}
