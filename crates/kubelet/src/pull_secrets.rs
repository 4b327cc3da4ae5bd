//! Registry credentials for image pulls from a pod's `imagePullSecrets`, as upstream's
//! credential provider keyring picks them: `kubernetes.io/dockerconfigjson` and
//! `kubernetes.io/dockercfg` Secrets, whose entries are keyed by registry (`quay.io`,
//! `quay.io/team`, `https://index.docker.io/v1/`, `*.example.com`). The first Secret (in the
//! pod's order) with an entry matching the image wins; within a Secret, more specific keys
//! match first. Images without a registry domain are Docker Hub's, matched by the keys
//! `docker.io`, `index.docker.io` or `https://index.docker.io/v1/`.
//!
//! Upstream would also hand Docker Hub credentials to images on a domain-less registry such
//! as `localhost/app`; here only images that really are on Docker Hub get them. Upstream
//! retries a failed pull with each matching credential; here only the first is returned.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{Pod, Secret};
use rkube_client::{Api, Client};
use serde::Deserialize;

use crate::env::{pod_key, pod_namespace};
use crate::runtime::cri;

/// Docker Hub's domain, as image references name it.
const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's domain in older references.
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
/// The Secret type of `~/.docker/config.json` content.
const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// The key of `~/.docker/config.json` content in such a Secret.
const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// The Secret type of legacy `~/.dockercfg` content.
const DOCKER_CFG_TYPE: &str = "kubernetes.io/dockercfg";
/// The key of `~/.dockercfg` content in such a Secret.
const DOCKER_CFG_KEY: &str = ".dockercfg";

/// The credentials to pull `image` with, from the pod's `imagePullSecrets`; `None` when no
/// Secret has an entry for the image's registry (the pull then goes without credentials).
/// Secrets that are missing, unreadable or malformed are skipped with a warning.
pub async fn pull_auth(client: &Client, pod: &Pod, image: &str) -> Option<cri::AuthConfig> {
    let names: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.as_str())
        .filter(|name| !name.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    let api = Api::<Secret>::namespaced(client.clone(), pod_namespace(pod));
    let mut keyrings = Vec::new();
    for name in names {
        match api.get_opt(name).await {
            Ok(Some(secret)) => {
                if let Some(keyring) = keyring_of(&secret, &pod_key(pod), name) {
                    keyrings.push(keyring);
                }
            }
            Ok(None) => tracing::warn!(
                pod = %pod_key(pod),
                secret = name,
                "image pull secret not found, skipping"
            ),
            Err(error) => tracing::warn!(
                pod = %pod_key(pod),
                secret = name,
                %error,
                "reading image pull secret failed, skipping"
            ),
        }
    }
    lookup(&keyrings, image)
}

/// The registry domain of an image reference, as Docker normalizes it: the first path
/// component when it looks like a host (has a `.` or `:`, is `localhost`, or has capitals),
/// otherwise `docker.io`. `index.docker.io` is `docker.io`.
pub fn image_registry(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            if first == LEGACY_DOCKER_HUB {
                DOCKER_HUB
            } else {
                first
            }
        }
        _ => DOCKER_HUB,
    }
}

/// The image's repository with its registry and without tag or digest, as upstream matches
/// keys against: `nginx:1.27` is `docker.io/library/nginx`.
fn normalized_repository(image: &str) -> String {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    let registry = image_registry(without_digest);
    let path = match without_digest.split_once('/') {
        Some((first, rest))
            if registry != DOCKER_HUB || first == DOCKER_HUB || first == LEGACY_DOCKER_HUB =>
        {
            rest
        }
        _ => without_digest,
    };
    // A tag is a `:` after the last `/`; the registry (which may have a port) is gone.
    let last_slash = path.rfind('/').map_or(0, |i| i + 1);
    let path = match path[last_slash..].rfind(':') {
        Some(colon) => &path[..last_slash + colon],
        None => path,
    };
    if registry == DOCKER_HUB && !path.contains('/') {
        format!("{registry}/library/{path}")
    } else {
        format!("{registry}/{path}")
    }
}

