//! A pod's volumes on the node, as upstream's volume manager and in-tree plugins lay them out:
//! `emptyDir` (a directory, or a tmpfs for `medium: Memory`), `configMap`, `secret`,
//! `downwardAPI`, `projected` and `hostPath`. [`setup`] prepares them before the pod's
//! containers are created and on every later sync, [`container_mounts`] turns a container's
//! `volumeMounts` into CRI mounts, and [`teardown`] removes what [`setup`] made.
//!
//! Volumes live under `<pods_root>/<pod uid>/volumes/<plugin>/<volume name>`, the plugin
//! directory being upstream's (`kubernetes.io~configmap`, `kubernetes.io~empty-dir`, ...);
//! `hostPath` volumes are the host path itself.
//!
//! File-backed volumes (configMap, secret, downwardAPI, projected) are written with
//! upstream's atomic writer scheme, so running containers see updates without a remount:
//! the files go to a fresh `..<timestamp>` directory, a `..data` symlink is pointed at it with
//! an atomic rename, and each top-level name is a symlink `name -> ..data/name`. Content that
//! did not change is not rewritten. A volume that was set up once keeps its last content when
//! a refresh fails (a deleted ConfigMap, say), as upstream does for running pods; such
//! failures are reported in [`PodVolumes::refresh_errors`].
//!
//! Not covered: `serviceAccountToken` and `clusterTrustBundle` projections produce no file
//! (tokens come with the security work of a later issue); secret and projected volumes are
//! written to disk, not to a tmpfs as upstream does; `fsGroup` ownership; persistent volumes,
//! CSI, image and the other network volume types, which [`setup`] refuses; subPath mounts are
//! checked against symlink escapes by resolving the path, not by upstream's fd-based bind
//! mounts, so a container racing the check could still swap a directory for a symlink.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};
use rkube_client::Client;
use rkube_types::quantity::Quantity;

use crate::env::{self, ApiObjects, EnvError};
use crate::runtime::cri;

/// Upstream's plugin directory of `emptyDir` volumes.
pub const EMPTY_DIR_PLUGIN: &str = "kubernetes.io~empty-dir";
/// Upstream's plugin directory of `configMap` volumes.
pub const CONFIG_MAP_PLUGIN: &str = "kubernetes.io~configmap";
/// Upstream's plugin directory of `secret` volumes.
pub const SECRET_PLUGIN: &str = "kubernetes.io~secret";
/// Upstream's plugin directory of `downwardAPI` volumes.
pub const DOWNWARD_API_PLUGIN: &str = "kubernetes.io~downward-api";
/// Upstream's plugin directory of `projected` volumes.
pub const PROJECTED_PLUGIN: &str = "kubernetes.io~projected";

/// The symlink to the current timestamped directory of a file-backed volume.
const DATA_LINK: &str = "..data";
/// The symlink built next to [`DATA_LINK`] and renamed over it.
const DATA_LINK_TMP: &str = "..data_tmp";
/// The file mode of volume files when the pod sets none (upstream's default, 0644).
const DEFAULT_MODE: i32 = 0o644;
/// Longest path of a file in a volume, as upstream's atomic writer allows.
const MAX_PATH_LENGTH: usize = 4096;
/// Longest file name in a volume, as upstream's atomic writer allows.
const MAX_FILE_NAME_LENGTH: usize = 255;

/// Why a pod's volumes could not be set up, mounted or removed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The pod has no UID, or one that is not a single path component.
    #[error("pod has no usable uid {0:?}")]
    InvalidPodUid(String),
    /// A volume name that is not a single path component.
    #[error("invalid volume name {0:?}")]
    InvalidVolumeName(String),
    /// A volume type the kubelet does not implement.
    #[error("volume \"{volume}\": {kind} volumes are not supported")]
    Unsupported {
        /// The volume.
        volume: String,
        /// The volume type, as the pod spec names it.
        kind: &'static str,
    },
    /// A ConfigMap the volume needs does not exist and is not optional.
    #[error("configmap \"{name}\" not found")]
    ConfigMapNotFound {
        /// The volume.
        volume: String,
        /// The ConfigMap's name.
        name: String,
    },
    /// A Secret the volume needs does not exist and is not optional.
    #[error("secret \"{name}\" not found")]
    SecretNotFound {
        /// The volume.
        volume: String,
        /// The Secret's name.
        name: String,
    },
    /// An item names a key the ConfigMap does not have, and the source is not optional.
    #[error("configmap references non-existent config key: {key}")]
    ConfigMapKeyNotFound {
        /// The volume.
        volume: String,
        /// The missing key.
        key: String,
    },
    /// An item names a key the Secret does not have, and the source is not optional.
    #[error("references non-existent secret key: {key}")]
    SecretKeyNotFound {
        /// The volume.
        volume: String,
        /// The missing key.
        key: String,
    },
    /// Reading an object from the apiserver failed.
    #[error("couldn't get {kind} {name}: {source}")]
    Api {
        /// The volume.
        volume: String,
        /// `configmap`, `secret` or `node`.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The client's error.
        #[source]
        source: rkube_client::Error,
    },
    /// A downward API item could not be resolved.
    #[error("{source}")]
    DownwardApi {
        /// The volume.
        volume: String,
        /// Why the field could not be read.
        #[source]
        source: EnvError,
    },
    /// A file path in the volume is not a clean relative path.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The volume.
        volume: String,
        /// The path as the pod spec gives it.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `hostPath` does not have the type the pod asks for, or could not be created.
    #[error("{message}")]
    HostPath {
        /// The volume.
        volume: String,
        /// Upstream's message (`path "/x" does not exist`, ...).
        message: String,
    },
    /// A file system operation failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done (`create directory`, `write`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Mounting a memory-backed `emptyDir` failed.
    #[error("mounting tmpfs on {}: {message}", .path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// What `mount` said.
        message: String,
    },
    /// Unmounting failed.
    #[error("unmounting {}: {message}", .path.display())]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// What `umount` said.
        message: String,
    },
    /// Something is still mounted under a pod directory, so it is not removed.
    #[error("{} is still mounted; not removing the pod directory", .path.display())]
    StillMounted {
        /// The mount point.
        path: PathBuf,
    },
    /// A volume mount names a volume the pod does not have.
    #[error("cannot find volume \"{volume}\" to mount into container \"{container}\"")]
    UnknownVolume {
        /// The volume the mount names.
        volume: String,
        /// The container.
        container: String,
    },
    /// A `subPath` is absolute.
    #[error("error SubPath `{0}` must not be an absolute path")]
    AbsoluteSubPath(String),
    /// A `subPath` contains `..`.
    #[error("unable to provision SubPath `{0}`: must not contain '..'")]
    SubPathBacksteps(String),
    /// A `subPath` resolves (through symlinks) to a place outside its volume.
    #[error("subPath `{sub_path}` of volumeMount \"{mount}\" is outside its volume")]
    SubPathEscape {
        /// The volume mount.
        mount: String,
        /// The sub path.
        sub_path: String,
    },
    /// A `subPath` directory could not be created or resolved.
    #[error(
        "failed to create subPath directory for volumeMount \"{mount}\" of container \
         \"{container}\""
    )]
    SubPath {
        /// The volume mount.
        mount: String,
        /// The container.
        container: String,
        /// The error (not shown to users: it tells about the host file system).
        #[source]
        source: io::Error,
    },
    /// A `subPathExpr` refers to variables without a value.
    #[error("missing value for {0}")]
    SubPathExprMissing(String),
    /// A `mountPropagation` other than None, HostToContainer and Bidirectional.
    #[error("invalid MountPropagation mode: \"{0}\"")]
    InvalidPropagation(String),
    /// `recursiveReadOnly` asked for on a mount that is not read-only.
    #[error("volume \"{0}\" requested recursive read-only mode, but it is not read-only")]
    RecursiveReadOnlyNotReadOnly(String),
    /// `recursiveReadOnly` asked for on a mount that propagates mounts.
    #[error(
        "volume \"{volume}\" requested recursive read-only mode, but it is not compatible \
         with propagation \"{propagation}\""
    )]
    RecursiveReadOnlyPropagation {
        /// The volume mount.
        volume: String,
        /// Its propagation.
        propagation: String,
    },
    /// A `recursiveReadOnly` other than Disabled, IfPossible and Enabled.
    #[error("unknown recursive read-only mode \"{0}\"")]
    InvalidRecursiveReadOnly(String),
    /// The blocking file system task did not finish (it panicked or was cancelled).
    #[error("volume task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl VolumeError {
    /// The volume the error is about, when it is about one.
    pub fn volume(&self) -> Option<&str> {
        match self {
            VolumeError::Unsupported { volume, .. }
            | VolumeError::ConfigMapNotFound { volume, .. }
            | VolumeError::SecretNotFound { volume, .. }
            | VolumeError::ConfigMapKeyNotFound { volume, .. }
            | VolumeError::SecretKeyNotFound { volume, .. }
            | VolumeError::Api { volume, .. }
            | VolumeError::DownwardApi { volume, .. }
            | VolumeError::InvalidPath { volume, .. }
            | VolumeError::HostPath { volume, .. }
            | VolumeError::UnknownVolume { volume, .. } => Some(volume),
            VolumeError::InvalidVolumeName(volume) => Some(volume),
            _ => None,
        }
    }
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One volume of a pod as it is on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVolume {
    /// Where the volume is on the host: what containers bind-mount.
    pub host_path: PathBuf,
    /// Whether every mount of the volume is read-only (configMap, secret, downwardAPI and
    /// projected volumes are).
    pub read_only: bool,
}

