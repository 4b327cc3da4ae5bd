//! The `--config` file: a `KubeSchedulerConfiguration` (`kubescheduler.config.k8s.io/v1`) in
//! YAML or JSON, decoded strictly (unknown fields are errors, as upstream), defaulted and
//! validated as upstream's `pkg/scheduler/apis/config/v1` and `validation`, and turned into
//! [`Profile`]s the way upstream's framework builds them: the default plugins are
//! `multiPoint` plugins, the user's `multiPoint` list is merged into them, and each extension
//! point gets the `multiPoint` plugins that implement it unless that point disables them,
//! with the point's own `enabled` list taking precedence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::framework::Plugin;
use crate::plugins::{
    self, Factory, default_binder, default_preemption, inter_pod_affinity, node_affinity,
    node_name, node_ports, node_resources, node_unschedulable, pod_topology_spread, queue_sort,
    taint_toleration,
};
use crate::profile::Profile;

#[cfg(test)]
mod tests;

/// The only `apiVersion` accepted.
pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
/// The only `kind` accepted.
pub const KIND: &str = "KubeSchedulerConfiguration";
/// The profile name pods get when they name no scheduler.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Upstream's default plugins (v1 `getDefaultPlugins`), all `multiPoint`, in upstream order,
/// with their score weights; the ones rkube does not implement are left out.
const DEFAULT_PLUGINS: &[(&str, Option<i32>)] = &[
    (queue_sort::NAME, None),
    (node_unschedulable::NAME, None),
    (node_name::NAME, None),
    (taint_toleration::NAME, Some(3)),
    (node_affinity::NAME, Some(2)),
    (node_ports::NAME, None),
    (node_resources::NAME, Some(1)),
    (pod_topology_spread::NAME, Some(2)),
    (inter_pod_affinity::NAME, Some(2)),
    (default_preemption::NAME, None),
    (node_resources::BALANCED_NAME, Some(1)),
    (default_binder::NAME, None),
];

/// Upstream in-tree plugins rkube does not implement: fine in `disabled` lists (so configs
/// written for upstream keep working), an error when enabled.
const NOT_IMPLEMENTED: &[&str] = &[
    "SchedulingGates",
    "VolumeRestrictions",
    "VolumeBinding",
    "VolumeZone",
    "NodeVolumeLimits",
    "ImageLocality",
    "DynamicResources",
];

/// Plugins removed before `v1` (upstream's `invalidPluginsByVersion`).
const REMOVED_IN_V1: &[&str] = &[
    "AzureDiskLimits",
    "CinderLimits",
    "EBSLimits",
    "GCEPDLimits",
];

/// Why a configuration could not be loaded or turned into profiles. Every message names the
/// field at fault, e.g. `profiles[0].plugins.score.enabled[1]: unknown plugin "Foo"`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a well-formed configuration: bad YAML or JSON, a wrong type, or an
    /// unknown field (decoding is strict, as upstream's).
    #[error("decoding configuration: {0}")]
    Decode(String),
    /// A field has a value upstream's validation rejects.
    #[error("{field}: {message}")]
    Invalid {
        /// Where, e.g. `profiles[1].schedulerName`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An enabled plugin is not in the registry.
    #[error("{field}: unknown plugin {name:?}")]
    UnknownPlugin {
        /// Where the plugin is enabled.
        field: String,
        /// The plugin.
        name: String,
    },
    /// An enabled plugin exists upstream but not in rkube.
    #[error("{field}: rkube does not implement plugin {name:?}")]
    NotImplemented {
        /// Where the plugin is enabled.
        field: String,
        /// The plugin.
        name: String,
    },
    /// A plugin's factory rejected its `pluginConfig` args.
    #[error("{field}: invalid args for plugin {name:?}: {message}")]
    PluginArgs {
        /// The `pluginConfig` entry (or where the plugin is enabled, when it has no args).
        field: String,
        /// The plugin.
        name: String,
        /// The factory's message.
        message: String,
    },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A loaded, defaulted and validated `KubeSchedulerConfiguration`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// The profiles, at least one, with unique non-empty names.
    pub profiles: Vec<ProfileConfig>,
    /// `percentageOfNodesToScore` for profiles that do not set their own (unset or 0:
    /// adaptive).
    pub percentage_of_nodes_to_score: Option<i32>,
    /// `podInitialBackoffSeconds` (default 1s).
    pub pod_initial_backoff: Duration,
    /// `podMaxBackoffSeconds` (default 10s).
    pub pod_max_backoff: Duration,
    /// `parallelism`: accepted and validated, not used (filters run on one thread).
    pub parallelism: Option<i32>,
    /// `leaderElection`, when the file has that section (missing sub-fields take upstream's
    /// scheduler defaults).
    pub leader_election: Option<LeaderElectionConfiguration>,
    /// `clientConnection.kubeconfig`, when set.
    pub kubeconfig: Option<PathBuf>,
}

