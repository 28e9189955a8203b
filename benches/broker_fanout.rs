//! Load on the running broker binary (not a criterion bench: it measures a
//! server): raw WebSocket clients on loopback, JSON protocol, key auth.
//!   cargo bench --bench broker_fanout [-- SCENARIO...]
//! Scenarios (each on a fresh broker process, so one's leftovers never load
//! the next): `saturation-fanout` and `saturation-pairs` (closed loop),
//! `paced-fanout` and `paced-pairs` (a fixed offered load), `memory` (RSS
//! per channel with history). Arguments select scenarios by substring
//! (`-- paced`, `-- memory`); none runs them all.
//! Fan-out is 1 publisher -> 100 subscribers on one channel; pairs is 1000
//! channels x 2 clients (one publishes, one subscribes). Reports deliveries
//! per second, publish-to-delivery latency p50/p99 and the broker's CPU time
//! per delivery.
//! Env: DURATION_SECS (default 10); TOKEND_BIN (another ably-tokend binary,
//! e.g. a baseline build); BROKER_CPUS (run the broker under `taskset -c
//! BROKER_CPUS`; pin the bench itself with `taskset -c N cargo bench ...`);
//! MEM_CHANNELS (1000), MEM_MESSAGES (100), MEM_DATA_BYTES (100) for `memory`.

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

/// The broker under test: a child process on its own port.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    /// Starts `ably-tokend broker` with `history` as its `[broker]` history
    /// settings, under `taskset -c BROKER_CPUS` when that is set.
    fn start(history: &str) -> Broker {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("broker-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join(format!("broker-{port}.toml"));
        std::fs::write(
            &config,
            format!("[ably]\napi_key = \"{KEY}\"\n[broker]\nbind = \"127.0.0.1:{port}\"\n{history}\n[log]\nlevel = \"warn\"\n"),
        )
        .unwrap();
        let binary = std::env::var("TOKEND_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ably-tokend").to_string());
        let mut command = match std::env::var("BROKER_CPUS") {
            Ok(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpus, &binary]);
                c
            }
            Err(_) => Command::new(&binary),
        };
        let child = command
            .args(["broker", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Broker { child, port }
    }

    /// The process's `/proc` entry (`taskset` execs the broker, same pid).
    fn proc_file(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.child.id())).unwrap_or_default()
    }

    /// User + system CPU time so far, in clock ticks (USER_HZ, 100 on Linux).
    fn cpu_ticks(&self) -> u64 {
        let stat = self.proc_file("stat");
        // Fields after the command name, which is in parentheses.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat; 12 and 13 after ")".
        field(11) + field(12)
    }

    /// Resident set size in KiB (VmRSS).
    fn rss_kib(&self) -> u64 {
        self.proc_file("status")
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

fn report(name: &str, stats: &Stats, seconds: f64, cpu_ticks: u64) {
    let mut l = stats.latencies_us.clone();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    // USER_HZ is 100 on Linux: a tick is 10 ms.
    let cpu_us = cpu_ticks as f64 * 10_000.0 / stats.deliveries.max(1) as f64;
    println!(
        "{name:<58} deliveries/s {:>10.0}   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   broker CPU {:>5.2} µs/delivery   ({} deliveries)",
        stats.deliveries as f64 / seconds,
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        l.last().copied().unwrap_or(0) as f64 / 1000.0,
        cpu_us,
        stats.deliveries
    );
}

fn new_stats() -> Rc<RefCell<Stats>> {
    Rc::new(RefCell::new(Stats {
        latencies_us: Vec::new(),
        deliveries: 0,
    }))
}

/// 1 publisher -> 100 subscribers on one channel.
async fn fanout(broker: &Broker, epoch: Instant, seconds: u64, pace: Pace) {
    let port = broker.port;
    let stats = new_stats();
    let channel = format!("fanout-{}", epoch.elapsed().as_nanos());
    let mut subscribers = Vec::new();
    for i in 0..100 {
        let mut s = connect(port, &format!("sub-{i}")).await;
        attach(&mut s, &channel).await;
        subscribers.push(s);
    }
    let publisher = connect(port, "pub").await;
    let until = Instant::now() + Duration::from_secs(seconds);
    let cpu0 = broker.cpu_ticks();
    for s in subscribers {
        spawn_subscriber(s, epoch, stats.clone(), until + Duration::from_millis(500));
    }
    spawn_publisher(publisher, channel, epoch, until, pace);
    actix_web::rt::time::sleep(Duration::from_secs(seconds) + Duration::from_secs(1)).await;
    report(
        &format!("1 publisher -> 100 subscribers {}", pace.label()),
        &stats.borrow(),
        seconds as f64,
        broker.cpu_ticks() - cpu0,
    );
}

/// 1000 channels, each with one publisher and one subscriber.
async fn pairs(broker: &Broker, epoch: Instant, seconds: u64, pace: Pace) {
    let port = broker.port;
    let stats = new_stats();
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
    let cpu0 = broker.cpu_ticks();
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
        broker.cpu_ticks() - cpu0,
    );
}