/// A refresh of an already set-up volume that failed; the volume keeps its last content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshError {
    /// The volume.
    pub volume: String,
    /// Why the refresh failed, as users should see it.
    pub message: String,
}

/// A pod's volumes on the node, by volume name: what [`setup`] prepared and
/// [`container_mounts`] mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    volumes: BTreeMap<String, PodVolume>,
    refresh_errors: Vec<RefreshError>,
}

impl PodVolumes {
    /// No volumes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the volume called `name`.
    pub fn insert(&mut self, name: impl Into<String>, volume: PodVolume) {
        self.volumes.insert(name.into(), volume);
    }

    /// The volume called `name`.
    pub fn get(&self, name: &str) -> Option<&PodVolume> {
        self.volumes.get(name)
    }

    /// Every volume, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PodVolume)> {
        self.volumes.iter().map(|(name, v)| (name.as_str(), v))
    }

    /// How many volumes there are.
    pub fn len(&self) -> usize {
        self.volumes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.volumes.is_empty()
    }

    /// Volumes whose refresh failed in the last [`setup`]; they keep their last content.
    /// Upstream reports these as `FailedMount` events without stopping the pod.
    pub fn refresh_errors(&self) -> &[RefreshError] {
        &self.refresh_errors
    }
}

/// Prepares the volumes of `pod` under `pods_root`: creates emptyDirs (mounting a tmpfs for
/// `medium: Memory`), writes configMap, secret, downwardAPI and projected volumes, checks or
/// creates hostPaths. Idempotent, and meant to be called on every pod sync: file-backed
/// volumes are refreshed from the current ConfigMaps and Secrets.
pub async fn setup(
    client: &Client,
    pod: &Pod,
    pods_root: &Path,
) -> Result<PodVolumes, VolumeError> {
    let mut objects = ApiObjects::new(client.clone(), env::pod_namespace(pod));
    setup_with(&mut objects, pod, pods_root).await
}

/// [`setup`] over any source of API objects.
async fn setup_with(
    objects: &mut ApiObjects,
    pod: &Pod,
    pods_root: &Path,
) -> Result<PodVolumes, VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    if !is_path_component(uid) {
        return Err(VolumeError::InvalidPodUid(uid.to_string()));
    }
    let volumes_dir = pods_root.join(uid).join("volumes");
    let mut planned = Vec::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if !is_path_component(&volume.name) {
            return Err(VolumeError::InvalidVolumeName(volume.name.clone()));
        }
        let (dir, plan) = match plan_volume(objects, pod, volume).await {
            Ok(Planned { plugin, plan }) => (dir_of(&volumes_dir, plugin, volume, &plan), Ok(plan)),
            Err((plugin, err)) => (volumes_dir.join(plugin).join(&volume.name), Err(err)),
        };
        planned.push((volume.name.clone(), dir, plan));
    }
    let pod_key = env::pod_key(pod);
    tokio::task::spawn_blocking(move || apply(&pod_key, planned))
        .await
        .map_err(VolumeError::Task)?
}

/// Where a volume lives: its plugin directory, or the host path.
fn dir_of(volumes_dir: &Path, plugin: &str, volume: &Volume, plan: &Plan) -> PathBuf {
    match plan {
        Plan::HostPath { path, .. } => path.clone(),
        _ => volumes_dir.join(plugin).join(&volume.name),
    }
}

/// What to do for one volume on disk.
#[derive(Debug)]
enum Plan {
    /// A directory, or a tmpfs of at most `size_limit` bytes.
    EmptyDir {
        memory: bool,
        size_limit: Option<i64>,
    },
    /// A host path to check (or create) according to its type.
    HostPath { path: PathBuf, type_: String },
    /// Files written with the atomic writer.
    Files(Payload),
}

struct Planned {
    plugin: &'static str,
    plan: Plan,
}

/// The content of one file of a file-backed volume.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileProjection {
    data: Vec<u8>,
    mode: u32,
}

/// Files by clean relative path.
type Payload = BTreeMap<String, FileProjection>;

/// Works out what `volume` needs on disk, reading the API objects it refers to. On error,
/// also says which plugin directory the volume has.
async fn plan_volume(
    objects: &mut ApiObjects,
    pod: &Pod,
    volume: &Volume,
) -> Result<Planned, (&'static str, VolumeError)> {
    let name = volume.name.as_str();
    if let Some(source) = &volume.host_path {
        return Ok(Planned {
            plugin: "",
            plan: Plan::HostPath {
                path: PathBuf::from(&source.path),
                type_: source.type_.clone().unwrap_or_default(),
            },
        });
    }
    // ConfigMap and Secret volumes differ only in the object they read.
    let keyed = match (&volume.config_map, &volume.secret) {
        (Some(cm), _) => Some((
            CONFIG_MAP_PLUGIN,
            KeySource::ConfigMap,
            cm.name.as_str(),
            cm.items.as_deref(),
            cm.default_mode,
            cm.optional,
        )),
        (None, Some(secret)) => Some((
            SECRET_PLUGIN,
            KeySource::Secret,
            secret.secret_name.as_deref().unwrap_or(""),
            secret.items.as_deref(),
            secret.default_mode,
            secret.optional,
        )),
        (None, None) => None,
    };
    if let Some((plugin, source, object, items, mode, optional)) = keyed {
        let mut payload = Payload::new();
        object_payload(
            objects,
            source,
            name,
            object,
            items,
            mode.unwrap_or(DEFAULT_MODE),
            optional.unwrap_or(false),
            &mut payload,
        )
        .await
        .map_err(|e| (plugin, e))?;
        return Ok(Planned {
            plugin,
            plan: Plan::Files(payload),
        });
    }
    if let Some(source) = &volume.downward_api {
        let plugin = DOWNWARD_API_PLUGIN;
        let mut payload = Payload::new();
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        downward_api_payload(
            objects,
            pod,
            name,
            source.items.as_deref().unwrap_or(&[]),
            mode,
            &mut payload,
        )
        .await
        .map_err(|e| (plugin, e))?;
        return Ok(Planned {
            plugin,
            plan: Plan::Files(payload),
        });
    }
    if let Some(source) = &volume.projected {
        let plugin = PROJECTED_PLUGIN;
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let mut payload = Payload::new();
        for projection in source.sources.iter().flatten() {
            let result = if let Some(cm) = &projection.config_map {
                let optional = cm.optional.unwrap_or(false);
                object_payload(
                    objects,
                    KeySource::ConfigMap,
                    name,
                    &cm.name,
                    cm.items.as_deref(),
                    mode,
                    optional,
                    &mut payload,
                )
                .await
            } else if let Some(secret) = &projection.secret {
                let optional = secret.optional.unwrap_or(false);
                object_payload(
                    objects,
                    KeySource::Secret,
                    name,
                    &secret.name,
                    secret.items.as_deref(),
                    mode,
                    optional,
                    &mut payload,
                )
                .await
            } else if let Some(downward) = &projection.downward_api {
                let items = downward.items.as_deref().unwrap_or(&[]);
                downward_api_payload(objects, pod, name, items, mode, &mut payload).await
            } else if let Some(token) = &projection.service_account_token {
                // Service account tokens come with the security work of a later issue: no
                // file for now, and no failure either, so pods that ask for one still run.
                tracing::debug!(
                    pod = %env::pod_key(pod),
                    volume = name,
                    path = %token.path,
                    "service account token projection not implemented, skipping"
                );
                Ok(())
            } else if projection.cluster_trust_bundle.is_some() {
                tracing::warn!(
                    pod = %env::pod_key(pod),
                    volume = name,
                    "cluster trust bundle projection not implemented, skipping"
                );
                Ok(())
            } else {
                Ok(())
            };
            result.map_err(|e| (plugin, e))?;
        }
        return Ok(Planned {
            plugin,
            plan: Plan::Files(payload),
        });
    }
    if let Some(kind) = unsupported_kind(volume) {
        return Err((
            "",
            VolumeError::Unsupported {
                volume: name.to_string(),
                kind,
            },
        ));
    }
    // An emptyDir, or a volume without any source, which the apiserver defaults to one.
    let source = volume.empty_dir.as_ref();
    let memory = source.and_then(|s| s.medium.as_deref()) == Some("Memory");
    let size_limit = source
        .and_then(|s| s.size_limit.as_ref())
        .and_then(|q| Quantity::try_from(q).ok())
        .map(|q| q.value())
        .filter(|&bytes| bytes > 0);
    Ok(Planned {
        plugin: EMPTY_DIR_PLUGIN,
        plan: Plan::EmptyDir { memory, size_limit },
    })
}