/// `leaderElection` (component-base `LeaderElectionConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionConfiguration {
    /// `leaderElect` (default true).
    pub leader_elect: bool,
    /// `leaseDuration` (default 15s).
    pub lease_duration: Duration,
    /// `renewDeadline` (default 10s).
    pub renew_deadline: Duration,
    /// `retryPeriod` (default 2s).
    pub retry_period: Duration,
    /// `resourceLock`; only `leases` is accepted when electing, as upstream.
    pub resource_lock: String,
    /// `resourceName` (default `kube-scheduler`).
    pub resource_name: String,
    /// `resourceNamespace` (default `kube-system`).
    pub resource_namespace: String,
}

impl Default for LeaderElectionConfiguration {
    fn default() -> Self {
        LeaderElectionConfiguration {
            leader_elect: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            resource_lock: "leases".to_string(),
            resource_name: "kube-scheduler".to_string(),
            resource_namespace: "kube-system".to_string(),
        }
    }
}

/// One `profiles[]` entry, as written (the default plugins are merged in when it is built).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileConfig {
    /// `schedulerName`.
    pub scheduler_name: String,
    /// `percentageOfNodesToScore`, overriding the global one.
    pub percentage_of_nodes_to_score: Option<i32>,
    /// `plugins`.
    pub plugins: Plugins,
    /// `pluginConfig`, with `apiVersion` and `kind` removed from the args.
    pub plugin_config: Vec<PluginConfig>,
}

impl ProfileConfig {
    /// A profile with the default plugins.
    pub fn new(scheduler_name: &str) -> ProfileConfig {
        ProfileConfig {
            scheduler_name: scheduler_name.to_string(),
            percentage_of_nodes_to_score: None,
            plugins: Plugins::default(),
            plugin_config: Vec::new(),
        }
    }
}

/// `plugins`: the enabled and disabled plugins per extension point.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugins {
    /// `preEnqueue` (no rkube plugin implements it).
    #[serde(default, deserialize_with = "nullable")]
    pub pre_enqueue: PluginSet,
    /// `queueSort`.
    #[serde(default, deserialize_with = "nullable")]
    pub queue_sort: PluginSet,
    /// `preFilter`.
    #[serde(default, deserialize_with = "nullable")]
    pub pre_filter: PluginSet,
    /// `filter`.
    #[serde(default, deserialize_with = "nullable")]
    pub filter: PluginSet,
    /// `postFilter`.
    #[serde(default, deserialize_with = "nullable")]
    pub post_filter: PluginSet,
    /// `preScore`.
    #[serde(default, deserialize_with = "nullable")]
    pub pre_score: PluginSet,
    /// `score`.
    #[serde(default, deserialize_with = "nullable")]
    pub score: PluginSet,
    /// `reserve`.
    #[serde(default, deserialize_with = "nullable")]
    pub reserve: PluginSet,
    /// `permit`.
    #[serde(default, deserialize_with = "nullable")]
    pub permit: PluginSet,
    /// `preBind`.
    #[serde(default, deserialize_with = "nullable")]
    pub pre_bind: PluginSet,
    /// `bind`.
    #[serde(default, deserialize_with = "nullable")]
    pub bind: PluginSet,
    /// `postBind`.
    #[serde(default, deserialize_with = "nullable")]
    pub post_bind: PluginSet,
    /// `multiPoint`: plugins enabled at every extension point they implement.
    #[serde(default, deserialize_with = "nullable")]
    pub multi_point: PluginSet,
}

/// The `enabled` and `disabled` lists of one extension point.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSet {
    /// Enabled plugins, after the defaults, in order.
    #[serde(default, deserialize_with = "nullable")]
    pub enabled: Vec<PluginRef>,
    /// Disabled default plugins; `*` disables them all.
    #[serde(default, deserialize_with = "nullable")]
    pub disabled: Vec<PluginRef>,
}

/// A plugin in an `enabled` or `disabled` list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    /// The plugin's name.
    pub name: String,
    /// Its score weight (unset or 0: 1).
    #[serde(default)]
    pub weight: Option<i32>,
}

/// A `pluginConfig[]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin the args are for.
    pub name: String,
    /// The args, passed to the plugin's factory.
    #[serde(default)]
    pub args: Option<Value>,
}

impl Default for SchedulerConfig {
    /// One profile, `default-scheduler`, with the default plugins.
    fn default() -> Self {
        SchedulerConfig {
            profiles: vec![ProfileConfig::new(DEFAULT_SCHEDULER_NAME)],
            percentage_of_nodes_to_score: None,
            pod_initial_backoff: Duration::from_secs(1),
            pod_max_backoff: Duration::from_secs(10),
            parallelism: None,
            leader_election: None,
            kubeconfig: None,
        }
    }
}