/// RSS per channel: `channels` channels, each given `messages` messages of
/// `data_bytes` over REST and kept as history, no connection attached.
async fn memory(broker: &Broker, channels: usize, messages: usize, data_bytes: usize) {
    use base64::Engine;
    let client = awc::Client::new();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    );
    let publish = |channel: String, seed: usize| {
        let body: Vec<Value> = (0..messages)
            .map(|j| {
                let mut data = format!("{seed}-{j}-");
                data.extend(std::iter::repeat_n(
                    'x',
                    data_bytes.saturating_sub(data.len()),
                ));
                json!({"name": "m", "data": data})
            })
            .collect();
        let request = client
            .post(format!(
                "http://127.0.0.1:{}/channels/{channel}/messages",
                broker.port
            ))
            .insert_header(("Authorization", auth.clone()))
            .send_json(&body);
        async move {
            match request.await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => panic!("publish to {channel}: HTTP {}", response.status()),
                Err(e) => panic!("publish to {channel} failed: {e}"),
            }
        }
    };
    // Wait for the broker, then warm the code paths and the allocator on
    // channels that are not counted.
    for _ in 0..100 {
        let url = format!("http://127.0.0.1:{}/time", broker.port);
        if client.get(url).send().await.is_ok() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..10 {
        publish(format!("warm-{i}"), i).await;
    }
    let settle = || actix_web::rt::time::sleep(Duration::from_millis(500));
    settle().await;
    let rss0 = broker.rss_kib();
    let half = channels / 2;
    for i in 0..half {
        publish(format!("mem-{i}"), i).await;
    }
    settle().await;
    let rss_half = broker.rss_kib();
    for i in half..channels {
        publish(format!("mem-{i}"), i).await;
    }
    settle().await;
    let rss1 = broker.rss_kib();
    let per_channel = (rss1.saturating_sub(rss0)) as f64 * 1024.0 / channels as f64;
    let first_half = (rss_half.saturating_sub(rss0)) as f64 * 1024.0 / half.max(1) as f64;
    let second_half =
        (rss1.saturating_sub(rss_half)) as f64 * 1024.0 / (channels - half).max(1) as f64;
    let payload = (messages * data_bytes) as f64;
    println!(
        "memory: {channels} channels x {messages} messages of {data_bytes} B data: RSS {:.1} -> {:.1} MiB; \
         {:.1} KiB per channel ({:.0} B per message, {:.1}x the data; first half {:.1} KiB, second half {:.1} KiB per channel)",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        per_channel / 1024.0,
        per_channel / messages.max(1) as f64,
        per_channel / payload.max(1.0),
        first_half / 1024.0,
        second_half / 1024.0,
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

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing
    // useful either: this only runs when asked to.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let seconds = env_usize("DURATION_SECS", 10) as u64;
    // The fan-out and pair scenarios keep 100 messages per channel.
    let history = "history_max_messages = 100";
    actix_web::rt::System::new().block_on(async move {
        let epoch = Instant::now();
        let scenarios: [(&str, Pace); 4] = [
            ("saturation-fanout", Pace::Window(20)),
            ("saturation-pairs", Pace::Window(2)),
            ("paced-fanout", Pace::PerSecond(500.0)),
            ("paced-pairs", Pace::PerSecond(10.0)),
        ];
        for (name, pace) in scenarios {
            if !wanted(name) {
                continue;
            }
            let broker = Broker::start(history);
            if name.ends_with("fanout") {
                fanout(&broker, epoch, seconds, pace).await;
            } else {
                pairs(&broker, epoch, seconds, pace).await;
            }
        }
        if wanted("memory") {
            let messages = env_usize("MEM_MESSAGES", 100);
            // History kept for longer than the run, so nothing ages out.
            let broker = Broker::start(&format!(
                "history_max_messages = {messages}\nhistory_max_age = \"30m\""
            ));
            memory(
                &broker,
                env_usize("MEM_CHANNELS", 1000).max(2),
                messages,
                env_usize("MEM_DATA_BYTES", 100),
            )
            .await;
        }
    });
}
