//! Options of the calls [`Api`](crate::Api) makes, as in `metav1.ListOptions`,
//! `CreateOptions` and `DeleteOptions`, and the two kinds of patch.
//!
//! Each is a plain struct with public fields and `Default`, plus builder methods for the
//! fields people set most.

use rkube_rpc::v1;

/// How a list's `resourceVersion` is to be matched (`resourceVersionMatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionMatch {
    /// Any revision at least as new as the one given.
    NotOlderThan,
    /// Exactly the revision given.
    Exact,
}

impl VersionMatch {
    fn as_str(self) -> &'static str {
        match self {
            VersionMatch::NotOlderThan => "NotOlderThan",
            VersionMatch::Exact => "Exact",
        }
    }
}

/// Options of a list call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// Only objects whose labels match, e.g. `app=web,tier!=db`.
    pub label_selector: Option<String>,
    /// Only objects whose fields match, e.g. `spec.nodeName=node-1`.
    pub field_selector: Option<String>,
    /// At most this many objects per page; `None` means all at once.
    pub limit: Option<u32>,
    /// The `continue_token` of the previous page.
    pub continue_token: Option<String>,
    /// `None`: the most recent state, read consistently; `"0"`: any state the server has at
    /// hand; otherwise a revision, interpreted as `resource_version_match` says.
    pub resource_version: Option<String>,
    /// How `resource_version` is matched.
    pub resource_version_match: Option<VersionMatch>,
}

impl ListParams {
    /// Selects by labels.
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_string());
        self
    }

    /// Selects by fields.
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.to_string());
        self
    }

    /// Pages of at most `limit` objects.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Continues after the page that returned `token`.
    pub fn continue_token(mut self, token: &str) -> Self {
        self.continue_token = Some(token.to_string());
        self
    }

    /// Reads at `resource_version`, matched as `matching` says.
    pub fn at(mut self, resource_version: &str, matching: Option<VersionMatch>) -> Self {
        self.resource_version = Some(resource_version.to_string());
        self.resource_version_match = matching;
        self
    }

    pub(crate) fn to_options(&self) -> v1::ListOptions {
        v1::ListOptions {
            label_selector: self.label_selector.clone().unwrap_or_default(),
            field_selector: self.field_selector.clone().unwrap_or_default(),
            limit: self.limit.map(i64::from).unwrap_or(0),
            continue_token: self.continue_token.clone().unwrap_or_default(),
            resource_version: self.resource_version.clone().unwrap_or_default(),
            resource_version_match: self
                .resource_version_match
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
            allow_watch_bookmarks: false,
            timeout_seconds: 0,
        }
    }
}

/// Options of a watch call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchParams {
    /// Only objects whose labels match.
    pub label_selector: Option<String>,
    /// Only objects whose fields match.
    pub field_selector: Option<String>,
    /// Ask for BOOKMARK events, which move the resourceVersion on without a change; on by
    /// default, so a resumed watch starts from a recent revision.
    pub allow_bookmarks: bool,
    /// Ask the server to close the stream after this many seconds; `None`: its default.
    pub timeout_seconds: Option<u32>,
}

impl Default for WatchParams {
    fn default() -> Self {
        WatchParams {
            label_selector: None,
            field_selector: None,
            allow_bookmarks: true,
            timeout_seconds: None,
        }
    }
}

impl WatchParams {
    /// Selects by labels.
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_string());
        self
    }

    /// Selects by fields.
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.to_string());
        self
    }

    /// Asks the server to close the stream after `seconds`.
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }

    /// Turns BOOKMARK events off.
    pub fn disable_bookmarks(mut self) -> Self {
        self.allow_bookmarks = false;
        self
    }

    pub(crate) fn to_options(&self, resource_version: &str) -> v1::ListOptions {
        v1::ListOptions {
            label_selector: self.label_selector.clone().unwrap_or_default(),
            field_selector: self.field_selector.clone().unwrap_or_default(),
            limit: 0,
            continue_token: String::new(),
            resource_version: resource_version.to_string(),
            resource_version_match: String::new(),
            allow_watch_bookmarks: self.allow_bookmarks,
            timeout_seconds: self.timeout_seconds.map(i64::from).unwrap_or(0),
        }
    }
}

/// Options of a create, update or patch call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostParams {
    /// Validate and admit, but do not store.
    pub dry_run: bool,
    /// The name of the actor making the change, recorded in `managedFields`.
    pub field_manager: Option<String>,
}

impl PostParams {
    /// Records changes under `manager`.
    pub fn field_manager(mut self, manager: &str) -> Self {
        self.field_manager = Some(manager.to_string());
        self
    }

    /// Makes the call a dry run.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }
}

/// How dependents are handled when their owner is deleted (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropagationPolicy {
    /// Leave dependents alone; their owner references are removed.
    Orphan,
    /// Delete the owner now and its dependents in the background.
    Background,
    /// Delete dependents first, then the owner.
    Foreground,
}