impl SchedulerConfig {
    /// Reads, decodes and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<SchedulerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SchedulerConfig::parse(&text)
    }

    /// Decodes (YAML, or JSON when the text starts with `{`) and validates a configuration.
    /// Plugin names are checked by [`SchedulerConfig::build_profiles`].
    pub fn parse(text: &str) -> Result<SchedulerConfig, ConfigError> {
        // The type is checked first so a file of another kind is not reported as a pile of
        // unknown fields.
        let meta: TypeMeta = decode(text)?;
        check_type(meta.api_version.as_deref(), "apiVersion", API_VERSION)?;
        check_type(meta.kind.as_deref(), "kind", KIND)?;
        let raw: RawConfiguration = decode(text)?;
        raw.validate()
    }

    /// Builds the profiles with the in-tree plugins.
    pub fn build_profiles(&self) -> Result<Vec<Profile>, ConfigError> {
        self.build_profiles_with(&plugins::registry())
    }

    /// Builds the profiles with the plugins of `registry`.
    pub fn build_profiles_with(
        &self,
        registry: &BTreeMap<&'static str, Factory>,
    ) -> Result<Vec<Profile>, ConfigError> {
        let mut profiles = Vec::with_capacity(self.profiles.len());
        let mut names = HashMap::new();
        for (i, prof) in self.profiles.iter().enumerate() {
            let at = format!("profiles[{i}]");
            if prof.scheduler_name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.schedulerName"),
                    "required",
                ));
            }
            if let Some(first) = names.insert(prof.scheduler_name.as_str(), i) {
                return Err(ConfigError::invalid(
                    format!("{at}.schedulerName"),
                    format!(
                        "duplicate value {:?} (also in profiles[{first}])",
                        prof.scheduler_name
                    ),
                ));
            }
            let mut profile = build_profile(&at, prof, registry)?;
            profile.percentage_of_nodes_to_score = prof
                .percentage_of_nodes_to_score
                .or(self.percentage_of_nodes_to_score);
            profiles.push(profile);
        }
        self.check_common_queue_sort(&profiles)?;
        Ok(profiles)
    }

    /// Upstream requires one queue (so one sort order, with the same args) for all profiles.
    fn check_common_queue_sort(&self, profiles: &[Profile]) -> Result<(), ConfigError> {
        let sort_of = |i: usize| {
            let name = profiles[i].queue_sort.as_ref().map_or("", |p| p.name());
            let args = self.profiles[i]
                .plugin_config
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.args.as_ref());
            (name, args)
        };
        let (first, first_args) = sort_of(0);
        for i in 1..profiles.len() {
            let (name, args) = sort_of(i);
            if name != first {
                return Err(ConfigError::invalid(
                    format!("profiles[{i}].plugins.queueSort"),
                    format!(
                        "must be the same for all profiles: {name:?} differs from {first:?} in profiles[0]"
                    ),
                ));
            }
            if args != first_args {
                return Err(ConfigError::invalid(
                    format!("profiles[{i}].pluginConfig"),
                    format!("args of queue sort plugin {name:?} must be the same for all profiles"),
                ));
            }
        }
        Ok(())
    }
}

/// The extension points of a profile, in the order of upstream's `Plugins`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    PreEnqueue,
    QueueSort,
    PreFilter,
    Filter,
    PostFilter,
    PreScore,
    Score,
    Reserve,
    Permit,
    PreBind,
    Bind,
    PostBind,
}

impl Point {
    const ALL: [Point; 12] = [
        Point::PreEnqueue,
        Point::QueueSort,
        Point::PreFilter,
        Point::Filter,
        Point::PostFilter,
        Point::PreScore,
        Point::Score,
        Point::Reserve,
        Point::Permit,
        Point::PreBind,
        Point::Bind,
        Point::PostBind,
    ];

