//! Shared test scaffolding: the real app on port 0, a real JWKS server on
//! loopback, session tokens shaped like Clerk's and Auth0's, signed by keys
//! the JWKS server publishes, a WebSocket client for the broker, bounded
//! polling and scratch directories.
//!
//! Tests are silent. With `TEST_LOG` set (to anything), the in-process app's
//! tracing logs go to stdout, filtered by `RUST_LOG` (default `info`):
//! `TEST_LOG=1 cargo test --test api some_test -- --nocapture`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ably_tokend::broker::{Broker, BrokerHandle, Limits};
use ably_tokend::capability::Capability;
use ably_tokend::clock::{self, SharedClock};
use ably_tokend::config::BrokerSettings;
use ably_tokend::config::Settings;
use ably_tokend::http::Application;
use ably_tokend::policy::Policy;
use ably_tokend::signing::{sign_ably_jwt, ApiKey, Grant};
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use awc::ws::{Frame, Message};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

/// Sends the in-process app's tracing logs to stdout when `TEST_LOG` is set;
/// otherwise installs nothing, so tests stay silent. Idempotent: every app
/// and broker a test starts calls it, and only the first call counts.
pub fn init_test_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_none() {
            return;
        }
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stdout)
            .finish();
        // Only fails when a subscriber is already set, which then keeps logging.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// How long a test waits for something that happens in the background.
pub const PATIENCE: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Polls `probe` until it yields `Some` and returns that value; panics naming
/// `what` when `PATIENCE` runs out.
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        actix_web::rt::time::sleep(POLL_EVERY).await;
    }
}

/// Polls `check` until it is true; panics naming `what` when `PATIENCE` runs out.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, || {
        let checked = check();
        async move { checked.await.then_some(()) }
    })
    .await
}

/// A fresh directory under the system temp dir, unique to this process and
/// call; it and everything in it is removed when the guard is dropped, so a
/// test (passing or panicking) leaves nothing behind. Derefs to its path.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file in its own [`TempDir`], removed with it; derefs to the file's path.
pub struct ScratchFile {
    path: PathBuf,
    _dir: TempDir,
}

impl ScratchFile {
    /// The file `name` in `dir` (written or not), keeping `dir` alive as long as it.
    pub fn in_dir(dir: TempDir, name: &str) -> ScratchFile {
        ScratchFile {
            path: dir.join(name),
            _dir: dir,
        }
    }
}

impl std::ops::Deref for ScratchFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for ScratchFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// `/tmp/ably-tokend-<tag>-<pid>-<n>`, created now, removed when dropped.
pub fn tempdir(tag: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ably-tokend-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// `contents` written to a file called `name` in a fresh `tempdir(tag)`.
pub fn scratch_file(tag: &str, name: &str, contents: &str) -> ScratchFile {
    let file = ScratchFile::in_dir(tempdir(tag), name);
    std::fs::write(&*file, contents).unwrap();
    file
}

pub const API_KEY: &str = "appId.keyId:keySecret-for-tests";
pub const KEY_NAME: &str = "appId.keyId";
pub const KEY_SECRET: &str = "keySecret-for-tests";
pub const CLERK_ISS: &str = "https://clerk.example.test";
pub const AUTH0_ISS: &str = "https://tenant.auth0.example/";
pub const OIDC_ISS: &str = "https://id.example.test";
pub const APP_ORIGIN: &str = "http://localhost:3000";

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A signing key of the test issuers: private PEM + public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pem: String,
    jwk: Value,
}

impl TestKey {
    pub fn rsa(fixture_name: &str, kid: &str) -> TestKey {
        TestKey::load(fixture_name, kid, Algorithm::RS256)
    }

    pub fn ec(fixture_name: &str, kid: &str) -> TestKey {
        TestKey::load(fixture_name, kid, Algorithm::ES256)
    }

    pub fn ed(fixture_name: &str, kid: &str) -> TestKey {
        TestKey::load(fixture_name, kid, Algorithm::EdDSA)
    }

    fn load(name: &str, kid: &str, alg: Algorithm) -> TestKey {
        let mut jwk: Value = serde_json::from_str(&fixture(&format!("{name}.jwk.json"))).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        TestKey {
            kid: kid.into(),
            alg,
            pem: fixture(&format!("{name}.pem")),
            jwk,
        }
    }

    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    fn encoding_key(&self) -> EncodingKey {
        match self.alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(self.pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(self.pem.as_bytes()).unwrap(),
        }
    }

