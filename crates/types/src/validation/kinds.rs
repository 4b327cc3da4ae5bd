//! Per-kind validation: decodes an object into its `k8s-openapi` type and checks the required
//! fields Kubernetes checks for workloads, jobs, services, config maps and secrets.

use super::pod::{RESTART_POLICIES, check_protocol, effective_restart_policy, validate_pod_spec};
use super::{
    DecodeFailure, decode, go_map, invalid_raw, is_config_map_key, is_dns1123_label,
    is_dns1123_subdomain, is_qualified_name, is_valid_label_value, is_valid_port_name,
    is_valid_port_num, required_because, too_long, validate_annotations, validate_labels,
};
use crate::registry::ResourceInfo;
use crate::selector::LabelSelector;
use crate::status::StatusCause;
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::api::{apps, batch, core};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Largest total size of a ConfigMap's or Secret's data, in bytes.
const MAX_DATA_SIZE: usize = 1024 * 1024;

type Object = Map<String, Value>;

/// Decodes and validates an object of `info`'s kind. `Err` carries the decoder's message.
pub(super) fn validate_kind(
    info: &ResourceInfo,
    obj: &Object,
) -> Result<Vec<StatusCause>, DecodeFailure> {
    Ok(match (info.group, info.kind) {
        ("", "Pod") => {
            let pod: core::v1::Pod = decode(obj)?;
            validate_pod_spec(&pod.spec.unwrap_or_default(), "spec", true)
        }
        ("", "PodTemplate") => {
            let template: core::v1::PodTemplate = decode(obj)?;
            validate_template(template.template.as_ref(), "template")
        }
        ("", "ReplicationController") => {
            let rc: core::v1::ReplicationController = decode(obj)?;
            validate_replication_controller(&rc.spec.unwrap_or_default())
        }
        ("", "Service") => {
            let svc: core::v1::Service = decode(obj)?;
            validate_service(&svc.spec.unwrap_or_default())
        }
        ("", "ConfigMap") => validate_config_map(&decode(obj)?),
        ("", "Secret") => validate_secret(&decode(obj)?),
        ("apps", "Deployment") => {
            let d: apps::v1::Deployment = decode(obj)?;
            let spec = d.spec.unwrap_or_default();
            let mut causes = validate_replicas(spec.replicas);
            causes.extend(validate_workload(
                obj,
                "deployment",
                "ReplicaSet",
                &spec.selector,
                &spec.template,
            ));
            causes.extend(validate_deployment_rollout(&spec));
            causes
        }
        ("apps", "ReplicaSet") => {
            let rs: apps::v1::ReplicaSet = decode(obj)?;
            let spec = rs.spec.unwrap_or_default();
            let mut causes = validate_replicas(spec.replicas);
            let template = spec.template.unwrap_or_default();
            causes.extend(validate_workload(
                obj,
                "replicaset",
                "ReplicaSet",
                &spec.selector,
                &template,
            ));
            causes
        }
        ("apps", "DaemonSet") => {
            let ds: apps::v1::DaemonSet = decode(obj)?;
            let spec = ds.spec.unwrap_or_default();
            let mut causes = validate_workload(
                obj,
                "daemonset",
                "DaemonSet",
                &spec.selector,
                &spec.template,
            );
            causes.extend(validate_daemon_set_strategy(spec.update_strategy.as_ref()));
            causes
        }
        ("apps", "StatefulSet") => {
            let sts: apps::v1::StatefulSet = decode(obj)?;
            let spec = sts.spec.unwrap_or_default();
            let mut causes = validate_replicas(spec.replicas);
            causes.extend(validate_workload(
                obj,
                "statefulset",
                "StatefulSet",
                &spec.selector,
                &spec.template,
            ));
            causes.extend(nonnegative(
                spec.ordinals.as_ref().and_then(|o| o.start),
                "spec.ordinals.start",
            ));
            causes.extend(nonnegative(
                spec.update_strategy
                    .as_ref()
                    .and_then(|u| u.rolling_update.as_ref())
                    .and_then(|r| r.partition),
                "spec.updateStrategy.rollingUpdate.partition",
            ));
            causes
        }
        ("batch", "Job") => {
            let job: batch::v1::Job = decode(obj)?;
            validate_job_spec(&job.spec.unwrap_or_default(), "spec")
        }
        ("batch", "CronJob") => {
            let cj: batch::v1::CronJob = decode(obj)?;
            validate_cron_job(&cj.spec.unwrap_or_default())
        }
        _ => {
            check_decodes(info, obj)?;
            Vec::new()
        }
    })
}