    /// The field under `plugins`.
    fn field(self) -> &'static str {
        match self {
            Point::PreEnqueue => "preEnqueue",
            Point::QueueSort => "queueSort",
            Point::PreFilter => "preFilter",
            Point::Filter => "filter",
            Point::PostFilter => "postFilter",
            Point::PreScore => "preScore",
            Point::Score => "score",
            Point::Reserve => "reserve",
            Point::Permit => "permit",
            Point::PreBind => "preBind",
            Point::Bind => "bind",
            Point::PostBind => "postBind",
        }
    }

    /// The name in messages.
    fn title(self) -> &'static str {
        match self {
            Point::PreEnqueue => "PreEnqueue",
            Point::QueueSort => "QueueSort",
            Point::PreFilter => "PreFilter",
            Point::Filter => "Filter",
            Point::PostFilter => "PostFilter",
            Point::PreScore => "PreScore",
            Point::Score => "Score",
            Point::Reserve => "Reserve",
            Point::Permit => "Permit",
            Point::PreBind => "PreBind",
            Point::Bind => "Bind",
            Point::PostBind => "PostBind",
        }
    }

    fn set(self, plugins: &Plugins) -> &PluginSet {
        match self {
            Point::PreEnqueue => &plugins.pre_enqueue,
            Point::QueueSort => &plugins.queue_sort,
            Point::PreFilter => &plugins.pre_filter,
            Point::Filter => &plugins.filter,
            Point::PostFilter => &plugins.post_filter,
            Point::PreScore => &plugins.pre_score,
            Point::Score => &plugins.score,
            Point::Reserve => &plugins.reserve,
            Point::Permit => &plugins.permit,
            Point::PreBind => &plugins.pre_bind,
            Point::Bind => &plugins.bind,
            Point::PostBind => &plugins.post_bind,
        }
    }

    fn implemented_by(self, p: &dyn Plugin) -> bool {
        match self {
            // rkube has no PreEnqueue extension point.
            Point::PreEnqueue => false,
            Point::QueueSort => p.as_queue_sort().is_some(),
            Point::PreFilter => p.as_pre_filter().is_some(),
            Point::Filter => p.as_filter().is_some(),
            Point::PostFilter => p.as_post_filter().is_some(),
            Point::PreScore => p.as_pre_score().is_some(),
            Point::Score => p.as_score().is_some(),
            Point::Reserve => p.as_reserve().is_some(),
            Point::Permit => p.as_permit().is_some(),
            Point::PreBind => p.as_pre_bind().is_some(),
            Point::Bind => p.as_bind().is_some(),
            Point::PostBind => p.as_post_bind().is_some(),
        }
    }
}

/// A plugin of the merged `multiPoint` list, with where the user enabled it (`None` for a
/// default plugin).
struct MultiPointEntry<'a> {
    name: &'a str,
    weight: Option<i32>,
    field: Option<String>,
}

/// Upstream's `mergePluginSet` for `multiPoint`: the defaults minus the disabled ones (all of
/// them for `*`), a re-enabled default replaced in place (taking the user's weight), then the
/// other enabled plugins in order.
fn merge_multi_point<'a>(set: &'a PluginSet, at: &str) -> Vec<MultiPointEntry<'a>> {
    let disabled: HashSet<&str> = set.disabled.iter().map(|p| p.name.as_str()).collect();
    // The last of duplicate entries replaces the default, as upstream; the others are
    // appended and then rejected as double registrations.
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (k, p) in set.enabled.iter().enumerate() {
        by_name.insert(p.name.as_str(), k);
    }
    let field = |k: usize| Some(format!("{at}.plugins.multiPoint.enabled[{k}]"));
    let mut out = Vec::new();
    let mut replaced = HashSet::new();
    if !disabled.contains("*") {
        for &(name, weight) in DEFAULT_PLUGINS {
            if disabled.contains(name) {
                continue;
            }
            match by_name.get(name) {
                Some(&k) => {
                    replaced.insert(k);
                    out.push(MultiPointEntry {
                        name,
                        weight: set.enabled[k].weight,
                        field: field(k),
                    });
                }
                None => out.push(MultiPointEntry {
                    name,
                    weight,
                    field: None,
                }),
            }
        }
    }
    for (k, p) in set.enabled.iter().enumerate() {
        if !replaced.contains(&k) {
            out.push(MultiPointEntry {
                name: &p.name,
                weight: p.weight,
                field: field(k),
            });
        }
    }
    out
}

