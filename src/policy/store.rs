//! The policy in force and its lifecycle: reload on demand (SIGHUP) or when
//! the file changes, refusing a broken file while the previous policy keeps
//! serving. Knows nothing of HTTP: callers pass a callback to count outcomes.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::{Policy, MAX_POLICY_BYTES};
use crate::clock::SharedClock;

/// How often the policy file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// A change must hold this long before it is applied: editors and
/// Kubernetes ConfigMap updates write in more than one step.
const DEBOUNCE: Duration = Duration::from_millis(300);

type Fingerprint = [u8; 32];

/// What a reload did.
#[derive(Debug)]
pub(crate) enum ReloadOutcome {
    Applied,
    Unchanged,
    /// The file is broken; `last_error()` says why.
    Refused,
}

impl ReloadOutcome {
    /// A stable name, used as the metrics label.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Refused => "refused",
        }
    }
}

/// The store's state as readiness and metrics report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    /// Roles defined by the policy in force.
    pub(crate) roles: usize,
    /// When the policy in force was loaded (Unix seconds, from the clock).
    pub(crate) loaded_unix: u64,
    /// Why the last reload was refused, while the previous policy serves.
    pub(crate) last_error: Option<String>,
}

impl Status {
    /// False while a broken file is refused.
    pub(crate) fn healthy(&self) -> bool {
        self.last_error.is_none()
    }
}

pub(crate) struct Store {
    current: RwLock<Arc<Policy>>,
    reload: Mutex<ReloadState>,
    clock: SharedClock,
}

struct ReloadState {
    /// Fingerprint of the file content last tried, applied or refused, so a
    /// broken file is reported once per change rather than on every poll.
    fingerprint: Option<Fingerprint>,
    loaded_unix: u64,
    last_error: Option<String>,
}

impl Store {
    /// A store serving `policy`, loaded now; later reloads read `policy.source`.
    pub(crate) fn new(policy: Policy, clock: SharedClock) -> Store {
        let fingerprint = read_fingerprint(&policy.source);
        Store {
            reload: Mutex::new(ReloadState {
                fingerprint,
                loaded_unix: clock.now_secs(),
                last_error: None,
            }),
            current: RwLock::new(Arc::new(policy)),
            clock,
        }
    }

    /// The policy in force; a request keeps the one it started with.
    pub(crate) fn current(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why the last reload was refused, while the previous policy serves.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.state().last_error.clone()
    }

    pub(crate) fn status(&self) -> Status {
        let state = self.state();
        Status {
            roles: self.current().role_names().count(),
            loaded_unix: state.loaded_unix,
            last_error: state.last_error.clone(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReloadState> {
        self.reload.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the policy file: a valid new policy is swapped in whole; a
    /// broken one is refused and the one in force keeps serving. With
    /// `force`, an unchanged file is re-applied too (SIGHUP).
    pub(crate) fn reload(&self, force: bool) -> ReloadOutcome {
        let path = self.current().source.clone();
        let mut state = self.state();
        let bytes = std::fs::metadata(&path)
            .ok()
            .filter(|m| m.len() <= MAX_POLICY_BYTES)
            .and_then(|_| std::fs::read(&path).ok());
        let print = bytes.as_deref().map(fingerprint);
        if !force && print.is_some() && print == state.fingerprint {
            return ReloadOutcome::Unchanged;
        }
        state.fingerprint = print;
        match Policy::load(&path) {
            Ok(policy) => {
                let roles = policy.role_names().count();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
                state.loaded_unix = self.clock.now_secs();
                state.last_error = None;
                tracing::info!(file = %path.display(), roles, "policy reloaded");
                ReloadOutcome::Applied
            }
            Err(error) => {
                state.last_error = Some(error.to_string());
                tracing::error!(
                    file = %error.file.display(),
                    line = error.line,
                    field = %error.path,
                    reason = %error.reason,
                    "policy reload refused; the previous policy keeps serving"
                );
                ReloadOutcome::Refused
            }
        }
    }

    /// Polls the policy file and reloads it once a change has settled,
    /// telling `on_reload` each outcome; runs until dropped. Polling the path
    /// (rather than subscribing to inode events) follows Kubernetes'
    /// ConfigMap updates, which swap a symlink.
    pub(crate) async fn watch(&self, on_reload: impl Fn(&ReloadOutcome)) {
        let mut seen = self.file_fingerprint();
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let now = self.file_fingerprint();
            if now == seen {
                continue;
            }
            tokio::time::sleep(DEBOUNCE).await;
            let settled = self.file_fingerprint();
            if settled != now {
                continue;
            }
            seen = settled;
            on_reload(&self.reload(false));
        }
    }

    /// Re-applies the policy file on every SIGHUP, telling `on_reload` each
    /// outcome; runs until dropped.
    pub(crate) async fn reload_on_sighup(&self, on_reload: impl Fn(&ReloadOutcome)) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; policy reload on signal is off");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy");
            on_reload(&self.reload(true));
        }
    }