/// The volume types the kubelet does not implement, by their pod spec name.
fn unsupported_kind(v: &Volume) -> Option<&'static str> {
    let kinds = [
        (v.persistent_volume_claim.is_some(), "persistentVolumeClaim"),
        (v.ephemeral.is_some(), "ephemeral"),
        (v.csi.is_some(), "csi"),
        (v.image.is_some(), "image"),
        (v.nfs.is_some(), "nfs"),
        (v.iscsi.is_some(), "iscsi"),
        (v.git_repo.is_some(), "gitRepo"),
        (v.fc.is_some(), "fc"),
        (v.rbd.is_some(), "rbd"),
        (v.cephfs.is_some(), "cephfs"),
        (v.glusterfs.is_some(), "glusterfs"),
        (v.flex_volume.is_some(), "flexVolume"),
        (v.aws_elastic_block_store.is_some(), "awsElasticBlockStore"),
        (v.gce_persistent_disk.is_some(), "gcePersistentDisk"),
        (v.azure_disk.is_some(), "azureDisk"),
        (v.azure_file.is_some(), "azureFile"),
        (v.cinder.is_some(), "cinder"),
        (v.vsphere_volume.is_some(), "vsphereVolume"),
        (v.portworx_volume.is_some(), "portworxVolume"),
        (v.flocker.is_some(), "flocker"),
        (v.photon_persistent_disk.is_some(), "photonPersistentDisk"),
        (v.quobyte.is_some(), "quobyte"),
        (v.scale_io.is_some(), "scaleIO"),
        (v.storageos.is_some(), "storageos"),
    ];
    kinds
        .into_iter()
        .find(|(set, _)| *set)
        .map(|(_, kind)| kind)
}

/// Which object a key-to-path source reads.
#[derive(Clone, Copy)]
enum KeySource {
    ConfigMap,
    Secret,
}

/// Adds a ConfigMap's or Secret's keys (all, or `items`) to `payload`, as upstream's
/// `configmap.MakePayload` and `secret.MakePayload`.
#[allow(clippy::too_many_arguments)]
async fn object_payload(
    objects: &mut ApiObjects,
    source: KeySource,
    volume: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
    payload: &mut Payload,
) -> Result<(), VolumeError> {
    let api_error = |kind: &'static str| {
        move |source| VolumeError::Api {
            volume: volume.to_string(),
            kind,
            name: name.to_string(),
            source,
        }
    };
    let found = match source {
        KeySource::ConfigMap => objects
            .config_map(name)
            .await
            .map_err(api_error("configmap"))?
            .map(config_map_data),
        KeySource::Secret => objects
            .secret(name)
            .await
            .map_err(api_error("secret"))?
            .map(secret_data),
    };
    let data = match found {
        Some(data) => data,
        None if optional => BTreeMap::new(),
        None => {
            let (volume, name) = (volume.to_string(), name.to_string());
            return Err(match source {
                KeySource::ConfigMap => VolumeError::ConfigMapNotFound { volume, name },
                KeySource::Secret => VolumeError::SecretNotFound { volume, name },
            });
        }
    };
    key_payload(
        source,
        volume,
        &data,
        items,
        default_mode,
        optional,
        payload,
    )
}

fn config_map_data(config_map: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let text = config_map
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()));
    let binary = config_map
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()));
    text.chain(binary).collect()
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Every key of `data` under its own name, or only `items` under their paths.
fn key_payload(
    source: KeySource,
    volume: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
    payload: &mut Payload,
) -> Result<(), VolumeError> {
    let items = items.unwrap_or(&[]);
    if items.is_empty() {
        for (key, value) in data {
            add_file(payload, volume, key, value.clone(), default_mode)?;
        }
        return Ok(());
    }
    for item in items {
        match data.get(&item.key) {
            Some(value) => {
                let mode = item.mode.unwrap_or(default_mode);
                add_file(payload, volume, &item.path, value.clone(), mode)?;
            }
            None if optional => {}
            None => {
                let (volume, key) = (volume.to_string(), item.key.clone());
                return Err(match source {
                    KeySource::ConfigMap => VolumeError::ConfigMapKeyNotFound { volume, key },
                    KeySource::Secret => VolumeError::SecretKeyNotFound { volume, key },
                });
            }
        }
    }
    Ok(())
}

/// Adds downward API items to `payload`, as upstream's `downwardapi.CollectData`.
async fn downward_api_payload(
    objects: &mut ApiObjects,
    pod: &Pod,
    volume: &str,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    payload: &mut Payload,
) -> Result<(), VolumeError> {
    let field_error = |source| VolumeError::DownwardApi {
        volume: volume.to_string(),
        source,
    };
    for item in items {
        let mode = item.mode.unwrap_or(default_mode);
        let value = if let Some(field) = &item.field_ref {
            env::metadata_field_value(pod, &field.field_path).map_err(field_error)?
        } else if let Some(field) = &item.resource_field_ref {
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("");
            let allocatable = if node.is_empty() {
                BTreeMap::new()
            } else {
                objects
                    .node_allocatable(node)
                    .await
                    .map_err(|source| VolumeError::Api {
                        volume: volume.to_string(),
                        kind: "node",
                        name: node.to_string(),
                        source,
                    })?
                    .cloned()
                    .unwrap_or_default()
            };
            env::resource_field_value(field, pod, None, &allocatable).map_err(field_error)?
        } else {
            String::new()
        };
        add_file(payload, volume, &item.path, value.into_bytes(), mode)?;
    }
    Ok(())
}

fn add_file(
    payload: &mut Payload,
    volume: &str,
    path: &str,
    data: Vec<u8>,
    mode: i32,
) -> Result<(), VolumeError> {
    let clean = clean_payload_path(path).map_err(|reason| VolumeError::InvalidPath {
        volume: volume.to_string(),
        path: path.to_string(),
        reason,
    })?;
    // API validation keeps modes within 0..=0o777; the mask keeps stray bits out anyway.
    let mode = (mode & 0o777) as u32;
    payload.insert(clean, FileProjection { data, mode });
    Ok(())
}

/// A payload path made clean (no empty or `.` components), or why it is refused, as
/// upstream's atomic writer `validatePath`: relative, no `..`, not starting with `..`.
fn clean_payload_path(path: &str) -> Result<String, &'static str> {
    if path.starts_with('/') {
        return Err("must be relative path");
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err("must be less than or equal to 4096 characters");
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let Some(first) = parts.first() else {
        return Err("must not be empty");
    };
    for part in &parts {
        if *part == ".." {
            return Err("must not contain '..'");
        }
        if part.len() > MAX_FILE_NAME_LENGTH {
            return Err("filenames must be less than or equal to 255 characters");
        }
        if part.contains('\0') {
            return Err("must not contain NUL");
        }
    }
    if first.starts_with("..") {
        return Err("must not start with '..'");
    }
    Ok(parts.join("/"))
}