/// Builds one profile (upstream's `NewFramework` for one `KubeSchedulerProfile`).
fn build_profile(
    at: &str,
    prof: &ProfileConfig,
    registry: &BTreeMap<&'static str, Factory>,
) -> Result<Profile, ConfigError> {
    let multi = merge_multi_point(&prof.plugins.multi_point, at);

    // One instance per plugin name, built with its args.
    let mut instances: HashMap<String, Arc<dyn Plugin>> = HashMap::new();
    let mut instantiate = |name: &str, field: &dyn Fn() -> String| -> Result<(), ConfigError> {
        if !instances.contains_key(name) {
            let plugin = new_plugin(at, prof, registry, name, field)?;
            instances.insert(name.to_string(), plugin);
        }
        Ok(())
    };
    for e in &multi {
        instantiate(e.name, &|| {
            e.field
                .clone()
                .unwrap_or_else(|| format!("{at}.plugins.multiPoint (default plugins)"))
        })?;
    }
    for point in Point::ALL {
        for (k, p) in point.set(&prof.plugins).enabled.iter().enumerate() {
            instantiate(&p.name, &|| enabled_field(at, point, k))?;
        }
    }
    // Upstream validates the args of every in-tree plugin, enabled or not.
    for (j, c) in prof.plugin_config.iter().enumerate() {
        if let Some(factory) = registry.get(c.name.as_str())
            && !instances.contains_key(c.name.as_str())
        {
            factory(c.args.as_ref()).map_err(|message| ConfigError::PluginArgs {
                field: format!("{at}.pluginConfig[{j}].args"),
                name: c.name.clone(),
                message,
            })?;
        }
    }

    let mut profile = Profile::empty(&prof.scheduler_name);
    for point in Point::ALL {
        let names = point_plugins(at, point, &prof.plugins, &multi, &instances)?;
        let list: Vec<Arc<dyn Plugin>> = names
            .iter()
            .filter_map(|n| instances.get(*n).cloned())
            .collect();
        match point {
            // Nothing implements it (point_plugins rejects enabled ones).
            Point::PreEnqueue => {}
            Point::QueueSort => {
                if list.len() != 1 {
                    return Err(ConfigError::invalid(
                        format!("{at}.plugins.queueSort"),
                        format!(
                            "exactly one queue sort plugin is required, got {}{}",
                            list.len(),
                            listed(&names)
                        ),
                    ));
                }
                profile.queue_sort = list.into_iter().next();
            }
            Point::PreFilter => profile.pre_filter = list,
            Point::Filter => profile.filter = list,
            Point::PostFilter => profile.post_filter = list,
            Point::PreScore => profile.pre_score = list,
            Point::Score => {
                profile.score = list
                    .into_iter()
                    .map(|p| {
                        let w = score_weight(p.name(), &prof.plugins.score, &multi);
                        (p, w)
                    })
                    .collect();
            }
            Point::Reserve => profile.reserve = list,
            Point::Permit => profile.permit = list,
            Point::PreBind => profile.pre_bind = list,
            Point::Bind => {
                if list.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{at}.plugins.bind"),
                        "at least one bind plugin is required",
                    ));
                }
                profile.bind = list;
            }
            Point::PostBind => profile.post_bind = list,
        }
    }
    Ok(profile)
}

fn enabled_field(at: &str, point: Point, k: usize) -> String {
    format!("{at}.plugins.{}.enabled[{k}]", point.field())
}

fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    }
}

/// Builds the plugin `name` with its args, or says why the name or the args are wrong.
fn new_plugin(
    at: &str,
    prof: &ProfileConfig,
    registry: &BTreeMap<&'static str, Factory>,
    name: &str,
    field: &dyn Fn() -> String,
) -> Result<Arc<dyn Plugin>, ConfigError> {
    let Some(factory) = registry.get(name) else {
        return Err(if NOT_IMPLEMENTED.contains(&name) {
            ConfigError::NotImplemented {
                field: field(),
                name: name.to_string(),
            }
        } else if REMOVED_IN_V1.contains(&name) {
            ConfigError::invalid(
                field(),
                format!("plugin {name:?} was removed in {API_VERSION}"),
            )
        } else {
            ConfigError::UnknownPlugin {
                field: field(),
                name: name.to_string(),
            }
        });
    };
    let config = prof
        .plugin_config
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == name);
    let args = config.and_then(|(_, c)| c.args.as_ref());
    factory(args).map_err(|message| ConfigError::PluginArgs {
        field: match config {
            Some((j, _)) => format!("{at}.pluginConfig[{j}].args"),
            None => field(),
        },
        name: name.to_string(),
        message,
    })
}

/// The plugins of one extension point, in upstream's order (`expandMultiPointPlugins`):
/// plugins enabled both here and in `multiPoint` (in this point's order), then the other
/// `multiPoint` plugins, then the other plugins enabled here.
fn point_plugins<'a>(
    at: &str,
    point: Point,
    plugins: &'a Plugins,
    multi: &[MultiPointEntry<'a>],
    instances: &HashMap<String, Arc<dyn Plugin>>,
) -> Result<Vec<&'a str>, ConfigError> {
    let set = point.set(plugins);
    let implements = |name: &str| {
        instances
            .get(name)
            .is_some_and(|p| point.implemented_by(p.as_ref()))
    };
    let mut specific: Vec<&str> = Vec::with_capacity(set.enabled.len());
    for (k, p) in set.enabled.iter().enumerate() {
        if !implements(&p.name) {
            return Err(ConfigError::invalid(
                enabled_field(at, point, k),
                format!("plugin {:?} does not implement {}", p.name, point.title()),
            ));
        }
        if specific.contains(&p.name.as_str()) {
            return Err(ConfigError::invalid(
                enabled_field(at, point, k),
                format!(
                    "plugin {:?} is already enabled at {}",
                    p.name,
                    point.title()
                ),
            ));
        }
        specific.push(&p.name);
    }
    let disabled: HashSet<&str> = set.disabled.iter().map(|p| p.name.as_str()).collect();
    if disabled.contains("*") {
        return Ok(specific);
    }
    let mut overridden: HashSet<&str> = HashSet::new();
    let mut from_multi: Vec<&str> = Vec::new();
    for e in multi {
        if !implements(e.name) || disabled.contains(e.name) {
            continue;
        }
        // Enabled at this point too: the point's entry wins (upstream #99582).
        if specific.contains(&e.name) {
            overridden.insert(e.name);
            continue;
        }
        if from_multi.contains(&e.name) {
            return Err(ConfigError::invalid(
                e.field
                    .clone()
                    .unwrap_or_else(|| format!("{at}.plugins.multiPoint")),
                format!(
                    "plugin {:?} is already enabled at {}",
                    e.name,
                    point.title()
                ),
            ));
        }
        from_multi.push(e.name);
    }
    let mut out: Vec<&str> = specific
        .iter()
        .copied()
        .filter(|n| overridden.contains(n))
        .collect();
    out.extend(from_multi);
    out.extend(specific.iter().copied().filter(|n| !overridden.contains(n)));
    Ok(out)
}