/// Decodes the kinds without further checks, so type errors are still reported.
fn check_decodes(info: &ResourceInfo, obj: &Object) -> Result<(), DecodeFailure> {
    macro_rules! decodes {
        ($($ty:ty),* $(,)?) => {
            $(
                if info.group == <$ty as k8s_openapi::Resource>::GROUP
                    && info.kind == <$ty as k8s_openapi::Resource>::KIND
                {
                    return decode::<$ty>(obj).map(drop);
                }
            )*
        };
    }
    crate::for_each_kind!(decodes);
    Ok(())
}

/// Kubernetes' `ValidateNonnegativeField`.
fn nonnegative(value: Option<impl Into<i64>>, field: &str) -> Option<StatusCause> {
    let value: i64 = value?.into();
    (value < 0).then(|| invalid_raw(field, value, "must be greater than or equal to 0"))
}

fn validate_replicas(replicas: Option<i32>) -> Vec<StatusCause> {
    nonnegative(replicas, "spec.replicas").into_iter().collect()
}

/// Kubernetes' `ValidatePodTemplateSpec` at `path`: template labels and annotations, pod spec.
fn validate_template(template: Option<&PodTemplateSpec>, path: &str) -> Vec<StatusCause> {
    let meta = template.and_then(|t| t.metadata.as_ref());
    let mut causes = validate_labels(
        meta.and_then(|m| m.labels.as_ref()),
        &format!("{path}.labels"),
    );
    causes.extend(validate_annotations(
        meta.and_then(|m| m.annotations.as_ref()),
        &format!("{path}.annotations"),
    ));
    let empty = PodSpec::default();
    let spec = template.and_then(|t| t.spec.as_ref()).unwrap_or(&empty);
    causes.extend(validate_pod_spec(spec, &format!("{path}.spec"), false));
    causes
}

/// The labels of a template's metadata.
fn template_labels(template: &PodTemplateSpec) -> Option<&BTreeMap<String, String>> {
    template.metadata.as_ref().and_then(|m| m.labels.as_ref())
}

/// Whether the raw object has a non-null value at `spec.<field>`.
fn spec_has(obj: &Object, field: &str) -> bool {
    obj.get("spec")
        .and_then(|s| s.get(field))
        .is_some_and(|v| !v.is_null())
}

