//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! with a `LeaseLock` does it, so that of several scheduler or controller-manager replicas
//! only one acts at a time.
//!
//! Every write of the Lease carries the `resourceVersion` it was read at, so two candidates
//! racing for a free Lease cannot both win: the loser gets a Conflict and tries again later.
//! Clocks of different machines are not trusted: a Lease held by someone else counts as
//! expired only once this elector has seen it unchanged for its whole `leaseDurationSeconds`,
//! measured on the local monotonic clock ([`tokio::time::Instant`]).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::api::Api;
use crate::client::Client;
use crate::error::{Error, Result};

/// Where the Lease lives, who we are, and the timing of the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity, written to `spec.holderIdentity`; unique per replica.
    pub identity: String,
    /// How long others wait after the last observed change before taking the Lease over
    /// (default 15s).
    pub lease_duration: Duration,
    /// How long the leader keeps retrying a failing renewal before it gives up leadership
    /// (default 10s); shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// The pause between attempts to acquire or renew (default 2s); shorter than
    /// `renew_deadline`.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// A configuration with client-go's default timing (15s / 10s / 2s).
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElectionConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks that the names are set and that
    /// `lease_duration > renew_deadline > retry_period > 0`; fails with [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        let fail = |what: &str| Err(Error::Config(format!("leader election: {what}")));
        if self.namespace.is_empty() || self.name.is_empty() {
            return fail("lease namespace and name must be set");
        }
        if self.identity.is_empty() {
            return fail("identity must be set");
        }
        if self.retry_period.is_zero() {
            return fail("retry period must be positive");
        }
        if self.renew_deadline <= self.retry_period {
            return fail("renew deadline must be longer than the retry period");
        }
        if self.lease_duration <= self.renew_deadline {
            return fail("lease duration must be longer than the renew deadline");
        }
        Ok(())
    }

    /// `lease_duration` in whole seconds as the Lease stores it, rounded up, at least 1.
    fn lease_duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX).max(1)
    }
}

/// The parts of a Lease that say who holds it; any change means its holder is alive.
#[derive(Debug, Clone, PartialEq)]
struct LeaseRecord {
    holder: String,
    lease_duration_seconds: i32,
    acquire_time: Option<Timestamp>,
    renew_time: Option<Timestamp>,
    transitions: i32,
}

impl LeaseRecord {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        LeaseRecord {
            holder: spec.holder_identity.unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.transitions),
            ..LeaseSpec::default()
        }
    }
}

/// The last Lease record seen and when, on the local clock.
#[derive(Debug)]
struct Observed {
    record: LeaseRecord,
    at: Instant,
}

/// One candidate in a leader election; see the [module docs](self).
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    // Never held across an `.await`.
    observed: Mutex<Option<Observed>>,
}