/// A score plugin's weight: from `score.enabled` if it is there, else from `multiPoint`;
/// unset or 0 means 1, as upstream.
fn score_weight(name: &str, score: &PluginSet, multi: &[MultiPointEntry<'_>]) -> i64 {
    let weight = match score.enabled.iter().find(|p| p.name == name) {
        Some(p) => p.weight,
        None => multi.iter().find(|e| e.name == name).and_then(|e| e.weight),
    };
    match weight.unwrap_or(0) {
        0 => 1,
        w => i64::from(w),
    }
}

// ---- decoding ----

/// Decodes YAML, or JSON when the text is a JSON object (for line and column in errors).
fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, ConfigError> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| ConfigError::Decode(e.to_string()))
    } else {
        serde_norway::from_str(text).map_err(|e| ConfigError::Decode(e.to_string()))
    }
}

/// Treats an explicit `null` like an absent field, as Go's decoder does.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn check_type(got: Option<&str>, field: &str, want: &str) -> Result<(), ConfigError> {
    match got {
        Some(v) if v == want => Ok(()),
        Some(v) => Err(ConfigError::invalid(
            field,
            format!("must be {want:?}, got {v:?}"),
        )),
        None => Err(ConfigError::invalid(field, format!("required ({want:?})"))),
    }
}

