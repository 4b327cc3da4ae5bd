//! The ServiceAccount controller (upstream's `serviceaccount-controller`): every active
//! namespace has a `default` ServiceAccount, created with the namespace and again whenever
//! it is deleted.
//!
//! Keys are namespaces: a namespace added or changed, or a ServiceAccount deleted, queues
//! its namespace; the reconcile creates what is missing from the cache. A namespace that is
//! not `Active` (terminating) is left alone.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkube_client::{Action, Api, Client, ObjectRef, WorkQueue};
use rkube_types::Reason;
use tracing::info;

use crate::context::Context;
use crate::controllers::{self, Running};
use crate::error::Result;
use crate::informer::{Change, Informer};

/// Upstream's name of the controller.
pub const NAME: &str = "serviceaccount-controller";
/// The ServiceAccounts every namespace gets (upstream's `--service-accounts-to-ensure`
/// default).
pub const ENSURED: &[&str] = &["default"];

/// Subscribes the controller to the informers and returns its workers.
pub fn start(ctx: &Context) -> Running {
    let namespaces = ctx.informer::<Namespace>();
    let accounts = ctx.informer::<ServiceAccount>();
    let queue: WorkQueue<ObjectRef> = WorkQueue::new();
    namespaces.subscribe({
        let queue = queue.clone();
        move |change| {
            if !matches!(change, Change::Deleted(_)) {
                queue.add(ObjectRef::from_obj(&**change.object()));
            }
        }
    });
    accounts.subscribe({
        let queue = queue.clone();
        move |change| {
            if let Change::Deleted(sa) = change
                && let Some(ns) = sa.metadata.namespace.as_deref()
            {
                queue.add(ObjectRef::new(ns));
            }
        }
    });
    let client = ctx.client.clone();
    controllers::run_queue(ctx, NAME, queue, move |key| {
        let (client, namespaces, accounts) = (client.clone(), namespaces.clone(), accounts.clone());
        async move { reconcile(&client, &namespaces, &accounts, &key.name).await }
    })
}

/// Whether `ns` takes new ServiceAccounts: it exists and is `Active` (a namespace without a
/// phase yet counts as active).
fn is_active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|p| p == "Active")
}

/// The ServiceAccounts of [`ENSURED`] missing from `namespace`, by what `exists` says.
fn missing(namespace: &str, exists: impl Fn(&str) -> bool) -> Vec<ServiceAccount> {
    ENSURED
        .iter()
        .filter(|name| !exists(name))
        .map(|name| ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            ..Default::default()
        })
        .collect()
}

async fn reconcile(
    client: &Client,
    namespaces: &Informer<Namespace>,
    accounts: &Informer<ServiceAccount>,
    name: &str,
) -> Result<Action> {
    let Some(ns) = namespaces.get("", name) else {
        return Ok(Action::Done);
    };
    if !is_active(&ns) {
        return Ok(Action::Done);
    }
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    for sa in missing(name, |sa| accounts.get(name, sa).is_some()) {
        match api.create(&sa).await {
            Ok(_) => {
                info!(namespace = name, service_account = ?sa.metadata.name, "created service account")
            }
            Err(e) if e.is_already_exists() => {}
            // The namespace started terminating since the cache saw it.
            Err(e) if e.reason() == Some(Reason::Forbidden) || e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn only_active_namespaces_get_service_accounts() {
        let mut ns = Namespace::default();
        assert!(is_active(&ns), "no phase yet");
        ns.status = Some(NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        });
        assert!(!is_active(&ns));
        ns.status = None;
        ns.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(!is_active(&ns));
    }

    #[test]
    fn the_default_service_account_is_created_when_missing() {
        let created = missing("team-a", |_| false);
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].metadata.name.as_deref(), Some("default"));
        assert_eq!(created[0].metadata.namespace.as_deref(), Some("team-a"));
        assert!(missing("team-a", |name| name == "default").is_empty());
    }
}
