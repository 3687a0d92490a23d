//! One environment at runtime: its router, and the versions running there (stable, the one being
//! deployed, the previous one kept warm).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use conveyor_api::{EnvironmentStatus, VersionRole, VersionStatus};
use conveyor_deploy::{DeployError, InstanceResources, InstanceStatus, RunningVersion};
use conveyor_router::{Backend, Cidr, ConfigError, RouteConfig, Router, TOTAL_WEIGHT, VersionMetrics};
use serde::{Deserialize, Serialize};

/// Why the environment could not do what a rollout asked of it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnvironmentError {
    #[error("no new version to grow")]
    NothingToGrow,
    #[error("the new version did not grow: {0}")]
    Grow(DeployError),
    #[error("route config refused: {0}")]
    Refused(#[from] ConfigError),
    #[error("router of {project}/{environment} cannot listen on {listen}: {error}")]
    Listen {
        project: String,
        environment: String,
        listen: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot save the route config: {0}")]
    Save(std::io::Error),
}

/// A version running in the environment.
pub(crate) struct Active {
    pub release_id: i64,
    pub version: String,
    pub running: Box<dyn RunningVersion>,
}

impl Active {
    fn upstreams(&self) -> Vec<SocketAddr> {
        self.running.status().iter().map(|s| s.addr).collect()
    }
}

struct RouterHandle {
    router: Router,
    addr: SocketAddr,
}

#[derive(Default)]
struct State {
    router: Option<RouterHandle>,
    stable: Option<Active>,
    canary: Option<Active>,
    /// A fresh copy of the stable version for the canary analysis, with the canary's share.
    baseline: Option<Active>,
    warm: Option<Active>,
    /// The canary's share of traffic, in percent.
    traffic: u32,
}

/// The persisted form of a router, so it can serve again before anything else after a restart.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SavedRouter {
    pub listen: SocketAddr,
    pub config: RouteConfig,
}

pub(crate) struct Live {
    pub project: String,
    pub name: String,
    /// Where the router's config is saved, to serve again first after a restart.
    pub router_file: PathBuf,
    /// Held by the deployment in progress: one at a time per environment.
    pub turn: tokio::sync::Mutex<()>,
    /// The server's trusted proxies, put in every route config.
    trusted_proxies: Vec<Cidr>,
    state: Mutex<State>,
}