/// Whether `s` is a single, ordinary path component.
fn is_path_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// Puts every planned volume on disk (blocking).
fn apply(
    pod_key: &str,
    planned: Vec<(String, PathBuf, Result<Plan, VolumeError>)>,
) -> Result<PodVolumes, VolumeError> {
    let mut volumes = PodVolumes::new();
    for (name, dir, plan) in planned {
        let read_only = match plan {
            Ok(Plan::EmptyDir { memory, size_limit }) => {
                setup_empty_dir(&dir, memory, size_limit)?;
                false
            }
            Ok(Plan::HostPath { path, type_ }) => {
                check_host_path(&path, &type_).map_err(|message| VolumeError::HostPath {
                    volume: name.clone(),
                    message,
                })?;
                false
            }
            Ok(Plan::Files(payload)) => {
                match write_atomic(&dir, &payload) {
                    Ok(_) => {}
                    Err(err) => keep_or_fail(pod_key, &name, &dir, err, &mut volumes)?,
                }
                true
            }
            Err(err) => {
                keep_or_fail(pod_key, &name, &dir, err, &mut volumes)?;
                true
            }
        };
        volumes.insert(
            name,
            PodVolume {
                host_path: dir,
                read_only,
            },
        );
    }
    Ok(volumes)
}

/// A file-backed volume that could not be refreshed: kept with its last content when it was
/// set up before, an error otherwise.
fn keep_or_fail(
    pod_key: &str,
    name: &str,
    dir: &Path,
    err: VolumeError,
    volumes: &mut PodVolumes,
) -> Result<(), VolumeError> {
    let set_up = fs::symlink_metadata(dir.join(DATA_LINK)).is_ok_and(|m| m.is_symlink());
    if !set_up {
        return Err(err);
    }
    tracing::warn!(
        pod = %pod_key,
        volume = name,
        error = %err,
        "volume refresh failed, keeping its last content"
    );
    volumes.refresh_errors.push(RefreshError {
        volume: name.to_string(),
        message: err.to_string(),
    });
    Ok(())
}

/// Creates an emptyDir (world-writable like upstream's), mounting a tmpfs on it for
/// `medium: Memory` unless one is mounted already.
fn setup_empty_dir(dir: &Path, memory: bool, size_limit: Option<i64>) -> Result<(), VolumeError> {
    let created = match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => false,
        Ok(_) => {
            return Err(VolumeError::Io {
                op: "create directory",
                path: dir.to_path_buf(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "not a directory"),
            });
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
            true
        }
        Err(err) => return Err(io_error("stat", dir)(err)),
    };
    let mut fresh = created;
    if memory && !is_mount_point(dir)? {
        mount_tmpfs(dir, size_limit)?;
        fresh = true;
    }
    if fresh {
        // Set explicitly: the umask would otherwise take group and other write away.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777))
            .map_err(io_error("chmod", dir))?;
    }
    Ok(())
}

fn mount_tmpfs(dir: &Path, size_limit: Option<i64>) -> Result<(), VolumeError> {
    let mut command = Command::new("mount");
    command.arg("-t").arg("tmpfs");
    if let Some(bytes) = size_limit {
        command.arg("-o").arg(format!("size={bytes}"));
    }
    command.arg("tmpfs").arg(dir);
    run(command).map_err(|message| VolumeError::Mount {
        path: dir.to_path_buf(),
        message,
    })
}

fn unmount(dir: &Path) -> Result<(), VolumeError> {
    let mut command = Command::new("umount");
    command.arg(dir);
    run(command).map_err(|message| VolumeError::Unmount {
        path: dir.to_path_buf(),
        message,
    })
}

/// Runs a command; on failure, what it printed.
fn run(mut command: Command) -> Result<(), String> {
    let output = command.output().map_err(|e| e.to_string())?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    Err(if stderr.is_empty() {
        output.status.to_string()
    } else {
        stderr.to_string()
    })
}

/// The mount points of this process's mount namespace, from `/proc/self/mountinfo`.
fn mount_points() -> Result<Vec<PathBuf>, VolumeError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(io_error("read", path))?;
    Ok(parse_mountinfo(&text))
}

/// The mount points (fifth field, octal escapes undone) of a mountinfo file.
fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

/// Undoes the kernel's `\ooo` escapes of spaces, tabs, newlines and backslashes.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_mount_point(dir: &Path) -> Result<bool, VolumeError> {
    let dir = fs::canonicalize(dir).map_err(io_error("resolve", dir))?;
    Ok(mount_points()?.contains(&dir))
}

/// Checks a hostPath against its `type`, creating it for the `...OrCreate` types, as
/// upstream's `checkType`. Errors are upstream's messages.
fn check_host_path(path: &Path, type_: &str) -> Result<(), String> {
    let shown = path.display();
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!("invalid HostPath `{shown}`: must not contain '..'"));
    }
    // `fs::metadata` follows symlinks, as upstream's checks do.
    let meta = fs::metadata(path).ok();
    let exists = meta.is_some();
    let kind = meta.as_ref().map(|m| m.file_type());
    let missing = || format!("path \"{shown}\" does not exist");
    match type_ {
        "" => Ok(()),
        "DirectoryOrCreate" if !exists => {
            fs::create_dir_all(path).map_err(|e| e.to_string())?;
            Ok(())
        }
        "FileOrCreate" if !exists => {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        "DirectoryOrCreate" | "Directory" => match kind {
            None => Err(missing()),
            Some(k) if k.is_dir() => Ok(()),
            Some(_) => Err(format!("path \"{shown}\" exists but is not a directory")),
        },
        "FileOrCreate" | "File" => match kind {
            None => Err(missing()),
            Some(k) if k.is_file() => Ok(()),
            Some(_) => Err(format!("path \"{shown}\" exists but is not a file")),
        },
        "Socket" => match kind {
            None => Err(missing()),
            Some(k) if k.is_socket() => Ok(()),
            Some(_) => Err(format!("path \"{shown}\" is not a socket file")),
        },
        "CharDevice" => match kind {
            None => Err(missing()),
            Some(k) if k.is_char_device() => Ok(()),
            Some(_) => Err(format!("path \"{shown}\" is not a character device")),
        },
        "BlockDevice" => match kind {
            None => Err(missing()),
            Some(k) if k.is_block_device() => Ok(()),
            Some(_) => Err(format!("path \"{shown}\" is not a block device")),
        },
        other => Err(format!("{other} is an invalid volume type")),
    }
}

/// Writes `payload` into `dir` with upstream's atomic writer scheme; returns whether
/// anything was written (`false` when the content was already there).
fn write_atomic(dir: &Path, payload: &Payload) -> Result<bool, VolumeError> {
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(io_error("chmod", dir))?;
    }
    let data_link = dir.join(DATA_LINK);
    let old = match fs::read_link(&data_link) {
        Ok(target) => Some(target),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(io_error("read link", &data_link)(err)),
    };
    if let Some(old) = &old
        && payload_matches(&dir.join(old), payload)
    {
        create_user_visible_links(dir, payload)?;
        return Ok(false);
    }

    let ts_name = create_timestamped_dir(dir)?;
    let ts_dir = dir.join(&ts_name);
    if let Err(err) = write_payload(&ts_dir, payload) {
        let _ = fs::remove_dir_all(&ts_dir);
        return Err(err);
    }
    create_user_visible_links(dir, payload)?;

    let tmp_link = dir.join(DATA_LINK_TMP);
    match fs::remove_file(&tmp_link) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error("remove", &tmp_link)(err)),
    }
    symlink(&ts_name, &tmp_link).map_err(io_error("symlink", &tmp_link))?;
    fs::rename(&tmp_link, &data_link).map_err(io_error("rename", &tmp_link))?;

    // Links of names no longer in the payload, then every timestamped directory but the new
    // one (the old one, and any left by a write that crashed half-way).
    let wanted: BTreeSet<&str> = payload.keys().map(|p| top_level(p)).collect();
    for entry in fs::read_dir(dir).map_err(io_error("read directory", dir))? {
        let entry = entry.map_err(io_error("read directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if name.starts_with("..") {
            if meta.is_dir() && name != ts_name {
                fs::remove_dir_all(&path).map_err(io_error("remove", &path))?;
            }
        } else if !wanted.contains(name)
            && meta.is_symlink()
            && fs::read_link(&path).is_ok_and(|t| t == Path::new(DATA_LINK).join(name))
        {
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
    }
    Ok(true)
}

/// The first component of a clean payload path.
fn top_level(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Whether the files under `old_dir` are exactly `payload`: same paths, content and modes.
fn payload_matches(old_dir: &Path, payload: &Payload) -> bool {
    let mut files = BTreeMap::new();
    if !collect_files(old_dir, "", &mut files) || files.len() != payload.len() {
        return false;
    }
    payload.iter().all(|(path, want)| {
        files.get(path).is_some_and(|mode| *mode == want.mode)
            && fs::read(old_dir.join(path)).is_ok_and(|data| data == want.data)
    })
}

/// Regular files under `dir` by relative path, with their modes; `false` if anything else
/// (a symlink, a socket, an unreadable directory) is there.
fn collect_files(dir: &Path, prefix: &str, files: &mut BTreeMap<String, u32>) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    for entry in entries {
        let Ok(entry) = entry else { return false };
        let Ok(name) = entry.file_name().into_string() else {
            return false;
        };
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            return false;
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if meta.is_dir() {
            if !collect_files(&entry.path(), &rel, files) {
                return false;
            }
        } else if meta.is_file() {
            files.insert(rel, meta.permissions().mode() & 0o777);
        } else {
            return false;
        }
    }
    true
}

/// Creates `..<UTC timestamp>` in `dir` and returns its name.
fn create_timestamped_dir(dir: &Path) -> Result<String, VolumeError> {
    let base = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%N")
        .to_string();
    let mut attempt = 0u32;
    loop {
        let name = if attempt == 0 {
            base.clone()
        } else {
            format!("{base}.{attempt}")
        };
        let path = dir.join(&name);
        match fs::create_dir(&path) {
            Ok(()) => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .map_err(io_error("chmod", &path))?;
                return Ok(name);
            }
            // Two writes within one nanosecond: take the next suffix.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(err) => return Err(io_error("create directory", &path)(err)),
        }
    }
}