    /// Signs `header` (alg and kid are filled in) and `claims` as a compact JWS.
    pub fn sign(&self, mut header: Value, claims: &Value) -> String {
        let alg = match self.alg {
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
            _ => "RS256",
        };
        if header.get("alg").is_none() {
            header["alg"] = json!(alg);
        }
        if header.get("kid").is_none() {
            header["kid"] = json!(self.kid);
        }
        sign_raw(&header, claims, |input| {
            jsonwebtoken::crypto::sign(input, &self.encoding_key(), self.alg).unwrap()
        })
    }
}

pub fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

pub fn sign_raw(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> String) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = sign(input.as_bytes());
    format!("{input}.{signature}")
}

/// Claims as Clerk's v2 session tokens carry them (60 s life, azp, sid, org).
pub fn clerk_claims(sub: &str, role: Option<&str>) -> Value {
    let now = now();
    let mut claims = json!({
        "azp": APP_ORIGIN,
        "exp": now + 60,
        "fva": [0, -1],
        "iat": now,
        "iss": CLERK_ISS,
        "jti": format!("jti_{sub}_{now}"),
        "nbf": now - 10,
        "sid": format!("sess_{sub}"),
        "sub": sub,
        "v": 2,
        "o": {"id": "org_2abc", "slg": "acme", "rol": "admin", "per": "org:sys:read"},
    });
    if let Some(role) = role {
        claims["metadata"] = json!({"role": role});
    }
    claims
}

/// Clerk's header: a non-string `oiat` and a `cat` beside alg/kid/typ.
pub fn clerk_header() -> Value {
    json!({"typ": "JWT", "cat": "cl_B7d4PD111AAA", "oiat": now() - 3600})
}

/// Claims as Auth0 access tokens carry them: trailing-slash iss, array aud,
/// namespaced roles claim.
pub fn auth0_claims(sub: &str, roles: &[&str]) -> Value {
    let now = now();
    json!({
        "iss": AUTH0_ISS,
        "sub": sub,
        "aud": ["https://api.example.com", "https://tenant.auth0.example/userinfo"],
        "iat": now,
        "exp": now + 86400,
        "scope": "openid profile email",
        "azp": "kbyuFDidLLm280LIwVFiazOqjO3ty8KH",
        "permissions": ["read:orders"],
        "https://example.com/roles": roles,
    })
}

#[derive(Clone)]
pub struct JwksState {
    pub body: Arc<Mutex<String>>,
    pub cache_control: Arc<Mutex<Option<String>>>,
    pub delay: Arc<Mutex<Duration>>,
    pub fetches: Arc<AtomicUsize>,
}

/// An HTTP server on a free loopback port with one worker, `state` as its
/// `web::Data` and `routes`.
pub fn serve_on_loopback<S: Clone + Send + 'static>(
    state: S,
    routes: fn(&mut web::ServiceConfig),
) -> LoopbackServer {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .configure(routes)
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    LoopbackServer {
        port,
        handle,
        reserved: Mutex::new(None),
    }
}

/// A server from [`serve_on_loopback`]; `stop` takes it down for good.
pub struct LoopbackServer {
    pub port: u16,
    handle: ServerHandle,
    reserved: Mutex<Option<socket2::Socket>>,
}

impl LoopbackServer {
    /// Stops answering: connections to the port are refused from now on.
    /// The port stays bound (not listening) until this value is dropped, so
    /// no other test's server, started on port 0 meanwhile, can take it and
    /// answer in the stopped one's place — with the same fixed test key, it
    /// would pass for a provider that is down.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a TCP socket");
        // Connections the stopped server accepted may linger in TIME_WAIT.
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        socket.bind(&address.into()).unwrap_or_else(|e| {
            panic!(
                "could not keep port {} for the stopped server: {e}",
                self.port
            )
        });
        *self.reserved.lock().unwrap() = Some(socket);
    }
}

/// A real JWKS endpoint on loopback that counts its fetches.
pub struct JwksServer {
    pub port: u16,
    pub state: JwksState,
    server: LoopbackServer,
}

