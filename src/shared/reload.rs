//! Live config reload (SIGHUP, admin `RELOAD`, `autoreload`). The file is parsed and validated first; an invalid
//! one leaves everything as it was. A valid one is published atomically: unchanged pools are kept as they are,
//! changed ones are rebuilt keeping their unchanged server pools (and connections), new ones are started.
//! Clients move to their user's new pool between transactions (see the session's `follow_reload`); clients of a
//! removed pool keep it until they leave, and it closes with them. `host` and `port` need a restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Shared, Snapshot};
use crate::config::{Config, ConfigError};
use crate::database::Cluster;

/// Why a reload was refused; the old config stays in force.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error("no config file to reload: the proxy was started from a config in memory")]
    NoFile,
    #[error("config not reloaded: {0}")]
    Config(#[from] ConfigError),
    #[error("config not reloaded: {0}")]
    Auth(#[from] crate::protocol::auth::AuthError),
    #[error("config not reloaded: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("config not reloaded: {0}")]
    Tls(#[from] crate::net::tls::TlsError),
}

/// What a reload did.
#[derive(Debug, Default)]
pub(crate) struct ReloadReport {
    pub(crate) kept: usize,
    pub(crate) rebuilt: Vec<String>,
    pub(crate) added: Vec<String>,
    pub(crate) removed: Vec<String>,
    /// Settings that changed in the file but apply only after a restart.
    pub(crate) need_restart: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

impl ReloadReport {
    /// Lines for the operator (NOTICEs after `RELOAD`, the log after SIGHUP).
    pub(crate) fn notices(&self) -> Vec<String> {
        let mut v = vec![format!(
            "reloaded: {} pool(s) unchanged, rebuilt [{}], added [{}], removed [{}]",
            self.kept,
            self.rebuilt.join(", "),
            self.added.join(", "),
            self.removed.join(", ")
        )];
        for k in &self.need_restart {
            v.push(format!("{k} changed: it takes effect after a restart"));
        }
        v.extend(self.warnings.iter().cloned());
        v
    }
}

/// Re-reads the config file and publishes it. Reloads run one at a time.
pub(crate) async fn reload(shared: &Arc<Shared>) -> Result<ReloadReport, ReloadError> {
    let _one_at_a_time = shared.reload_lock.lock().await;
    let result = reload_now(shared).await;
    match &result {
        Ok(r) => {
            shared.reloads.fetch_add(1, Ordering::Relaxed);
            for n in r.notices() {
                tracing::info!("{n}");
            }
        }
        Err(e) => {
            shared.reload_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("{e}");
        }
    }
    result
}

async fn reload_now(shared: &Arc<Shared>) -> Result<ReloadReport, ReloadError> {
    let path = shared.config_path.clone().ok_or(ReloadError::NoFile)?;
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await??;
    let old = shared.snapshot();
    // Server pools are built with PBKDF2-derived SCRAM verifiers: off the async workers.
    let (config, cluster) = {
        let old = old.clone();
        tokio::task::spawn_blocking(move || {
            let cluster = Cluster::build_from(&loaded.config, Some(&old.cluster));
            (loaded, cluster)
        })
        .await?
    };
    let cluster = cluster?;
    let tls = super::tls_acceptor(&config.config)?;
    crate::inference::serving::embed_queue::configure(&config.config.inference);
    let mut report = ReloadReport {
        warnings: config.warnings,
        ..Default::default()
    };
    let config = config.config;
    let g_old = &old.config.general;
    if g_old.host != config.general.host {
        report.need_restart.push("general.host".into());
    }
    if g_old.port != config.general.port {
        report.need_restart.push("general.port".into());
    }
    if g_old.worker_threads != config.general.worker_threads {
        report.need_restart.push("general.worker_threads".into());
    }
    let fresh = cluster.start_new(Some(&old.cluster));
    for p in &fresh {
        let name = format!("{}/{}", p.database, p.user);
        if old.cluster.get(&p.database, &p.user).is_some() {
            report.rebuilt.push(name);
        } else {
            report.added.push(name);
        }
        if p.two_phase && p.shards.len() > 1 {
            crate::database::distributed::spawn_recovery(p);
        }
    }
    report.kept = cluster.user_pools().count() - fresh.len();
    report.removed = cluster
        .removed_from(&old.cluster)
        .into_iter()
        .map(|(d, u)| format!("{d}/{u}"))
        .collect();
    report.rebuilt.sort();
    report.added.sort();
    report.removed.sort();
    shared.state.store(Arc::new(Snapshot {
        config: Arc::new(config),
        cluster: Arc::new(cluster),
        tls,
    }));
    shared.generation.fetch_add(1, Ordering::AcqRel);
    Ok(report)
}

/// `autoreload`: polls the config file every `interval` and reloads when its contents change.
pub(crate) fn spawn_autoreload(shared: &Arc<Shared>, interval: Duration) {
    let Some(path) = shared.config_path.clone() else {
        return;
    };
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut last = tokio::fs::read(&path).await.ok();
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            let now = tokio::fs::read(&path).await.ok();
            if now.is_some() && now != last {
                last = now;
                tracing::info!("{} changed: reloading", path.display());
                let _ = reload(&shared).await;
            }
        }
    });
}