fn write_payload(ts_dir: &Path, payload: &Payload) -> Result<(), VolumeError> {
    for (path, file) in payload {
        let full = ts_dir.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
        }
        fs::write(&full, &file.data).map_err(io_error("write", &full))?;
        fs::set_permissions(&full, fs::Permissions::from_mode(file.mode))
            .map_err(io_error("chmod", &full))?;
    }
    Ok(())
}

/// `name -> ..data/name` for every top-level name of the payload that has no link yet.
fn create_user_visible_links(dir: &Path, payload: &Payload) -> Result<(), VolumeError> {
    let names: BTreeSet<&str> = payload.keys().map(|p| top_level(p)).collect();
    for name in names {
        let link = dir.join(name);
        match fs::symlink_metadata(&link) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                symlink(Path::new(DATA_LINK).join(name), &link)
                    .map_err(io_error("symlink", &link))?;
            }
            Err(err) => return Err(io_error("stat", &link)(err)),
        }
    }
    Ok(())
}

/// The CRI mounts of `container`'s `volumeMounts`: the volume's host path (joined with the
/// `subPath`, or the expanded `subPathExpr`), read-only when the mount or the volume says so,
/// and the propagation mode. A missing `subPath` is created as a directory, as upstream does.
pub fn container_mounts(
    pod: &Pod,
    container: &Container,
    volumes: &PodVolumes,
) -> Result<Vec<cri::Mount>, VolumeError> {
    let mut literal_env = None;
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .get(&mount.name)
            .ok_or_else(|| VolumeError::UnknownVolume {
                volume: mount.name.clone(),
                container: container.name.clone(),
            })?;
        let sub_path = match mount.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
            Some(expr) => {
                let env = literal_env.get_or_insert_with(|| env::literal_env(pod, container));
                let mut missing = BTreeSet::new();
                let expanded = env::expand(expr, |name| match env.get(name) {
                    Some(value) if !value.is_empty() => value.clone(),
                    _ => {
                        missing.insert(name.to_string());
                        String::new()
                    }
                });
                if !missing.is_empty() {
                    let missing: Vec<String> = missing.into_iter().collect();
                    return Err(VolumeError::SubPathExprMissing(missing.join(", ")));
                }
                expanded
            }
            None => mount.sub_path.clone().unwrap_or_default(),
        };
        let host_path = if sub_path.is_empty() {
            volume.host_path.clone()
        } else {
            resolve_sub_path(&volume.host_path, &sub_path, &mount.name, &container.name)?
        };
        let container_path = if mount.mount_path.starts_with('/') {
            mount.mount_path.clone()
        } else {
            format!("/{}", mount.mount_path)
        };
        let propagation = match mount.mount_propagation.as_deref() {
            None | Some("None") => cri::MountPropagation::PropagationPrivate,
            Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
            Some(other) => return Err(VolumeError::InvalidPropagation(other.to_string())),
        };
        let mount_read_only = mount.read_only.unwrap_or(false);
        let recursive_read_only = match mount.recursive_read_only.as_deref() {
            None | Some("Disabled") => false,
            Some(mode) => {
                if !mount_read_only {
                    return Err(VolumeError::RecursiveReadOnlyNotReadOnly(
                        mount.name.clone(),
                    ));
                }
                if let Some(p) = mount.mount_propagation.as_deref().filter(|p| *p != "None") {
                    return Err(VolumeError::RecursiveReadOnlyPropagation {
                        volume: mount.name.clone(),
                        propagation: p.to_string(),
                    });
                }
                match mode {
                    // Whether the runtime supports it is not known here: only ask when the
                    // pod insists, so IfPossible never fails a container.
                    "IfPossible" => false,
                    "Enabled" => true,
                    other => return Err(VolumeError::InvalidRecursiveReadOnly(other.to_string())),
                }
            }
        };
        mounts.push(cri::Mount {
            container_path,
            host_path: host_path.to_string_lossy().into_owned(),
            readonly: mount_read_only || volume.read_only,
            recursive_read_only,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    Ok(mounts)
}

/// `root/sub_path`, resolved through symlinks and checked to stay inside `root`; missing
/// directories are created with `root`'s permissions.
fn resolve_sub_path(
    root: &Path,
    sub_path: &str,
    mount: &str,
    container: &str,
) -> Result<PathBuf, VolumeError> {
    if sub_path.starts_with('/') {
        return Err(VolumeError::AbsoluteSubPath(sub_path.to_string()));
    }
    if sub_path.split('/').any(|part| part == "..") {
        return Err(VolumeError::SubPathBacksteps(sub_path.to_string()));
    }
    let io_failure = |source| VolumeError::SubPath {
        mount: mount.to_string(),
        container: container.to_string(),
        source,
    };
    let root = fs::canonicalize(root).map_err(io_failure)?;
    let root_mode = fs::metadata(&root)
        .map_err(io_failure)?
        .permissions()
        .mode()
        & 0o7777;
    let mut current = root.clone();
    for part in sub_path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let next = current.join(part);
        match fs::symlink_metadata(&next) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&next).map_err(io_failure)?;
                fs::set_permissions(&next, fs::Permissions::from_mode(root_mode))
                    .map_err(io_failure)?;
                current = next;
            }
            Err(err) => return Err(io_failure(err)),
            Ok(_) => {
                let resolved = fs::canonicalize(&next).map_err(io_failure)?;
                if !resolved.starts_with(&root) {
                    return Err(VolumeError::SubPathEscape {
                        mount: mount.to_string(),
                        sub_path: sub_path.to_string(),
                    });
                }
                current = resolved;
            }
        }
    }
    Ok(current)
}

/// Removes the pod's volumes: unmounts what is mounted under the pod directory (the tmpfs of
/// memory-backed emptyDirs), then removes `<pods_root>/<pod_uid>`. Nothing is removed while
/// something is still mounted there. Removing a pod directory that does not exist succeeds.
pub async fn teardown(pods_root: &Path, pod_uid: &str) -> Result<(), VolumeError> {
    if !is_path_component(pod_uid) {
        return Err(VolumeError::InvalidPodUid(pod_uid.to_string()));
    }
    let pod_dir = pods_root.join(pod_uid);
    tokio::task::spawn_blocking(move || remove_pod_dir(&pod_dir))
        .await
        .map_err(VolumeError::Task)?
}