impl JwksServer {
    pub async fn start(keys: &[&TestKey]) -> JwksServer {
        let state = JwksState {
            body: Arc::new(Mutex::new(String::new())),
            cache_control: Arc::new(Mutex::new(None)),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let server = serve_on_loopback(state.clone(), |app| {
            app.route("/.well-known/jwks.json", web::get().to(serve_jwks));
        });
        let jwks = JwksServer {
            port: server.port,
            state,
            server,
        };
        jwks.publish(keys);
        jwks
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    pub fn publish(&self, keys: &[&TestKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk()).collect();
        self.publish_raw(json!({ "keys": keys }));
    }

    pub fn publish_raw(&self, doc: Value) {
        *self.state.body.lock().unwrap() = doc.to_string();
    }

    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    pub fn set_cache_control(&self, value: &str) {
        *self.state.cache_control.lock().unwrap() = Some(value.into());
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Stops answering: connections are refused from now on.
    pub async fn stop(&self) {
        self.server.stop().await;
    }
}

async fn serve_jwks(state: web::Data<JwksState>) -> HttpResponse {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        actix_web::rt::time::sleep(delay).await;
    }
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    if let Some(cc) = state.cache_control.lock().unwrap().clone() {
        response.insert_header(("cache-control", cc));
    }
    response.body(state.body.lock().unwrap().clone())
}

/// The application under test, bound to port 0 on loopback.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
}

#[derive(Default)]
pub struct Issuers<'a> {
    pub clerk: Option<&'a JwksServer>,
    pub auth0: Option<&'a JwksServer>,
    pub oidc: Option<&'a JwksServer>,
    /// Extra TOML for every JWKS issuer (e.g. short cache times).
    pub jwks_extra: &'a str,
}

impl Issuers<'_> {
    /// Only `jwks`, as the Clerk issuer.
    pub fn clerk(jwks: &JwksServer) -> Issuers<'_> {
        Issuers {
            clerk: Some(jwks),
            ..Default::default()
        }
    }

    /// Only `jwks`, as the Auth0 issuer.
    pub fn auth0(jwks: &JwksServer) -> Issuers<'_> {
        Issuers {
            auth0: Some(jwks),
            ..Default::default()
        }
    }

    /// Only `jwks`, as the generic OIDC issuer.
    pub fn oidc(jwks: &JwksServer) -> Issuers<'_> {
        Issuers {
            oidc: Some(jwks),
            ..Default::default()
        }
    }
}

pub const TEST_POLICY: &str = r#"
version = 1
default_roles = ["customer"]

[roles.customer]
capabilities = [
  { channel = "announcements", operations = ["subscribe"] },
  { channel = "orders:{clientId}:*", operations = ["subscribe", "presence", "history"] },
]

[roles.support]
ttl = "15m"
capabilities = [
  { channel = "orders:*", operations = ["subscribe", "publish", "presence", "history"] },
]

[roles.org-admin]
capabilities = [
  { channel = "org:{claim:/o/id}:*", operations = ["publish", "subscribe"] },
]
"#;

pub fn config_text(issuers: &Issuers<'_>, server_extra: &str) -> String {
    let mut text = format!(
        r#"
        [server]
        bind = "127.0.0.1:0"
        workers = 1
        cors_allowed_origins = ["{APP_ORIGIN}"]
        rate_limit_per_second = 0
        {server_extra}
        [ably]
        api_key = "{API_KEY}"
        [log]
        level = "warn"
        "#
    );
    let extra = issuers.jwks_extra;
    if let Some(jwks) = issuers.clerk {
        text += &format!(
            r#"
            [[issuers]]
            name = "clerk"
            issuer = "{CLERK_ISS}"
            jwks_url = "{url}"
            authorized_parties = ["{APP_ORIGIN}"]
            roles_claim = "/metadata/role"
            {extra}
            "#,
            url = jwks.url()
        );
    }
    if let Some(jwks) = issuers.auth0 {
        text += &format!(
            r#"
            [[issuers]]
            name = "auth0"
            issuer = "{AUTH0_ISS}"
            jwks_url = "{url}"
            audiences = ["https://api.example.com"]
            algorithms = ["RS256", "ES256"]
            roles_claim = "/https:~1~1example.com~1roles"
            {extra}
            "#,
            url = jwks.url()
        );
    }
    if let Some(jwks) = issuers.oidc {
        text += &format!(
            r#"
            [[issuers]]
            name = "oidc"
            issuer = "{OIDC_ISS}"
            jwks_url = "{url}"
            algorithms = ["ES256", "EdDSA", "PS256"]
            roles_claim = "/roles"
            {extra}
            "#,
            url = jwks.url()
        );
    }
    text
}

