//! The proxy's caches: Services and EndpointSlices as watch events leave them, indexed by
//! Service, and a record of which Services changed since the last sync and when their
//! endpoints changed (for the network programming latency).
//!
//! A (re-)list (`Init` … `InitDone`) is built aside and swapped in whole; it asks for a
//! full sync, since anything may have changed while the watch was away.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rkube_client::watcher::Event;

use crate::model::{self, SERVICE_NAME_LABEL, ServiceKey, ServicePort};

/// The annotation the EndpointSlice controller may set to when the change it reflects
/// happened (upstream's `endpoints.kubernetes.io/last-change-trigger-time`).
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// What changed since the last [`Inputs::take_changes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Everything must be re-read (first sync, after a re-list).
    pub full: bool,
    /// The Services whose rules may differ.
    pub dirty: BTreeSet<ServiceKey>,
    /// Per Service, the earliest endpoint change not yet programmed.
    pub triggers: BTreeMap<ServiceKey, SystemTime>,
}

impl Changes {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        !self.full && self.dirty.is_empty()
    }
}

/// The Service and EndpointSlice caches and the changes not yet synced.
#[derive(Debug, Default)]
pub struct Inputs {
    services: HashMap<ServiceKey, Arc<Service>>,
    /// Service → slice name → slice.
    slices: HashMap<ServiceKey, BTreeMap<String, Arc<EndpointSlice>>>,
    /// (namespace, slice name) → the Service it was filed under.
    slice_owner: HashMap<(String, String), ServiceKey>,
    relisting_services: Option<Vec<Service>>,
    relisting_slices: Option<Vec<EndpointSlice>>,
    services_synced: bool,
    slices_synced: bool,
    changes: Changes,
}