fn remove_pod_dir(pod_dir: &Path) -> Result<(), VolumeError> {
    let canonical = match fs::canonicalize(pod_dir) {
        Ok(path) => path,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(io_error("resolve", pod_dir)(err)),
    };
    let mounted_below = || -> Result<Vec<PathBuf>, VolumeError> {
        let mut below: Vec<PathBuf> = mount_points()?
            .into_iter()
            .filter(|m| m.starts_with(&canonical))
            .collect();
        // Deepest first, so nested mounts come off before their parents. A path listed
        // twice has two stacked mounts and is unmounted twice.
        below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        Ok(below)
    };
    for mount_point in mounted_below()? {
        unmount(&mount_point)?;
    }
    if let Some(still) = mounted_below()?.into_iter().next() {
        return Err(VolumeError::StillMounted { path: still });
    }
    fs::remove_dir_all(&canonical).map_err(io_error("remove", &canonical))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIProjection, DownwardAPIVolumeSource,
        EmptyDirVolumeSource, HostPathVolumeSource, Node, NodeStatus, ObjectFieldSelector, PodSpec,
        ProjectedVolumeSource, ResourceFieldSelector, SecretVolumeSource,
        ServiceAccountTokenProjection, VolumeMount, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn futures_are_send() {
        fn is_send<T: Send>(_: T) {}
        // Type-checked only: the pod workers spawn these.
        let _ = |client: &Client, pod: &Pod| {
            is_send(setup(client, pod, Path::new("/")));
            is_send(teardown(Path::new("/"), "uid"));
        };
    }

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn payload(files: &[(&str, &str)]) -> Payload {
        files
            .iter()
            .map(|(path, data)| (path.to_string(), file(data, 0o644)))
            .collect()
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    fn timestamped_dirs(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("..") && n != DATA_LINK)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn atomic_writer_writes_through_data_link() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let files = payload(&[("a", "1"), ("nested/b", "2")]);
        assert!(write_atomic(&dir, &files).unwrap());

        let data = fs::read_link(dir.join(DATA_LINK)).unwrap();
        let ts = data.to_str().unwrap();
        assert!(ts.starts_with("..2"), "timestamped dir, got {ts}");
        assert_eq!(timestamped_dirs(&dir), vec![ts.to_string()]);
        assert_eq!(fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(
            fs::read_link(dir.join("nested")).unwrap(),
            Path::new("..data/nested")
        );
        assert_eq!(read(&dir.join("a")), "1");
        assert_eq!(read(&dir.join("nested/b")), "2");
        let mode = fs::metadata(dir.join("a")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert!(!dir.join(DATA_LINK_TMP).exists());
    }

    #[test]
    fn atomic_writer_swaps_on_change_and_removes_old_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        write_atomic(&dir, &payload(&[("a", "1"), ("gone", "x")])).unwrap();
        let first = fs::read_link(dir.join(DATA_LINK)).unwrap();

        assert!(write_atomic(&dir, &payload(&[("a", "2"), ("new", "y")])).unwrap());
        let second = fs::read_link(dir.join(DATA_LINK)).unwrap();
        assert_ne!(first, second, "..data should point to a new directory");
        assert!(
            !dir.join(&first).exists(),
            "old directory {} should be removed",
            first.display()
        );
        assert_eq!(
            timestamped_dirs(&dir),
            vec![second.to_str().unwrap().to_string()]
        );
        assert_eq!(read(&dir.join("a")), "2");
        assert_eq!(read(&dir.join("new")), "y");
        assert!(
            fs::symlink_metadata(dir.join("gone")).is_err(),
            "the link of a removed key should be gone"
        );
    }

    #[test]
    fn atomic_writer_leaves_unchanged_content_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let files = payload(&[("a", "1"), ("nested/b", "2")]);
        write_atomic(&dir, &files).unwrap();
        let first = fs::read_link(dir.join(DATA_LINK)).unwrap();

        assert!(
            !write_atomic(&dir, &files).unwrap(),
            "nothing should be rewritten"
        );
        assert_eq!(fs::read_link(dir.join(DATA_LINK)).unwrap(), first);

        // A mode change alone is a change.
        let mut changed = files.clone();
        changed.insert("a".into(), file("1", 0o400));
        assert!(write_atomic(&dir, &changed).unwrap());
        let mode = fs::metadata(dir.join("a")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
    }

    #[test]
    fn atomic_writer_cleans_up_crashed_writes_and_restores_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let files = payload(&[("a", "1")]);
        write_atomic(&dir, &files).unwrap();
        fs::create_dir(dir.join("..2000_01_01_00_00_00.1")).unwrap();
        fs::remove_file(dir.join("a")).unwrap();

        assert!(!write_atomic(&dir, &files).unwrap());
        assert_eq!(
            read(&dir.join("a")),
            "1",
            "the missing link should be restored"
        );

        assert!(write_atomic(&dir, &payload(&[("a", "2")])).unwrap());
        assert_eq!(
            timestamped_dirs(&dir).len(),
            1,
            "stray directories should be removed"
        );
    }

    #[test]
    fn payload_paths_are_validated() {
        assert_eq!(clean_payload_path("a//./b").unwrap(), "a/b");
        assert_eq!(clean_payload_path("/a"), Err("must be relative path"));
        assert_eq!(clean_payload_path("a/../b"), Err("must not contain '..'"));
        assert_eq!(
            clean_payload_path("..data"),
            Err("must not start with '..'")
        );
        assert_eq!(clean_payload_path(""), Err("must not be empty"));
        assert_eq!(clean_payload_path("a/..b").unwrap(), "a/..b");
    }

    #[test]
    fn host_path_types_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        let file_path = tmp.path().join("file");
        let missing = tmp.path().join("missing");

        check_host_path(&dir, "DirectoryOrCreate").unwrap();
        assert!(
            dir.is_dir(),
            "DirectoryOrCreate should create the directory"
        );
        check_host_path(&dir, "Directory").unwrap();
        check_host_path(&file_path, "FileOrCreate").unwrap();
        assert!(file_path.is_file(), "FileOrCreate should create the file");
        check_host_path(&file_path, "File").unwrap();
        check_host_path(&missing, "").unwrap();
        assert!(
            !missing.exists(),
            "an empty type should neither check nor create"
        );

        let shown = |p: &Path| p.display().to_string();
        assert_eq!(
            check_host_path(&missing, "Directory").unwrap_err(),
            format!("path \"{}\" does not exist", shown(&missing))
        );
        assert_eq!(
            check_host_path(&file_path, "Directory").unwrap_err(),
            format!(
                "path \"{}\" exists but is not a directory",
                shown(&file_path)
            )
        );
        assert_eq!(
            check_host_path(&dir, "File").unwrap_err(),
            format!("path \"{}\" exists but is not a file", shown(&dir))
        );
        assert_eq!(
            check_host_path(&dir, "FileOrCreate").unwrap_err(),
            format!("path \"{}\" exists but is not a file", shown(&dir))
        );
        assert_eq!(
            check_host_path(&file_path, "Socket").unwrap_err(),
            format!("path \"{}\" is not a socket file", shown(&file_path))
        );
        assert_eq!(
            check_host_path(&file_path, "CharDevice").unwrap_err(),
            format!("path \"{}\" is not a character device", shown(&file_path))
        );
        assert_eq!(
            check_host_path(&file_path, "BlockDevice").unwrap_err(),
            format!("path \"{}\" is not a block device", shown(&file_path))
        );
        assert_eq!(
            check_host_path(&dir, "Bogus").unwrap_err(),
            "Bogus is an invalid volume type"
        );
        check_host_path(Path::new("/dev/null"), "CharDevice").unwrap();

        let socket = tmp.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        check_host_path(&socket, "Socket").unwrap();
    }

    fn mount(name: &str, path: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        }
    }

    fn volumes_in(root: &Path) -> PodVolumes {
        let mut volumes = PodVolumes::new();
        for (name, read_only) in [("data", false), ("config", true)] {
            let host_path = root.join(name);
            fs::create_dir_all(&host_path).unwrap();
            volumes.insert(
                name,
                PodVolume {
                    host_path,
                    read_only,
                },
            );
        }
        volumes
    }

    fn container_with(mounts: Vec<VolumeMount>) -> Container {
        Container {
            name: "app".into(),
            volume_mounts: Some(mounts),
            ..Default::default()
        }
    }

    #[test]
    fn mounts_translate_read_only_and_propagation() {
        let tmp = tempfile::tempdir().unwrap();
        let volumes = volumes_in(tmp.path());
        let container = container_with(vec![
            mount("data", "/data"),
            VolumeMount {
                read_only: Some(true),
                mount_propagation: Some("HostToContainer".into()),
                ..mount("data", "ro")
            },
            mount("config", "/etc/config"),
            VolumeMount {
                mount_propagation: Some("Bidirectional".into()),
                ..mount("data", "/shared")
            },
            VolumeMount {
                read_only: Some(true),
                recursive_read_only: Some("Enabled".into()),
                ..mount("data", "/rro")
            },
        ]);
        let mounts = container_mounts(&Pod::default(), &container, &volumes).unwrap();
        let data = tmp.path().join("data").to_string_lossy().into_owned();
        let summary: Vec<(&str, &str, bool, i32, bool)> = mounts
            .iter()
            .map(|m| {
                (
                    m.container_path.as_str(),
                    m.host_path.as_str(),
                    m.readonly,
                    m.propagation,
                    m.recursive_read_only,
                )
            })
            .collect();
        let config = tmp.path().join("config").to_string_lossy().into_owned();
        use cri::MountPropagation as P;
        assert_eq!(
            summary,
            vec![
                (
                    "/data",
                    data.as_str(),
                    false,
                    P::PropagationPrivate as i32,
                    false
                ),
                (
                    "/ro",
                    data.as_str(),
                    true,
                    P::PropagationHostToContainer as i32,
                    false
                ),
                (
                    "/etc/config",
                    config.as_str(),
                    true,
                    P::PropagationPrivate as i32,
                    false
                ),
                (
                    "/shared",
                    data.as_str(),
                    false,
                    P::PropagationBidirectional as i32,
                    false
                ),
                (
                    "/rro",
                    data.as_str(),
                    true,
                    P::PropagationPrivate as i32,
                    true
                ),
            ]
        );
    }

    #[test]
    fn mount_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let volumes = volumes_in(tmp.path());
        let err = |m: VolumeMount| {
            container_mounts(&Pod::default(), &container_with(vec![m]), &volumes)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(mount("nope", "/x")),
            "cannot find volume \"nope\" to mount into container \"app\""
        );
        assert_eq!(
            err(VolumeMount {
                mount_propagation: Some("Sideways".into()),
                ..mount("data", "/x")
            }),
            "invalid MountPropagation mode: \"Sideways\""
        );
        assert_eq!(
            err(VolumeMount {
                recursive_read_only: Some("Enabled".into()),
                ..mount("data", "/x")
            }),
            "volume \"data\" requested recursive read-only mode, but it is not read-only"
        );
        assert_eq!(
            err(VolumeMount {
                sub_path: Some("/etc".into()),
                ..mount("data", "/x")
            }),
            "error SubPath `/etc` must not be an absolute path"
        );
        assert_eq!(
            err(VolumeMount {
                sub_path: Some("a/../../etc".into()),
                ..mount("data", "/x")
            }),
            "unable to provision SubPath `a/../../etc`: must not contain '..'"
        );
    }

    #[test]
    fn sub_paths_are_created_and_kept_inside_the_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let volumes = volumes_in(tmp.path());
        let root = fs::canonicalize(tmp.path()).unwrap();
        fs::set_permissions(root.join("data"), fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(root.join("config/app.conf"), "x").unwrap();
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let container = Container {
            env: Some(vec![k8s_openapi::api::core::v1::EnvVar {
                name: "POD".into(),
                value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: "metadata.name".into(),
                    }),
                    ..Default::default()
                }),
                value: None,
            }]),
            ..container_with(vec![
                VolumeMount {
                    sub_path: Some("logs/app".into()),
                    ..mount("data", "/logs")
                },
                VolumeMount {
                    sub_path: Some("app.conf".into()),
                    ..mount("config", "/etc/app.conf")
                },
                VolumeMount {
                    sub_path_expr: Some("per-pod/$(POD)".into()),
                    ..mount("data", "/mine")
                },
            ])
        };
        let mounts = container_mounts(&pod, &container, &volumes).unwrap();
        let host: Vec<&str> = mounts.iter().map(|m| m.host_path.as_str()).collect();
        let expect = |p: &str| root.join(p).to_string_lossy().into_owned();
        assert_eq!(
            host,
            vec![
                expect("data/logs/app").as_str(),
                expect("config/app.conf").as_str(),
                expect("data/per-pod/web-0").as_str(),
            ]
        );
        let created = fs::metadata(root.join("data/logs/app")).unwrap();
        assert!(created.is_dir());
        assert_eq!(created.permissions().mode() & 0o777, 0o777, "volume's mode");

        // A symlink planted in the volume cannot lead a subPath out of it.
        symlink("/etc", root.join("data/escape")).unwrap();
        let escape = container_with(vec![VolumeMount {
            sub_path: Some("escape".into()),
            ..mount("data", "/x")
        }]);
        assert_eq!(
            container_mounts(&pod, &escape, &volumes)
                .unwrap_err()
                .to_string(),
            "subPath `escape` of volumeMount \"data\" is outside its volume"
        );

        let unknown = container_with(vec![VolumeMount {
            sub_path_expr: Some("$(NOPE)/$(ALSO)".into()),
            ..mount("data", "/x")
        }]);
        assert_eq!(
            container_mounts(&pod, &unknown, &volumes)
                .unwrap_err()
                .to_string(),
            "missing value for ALSO, NOPE"
        );
    }

    #[test]
    fn mountinfo_parsing() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    46 27 0:40 / /tmp/x rw,relatime - tmpfs tmpfs rw,size=1024k\n";
        assert_eq!(
            parse_mountinfo(text),
            vec![PathBuf::from("/mnt/with space"), PathBuf::from("/tmp/x")]
        );
        assert_eq!(unescape_octal("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_octal("trailing\\04"), "trailing\\04");
    }

    fn test_pod(volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("uid-1".into()),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                containers: vec![Container {
                    name: "app".into(),
                    ..Default::default()
                }],
                volumes: Some(volumes),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            binary_data: Some(BTreeMap::from([("bin".into(), ByteString(vec![0, 1, 2]))])),
            ..Default::default()
        }
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn node() -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("node-a".into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([("cpu".into(), K8sQuantity("3".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn key(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    fn volume(name: &str) -> Volume {
        Volume {
            name: name.into(),
            ..Default::default()
        }
    }

    fn all_volumes() -> Vec<Volume> {
        vec![
            Volume {
                config_map: Some(ConfigMapVolumeSource {
                    name: "settings".into(),
                    ..Default::default()
                }),
                ..volume("cfg")
            },
            Volume {
                config_map: Some(ConfigMapVolumeSource {
                    name: "settings".into(),
                    items: Some(vec![
                        key("level", "conf/level.txt", Some(0o600)),
                        key("absent", "x", None),
                    ]),
                    default_mode: Some(0o640),
                    optional: Some(true),
                }),
                ..volume("cfg-items")
            },
            Volume {
                secret: Some(SecretVolumeSource {
                    secret_name: Some("creds".into()),
                    default_mode: Some(0o400),
                    ..Default::default()
                }),
                ..volume("creds")
            },
            Volume {
                config_map: Some(ConfigMapVolumeSource {
                    name: "not-there".into(),
                    optional: Some(true),
                    ..Default::default()
                }),
                ..volume("optional")
            },
            Volume {
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![
                        DownwardAPIVolumeFile {
                            path: "labels".into(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: None,
                                field_path: "metadata.labels".into(),
                            }),
                            ..Default::default()
                        },
                        DownwardAPIVolumeFile {
                            path: "cpu".into(),
                            resource_field_ref: Some(ResourceFieldSelector {
                                container_name: Some("app".into()),
                                resource: "limits.cpu".into(),
                                divisor: None,
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
                ..volume("podinfo")
            },
            Volume {
                projected: Some(ProjectedVolumeSource {
                    default_mode: None,
                    sources: Some(vec![
                        VolumeProjection {
                            config_map: Some(ConfigMapProjection {
                                name: "settings".into(),
                                items: Some(vec![key("level", "level", None)]),
                                optional: None,
                            }),
                            ..Default::default()
                        },
                        VolumeProjection {
                            downward_api: Some(DownwardAPIProjection {
                                items: Some(vec![DownwardAPIVolumeFile {
                                    path: "name".into(),
                                    field_ref: Some(ObjectFieldSelector {
                                        api_version: None,
                                        field_path: "metadata.name".into(),
                                    }),
                                    ..Default::default()
                                }]),
                            }),
                            ..Default::default()
                        },
                        VolumeProjection {
                            service_account_token: Some(ServiceAccountTokenProjection {
                                path: "token".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                }),
                ..volume("projected")
            },
            Volume {
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..volume("scratch")
            },
            volume("defaulted"),
        ]
    }

    fn objects(level: &str) -> ApiObjects {
        ApiObjects::fixed(
            "prod",
            vec![config_map("settings", &[("level", level)])],
            vec![secret("creds", &[("password", "hunter2")])],
            vec![node()],
        )
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn setup_writes_every_volume_kind_and_teardown_removes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let pod = test_pod(all_volumes());
        let volumes = setup_with(&mut objects("debug"), &pod, root).await.unwrap();
        let base = root.join("uid-1/volumes");
        let path = |name: &str| volumes.get(name).unwrap().host_path.clone();

        assert_eq!(path("cfg"), base.join("kubernetes.io~configmap/cfg"));
        assert_eq!(read(&path("cfg").join("level")), "debug");
        assert_eq!(fs::read(path("cfg").join("bin")).unwrap(), vec![0, 1, 2]);
        assert_eq!(mode_of(&path("cfg").join("level")), 0o644);
        assert_eq!(read(&path("cfg-items").join("conf/level.txt")), "debug");
        assert_eq!(mode_of(&path("cfg-items").join("conf/level.txt")), 0o600);
        assert!(
            !path("cfg-items").join("x").exists(),
            "optional missing key is skipped"
        );
        assert_eq!(path("creds"), base.join("kubernetes.io~secret/creds"));
        assert_eq!(read(&path("creds").join("password")), "hunter2");
        assert_eq!(mode_of(&path("creds").join("password")), 0o400);
        assert!(
            path("optional").join(DATA_LINK).is_dir(),
            "optional volume is empty"
        );
        assert_eq!(
            path("podinfo"),
            base.join("kubernetes.io~downward-api/podinfo")
        );
        assert_eq!(read(&path("podinfo").join("labels")), "app=\"web\"");
        assert_eq!(read(&path("podinfo").join("cpu")), "3", "node allocatable");
        assert_eq!(
            path("projected"),
            base.join("kubernetes.io~projected/projected")
        );
        assert_eq!(read(&path("projected").join("level")), "debug");
        assert_eq!(read(&path("projected").join("name")), "web");
        assert!(
            !path("projected").join("token").exists(),
            "tokens are not written yet"
        );
        assert_eq!(
            path("scratch"),
            base.join("kubernetes.io~empty-dir/scratch")
        );
        assert_eq!(mode_of(&path("scratch")), 0o777);
        assert_eq!(
            path("defaulted"),
            base.join("kubernetes.io~empty-dir/defaulted")
        );
        for (name, volume) in volumes.iter() {
            let file_backed = !matches!(name, "scratch" | "defaulted");
            assert_eq!(volume.read_only, file_backed, "read-only flag of {name}");
        }
        assert!(volumes.refresh_errors().is_empty());

        // Content written to an emptyDir survives a resync.
        fs::write(path("scratch").join("keep"), "me").unwrap();
        let again = setup_with(&mut objects("debug"), &pod, root).await.unwrap();
        assert_eq!(again, volumes);
        assert_eq!(read(&path("scratch").join("keep")), "me");

        teardown(root, "uid-1").await.unwrap();
        assert!(!root.join("uid-1").exists());
        teardown(root, "uid-1").await.unwrap();
    }

    #[tokio::test]
    async fn resync_refreshes_content_and_keeps_it_when_the_source_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let pod = test_pod(all_volumes());
        let volumes = setup_with(&mut objects("debug"), &pod, root).await.unwrap();
        let cfg = volumes.get("cfg").unwrap().host_path.clone();
        let before = fs::read_link(cfg.join(DATA_LINK)).unwrap();

        setup_with(&mut objects("info"), &pod, root).await.unwrap();
        assert_eq!(read(&cfg.join("level")), "info");
        assert_ne!(fs::read_link(cfg.join(DATA_LINK)).unwrap(), before);

        let mut gone = ApiObjects::fixed("prod", vec![], vec![], vec![node()]);
        let volumes = setup_with(&mut gone, &pod, root).await.unwrap();
        assert_eq!(read(&cfg.join("level")), "info", "last content is kept");
        let failed: Vec<(&str, &str)> = volumes
            .refresh_errors()
            .iter()
            .map(|e| (e.volume.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            failed,
            vec![
                ("cfg", "configmap \"settings\" not found"),
                ("creds", "secret \"creds\" not found"),
                ("projected", "configmap \"settings\" not found"),
            ]
        );
        assert!(volumes.get("cfg").is_some());
    }

    #[tokio::test]
    async fn missing_sources_fail_a_first_setup_with_upstream_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let cases = [
            (
                Volume {
                    config_map: Some(ConfigMapVolumeSource {
                        name: "x".into(),
                        ..Default::default()
                    }),
                    ..volume("v")
                },
                "configmap \"x\" not found",
            ),
            (
                Volume {
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("x".into()),
                        ..Default::default()
                    }),
                    ..volume("v")
                },
                "secret \"x\" not found",
            ),
            (
                Volume {
                    config_map: Some(ConfigMapVolumeSource {
                        name: "settings".into(),
                        items: Some(vec![key("nope", "nope", None)]),
                        ..Default::default()
                    }),
                    ..volume("v")
                },
                "configmap references non-existent config key: nope",
            ),
            (
                Volume {
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("creds".into()),
                        items: Some(vec![key("nope", "nope", None)]),
                        ..Default::default()
                    }),
                    ..volume("v")
                },
                "references non-existent secret key: nope",
            ),
            (
                Volume {
                    persistent_volume_claim: Some(Default::default()),
                    ..volume("v")
                },
                "volume \"v\": persistentVolumeClaim volumes are not supported",
            ),
            (
                Volume {
                    host_path: Some(HostPathVolumeSource {
                        path: tmp.path().join("absent").to_string_lossy().into_owned(),
                        type_: Some("Directory".into()),
                    }),
                    ..volume("v")
                },
                "does not exist",
            ),
        ];
        for (volume, want) in cases {
            let pod = test_pod(vec![volume]);
            let err = setup_with(&mut objects("debug"), &pod, tmp.path())
                .await
                .unwrap_err();
            assert!(err.to_string().ends_with(want), "want {want:?}, got {err}");
            assert_eq!(err.volume(), Some("v"));
        }
    }

    #[tokio::test]
    async fn host_path_volumes_are_the_host_path() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host/logs");
        let pod = test_pod(vec![Volume {
            host_path: Some(HostPathVolumeSource {
                path: host.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..volume("logs")
        }]);
        let volumes = setup_with(&mut objects("debug"), &pod, &tmp.path().join("pods"))
            .await
            .unwrap();
        assert_eq!(
            volumes.get("logs"),
            Some(&PodVolume {
                host_path: host.clone(),
                read_only: false
            })
        );
        assert!(host.is_dir());
    }

    #[tokio::test]
    async fn bad_uids_and_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut pod = test_pod(vec![]);
        pod.metadata.uid = Some("../etc".into());
        assert!(matches!(
            setup_with(&mut objects("x"), &pod, tmp.path()).await,
            Err(VolumeError::InvalidPodUid(_))
        ));
        assert!(matches!(
            teardown(tmp.path(), "..").await,
            Err(VolumeError::InvalidPodUid(_))
        ));
        let pod = test_pod(vec![volume("a/b")]);
        assert!(matches!(
            setup_with(&mut objects("x"), &pod, tmp.path()).await,
            Err(VolumeError::InvalidVolumeName(_))
        ));
    }

    /// Needs root (mount, umount), as the kubelet's tests on containerd do.
    #[tokio::test]
    async fn memory_empty_dir_is_a_tmpfs_unmounted_on_teardown() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = test_pod(vec![Volume {
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(K8sQuantity("1Mi".into())),
            }),
            ..volume("cache")
        }]);
        let volumes = setup_with(&mut objects("x"), &pod, tmp.path())
            .await
            .unwrap();
        let dir = volumes.get("cache").unwrap().host_path.clone();
        assert!(
            is_mount_point(&dir).unwrap(),
            "tmpfs should be mounted on {}",
            dir.display()
        );
        // A second sync does not mount again.
        setup_with(&mut objects("x"), &pod, tmp.path())
            .await
            .unwrap();
        let canonical = fs::canonicalize(&dir).unwrap();
        let count = mount_points()
            .unwrap()
            .iter()
            .filter(|m| **m == canonical)
            .count();
        assert_eq!(count, 1, "exactly one mount on {}", dir.display());
        teardown(tmp.path(), "uid-1").await.unwrap();
        assert!(!tmp.path().join("uid-1").exists());
        assert!(!mount_points().unwrap().contains(&canonical));
    }
}