/// `apiVersion` and `kind` only, read leniently before the strict decoding.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfiguration {
    #[serde(default)]
    #[allow(dead_code)] // checked by `TypeMeta`
    api_version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // checked by `TypeMeta`
    kind: Option<String>,
    #[serde(default)]
    parallelism: Option<i32>,
    #[serde(default)]
    leader_election: Option<RawLeaderElection>,
    #[serde(default)]
    client_connection: Option<RawClientConnection>,
    // Upstream's debugging options: accepted, no effect here.
    #[serde(default)]
    #[allow(dead_code)]
    enable_profiling: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    enable_contention_profiling: Option<bool>,
    #[serde(default)]
    percentage_of_nodes_to_score: Option<i32>,
    #[serde(default)]
    pod_initial_backoff_seconds: Option<i64>,
    #[serde(default)]
    pod_max_backoff_seconds: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    profiles: Vec<RawProfile>,
    #[serde(default, deserialize_with = "nullable")]
    extenders: Vec<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    delay_cache_until_active: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLeaderElection {
    #[serde(default)]
    leader_elect: Option<bool>,
    #[serde(default)]
    lease_duration: Option<String>,
    #[serde(default)]
    renew_deadline: Option<String>,
    #[serde(default)]
    retry_period: Option<String>,
    #[serde(default)]
    resource_lock: Option<String>,
    #[serde(default)]
    resource_name: Option<String>,
    #[serde(default)]
    resource_namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // accepted as upstream; rkube's client settings come from its flags
struct RawClientConnection {
    #[serde(default)]
    kubeconfig: Option<String>,
    #[serde(default)]
    accept_content_types: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    qps: Option<f64>,
    #[serde(default)]
    burst: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProfile {
    #[serde(default)]
    scheduler_name: Option<String>,
    #[serde(default)]
    percentage_of_nodes_to_score: Option<i32>,
    #[serde(default, deserialize_with = "nullable")]
    plugins: Plugins,
    #[serde(default, deserialize_with = "nullable")]
    plugin_config: Vec<PluginConfig>,
}

fn check_percentage(field: &str, value: Option<i32>) -> Result<(), ConfigError> {
    match value {
        Some(v) if !(0..=100).contains(&v) => Err(ConfigError::invalid(
            field,
            format!("{v} is not in the valid range 0-100"),
        )),
        _ => Ok(()),
    }
}

impl RawConfiguration {
    /// Upstream's defaulting and validation, minus what needs the plugin registry.
    fn validate(self) -> Result<SchedulerConfig, ConfigError> {
        if let Some(p) = self.parallelism
            && p <= 0
        {
            return Err(ConfigError::invalid(
                "parallelism",
                format!("{p} must be greater than 0"),
            ));
        }
        if !self.extenders.is_empty() {
            return Err(ConfigError::invalid(
                "extenders",
                "rkube does not support scheduler extenders",
            ));
        }
        check_percentage(
            "percentageOfNodesToScore",
            self.percentage_of_nodes_to_score,
        )?;
        let initial = self.pod_initial_backoff_seconds.unwrap_or(1);
        if initial <= 0 {
            return Err(ConfigError::invalid(
                "podInitialBackoffSeconds",
                format!("{initial} must be greater than 0"),
            ));
        }
        let max = self.pod_max_backoff_seconds.unwrap_or(10);
        if max < initial {
            return Err(ConfigError::invalid(
                "podMaxBackoffSeconds",
                format!(
                    "{max} must be greater than or equal to podInitialBackoffSeconds ({initial})"
                ),
            ));
        }
        let mut kubeconfig = None;
        if let Some(c) = &self.client_connection {
            if let Some(b) = c.burst
                && b < 0
            {
                return Err(ConfigError::invalid(
                    "clientConnection.burst",
                    format!("{b} must not be negative"),
                ));
            }
            kubeconfig = c
                .kubeconfig
                .as_deref()
                .filter(|k| !k.is_empty())
                .map(PathBuf::from);
        }
        let leader_election = self
            .leader_election
            .map(RawLeaderElection::validate)
            .transpose()?;

        let mut raw_profiles = self.profiles;
        if raw_profiles.is_empty() {
            raw_profiles.push(RawProfile {
                scheduler_name: None,
                percentage_of_nodes_to_score: None,
                plugins: Plugins::default(),
                plugin_config: Vec::new(),
            });
        }
        // As upstream, only a lone profile gets the default name.
        let lone = raw_profiles.len() == 1;
        let mut profiles = Vec::with_capacity(raw_profiles.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, p) in raw_profiles.into_iter().enumerate() {
            let at = format!("profiles[{i}]");
            let scheduler_name = match p.scheduler_name {
                Some(n) => n,
                None if lone => DEFAULT_SCHEDULER_NAME.to_string(),
                None => String::new(),
            };
            if scheduler_name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.schedulerName"),
                    "required",
                ));
            }
            if let Some(first) = names.insert(scheduler_name.clone(), i) {
                return Err(ConfigError::invalid(
                    format!("{at}.schedulerName"),
                    format!("duplicate value {scheduler_name:?} (also in profiles[{first}])"),
                ));
            }
            check_percentage(
                &format!("{at}.percentageOfNodesToScore"),
                p.percentage_of_nodes_to_score,
            )?;
            validate_plugins(&at, &p.plugins)?;
            let plugin_config = validate_plugin_config(&at, p.plugin_config)?;
            profiles.push(ProfileConfig {
                scheduler_name,
                percentage_of_nodes_to_score: p.percentage_of_nodes_to_score,
                plugins: p.plugins,
                plugin_config,
            });
        }
        Ok(SchedulerConfig {
            profiles,
            percentage_of_nodes_to_score: self.percentage_of_nodes_to_score,
            pod_initial_backoff: Duration::from_secs(initial.unsigned_abs()),
            pod_max_backoff: Duration::from_secs(max.unsigned_abs()),
            parallelism: self.parallelism,
            leader_election,
            kubeconfig,
        })
    }
}