fn service_key(service: &Service) -> ServiceKey {
    ServiceKey::new(
        service.metadata.namespace.as_deref().unwrap_or("default"),
        service.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The Service an EndpointSlice belongs to, by its `kubernetes.io/service-name` label.
fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(ServiceKey::new(
        slice.metadata.namespace.as_deref().unwrap_or("default"),
        name,
    ))
}

fn slice_id(slice: &EndpointSlice) -> (String, String) {
    (
        slice.metadata.namespace.clone().unwrap_or_default(),
        slice.metadata.name.clone().unwrap_or_default(),
    )
}

/// When the change a slice reflects happened: its trigger-time annotation, else `now`.
pub fn trigger_time(slice: &EndpointSlice, now: SystemTime) -> SystemTime {
    slice
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(SystemTime::from)
        .filter(|t| *t <= now)
        .unwrap_or(now)
}

fn same_version<
    K: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
>(
    a: &K,
    b: &K,
) -> bool {
    let (a, b) = (a.metadata(), b.metadata());
    a.resource_version.is_some() && a.resource_version == b.resource_version && a.uid == b.uid
}

impl Inputs {
    /// Empty caches; nothing is synced yet.
    pub fn new() -> Self {
        Inputs::default()
    }

    /// Whether both resources have been listed once: until then a sync would program a
    /// partial view and break working Services.
    pub fn is_synced(&self) -> bool {
        self.services_synced && self.slices_synced
    }

    /// How many Services are cached.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Applies one Service watch event.
    pub fn apply_service(&mut self, event: Event<Service>) {
        match event {
            Event::Init => self.relisting_services = Some(Vec::new()),
            Event::InitApply(svc) => self.relisting_services.get_or_insert_default().push(svc),
            Event::InitDone => {
                let list = self.relisting_services.take().unwrap_or_default();
                self.services = list
                    .into_iter()
                    .map(|s| (service_key(&s), Arc::new(s)))
                    .collect();
                self.services_synced = true;
                self.changes.full = true;
            }
            Event::Apply(svc) => {
                let key = service_key(&svc);
                if self
                    .services
                    .get(&key)
                    .is_some_and(|old| same_version(&**old, &svc))
                {
                    return;
                }
                self.services.insert(key.clone(), Arc::new(svc));
                self.changes.dirty.insert(key);
            }
            Event::Delete(svc) => {
                let key = service_key(&svc);
                self.services.remove(&key);
                self.changes.dirty.insert(key);
            }
        }
    }

    /// Applies one EndpointSlice watch event observed at `now`.
    pub fn apply_slice(&mut self, event: Event<EndpointSlice>, now: SystemTime) {
        match event {
            Event::Init => self.relisting_slices = Some(Vec::new()),
            Event::InitApply(slice) => self.relisting_slices.get_or_insert_default().push(slice),
            Event::InitDone => {
                let list = self.relisting_slices.take().unwrap_or_default();
                self.slices.clear();
                self.slice_owner.clear();
                for slice in list {
                    self.insert_slice(slice);
                }
                self.slices_synced = true;
                self.changes.full = true;
            }
            Event::Apply(slice) => {
                let id = slice_id(&slice);
                let owner = slice_service(&slice);
                let unchanged = owner.as_ref().is_some_and(|o| {
                    self.slices
                        .get(o)
                        .and_then(|m| m.get(&id.1))
                        .is_some_and(|old| same_version(&**old, &slice))
                });
                if unchanged {
                    return;
                }
                let when = trigger_time(&slice, now);
                if let Some(previous) = self.remove_slice(&id) {
                    self.touch(previous, when);
                }
                if let Some(owner) = self.insert_slice(slice) {
                    self.touch(owner, when);
                }
            }
            Event::Delete(slice) => {
                if let Some(previous) = self.remove_slice(&slice_id(&slice)) {
                    self.touch(previous, now);
                }
            }
        }
    }

    fn touch(&mut self, key: ServiceKey, when: SystemTime) {
        self.changes
            .triggers
            .entry(key.clone())
            .and_modify(|t| *t = (*t).min(when))
            .or_insert(when);
        self.changes.dirty.insert(key);
    }

    fn insert_slice(&mut self, slice: EndpointSlice) -> Option<ServiceKey> {
        let owner = slice_service(&slice)?;
        let id = slice_id(&slice);
        self.slice_owner.insert(id.clone(), owner.clone());
        self.slices
            .entry(owner.clone())
            .or_default()
            .insert(id.1, Arc::new(slice));
        Some(owner)
    }

    fn remove_slice(&mut self, id: &(String, String)) -> Option<ServiceKey> {
        let owner = self.slice_owner.remove(id)?;
        if let Some(m) = self.slices.get_mut(&owner) {
            m.remove(&id.1);
            if m.is_empty() {
                self.slices.remove(&owner);
            }
        }
        Some(owner)
    }

    /// Hands over the changes collected so far and starts a new record.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Whether changes are waiting.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Puts back the changes of a sync that failed, so the retry covers them and their
    /// latency is measured to when they are finally programmed.
    pub fn restore(&mut self, changes: Changes) {
        self.changes.full |= changes.full;
        self.changes.dirty.extend(changes.dirty);
        for (key, when) in changes.triggers {
            self.changes
                .triggers
                .entry(key)
                .and_modify(|t| *t = (*t).min(when))
                .or_insert(when);
        }
    }

    /// The Service ports of `key` as node `node` sees them (none when the Service is
    /// gone or not proxied).
    pub fn service_ports(&self, key: &ServiceKey, node: &str) -> Vec<ServicePort> {
        let Some(service) = self.services.get(key) else {
            return Vec::new();
        };
        let slices = self.slices.get(key);
        model::service_ports(
            service,
            slices.into_iter().flat_map(|m| m.values().map(|s| &**s)),
            node,
        )
    }

    /// Every cached Service.
    pub fn service_keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{service, slice};
    use std::time::Duration;

    fn synced() -> Inputs {
        let mut inputs = Inputs::new();
        inputs.apply_service(Event::Init);
        inputs.apply_service(Event::InitDone);
        assert!(!inputs.is_synced(), "slices not listed yet");
        inputs.apply_slice(Event::Init, SystemTime::now());
        inputs.apply_slice(Event::InitDone, SystemTime::now());
        assert!(inputs.is_synced());
        assert!(inputs.take_changes().full, "a list asks for a full sync");
        inputs
    }

    #[test]
    fn slices_are_filed_under_their_service_and_mark_it_dirty() {
        let mut inputs = synced();
        let now = SystemTime::now();
        inputs.apply_service(Event::Apply(service("ns", "web", "10.96.0.10", "", 80)));
        inputs.apply_slice(
            Event::Apply(slice(
                "ns",
                "web",
                "web-1",
                "",
                8080,
                &[("10.244.1.2", "n1", true, true, false)],
            )),
            now,
        );
        let changes = inputs.take_changes();
        let key = ServiceKey::new("ns", "web");
        assert!(!changes.full);
        assert_eq!(changes.dirty, BTreeSet::from([key.clone()]));
        assert_eq!(changes.triggers[&key], now);
        let ports = inputs.service_ports(&key, "n1");
        assert_eq!(ports[0].endpoints.len(), 1);
        assert!(!inputs.has_changes());

        inputs.apply_slice(
            Event::Delete(slice("ns", "web", "web-1", "", 8080, &[])),
            now,
        );
        assert!(inputs.service_ports(&key, "n1")[0].endpoints.is_empty());
        assert!(inputs.take_changes().dirty.contains(&key));
    }

    #[test]
    fn a_relabelled_slice_moves_and_dirties_both_services() {
        let mut inputs = synced();
        let now = SystemTime::now();
        let eps = [("10.244.1.2", "n1", true, true, false)];
        inputs.apply_slice(Event::Apply(slice("ns", "a", "s-1", "", 80, &eps)), now);
        inputs.take_changes();
        inputs.apply_slice(Event::Apply(slice("ns", "b", "s-1", "", 80, &eps)), now);
        let changes = inputs.take_changes();
        assert_eq!(
            changes.dirty,
            BTreeSet::from([ServiceKey::new("ns", "a"), ServiceKey::new("ns", "b")])
        );
    }

    #[test]
    fn trigger_time_annotation_is_used_when_present() {
        let at = |t: &str| SystemTime::from(t.parse::<jiff::Timestamp>().unwrap());
        let now = at("2030-01-01T00:00:00Z");
        let mut s = slice("ns", "web", "web-1", "", 80, &[]);
        assert_eq!(trigger_time(&s, now), now, "no annotation: observed time");
        let annotate = |s: &mut EndpointSlice, v: &str| {
            s.metadata.annotations =
                Some([(LAST_CHANGE_TRIGGER_TIME.to_string(), v.to_string())].into());
        };
        annotate(&mut s, "2029-12-31T23:59:58Z");
        assert_eq!(trigger_time(&s, now), at("2029-12-31T23:59:58Z"));
        annotate(&mut s, "2031-01-01T00:00:00Z");
        assert_eq!(trigger_time(&s, now), now, "a future time is not believed");
        annotate(&mut s, "garbage");
        assert_eq!(trigger_time(&s, now), now);
    }

    #[test]
    fn an_unchanged_resource_version_is_not_a_change() {
        let mut inputs = synced();
        let mut svc = service("ns", "web", "10.96.0.10", "", 80);
        svc.metadata.resource_version = Some("7".into());
        inputs.apply_service(Event::Apply(svc.clone()));
        inputs.take_changes();
        inputs.apply_service(Event::Apply(svc));
        assert!(!inputs.has_changes());
    }

    #[test]
    fn restored_changes_keep_the_earliest_trigger() {
        let mut inputs = synced();
        let key = ServiceKey::new("ns", "web");
        let early = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let late = SystemTime::UNIX_EPOCH + Duration::from_secs(20);
        inputs.apply_slice(Event::Apply(slice("ns", "web", "w", "", 80, &[])), early);
        let failed = inputs.take_changes();
        inputs.apply_slice(Event::Apply(slice("ns", "web", "w2", "", 80, &[])), late);
        inputs.restore(failed);
        assert_eq!(inputs.take_changes().triggers[&key], early);
    }
}