/// Kubernetes' `ValidateLabelSelector` at `path`.
fn validate_label_selector(sel: &metav1::LabelSelector, path: &str) -> Vec<StatusCause> {
    let mut causes = validate_labels(sel.match_labels.as_ref(), &format!("{path}.matchLabels"));
    for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => causes.push(required_because(
                format!("{at}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(StatusCause::forbidden(
                format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(StatusCause::invalid(
                format!("{at}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
        for msg in is_qualified_name(&expr.key) {
            causes.push(StatusCause::invalid(format!("{at}.key"), &expr.key, msg));
        }
        for (j, value) in values.iter().enumerate() {
            for msg in is_valid_label_value(value) {
                causes.push(StatusCause::invalid(
                    format!("{at}.values[{j}]"),
                    value,
                    msg,
                ));
            }
        }
    }
    causes
}

/// Selector and template of Deployments, ReplicaSets, DaemonSets and StatefulSets.
/// `noun` names the kind in the empty-selector message; `owner` in the activeDeadlineSeconds one.
fn validate_workload(
    obj: &Object,
    noun: &str,
    owner: &str,
    selector: &metav1::LabelSelector,
    template: &PodTemplateSpec,
) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let mut parsed = None;
    if !spec_has(obj, "selector") {
        causes.push(StatusCause::required("spec.selector"));
    } else {
        causes.extend(validate_label_selector(selector, "spec.selector"));
        let empty = selector
            .match_labels
            .as_ref()
            .is_none_or(BTreeMap::is_empty)
            && selector
                .match_expressions
                .as_ref()
                .is_none_or(Vec::is_empty);
        if empty {
            causes.push(invalid_raw(
                "spec.selector",
                "v1.LabelSelector{MatchLabels:map[string]string(nil), \
                 MatchExpressions:[]v1.LabelSelectorRequirement(nil)}",
                &format!("empty selector is invalid for {noun}"),
            ));
        } else {
            parsed = LabelSelector::from_api(selector).ok();
        }
    }
    causes.extend(validate_template_for_controller(
        template,
        parsed.as_ref(),
        owner,
        "spec.template",
    ));
    causes
}

/// The rollout fields of a Deployment (upstream's `ValidateDeploymentStrategy` and the
/// rest of `ValidateDeploymentSpec`): the strategy type, maxSurge and maxUnavailable as
/// non-negative ints or percentages (not both zero, unavailability at most 100%),
/// non-negative minReadySeconds and revisionHistoryLimit, and a progress deadline longer
/// than minReadySeconds.
fn validate_deployment_rollout(spec: &apps::v1::DeploymentSpec) -> Vec<StatusCause> {
    let mut causes: Vec<StatusCause> = [
        nonnegative(spec.min_ready_seconds, "spec.minReadySeconds"),
        nonnegative(spec.revision_history_limit, "spec.revisionHistoryLimit"),
        nonnegative(
            spec.progress_deadline_seconds,
            "spec.progressDeadlineSeconds",
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(deadline) = spec.progress_deadline_seconds
        && deadline <= spec.min_ready_seconds.unwrap_or(0)
    {
        causes.push(invalid_raw(
            "spec.progressDeadlineSeconds",
            deadline,
            "must be greater than minReadySeconds",
        ));
    }
    let Some(strategy) = &spec.strategy else {
        return causes;
    };
    let path = "spec.strategy.rollingUpdate";
    match strategy.type_.as_deref().unwrap_or("RollingUpdate") {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                causes.push(StatusCause::forbidden(
                    path,
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let Some(rolling) = &strategy.rolling_update else {
                return causes;
            };
            let unavailable = rolling.max_unavailable.as_ref();
            let surge = rolling.max_surge.as_ref();
            let unavailable_path = format!("{path}.maxUnavailable");
            causes.extend(int_or_percent(unavailable, &unavailable_path));
            causes.extend(int_or_percent(surge, &format!("{path}.maxSurge")));
            if int_or_percent_value(unavailable) == Some(0)
                && int_or_percent_value(surge) == Some(0)
            {
                causes.push(invalid_raw(
                    unavailable_path.as_str(),
                    show_int_or_string(unavailable),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            causes.extend(not_over_100_percent(unavailable, &unavailable_path));
        }
        other => causes.push(StatusCause::not_supported(
            "spec.strategy.type",
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
    causes
}

/// Upstream's `ValidateDaemonSetUpdateStrategy` and `ValidateRollingUpdateDaemonSet`:
/// OnDelete or RollingUpdate; maxUnavailable and maxSurge non-negative ints or percentages
/// of at most 100%, exactly one of them non-zero.
fn validate_daemon_set_strategy(
    strategy: Option<&apps::v1::DaemonSetUpdateStrategy>,
) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let Some(strategy) = strategy else {
        return causes;
    };
    let path = "spec.updateStrategy.rollingUpdate";
    match strategy.type_.as_deref().unwrap_or("RollingUpdate") {
        "OnDelete" => {}
        "RollingUpdate" => {
            let Some(rolling) = &strategy.rolling_update else {
                return causes;
            };
            let unavailable_path = format!("{path}.maxUnavailable");
            let surge_path = format!("{path}.maxSurge");
            let unavailable = rolling.max_unavailable.as_ref();
            let surge = rolling.max_surge.as_ref();
            causes.extend(int_or_percent(unavailable, &unavailable_path));
            causes.extend(int_or_percent(surge, &surge_path));
            causes.extend(not_over_100_percent(unavailable, &unavailable_path));
            causes.extend(not_over_100_percent(surge, &surge_path));
            let has_unavailable = int_or_percent_value(unavailable).unwrap_or(0) != 0;
            let has_surge = int_or_percent_value(surge).unwrap_or(0) != 0;
            match (has_unavailable, has_surge) {
                (true, true) => causes.push(invalid_raw(
                    surge_path.as_str(),
                    show_int_or_string(surge),
                    "may not be set when maxUnavailable is non-zero",
                )),
                (false, false) => causes.push(required_because(
                    unavailable_path,
                    "cannot be 0 when maxSurge is 0",
                )),
                _ => {}
            }
        }
        other => causes.push(StatusCause::not_supported(
            "spec.updateStrategy.type",
            other,
            &["OnDelete", "RollingUpdate"],
        )),
    }
    causes
}

/// Upstream's `ValidatePositiveIntOrPercent`: a non-negative int or a `[0-9]+%` string.
fn int_or_percent(value: Option<&IntOrString>, path: &str) -> Option<StatusCause> {
    match value? {
        IntOrString::Int(n) => nonnegative(Some(*n), path),
        IntOrString::String(s) => percent_of(s).is_none().then(|| {
            StatusCause::invalid(
                path,
                s,
                "a valid percent string must be a numeric string followed by an ending '%' \
                 (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )
        }),
    }
}

/// Upstream's `IsNotMoreThan100Percent`: a percentage over 100% is refused (an int is not
/// checked).
fn not_over_100_percent(value: Option<&IntOrString>, path: &str) -> Option<StatusCause> {
    match value? {
        IntOrString::String(s) if percent_of(s).is_some_and(|v| v > 100) => Some(
            StatusCause::invalid(path, s, "must not be greater than 100%"),
        ),
        _ => None,
    }
}

/// The number of `[0-9]+%`, if `s` is one (saturating for absurd lengths).
fn percent_of(s: &str) -> Option<u64> {
    let digits = s.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

/// The int, or the percentage's number, of a valid value; `None` when unset or invalid.
fn int_or_percent_value(value: Option<&IntOrString>) -> Option<i64> {
    match value? {
        IntOrString::Int(n) => Some(i64::from(*n)),
        IntOrString::String(s) => percent_of(s).map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
    }
}

fn show_int_or_string(value: Option<&IntOrString>) -> String {
    match value {
        None => "null".to_string(),
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => format!("{s:?}"),
    }
}

/// Kubernetes' `ValidatePodTemplateSpecForReplicaSet`: the selector matches the template's
/// labels, the pod spec is valid, and pods restart `Always`.
fn validate_template_for_controller(
    template: &PodTemplateSpec,
    selector: Option<&LabelSelector>,
    owner: &str,
    path: &str,
) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let labels = template_labels(template);
    if let Some(selector) = selector.filter(|s| !s.is_everything())
        && !selector.matches(labels.unwrap_or(&BTreeMap::new()))
    {
        causes.push(invalid_raw(
            format!("{path}.metadata.labels"),
            go_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
    causes.extend(validate_template(Some(template), path));
    let spec = template.spec.as_ref();
    let policy = effective_restart_policy(spec);
    if policy != "Always" && RESTART_POLICIES.contains(&policy) {
        causes.push(StatusCause::not_supported(
            format!("{path}.spec.restartPolicy"),
            policy,
            &["Always"],
        ));
    }
    if spec.is_some_and(|s| s.active_deadline_seconds.is_some()) {
        causes.push(StatusCause::forbidden(
            format!("{path}.spec.activeDeadlineSeconds"),
            format!("activeDeadlineSeconds in {owner} is not Supported"),
        ));
    }
    causes
}

fn validate_replication_controller(spec: &core::v1::ReplicationControllerSpec) -> Vec<StatusCause> {
    let mut causes = validate_replicas(spec.replicas);
    // Kubernetes defaults an empty selector to the template's labels.
    let selector = spec
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
        .or_else(|| spec.template.as_ref().and_then(template_labels))
        .filter(|s| !s.is_empty());
    let Some(selector) = selector else {
        causes.push(StatusCause::required("spec.selector"));
        if spec.template.is_none() {
            causes.push(StatusCause::required("spec.template"));
        }
        return causes;
    };
    causes.extend(validate_labels(Some(selector), "spec.selector"));
    let parsed = LabelSelector::from_labels(selector).ok();
    match &spec.template {
        None => causes.push(StatusCause::required("spec.template")),
        Some(template) => causes.extend(validate_template_for_controller(
            template,
            parsed.as_ref(),
            "ReplicationController",
            "spec.template",
        )),
    }
    causes
}

/// Kubernetes' `validateJobSpec` at `path` (`spec` for jobs, `spec.jobTemplate.spec` for cron
/// jobs). A selector is optional here: the API server generates it for jobs.
fn validate_job_spec(spec: &batch::v1::JobSpec, path: &str) -> Vec<StatusCause> {
    let mut causes: Vec<StatusCause> = [
        nonnegative(spec.parallelism, &format!("{path}.parallelism")),
        nonnegative(spec.completions, &format!("{path}.completions")),
        nonnegative(spec.backoff_limit, &format!("{path}.backoffLimit")),
        nonnegative(
            spec.active_deadline_seconds,
            &format!("{path}.activeDeadlineSeconds"),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let template_path = format!("{path}.template");
    if let Some(selector) = &spec.selector {
        causes.extend(validate_label_selector(
            selector,
            &format!("{path}.selector"),
        ));
        if let Ok(parsed) = LabelSelector::from_api(selector)
            && !parsed.is_everything()
        {
            let labels = template_labels(&spec.template);
            if !parsed.matches(labels.unwrap_or(&BTreeMap::new())) {
                causes.push(invalid_raw(
                    format!("{template_path}.metadata.labels"),
                    go_map(labels),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    causes.extend(validate_template(Some(&spec.template), &template_path));
    let policy = effective_restart_policy(spec.template.spec.as_ref());
    if policy != "OnFailure" && policy != "Never" {
        causes.push(StatusCause::not_supported(
            format!("{template_path}.spec.restartPolicy"),
            policy,
            &["OnFailure", "Never"],
        ));
    }
    causes
}

fn validate_cron_job(spec: &batch::v1::CronJobSpec) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    if spec.schedule.trim().is_empty() {
        causes.push(StatusCause::required("spec.schedule"));
    } else if spec.schedule.contains("TZ") {
        // Upstream refuses a time zone in the schedule on create since 1.27.
        causes.push(StatusCause::invalid(
            "spec.schedule",
            &spec.schedule,
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ));
    } else if let Err(e) = crate::cron::Schedule::parse(&spec.schedule) {
        causes.push(StatusCause::invalid(
            "spec.schedule",
            &spec.schedule,
            e.to_string(),
        ));
    }
    if let Some(zone) = spec.time_zone.as_deref() {
        // Upstream's validateTimeZone: an explicit IANA name.
        let problem = if zone.is_empty() {
            Some("timeZone must be nil or non-empty string".to_string())
        } else if zone.eq_ignore_ascii_case("local") {
            Some(
                "timeZone must be an explicit time zone as defined in \
                 https://www.iana.org/time-zones"
                    .to_string(),
            )
        } else {
            jiff::tz::TimeZone::get(zone)
                .err()
                .map(|_| format!("unknown time zone {zone}"))
        };
        if let Some(problem) = problem {
            causes.push(StatusCause::invalid("spec.timeZone", zone, problem));
        }
    }
    causes.extend(
        [
            nonnegative(
                spec.starting_deadline_seconds,
                "spec.startingDeadlineSeconds",
            ),
            nonnegative(
                spec.successful_jobs_history_limit,
                "spec.successfulJobsHistoryLimit",
            ),
            nonnegative(
                spec.failed_jobs_history_limit,
                "spec.failedJobsHistoryLimit",
            ),
        ]
        .into_iter()
        .flatten(),
    );
    if let Some(policy) = spec.concurrency_policy.as_deref().filter(|p| !p.is_empty())
        && !["Allow", "Forbid", "Replace"].contains(&policy)
    {
        causes.push(StatusCause::not_supported(
            "spec.concurrencyPolicy",
            policy,
            &["Allow", "Forbid", "Replace"],
        ));
    }
    let job_meta = spec.job_template.metadata.as_ref();
    causes.extend(validate_labels(
        job_meta.and_then(|m| m.labels.as_ref()),
        "spec.jobTemplate.metadata.labels",
    ));
    let empty = batch::v1::JobSpec::default();
    let job_spec = spec.job_template.spec.as_ref().unwrap_or(&empty);
    causes.extend(validate_job_spec(job_spec, "spec.jobTemplate.spec"));
    causes
}

/// Service types, sorted as Kubernetes lists them.
const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn validate_service(spec: &core::v1::ServiceSpec) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let service_type = spec
        .type_
        .as_deref()
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&service_type) {
        causes.push(StatusCause::not_supported(
            "spec.type",
            service_type,
            &SERVICE_TYPES,
        ));
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.as_deref().unwrap_or_default();
    if service_type == "ExternalName" {
        match spec.external_name.as_deref().filter(|n| !n.is_empty()) {
            None => causes.push(StatusCause::required("spec.externalName")),
            Some(name) => {
                let name = name.strip_suffix('.').unwrap_or(name);
                for msg in is_dns1123_subdomain(name) {
                    causes.push(StatusCause::invalid("spec.externalName", name, msg));
                }
            }
        }
    } else if ports.is_empty() && !headless {
        causes.push(StatusCause::required("spec.ports"));
    }
    let require_names = ports.len() > 1;
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match port.name.as_deref().filter(|n| !n.is_empty()) {
            None if require_names => causes.push(StatusCause::required(format!("{at}.name"))),
            None => {}
            Some(name) => {
                for msg in is_dns1123_label(name) {
                    causes.push(StatusCause::invalid(format!("{at}.name"), name, msg));
                }
                if !names.insert(name) {
                    causes.push(StatusCause::duplicate(format!("{at}.name"), name));
                }
            }
        }
        for msg in is_valid_port_num(port.port.into()) {
            causes.push(invalid_raw(format!("{at}.port"), port.port, &msg));
        }
        if let Some(protocol) = port.protocol.as_deref().filter(|p| !p.is_empty()) {
            causes.extend(check_protocol(protocol, &format!("{at}.protocol")));
        }
        // An unset, zero or empty targetPort defaults to the port.
        match &port.target_port {
            Some(IntOrString::Int(p)) if *p != 0 => {
                for msg in is_valid_port_num((*p).into()) {
                    causes.push(invalid_raw(format!("{at}.targetPort"), p, &msg));
                }
            }
            Some(IntOrString::String(name)) if !name.is_empty() => {
                for msg in is_valid_port_name(name) {
                    causes.push(StatusCause::invalid(format!("{at}.targetPort"), name, msg));
                }
            }
            _ => {}
        }
    }
    causes
}

/// Keys of a data map: valid config keys; returns the causes at `data[key]`.
fn validate_data_keys<'a>(keys: impl Iterator<Item = &'a String>, group: &str) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    for key in keys {
        for msg in is_config_map_key(key) {
            causes.push(StatusCause::invalid(format!("{group}[{key}]"), key, msg));
        }
    }
    causes
}

fn validate_config_map(cm: &core::v1::ConfigMap) -> Vec<StatusCause> {
    let data = cm.data.as_ref();
    let binary = cm.binary_data.as_ref();
    let mut causes = validate_data_keys(data.into_iter().flat_map(BTreeMap::keys), "data");
    for key in data.into_iter().flat_map(BTreeMap::keys) {
        if binary.is_some_and(|b| b.contains_key(key)) {
            causes.push(StatusCause::invalid(
                format!("data[{key}]"),
                key,
                "duplicate of key present in binaryData",
            ));
        }
    }
    causes.extend(validate_data_keys(
        binary.into_iter().flat_map(BTreeMap::keys),
        "binaryData",
    ));
    let size: usize = data
        .into_iter()
        .flatten()
        .map(|(_, v)| v.len())
        .sum::<usize>()
        + binary
            .into_iter()
            .flatten()
            .map(|(_, v)| v.0.len())
            .sum::<usize>();
    if size > MAX_DATA_SIZE {
        causes.push(too_long("", MAX_DATA_SIZE));
    }
    causes
}

fn validate_secret(secret: &core::v1::Secret) -> Vec<StatusCause> {
    let data = secret.data.as_ref();
    let string_data = secret.string_data.as_ref();
    // Kubernetes merges stringData into data before validating, so both report as `data[key]`.
    let mut causes = validate_data_keys(
        data.into_iter().flat_map(BTreeMap::keys).chain(
            string_data
                .into_iter()
                .flat_map(BTreeMap::keys)
                .filter(|k| !data.is_some_and(|d| d.contains_key(*k))),
        ),
        "data",
    );
    let has = |key: &str| {
        data.is_some_and(|d| d.contains_key(key))
            || string_data.is_some_and(|d| d.contains_key(key))
    };
    let required_keys: &[&str] = match secret.type_.as_deref() {
        Some("kubernetes.io/tls") => &["tls.crt", "tls.key"],
        Some("kubernetes.io/dockerconfigjson") => &[".dockerconfigjson"],
        Some("kubernetes.io/dockercfg") => &[".dockercfg"],
        Some("kubernetes.io/ssh-auth") => &["ssh-privatekey"],
        _ => &[],
    };
    for key in required_keys {
        if !has(key) {
            causes.push(StatusCause::required(format!("data[{key}]")));
        }
    }
    let size: usize = data
        .into_iter()
        .flatten()
        .map(|(_, v)| v.0.len())
        .sum::<usize>()
        + string_data
            .into_iter()
            .flatten()
            .map(|(_, v)| v.len())
            .sum::<usize>();
    if size > MAX_DATA_SIZE {
        causes.push(too_long("data", MAX_DATA_SIZE));
    }
    causes
}