impl TestApp {
    pub async fn spawn(issuers: Issuers<'_>) -> TestApp {
        TestApp::spawn_with(&config_text(&issuers, ""), TEST_POLICY).await
    }

    /// The app on `clock` (a `ManualClock` ages the JWKS cache without sleeping).
    pub async fn spawn_with_clock(issuers: Issuers<'_>, clock: SharedClock) -> TestApp {
        TestApp::build(&config_text(&issuers, ""), TEST_POLICY, clock)
    }

    pub async fn spawn_with(config: &str, policy: &str) -> TestApp {
        TestApp::build(config, policy, clock::system())
    }

    fn build(config: &str, policy: &str, clock: SharedClock) -> TestApp {
        let settings = Settings::from_toml(config).unwrap();
        let policy = Policy::parse(std::path::Path::new("policies/test.toml"), policy).unwrap();
        TestApp::run(Application::build_with(settings, policy, clock).unwrap())
    }

    /// Runs a built `app` in the background and returns a client for it.
    pub fn run(app: Application) -> TestApp {
        init_test_logging();
        let address = format!("http://127.0.0.1:{}", app.port());
        actix_web::rt::spawn(app.run_until_stopped());
        TestApp {
            address,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    pub async fn get_token(&self, path: &str, bearer: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
    }

    /// GET `path` with `cookie` as the Cookie header.
    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
    }

    /// A request to `path` on the app, for a test to add headers and a body to.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Waits until `/readyz` answers 200 (the first JWKS fetches are done) and
    /// returns its body.
    pub async fn wait_until_ready(&self) -> Value {
        wait_for("the app to be ready", || async {
            let response = self.get("/readyz").await;
            if response.status() == 200 {
                Some(response.json().await.unwrap())
            } else {
                None
            }
        })
        .await
    }
}

/// Asserts an Ably-shaped error: status, code, reason, headers.
pub async fn assert_error(response: reqwest::Response, status: u16, reason: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for {reason}");
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    let code = (status as u32 * 100).to_string();
    assert_eq!(headers["x-ably-errorcode"], code.as_str());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["reason"], reason, "body: {body}");
    assert_eq!(body["error"]["statusCode"], status);
    assert_eq!(body["error"]["code"].to_string(), code);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.is_empty());
    assert_eq!(headers["x-ably-errormessage"], message);
    body
}