/// Names must be set; weights must not be negative (upstream does not check, but a negative
/// weight would turn a preference into an aversion).
fn validate_plugins(at: &str, plugins: &Plugins) -> Result<(), ConfigError> {
    let sets = Point::ALL
        .iter()
        .map(|&p| (p.field(), p.set(plugins)))
        .chain([("multiPoint", &plugins.multi_point)]);
    for (field, set) in sets {
        for (list, entries) in [("enabled", &set.enabled), ("disabled", &set.disabled)] {
            for (k, p) in entries.iter().enumerate() {
                let here = format!("{at}.plugins.{field}.{list}[{k}]");
                if p.name.is_empty() {
                    return Err(ConfigError::invalid(format!("{here}.name"), "required"));
                }
                if let Some(w) = p.weight
                    && w < 0
                {
                    return Err(ConfigError::invalid(
                        format!("{here}.weight"),
                        format!("{w} must not be negative"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Rejects repeated entries and args that are not an object, and removes the args'
/// `apiVersion` and `kind` (which upstream allows when they match `<name>Args`).
fn validate_plugin_config(
    at: &str,
    configs: Vec<PluginConfig>,
) -> Result<Vec<PluginConfig>, ConfigError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(configs.len());
    for (j, mut c) in configs.into_iter().enumerate() {
        let here = format!("{at}.pluginConfig[{j}]");
        if c.name.is_empty() {
            return Err(ConfigError::invalid(format!("{here}.name"), "required"));
        }
        if !seen.insert(c.name.clone()) {
            return Err(ConfigError::invalid(
                here,
                format!("duplicate config for plugin {:?}", c.name),
            ));
        }
        match &mut c.args {
            None => {}
            Some(Value::Null) => c.args = None,
            Some(Value::Object(map)) => {
                let want_kind = format!("{}Args", c.name);
                if let Some(kind) = map.remove("kind")
                    && kind.as_str() != Some(want_kind.as_str())
                {
                    return Err(ConfigError::invalid(
                        format!("{here}.args.kind"),
                        format!(
                            "args for plugin {:?} must be of kind {want_kind:?}, got {kind}",
                            c.name
                        ),
                    ));
                }
                if let Some(v) = map.remove("apiVersion")
                    && v.as_str() != Some(API_VERSION)
                {
                    return Err(ConfigError::invalid(
                        format!("{here}.args.apiVersion"),
                        format!("must be {API_VERSION:?}, got {v}"),
                    ));
                }
            }
            Some(_) => {
                return Err(ConfigError::invalid(
                    format!("{here}.args"),
                    "must be an object",
                ));
            }
        }
        out.push(c);
    }
    Ok(out)
}

impl RawLeaderElection {
    /// Upstream's defaults and `ValidateLeaderElectionConfiguration`.
    fn validate(self) -> Result<LeaderElectionConfiguration, ConfigError> {
        let d = LeaderElectionConfiguration::default();
        let duration = |field: &str, v: Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(s) => parse_go_duration(&s).map_err(|e| {
                ConfigError::invalid(
                    format!("leaderElection.{field}"),
                    format!("invalid duration {s:?}: {e}"),
                )
            }),
        };
        let nonempty =
            |v: Option<String>, default: String| v.filter(|s| !s.is_empty()).unwrap_or(default);
        let c = LeaderElectionConfiguration {
            leader_elect: self.leader_elect.unwrap_or(d.leader_elect),
            lease_duration: duration("leaseDuration", self.lease_duration, d.lease_duration)?,
            renew_deadline: duration("renewDeadline", self.renew_deadline, d.renew_deadline)?,
            retry_period: duration("retryPeriod", self.retry_period, d.retry_period)?,
            resource_lock: nonempty(self.resource_lock, d.resource_lock),
            resource_name: nonempty(self.resource_name, d.resource_name),
            resource_namespace: nonempty(self.resource_namespace, d.resource_namespace),
        };
        if !c.leader_elect {
            return Ok(c);
        }
        for (field, v) in [
            ("leaseDuration", c.lease_duration),
            ("renewDeadline", c.renew_deadline),
            ("retryPeriod", c.retry_period),
        ] {
            if v.is_zero() {
                return Err(ConfigError::invalid(
                    format!("leaderElection.{field}"),
                    "must be greater than zero",
                ));
            }
        }
        if c.lease_duration <= c.renew_deadline {
            return Err(ConfigError::invalid(
                "leaderElection.leaseDuration",
                "must be greater than renewDeadline",
            ));
        }
        if c.resource_lock != "leases" {
            return Err(ConfigError::invalid(
                "leaderElection.resourceLock",
                format!("must be \"leases\", got {:?}", c.resource_lock),
            ));
        }
        Ok(c)
    }
}

/// Parses a Go duration (`time.ParseDuration`): `0`, or a sequence of decimal numbers with
/// units `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`, e.g. `1m30s`, `1.5h`. Negative durations
/// are rejected: no duration of this configuration may be negative.
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.starts_with('-') {
        return Err("must not be negative".to_string());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err("empty".to_string());
    }
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int_part, r) = rest.split_at(digits(rest));
        let (frac_part, r) = match r.strip_prefix('.') {
            Some(r) => r.split_at(digits(r)),
            None => ("", r),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err("expected a number".to_string());
        }
        let unit_len = r
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(r.len());
        let (unit, r) = r.split_at(unit_len);
        let per: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit".to_string()),
            other => return Err(format!("unknown unit {other:?}")),
        };
        let out_of_range = || "out of range".to_string();
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| out_of_range())?
        };
        let mut nanos = int.checked_mul(per).ok_or_else(out_of_range)?;
        // Digits beyond the 20th cannot matter at nanosecond precision for these units.
        let frac = &frac_part[..frac_part.len().min(20)];
        if !frac.is_empty() {
            let f: u128 = frac.parse().map_err(|_| out_of_range())?;
            nanos += f * per / 10u128.pow(frac.len() as u32);
        }
        total = total.checked_add(nanos).ok_or_else(out_of_range)?;
        rest = r;
    }
    // Go's time.Duration is an int64 of nanoseconds.
    let nanos = u64::try_from(total)
        .ok()
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| "out of range".to_string())?;
    Ok(Duration::from_nanos(nanos))
}