/// One registry's credentials from a Docker config.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Credential {
    username: String,
    password: String,
    /// The config's `auth` field as given (base64 of `user:pass`), if any.
    auth: String,
}

/// The entries of one pull Secret, by upstream's normalized key, most specific first.
#[derive(Debug, Default)]
struct Keyring {
    entries: Vec<(String, Credential)>,
}

/// An entry of a Docker config file.
#[derive(Debug, Default, Deserialize)]
struct DockerConfigEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

/// `~/.docker/config.json`: entries under `auths`.
#[derive(Debug, Default, Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerConfigEntry>,
}

/// The keyring of a pull Secret, or `None` (with a warning) when it has no usable content.
fn keyring_of(secret: &Secret, pod: &str, name: &str) -> Option<Keyring> {
    let data = secret.data.as_ref();
    let content = |key: &str| {
        data.and_then(|d| d.get(key))
            .map(|v| v.0.as_slice())
            .filter(|v| !v.is_empty())
    };
    let parsed = match secret.type_.as_deref() {
        Some(DOCKER_CONFIG_JSON_TYPE) => content(DOCKER_CONFIG_JSON_KEY)
            .map(|raw| serde_json::from_slice::<DockerConfigJson>(raw).map(|c| c.auths)),
        Some(DOCKER_CFG_TYPE) => content(DOCKER_CFG_KEY).map(serde_json::from_slice),
        _ => None,
    };
    match parsed {
        None => {
            tracing::warn!(
                pod,
                secret = name,
                "image pull secret has no docker config, skipping"
            );
            None
        }
        Some(Err(error)) => {
            tracing::warn!(
                pod,
                secret = name,
                %error,
                "image pull secret is not a valid docker config, skipping"
            );
            None
        }
        Some(Ok(entries)) => Some(keyring_from_entries(entries, pod, name)),
    }
}

/// Upstream's `BasicDockerKeyring.Add`: keys lose their scheme and a `/v1/` or `/v2/` path,
/// an `auth` field replaces username and password, and keys are sorted most specific first.
fn keyring_from_entries(
    entries: std::collections::BTreeMap<String, DockerConfigEntry>,
    pod: &str,
    secret: &str,
) -> Keyring {
    let mut keyring = Keyring::default();
    for (location, entry) in entries {
        let credential = match credential_of(entry) {
            Ok(c) => c,
            Err(reason) => {
                tracing::warn!(
                    pod,
                    secret,
                    registry = %location,
                    reason,
                    "skipping image pull secret entry"
                );
                continue;
            }
        };
        let key = normalize_key(&location);
        if key.is_empty() {
            continue;
        }
        keyring.entries.push((key, credential));
    }
    // Reverse order, as upstream: `quay.io/team` before `quay.io`. Stable, so duplicates
    // keep their config order.
    keyring.entries.sort_by(|a, b| b.0.cmp(&a.0));
    keyring
}

fn credential_of(entry: DockerConfigEntry) -> Result<Credential, &'static str> {
    if entry.auth.is_empty() {
        return Ok(Credential {
            username: entry.username,
            password: entry.password,
            auth: String::new(),
        });
    }
    let decoded = STANDARD
        .decode(entry.auth.trim())
        .map_err(|_| "auth field is not valid base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "auth field is not valid utf-8")?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or("unable to parse auth field, must be formatted as base64(username:password)")?;
    Ok(Credential {
        username: username.to_string(),
        password: password.to_string(),
        auth: entry.auth,
    })
}

/// A config key as upstream indexes it: `https://index.docker.io/v1/` is `index.docker.io`,
/// `http://quay.io/v2/team` is `quay.io/team`.
fn normalize_key(location: &str) -> String {
    let rest = location
        .strip_prefix("https://")
        .or_else(|| location.strip_prefix("http://"))
        .unwrap_or(location);
    let (host, path) = split_host_path(rest);
    let path = if path.starts_with("/v2/") || path.starts_with("/v1/") {
        &path[3..]
    } else {
        path
    };
    if path.is_empty() || path == "/" {
        host.to_string()
    } else {
        format!("{host}{path}")
    }
}