impl Live {
    pub fn new(project: &str, name: &str, router_file: PathBuf, trusted_proxies: Vec<Cidr>) -> Self {
        Live {
            project: project.to_string(),
            name: name.to_string(),
            router_file,
            trusted_proxies,
            turn: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> EnvironmentStatus {
        let state = self.state();
        let canary_traffic = match (&state.stable, &state.canary) {
            (Some(_), Some(_)) => state.traffic.min(100),
            (None, Some(_)) => 100,
            _ => 0,
        };
        let mut versions = Vec::new();
        let baseline_traffic = match &state.baseline {
            Some(_) => canary_traffic.min(100 - canary_traffic),
            None => 0,
        };
        for (active, role, traffic) in [
            (
                &state.stable,
                VersionRole::Stable,
                100 - canary_traffic - baseline_traffic,
            ),
            (&state.canary, VersionRole::Canary, canary_traffic),
            (&state.baseline, VersionRole::Baseline, baseline_traffic),
            (&state.warm, VersionRole::Warm, 0),
        ] {
            if let Some(a) = active {
                versions.push(VersionStatus {
                    version: a.version.clone(),
                    release_id: a.release_id,
                    role,
                    traffic,
                    instances: a.running.status(),
                });
            }
        }
        EnvironmentStatus {
            project: self.project.clone(),
            environment: self.name.clone(),
            url: state.router.as_ref().map(|r| format!("http://{}", r.addr)),
            versions,
        }
    }

    /// Waits until the router has no request in flight to `version` (which traffic has left),
    /// for at most `limit`, so stopping it cuts no request short.
    pub async fn drain(&self, version: &str, limit: Duration) {
        let end = tokio::time::Instant::now() + limit;
        loop {
            let in_flight = match &self.state().router {
                Some(handle) => handle.router.in_flight(version),
                None => 0,
            };
            if in_flight == 0 || tokio::time::Instant::now() >= end {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What the router has counted for `version`.
    pub fn metrics_of(&self, version: &str) -> Option<VersionMetrics> {
        let state = self.state();
        let all = state.router.as_ref()?.router.metrics();
        all.into_iter().find(|m| m.version == version)
    }

    /// What the router has counted for the baseline (the fresh one, else the stable version)
    /// and the new version, in that order.
    pub fn version_metrics(&self) -> Option<(VersionMetrics, VersionMetrics)> {
        let state = self.state();
        let stable = state.baseline.as_ref().or(state.stable.as_ref())?;
        let canary = state.canary.as_ref()?;
        let all = state.router.as_ref()?.router.metrics();
        let find = |version: &str| all.iter().find(|m| m.version == version).cloned();
        Some((find(&stable.version)?, find(&canary.version)?))
    }

    /// What the target samples of `(baseline or stable, canary)`'s instances now (reads
    /// `/proc` for the local target: call it off the async threads).
    pub fn version_resources(&self) -> Option<(Vec<InstanceResources>, Vec<InstanceResources>)> {
        let state = self.state();
        let stable = state.baseline.as_ref().or(state.stable.as_ref())?;
        let canary = state.canary.as_ref()?;
        Some((stable.running.resources(), canary.running.resources()))
    }

    /// The version with `role`, if one runs.
    pub fn with_role(&self, role: VersionRole) -> Option<VersionStatus> {
        self.status().versions.into_iter().find(|v| v.role == role)
    }

    pub fn router_url(&self) -> Option<String> {
        self.state().router.as_ref().map(|r| format!("http://{}", r.addr))
    }

    pub fn warm_release(&self) -> Option<i64> {
        self.state().warm.as_ref().map(|a| a.release_id)
    }

    pub fn has_stable(&self) -> bool {
        self.state().stable.is_some()
    }

    pub fn canary_healthy(&self) -> bool {
        self.state()
            .canary
            .as_ref()
            .is_some_and(|c| !c.running.healthy_addrs().is_empty())
    }

    pub fn canary_addr(&self) -> Option<SocketAddr> {
        self.state()
            .canary
            .as_ref()
            .and_then(|c| c.running.healthy_addrs().first().copied())
    }

    /// The new version's share of traffic, in percent.
    pub fn traffic(&self) -> u32 {
        self.state().traffic
    }

    /// Grows the new version to `to` instances (rolling); returns its instances then.
    pub async fn grow_canary(&self, to: u32) -> Result<Vec<InstanceStatus>, EnvironmentError> {
        let taken = self.state().canary.take();
        let Some(mut canary) = taken else {
            return Err(EnvironmentError::NothingToGrow);
        };
        let grown = canary.running.grow(to).await;
        let instances = canary.running.status();
        self.state().canary = Some(canary);
        grown.map(|()| instances).map_err(EnvironmentError::Grow)
    }

    /// Takes the stable version's instances beyond `to` out of it; the future stops them.
    pub fn shrink_stable(&self, to: u32) -> Option<conveyor_deploy::BoxFuture<'static, ()>> {
        self.state().stable.as_mut().map(|a| a.running.shrink(to))
    }

    pub fn set_canary(&self, active: Active) {
        self.state().canary = Some(active);
    }

    pub fn set_baseline(&self, active: Active) {
        self.state().baseline = Some(active);
    }

    pub fn take_baseline(&self) -> Option<Active> {
        self.state().baseline.take()
    }

    pub fn set_stable(&self, active: Active) {
        self.state().stable = Some(active);
    }

    pub fn take_canary(&self) -> Option<Active> {
        let mut state = self.state();
        state.traffic = 0;
        state.canary.take()
    }

    pub fn take_stable(&self) -> Option<Active> {
        self.state().stable.take()
    }

    pub fn take_warm(&self) -> Option<Active> {
        self.state().warm.take()
    }

    /// The canary becomes stable; the stable becomes warm. Returns the warm version it replaced.
    pub fn promote_canary(&self) -> Option<Active> {
        let mut state = self.state();
        let replaced = state.warm.take();
        state.warm = state.stable.take();
        state.stable = state.canary.take();
        state.traffic = 0;
        replaced
    }

    /// The warm version becomes stable again (instant rollback); the stable one becomes warm.
    pub fn swap_warm(&self) {
        let mut state = self.state();
        let warm = state.warm.take();
        state.warm = state.stable.take();
        state.stable = warm;
        state.traffic = 0;
    }

    /// Sends `percent` of the traffic to the canary and the rest to the stable version (all of it
    /// to whichever exists alone), creating the router on first use, and saves the config.
    pub async fn route(
        &self,
        percent: u32,
        env: &conveyor_spec::Environment,
    ) -> Result<(), EnvironmentError> {
        let listen = env.listen;
        let (config, needs_router) = {
            let mut state = self.state();
            state.traffic = percent.min(100);
            let mut backends = Vec::new();
            let canary_weight = match (&state.stable, &state.canary) {
                (Some(_), Some(_)) => state.traffic * (TOTAL_WEIGHT / 100),
                (None, Some(_)) => TOTAL_WEIGHT,
                _ => 0,
            };
            // A fresh baseline gets the canary's share, out of the stable version's.
            let baseline_weight = match (&state.stable, &state.baseline) {
                (Some(_), Some(_)) => canary_weight.min(TOTAL_WEIGHT - canary_weight),
                _ => 0,
            };
            if let Some(stable) = &state.stable {
                backends.push(Backend {
                    version: stable.version.clone(),
                    weight: TOTAL_WEIGHT - canary_weight - baseline_weight,
                    upstreams: stable.upstreams(),
                });
            }
            if let Some(baseline) = state.baseline.as_ref().filter(|_| baseline_weight > 0) {
                backends.push(Backend {
                    version: baseline.version.clone(),
                    weight: baseline_weight,
                    upstreams: baseline.upstreams(),
                });
            }
            if let Some(canary) = &state.canary {
                backends.push(Backend {
                    version: canary.version.clone(),
                    weight: canary_weight,
                    upstreams: canary.upstreams(),
                });
            }
            if backends.is_empty() {
                return Ok(());
            }
            let mut config = RouteConfig::single("placeholder", vec![]);
            config.backends = backends;
            config.response_timeout = env
                .response_timeout
                .unwrap_or(conveyor_router::DEFAULT_RESPONSE_TIMEOUT);
            config.trusted_proxies = self.trusted_proxies.clone();
            config.sticky = match &env.sticky {
                conveyor_spec::delivery::Sticky::Cookie => Some(conveyor_router::Sticky::Cookie {
                    name: conveyor_router::DEFAULT_COOKIE.into(),
                }),
                conveyor_spec::delivery::Sticky::Header(name) => {
                    Some(conveyor_router::Sticky::Header { name: name.clone() })
                }
                conveyor_spec::delivery::Sticky::None => None,
            };
            (config, state.router.is_none())
        };
        if needs_router {
            let saved_listen = std::fs::read(&self.router_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<SavedRouter>(&b).ok())
                .map(|s| s.listen);
            let listen = listen
                .or(saved_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
            self.start_router(config.clone(), listen).await?;
        } else if let Some(handle) = &self.state().router {
            handle.router.update(config.clone())?;
        }
        self.save(&config)
    }

    /// Starts the environment's router on `listen` with `config`, one serving thread per core.
    pub async fn start_router(
        &self,
        config: RouteConfig,
        listen: SocketAddr,
    ) -> Result<(), EnvironmentError> {
        let router = Router::new(config)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let addr = router
            .serve_on_threads(listen, threads)
            .map_err(|error| EnvironmentError::Listen {
                project: self.project.clone(),
                environment: self.name.clone(),
                listen,
                error,
            })?;
        tracing::info!(project = %self.project, environment = %self.name, %addr, threads, "router listening");
        self.state().router = Some(RouterHandle { router, addr });
        Ok(())
    }

    fn save(&self, config: &RouteConfig) -> Result<(), EnvironmentError> {
        let Some(listen) = self.state().router.as_ref().map(|r| r.addr) else {
            return Ok(());
        };
        let path = &self.router_file;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(EnvironmentError::Save)?;
        }
        let text = serde_json::to_vec_pretty(&SavedRouter {
            listen,
            config: config.clone(),
        })
        .expect("route configs serialize");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(EnvironmentError::Save)
    }

    /// The router's metrics, for the analysis and `/metrics`.
    pub fn router(&self) -> Option<Router> {
        self.state().router.as_ref().map(|r| r.router.clone())
    }
}