/// The TokenRequest mac, recomputed here with hmac + sha2 directly rather
/// than through the crate's own function.
pub fn independent_mac(request: &Value) -> String {
    use hmac::{Hmac, Mac};
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n",
        request["keyName"].as_str().unwrap(),
        request["ttl"]
            .as_u64()
            .map(|t| t.to_string())
            .unwrap_or_default(),
        request["capability"].as_str().unwrap(),
        request["clientId"].as_str().unwrap_or(""),
        request["timestamp"].as_u64().unwrap(),
        request["nonce"].as_str().unwrap(),
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(KEY_SECRET.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Verifies an Ably JWT with jsonwebtoken's own decoder and returns its claims.
pub fn independent_jwt_claims(token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(header.kid.as_deref(), Some(KEY_NAME));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.required_spec_claims = ["exp".to_string()].into();
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(KEY_SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims
}

/// A JWKS server publishing `keys`, and the app trusting it as the issuer
/// `issuers` names (`Issuers::clerk`, `Issuers::auth0` or `Issuers::oidc`).
pub async fn app_trusting(
    keys: &[&TestKey],
    issuers: fn(&JwksServer) -> Issuers<'_>,
) -> (JwksServer, TestApp) {
    let jwks = JwksServer::start(keys).await;
    let app = TestApp::spawn(issuers(&jwks)).await;
    (jwks, app)
}

/// The common setup: one RSA key, its JWKS server, and the app trusting it as Clerk.
pub async fn clerk_app() -> (TestKey, JwksServer, TestApp) {
    let key = TestKey::rsa("rsa1", "k1");
    let (jwks, app) = app_trusting(&[&key], Issuers::clerk).await;
    (key, jwks, app)
}

/// Asserts that `response` is a 200 and returns its JSON body (a TokenRequest,
/// mostly).
pub async fn ok_json(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "status of {}", response.url());
    response.json().await.unwrap()
}

/// Sends `request` and parses the answer's body as JSON, whatever its status
/// (for tests that assert on the body).
pub async fn send_json<T: serde::de::DeserializeOwned>(request: reqwest::RequestBuilder) -> T {
    request.send().await.unwrap().json().await.unwrap()
}

/// A WebSocket connection to the broker.
pub struct Socket {
    pub framed: actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
}

impl Socket {
    pub async fn connect(url: &str) -> Socket {
        init_test_logging();
        let (_response, framed) = awc::Client::new().ws(url).connect().await.unwrap();
        Socket { framed }
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_raw(&frame.to_string()).await;
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.framed
            .send(Message::Text(text.to_string().into()))
            .await
            .unwrap();
    }

    /// The next protocol message, skipping pings; Null when the socket closes.
    pub async fn next(&mut self) -> Value {
        loop {
            let frame = actix_web::rt::time::timeout(Duration::from_secs(5), self.framed.next())
                .await
                .expect("a frame within 5 s");
            match frame {
                Some(Ok(Frame::Text(bytes))) => return serde_json::from_slice(&bytes).unwrap(),
                Some(Ok(Frame::Binary(bytes))) => return rmp_serde::from_slice(&bytes).unwrap(),
                Some(Ok(Frame::Ping(_))) | Some(Ok(Frame::Pong(_))) => continue,
                Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return Value::Null,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Asserts that nothing but pings arrives for `ms`.
    pub async fn silent_for(&mut self, ms: u64) {
        let quiet =
            actix_web::rt::time::timeout(Duration::from_millis(ms), self.framed.next()).await;
        match quiet {
            Err(_) => {}
            Ok(Some(Ok(Frame::Ping(_)))) => {}
            Ok(other) => panic!("expected silence, got {other:?}"),
        }
    }
}

/// A broker on port 0 with the test key, for protocol edge cases and the
/// shutdown test; `handle` reaches it after `run_until_stopped` took it.
pub struct TestBroker {
    pub port: u16,
    pub key: ApiKey,
    pub handle: BrokerHandle,
}

pub async fn spawn_broker(limits: Limits) -> TestBroker {
    spawn_broker_with_clock(limits, clock::system()).await
}

/// A broker reading `clock` (a `ManualClock` expires what it remembers
/// without sleeping).
pub async fn spawn_broker_with_clock(limits: Limits, clock: SharedClock) -> TestBroker {
    let key: ApiKey = API_KEY.parse().unwrap();
    let settings = BrokerSettings {
        bind: "127.0.0.1:0".parse().unwrap(),
        history_max_messages: 100,
        history_max_age: Duration::from_secs(120),
        ..BrokerSettings::default()
    };
    let broker = Broker::build(&settings, vec![key.clone()], clock, limits).unwrap();
    let (port, handle) = (broker.port(), broker.handle());
    actix_web::rt::spawn(broker.run_until_stopped());
    TestBroker { port, key, handle }
}

impl TestBroker {
    pub fn jwt(
        &self,
        capability: &str,
        client_id: Option<&str>,
        ttl_ms: u64,
        issued_ms: u64,
    ) -> String {
        let capability = Capability::parse_json(capability).unwrap();
        sign_ably_jwt(
            &self.key,
            &Grant {
                capability: &capability,
                client_id,
                ttl_ms,
                issued_ms,
            },
        )
    }

    pub async fn connect(&self, query: &str) -> Socket {
        Socket::connect(&format!(
            "ws://127.0.0.1:{}/?format=json&{query}",
            self.port
        ))
        .await
    }

    /// A REST request to the broker with the test API key (Basic auth).
    pub fn with_key(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("http://127.0.0.1:{}{path}", self.port))
            .header(
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(API_KEY)
                ),
            )
    }

    pub async fn connect_as(&self, capability: &str, client_id: Option<&str>) -> Socket {
        let token = self.jwt(capability, client_id, 60_000, now_ms());
        let mut socket = self.connect(&format!("access_token={token}")).await;
        let connected = socket.next().await;
        assert_eq!(connected["action"], 4, "{connected}");
        socket
    }
}