    fn file_fingerprint(&self) -> Option<Fingerprint> {
        read_fingerprint(&self.current().source)
    }
}

fn read_fingerprint(path: &Path) -> Option<Fingerprint> {
    std::fs::read(path).ok().map(|b| fingerprint(&b))
}

fn fingerprint(bytes: &[u8]) -> Fingerprint {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::clock::ManualClock;

    const ONE_ROLE: &str = r#"
version = 1
[roles.customer]
capabilities = [{ channel = "orders:{clientId}", operations = ["subscribe"] }]
"#;

    const TWO_ROLES: &str = r#"
version = 1
[roles.customer]
capabilities = [{ channel = "orders:{clientId}", operations = ["subscribe"] }]
[roles.support]
capabilities = [{ channel = "orders:*", operations = ["subscribe"] }]
"#;

    const BROKEN: &str = r#"
version = 1
[roles.support]
capabilities = [{ channel = "orders:**", operations = ["subscribe"] }]
"#;

    /// A policy file in a fresh directory, removed when dropped.
    struct PolicyFile {
        dir: PathBuf,
        path: PathBuf,
    }

    impl PolicyFile {
        fn new(text: &str) -> PolicyFile {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("ably-tokend-store-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("policy.toml");
            std::fs::write(&path, text).unwrap();
            PolicyFile { dir, path }
        }

        fn write(&self, text: &str) {
            std::fs::write(&self.path, text).unwrap();
        }
    }

    impl Drop for PolicyFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn store(file: &PolicyFile, clock: &Arc<ManualClock>) -> Store {
        Store::new(Policy::load(&file.path).unwrap(), clock.clone())
    }

    fn clock() -> Arc<ManualClock> {
        ManualClock::at_ms(1_700_000_000_000)
    }

    #[test]
    fn a_changed_valid_file_is_applied() {
        let file = PolicyFile::new(ONE_ROLE);
        let clock = clock();
        let store = store(&file, &clock);
        assert_eq!(store.status().loaded_unix, 1_700_000_000);
        file.write(TWO_ROLES);
        clock.advance_secs(60);
        assert!(matches!(store.reload(false), ReloadOutcome::Applied));
        assert!(store.current().role("support").is_some());
        assert_eq!(
            store.status(),
            Status {
                roles: 2,
                loaded_unix: 1_700_000_060,
                last_error: None,
            }
        );
    }

    #[test]
    fn an_unchanged_file_is_left_alone_unless_forced() {
        let file = PolicyFile::new(ONE_ROLE);
        let clock = clock();
        let store = store(&file, &clock);
        let before = store.current();
        assert!(matches!(store.reload(false), ReloadOutcome::Unchanged));
        assert!(Arc::ptr_eq(&before, &store.current()));
        clock.advance_secs(5);
        assert!(matches!(store.reload(true), ReloadOutcome::Applied));
        assert!(!Arc::ptr_eq(&before, &store.current()));
        assert_eq!(store.status().loaded_unix, 1_700_000_005);
    }

    #[test]
    fn a_broken_file_is_refused_once_and_the_previous_policy_keeps_serving() {
        let file = PolicyFile::new(ONE_ROLE);
        let clock = clock();
        let store = store(&file, &clock);
        file.write(BROKEN);
        assert!(matches!(store.reload(false), ReloadOutcome::Refused));
        let error = store.last_error().expect("the refusal is kept");
        assert!(
            error.contains("roles.support.capabilities[0].channel"),
            "{error}"
        );
        assert!(store.current().role("customer").is_some());
        assert!(store.current().role("support").is_none());
        let status = store.status();
        assert!(!status.healthy());
        assert_eq!(status.roles, 1);
        assert_eq!(status.loaded_unix, 1_700_000_000);
        // Reported once per change, not on every poll.
        assert!(matches!(store.reload(false), ReloadOutcome::Unchanged));
        file.write(TWO_ROLES);
        assert!(matches!(store.reload(false), ReloadOutcome::Applied));
        assert!(store.status().healthy());
    }
}