/// `host/path` as (`host`, `/path`); the path is empty when there is none. Query, fragment
/// and user info are dropped as a URL parser would separate them.
fn split_host_path(s: &str) -> (&str, &str) {
    let s = s.split(['?', '#']).next().unwrap_or(s);
    let (authority, path) = match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    (host, path)
}

/// Host name labels and port of a `host[:port]`.
fn split_port(host: &str) -> (&str, &str) {
    if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:5000`.
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':').unwrap_or("")),
            None => (host, ""),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port),
        _ => (host, ""),
    }
}

/// Upstream's `URLsMatchStr`: same port, same number of host labels each matching the key's
/// label as a glob (`*.example.com`), and the key's path a prefix of the image's.
fn key_matches(key: &str, repository: &str) -> bool {
    let (key_host, key_path) = split_host_path(key);
    let (target_host, target_path) = split_host_path(repository);
    let (key_host, key_port) = split_port(key_host);
    let (target_host, target_port) = split_port(target_host);
    if key_port != target_port || !target_path.starts_with(key_path) {
        return false;
    }
    let key_labels: Vec<&str> = key_host.split('.').collect();
    let target_labels: Vec<&str> = target_host.split('.').collect();
    key_labels.len() == target_labels.len()
        && key_labels
            .iter()
            .zip(&target_labels)
            .all(|(pattern, label)| glob_match(pattern.as_bytes(), label.as_bytes()))
}

/// Shell-style matching of one host label: `*` any run, `?` one character, `[...]` a class.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().skip(1).position(|&b| b == b']').map(|i| i + 1) else {
                return text.first() == Some(&b'[') && glob_match(rest, &text[1..]);
            };
            let Some((&c, text_rest)) = text.split_first() else {
                return false;
            };
            let (negate, class) = match rest[..close].split_first() {
                Some((b'^', class)) => (true, class),
                _ => (false, &rest[..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= (class[i]..=class[i + 2]).contains(&c);
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob_match(&rest[close + 1..], text_rest)
        }
        Some((&p, rest)) => text.first() == Some(&p) && glob_match(rest, &text[1..]),
    }
}

/// The first credential for `image` across `keyrings`, as upstream's union keyring: per
/// keyring, matching keys most specific first, then its Docker Hub entry for Docker Hub
/// images.
fn lookup(keyrings: &[Keyring], image: &str) -> Option<cri::AuthConfig> {
    let repository = normalized_repository(image);
    let on_docker_hub = image_registry(image) == DOCKER_HUB;
    keyrings.iter().find_map(|keyring| {
        let matched = keyring
            .entries
            .iter()
            .find(|(key, _)| key_matches(key, &repository))
            .or_else(|| {
                on_docker_hub
                    .then(|| {
                        keyring
                            .entries
                            .iter()
                            .find(|(key, _)| key == LEGACY_DOCKER_HUB)
                    })
                    .flatten()
            })?;
        let credential = &matched.1;
        Some(cri::AuthConfig {
            username: credential.username.clone(),
            password: credential.password.clone(),
            auth: credential.auth.clone(),
            // Left empty as upstream does: containerd ignores credentials whose server
            // address is not the host it pulls from (registry-1.docker.io for Docker Hub).
            ..Default::default()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    #[test]
    fn futures_are_send() {
        fn is_send<T: Send>(_: T) {}
        // Type-checked only: the pod workers spawn this.
        let _ = |client: &Client, pod: &Pod| is_send(pull_auth(client, pod, "nginx"));
    }

    #[test]
    fn registries_of_images() {
        let cases = [
            ("nginx", "docker.io"),
            ("nginx:1.27", "docker.io"),
            ("library/nginx", "docker.io"),
            ("docker.io/library/nginx", "docker.io"),
            ("index.docker.io/library/nginx", "docker.io"),
            ("quay.io/coreos/etcd:v3", "quay.io"),
            ("localhost/app", "localhost"),
            ("localhost:5000/app", "localhost:5000"),
            ("registry.k8s.io/pause@sha256:abcd", "registry.k8s.io"),
            ("Registry/app", "Registry"),
            ("team/app:latest", "docker.io"),
        ];
        for (image, want) in cases {
            assert_eq!(image_registry(image), want, "registry of {image}");
        }
    }

    #[test]
    fn repositories_are_normalized() {
        let cases = [
            ("nginx", "docker.io/library/nginx"),
            ("nginx:1.27", "docker.io/library/nginx"),
            ("team/app:v1", "docker.io/team/app"),
            ("docker.io/nginx", "docker.io/library/nginx"),
            ("index.docker.io/team/app", "docker.io/team/app"),
            ("localhost:5000/app:v1", "localhost:5000/app"),
            ("quay.io/coreos/etcd@sha256:abcd", "quay.io/coreos/etcd"),
            ("gcr.io/p/app:v1@sha256:abcd", "gcr.io/p/app"),
        ];
        for (image, want) in cases {
            assert_eq!(normalized_repository(image), want, "repository of {image}");
        }
    }

    #[test]
    fn keys_are_normalized_like_upstream() {
        assert_eq!(
            normalize_key("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(normalize_key("http://quay.io/v2/team"), "quay.io/team");
        assert_eq!(normalize_key("quay.io"), "quay.io");
        assert_eq!(normalize_key("registry:5000/"), "registry:5000");
        assert_eq!(normalize_key("quay.io/team/sub"), "quay.io/team/sub");
    }

    #[test]
    fn keys_match_by_host_port_path_and_glob() {
        assert!(key_matches("quay.io", "quay.io/coreos/etcd"));
        assert!(key_matches("quay.io/coreos", "quay.io/coreos/etcd"));
        assert!(!key_matches("quay.io/other", "quay.io/coreos/etcd"));
        assert!(!key_matches("quay.io", "gcr.io/coreos/etcd"));
        assert!(key_matches("*.example.com", "eu.example.com/app"));
        assert!(
            !key_matches("*.example.com", "example.com/app"),
            "label counts differ"
        );
        assert!(!key_matches("*.example.com", "a.b.example.com/app"));
        assert!(key_matches("registry:5000", "registry:5000/app"));
        assert!(
            !key_matches("registry", "registry:5000/app"),
            "ports differ"
        );
        assert!(!key_matches("registry:5000", "registry/app"));
        assert!(key_matches("reg-[0-9].io", "reg-7.io/app"));
        assert!(!key_matches("reg-[^0-9].io", "reg-7.io/app"));
        assert!(key_matches("r*.io", "reg.io/app"));
        assert!(key_matches("docker.io", "docker.io/library/nginx"));
    }

    fn encode(user: &str, pass: &str) -> String {
        STANDARD.encode(format!("{user}:{pass}"))
    }

    fn config_json(entries: &[(&str, &str, &str)]) -> Vec<u8> {
        let auths: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(key, user, pass)| {
                (
                    key.to_string(),
                    serde_json::json!({ "auth": encode(user, pass) }),
                )
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap()
    }

    fn pull_secret(type_: &str, key: &str, content: Vec<u8>) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([(key.to_string(), ByteString(content))])),
            ..Default::default()
        }
    }

    fn keyring(entries: &[(&str, &str, &str)]) -> Keyring {
        let secret = pull_secret(
            DOCKER_CONFIG_JSON_TYPE,
            DOCKER_CONFIG_JSON_KEY,
            config_json(entries),
        );
        keyring_of(&secret, "ns/pod", "pull").expect("a keyring")
    }

    fn user_for(keyrings: &[Keyring], image: &str) -> Option<String> {
        lookup(keyrings, image).map(|auth| auth.username)
    }

    #[test]
    fn most_specific_entry_wins_and_docker_hub_keys_match_plain_images() {
        let keyrings = [keyring(&[
            ("quay.io", "quay", "p1"),
            ("quay.io/team", "team", "p2"),
            ("https://index.docker.io/v1/", "hub", "p3"),
            ("registry.local:5000", "local", "p4"),
        ])];
        assert_eq!(
            user_for(&keyrings, "quay.io/team/app:v1").as_deref(),
            Some("team")
        );
        assert_eq!(
            user_for(&keyrings, "quay.io/other/app").as_deref(),
            Some("quay")
        );
        assert_eq!(user_for(&keyrings, "nginx").as_deref(), Some("hub"));
        assert_eq!(
            user_for(&keyrings, "docker.io/team/app").as_deref(),
            Some("hub")
        );
        assert_eq!(
            user_for(&keyrings, "registry.local:5000/app").as_deref(),
            Some("local")
        );
        assert_eq!(user_for(&keyrings, "gcr.io/p/app"), None);
        assert_eq!(user_for(&keyrings, "localhost/app"), None, "not Docker Hub");

        let auth = lookup(&keyrings, "quay.io/team/app").unwrap();
        assert_eq!(auth.password, "p2");
        assert_eq!(auth.auth, encode("team", "p2"));
        assert_eq!(auth.server_address, "");
    }

    #[test]
    fn docker_io_keys_and_earlier_secrets_win() {
        let keyrings = [
            keyring(&[("gcr.io", "first", "x")]),
            keyring(&[("docker.io", "hub", "y"), ("gcr.io", "second", "z")]),
        ];
        assert_eq!(user_for(&keyrings, "busybox").as_deref(), Some("hub"));
        assert_eq!(
            user_for(&keyrings, "gcr.io/p/app").as_deref(),
            Some("first")
        );
    }

    #[test]
    fn legacy_dockercfg_and_plain_username_password() {
        let content = serde_json::to_vec(&serde_json::json!({
            "https://quay.io": { "username": "u", "password": "p", "email": "e@x" },
        }))
        .unwrap();
        let secret = pull_secret(DOCKER_CFG_TYPE, DOCKER_CFG_KEY, content);
        let keyrings = [keyring_of(&secret, "ns/pod", "legacy").unwrap()];
        let auth = lookup(&keyrings, "quay.io/a/b").unwrap();
        assert_eq!(
            (
                auth.username.as_str(),
                auth.password.as_str(),
                auth.auth.as_str()
            ),
            ("u", "p", "")
        );
    }

    #[test]
    fn unusable_secrets_and_entries_are_skipped() {
        let wrong_type = pull_secret(
            "Opaque",
            DOCKER_CONFIG_JSON_KEY,
            config_json(&[("quay.io", "u", "p")]),
        );
        assert!(keyring_of(&wrong_type, "ns/pod", "s").is_none());
        let garbage = pull_secret(
            DOCKER_CONFIG_JSON_TYPE,
            DOCKER_CONFIG_JSON_KEY,
            b"not json".to_vec(),
        );
        assert!(keyring_of(&garbage, "ns/pod", "s").is_none());
        let wrong_key = pull_secret(
            DOCKER_CONFIG_JSON_TYPE,
            DOCKER_CFG_KEY,
            config_json(&[("quay.io", "u", "p")]),
        );
        assert!(keyring_of(&wrong_key, "ns/pod", "s").is_none());

        let content = serde_json::to_vec(&serde_json::json!({ "auths": {
            "quay.io": { "auth": "!!!" },
            "gcr.io": { "auth": STANDARD.encode("no-colon") },
            "ghcr.io": { "auth": encode("ok", "pw") },
        }}))
        .unwrap();
        let secret = pull_secret(DOCKER_CONFIG_JSON_TYPE, DOCKER_CONFIG_JSON_KEY, content);
        let keyrings = [keyring_of(&secret, "ns/pod", "s").unwrap()];
        assert_eq!(user_for(&keyrings, "quay.io/a"), None);
        assert_eq!(user_for(&keyrings, "gcr.io/a"), None);
        assert_eq!(user_for(&keyrings, "ghcr.io/a").as_deref(), Some("ok"));
    }
}