impl PropagationPolicy {
    fn as_str(self) -> &'static str {
        match self {
            PropagationPolicy::Orphan => "Orphan",
            PropagationPolicy::Background => "Background",
            PropagationPolicy::Foreground => "Foreground",
        }
    }
}

/// Options of a delete call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteParams {
    /// Seconds the object gets to terminate; `None`: its own default; `Some(0)`: now.
    pub grace_period_seconds: Option<i64>,
    /// How dependents are handled; `None`: the resource's default.
    pub propagation_policy: Option<PropagationPolicy>,
    /// Delete only if the object still has this UID.
    pub preconditions_uid: Option<String>,
    /// Delete only if the object is still at this resourceVersion.
    pub preconditions_resource_version: Option<String>,
    /// Check, but do not delete.
    pub dry_run: bool,
}

impl DeleteParams {
    /// Deletes at once, without a grace period.
    pub fn immediate() -> Self {
        DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        }
    }

    /// Sets the grace period.
    pub fn grace_period(mut self, seconds: i64) -> Self {
        self.grace_period_seconds = Some(seconds);
        self
    }

    /// Sets the propagation policy.
    pub fn propagation(mut self, policy: PropagationPolicy) -> Self {
        self.propagation_policy = Some(policy);
        self
    }

    /// Deletes only the object with this UID (not a new one of the same name).
    pub fn uid(mut self, uid: &str) -> Self {
        self.preconditions_uid = Some(uid.to_string());
        self
    }

    /// Deletes only if nobody changed the object since `resource_version`.
    pub fn resource_version(mut self, resource_version: &str) -> Self {
        self.preconditions_resource_version = Some(resource_version.to_string());
        self
    }

    pub(crate) fn to_request(&self, resource: v1::ResourceRef, name: &str) -> v1::DeleteRequest {
        let preconditions = (self.preconditions_uid.is_some()
            || self.preconditions_resource_version.is_some())
        .then(|| v1::Preconditions {
            uid: self.preconditions_uid.clone(),
            resource_version: self.preconditions_resource_version.clone(),
        });
        v1::DeleteRequest {
            resource: Some(resource),
            name: name.to_string(),
            preconditions,
            grace_period_seconds: self.grace_period_seconds,
            propagation_policy: self
                .propagation_policy
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            dry_run: self.dry_run,
        }
    }
}

/// A patch, in one of the two formats the server accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// An RFC 6902 JSON patch: an array of operations such as
    /// `[{"op": "replace", "path": "/spec/replicas", "value": 3}]`.
    Json(serde_json::Value),
    /// An RFC 7386 merge patch: an object merged into the stored one, `null` deleting.
    Merge(serde_json::Value),
}

impl Patch {
    pub(crate) fn patch_type(&self) -> v1::PatchType {
        match self {
            Patch::Json(_) => v1::PatchType::Json,
            Patch::Merge(_) => v1::PatchType::Merge,
        }
    }

    pub(crate) fn body(&self) -> &serde_json::Value {
        match self {
            Patch::Json(body) | Patch::Merge(body) => body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_params_fill_list_options() {
        let opts = ListParams::default()
            .labels("app=web")
            .fields("metadata.name=x")
            .limit(10)
            .continue_token("abc")
            .at("42", Some(VersionMatch::NotOlderThan))
            .to_options();
        assert_eq!(opts.label_selector, "app=web");
        assert_eq!(opts.field_selector, "metadata.name=x");
        assert_eq!(opts.limit, 10);
        assert_eq!(opts.continue_token, "abc");
        assert_eq!(opts.resource_version, "42");
        assert_eq!(opts.resource_version_match, "NotOlderThan");
        assert!(!opts.allow_watch_bookmarks);

        let opts = ListParams::default().to_options();
        assert_eq!(opts.limit, 0);
        assert_eq!(opts.resource_version, "");
    }

    #[test]
    fn watch_params_default_to_bookmarks() {
        let opts = WatchParams::default().timeout(30).to_options("7");
        assert!(opts.allow_watch_bookmarks);
        assert_eq!(opts.timeout_seconds, 30);
        assert_eq!(opts.resource_version, "7");
        let opts = WatchParams::default().disable_bookmarks().to_options("");
        assert!(!opts.allow_watch_bookmarks);
        assert_eq!(opts.timeout_seconds, 0);
    }

    #[test]
    fn delete_params_send_preconditions_only_when_set() {
        let resource = v1::ResourceRef::new("", "v1", "pods", "default");
        let req = DeleteParams::default().to_request(resource.clone(), "web");
        assert_eq!(req.preconditions, None);
        assert_eq!(req.grace_period_seconds, None);
        assert_eq!(req.propagation_policy, "");

        let req = DeleteParams::immediate()
            .uid("u-1")
            .propagation(PropagationPolicy::Foreground)
            .to_request(resource, "web");
        assert_eq!(req.grace_period_seconds, Some(0));
        assert_eq!(req.propagation_policy, "Foreground");
        let pre = req.preconditions.expect("preconditions");
        assert_eq!(pre.uid.as_deref(), Some("u-1"));
        assert_eq!(pre.resource_version, None);
    }
}