impl LeaderElector {
    /// A candidate for the Lease `config` names. An invalid configuration is logged (see
    /// [`LeaderElectionConfig::validate`]) but still used as given.
    pub fn new(client: Client, config: LeaderElectionConfig) -> Self {
        if let Err(error) = config.validate() {
            warn!(lease = %config.name, %error, "questionable leader election configuration");
        }
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(None),
        }
    }

    /// The configuration this elector runs with.
    pub fn config(&self) -> &LeaderElectionConfig {
        &self.config
    }

    /// Tries once: creates the Lease if absent, takes it over if it is free or expired
    /// (unchanged for its `leaseDurationSeconds` since this elector first saw it that way),
    /// renews it if it is ours. Returns whether we hold it now. Writes carry the
    /// `resourceVersion` read, so two candidates never both win; a Conflict means someone
    /// else won this round and gives `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            let record = LeaseRecord {
                holder: self.config.identity.clone(),
                lease_duration_seconds: self.config.lease_duration_seconds(),
                acquire_time: Some(now),
                renew_time: Some(now),
                transitions: 0,
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(record.to_spec()),
            };
            return match self.api.create(&lease).await {
                Ok(created) => {
                    self.observe(LeaseRecord::of(&created));
                    Ok(true)
                }
                Err(e) if e.is_already_exists() || e.is_conflict() => Ok(false),
                Err(e) => Err(e),
            };
        };

        let old = LeaseRecord::of(&current);
        let observed_at = self.observe(old.clone());
        let ours = old.holder == self.config.identity;
        if !ours && !old.holder.is_empty() {
            let duration = if old.lease_duration_seconds > 0 {
                Duration::from_secs(old.lease_duration_seconds.unsigned_abs().into())
            } else {
                self.config.lease_duration
            };
            if observed_at + duration > Instant::now() {
                return Ok(false);
            }
            info!(lease = %self.config.name, holder = %old.holder, "lease expired, taking over");
        }

        let record = LeaseRecord {
            holder: self.config.identity.clone(),
            lease_duration_seconds: self.config.lease_duration_seconds(),
            acquire_time: if ours {
                old.acquire_time.or(Some(now))
            } else {
                Some(now)
            },
            renew_time: Some(now),
            transitions: if ours {
                old.transitions
            } else {
                old.transitions.saturating_add(1)
            },
        };
        let mut lease = current;
        lease.spec = Some(record.to_spec());
        match self.api.replace(&self.config.name, &lease).await {
            Ok(stored) => {
                self.observe(LeaseRecord::of(&stored));
                Ok(true)
            }
            Err(e) if e.is_conflict() => {
                debug!(lease = %self.config.name, "lost a race for the lease");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Campaigns until leader, leads, and gives leadership up again.
    ///
    /// Tries every `retry_period` until it holds the Lease, then runs `lead(token)` while
    /// renewing every `retry_period`. `token` turns `true` when leadership is lost (renewal
    /// failing for `renew_deadline`, or the Lease taken by another) or on `shutdown`; `lead`
    /// should then stop and return. It gets up to `renew_deadline` for that before it is
    /// dropped. If leadership was not lost, the Lease is then released (empty
    /// `holderIdentity`, `leaseDurationSeconds` 1) so another candidate takes over at once.
    ///
    /// Returns on `shutdown`, after leadership is lost, or when `lead` returns by itself (the
    /// Lease is released then too); `lead` is called at most once.
    pub async fn run<F, Fut>(self, lead: F, shutdown: impl Future<Output = ()>)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let lease = self.config.name.clone();

        tokio::select! {
            () = &mut shutdown => return,
            () = self.acquire() => {}
        }
        info!(lease = %lease, identity = %self.config.identity, "became leader");

        let (stop, token) = watch::channel(false);
        let leading = lead(token);
        tokio::pin!(leading);
        let mut lead_done = false;
        let still_leader = tokio::select! {
            () = &mut shutdown => true,
            () = self.renew() => false,
            () = &mut leading => {
                lead_done = true;
                true
            }
        };
        // The receiver may already be gone if `lead` dropped it; nothing to tell then.
        let _ = stop.send(true);
        if !still_leader {
            warn!(lease = %lease, identity = %self.config.identity, "leadership lost");
        }
        if !lead_done
            && tokio::time::timeout(self.config.renew_deadline, &mut leading)
                .await
                .is_err()
        {
            warn!(lease = %lease, "leader did not stop within the renew deadline, dropping it");
        }
        if still_leader {
            match tokio::time::timeout(self.config.renew_deadline, self.release()).await {
                Ok(Ok(())) => info!(lease = %lease, "lease released"),
                Ok(Err(error)) => warn!(lease = %lease, %error, "releasing the lease failed"),
                Err(_) => warn!(lease = %lease, "releasing the lease timed out"),
            }
        }
    }

    /// Remembers `record`; returns when it was first seen as it is.
    fn observe(&self, record: LeaseRecord) -> Instant {
        let mut observed = self
            .observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match observed.as_ref() {
            Some(seen) if seen.record == record => seen.at,
            _ => {
                let at = Instant::now();
                *observed = Some(Observed { record, at });
                at
            }
        }
    }

    /// Whether the last record seen names another holder.
    fn held_by_other(&self) -> bool {
        let observed = self
            .observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        observed.as_ref().is_some_and(|seen| {
            !seen.record.holder.is_empty() && seen.record.holder != self.config.identity
        })
    }

    /// Returns once this candidate holds the Lease.
    async fn acquire(&self) {
        loop {
            match tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew())
                .await
            {
                Ok(Ok(true)) => return,
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    warn!(lease = %self.config.name, %error, "acquiring the lease failed");
                }
                Err(_) => warn!(lease = %self.config.name, "acquiring the lease timed out"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the Lease every `retry_period`; returns when leadership is lost.
    async fn renew(&self) {
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let deadline = last_renew + self.config.renew_deadline;
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => last_renew = Instant::now(),
                Ok(Ok(false)) if self.held_by_other() => return,
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    warn!(lease = %self.config.name, %error, "renewing the lease failed");
                }
                Err(_) => return,
            }
            if Instant::now() >= last_renew + self.config.renew_deadline {
                return;
            }
        }
    }

    /// Gives the Lease up if we still hold it.
    async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let old = LeaseRecord::of(&lease);
        if old.holder != self.config.identity {
            return Ok(());
        }
        let now = Timestamp::now();
        let record = LeaseRecord {
            holder: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(now),
            renew_time: Some(now),
            transitions: old.transitions,
        };
        lease.spec = Some(record.to_spec());
        match self.api.replace(&self.config.name, &lease).await {
            Ok(stored) => {
                self.observe(LeaseRecord::of(&stored));
                Ok(())
            }
            // Someone else wrote it since; it is not ours to release any more.
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_checks_timing_order() {
        let config = LeaderElectionConfig::new("kube-system", "scheduler", "a");
        assert!(config.validate().is_ok());
        let mut bad = config.clone();
        bad.renew_deadline = bad.lease_duration;
        assert!(bad.validate().is_err());
        let mut bad = config.clone();
        bad.retry_period = Duration::ZERO;
        assert!(bad.validate().is_err());
        let mut bad = config;
        bad.identity.clear();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn lease_seconds_round_up() {
        let mut config = LeaderElectionConfig::new("ns", "l", "a");
        config.lease_duration = Duration::from_millis(1500);
        assert_eq!(config.lease_duration_seconds(), 2);
        config.lease_duration = Duration::from_millis(10);
        assert_eq!(config.lease_duration_seconds(), 1);
        config.lease_duration = Duration::ZERO;
        assert_eq!(config.lease_duration_seconds(), 1);
    }

    #[test]
    fn records_round_trip_through_the_spec() {
        let now = Timestamp::now();
        let record = LeaseRecord {
            holder: "a".into(),
            lease_duration_seconds: 15,
            acquire_time: Some(now),
            renew_time: Some(now),
            transitions: 3,
        };
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(record.to_spec()),
        };
        assert_eq!(LeaseRecord::of(&lease), record);
    }
}
