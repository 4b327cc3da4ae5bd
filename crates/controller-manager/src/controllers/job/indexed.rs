//! Indexed Jobs: the completion index each pod carries, the sets of indexes a Job's status
//! writes as `completedIndexes` (`"1,3-5,7"`), and which indexes still need a pod (upstream's
//! `indexed_job_utils.go`).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

/// The annotation (and label) with a pod's completion index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// The environment variable each container of an Indexed Job's pod reads its index from.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// The pod's completion index; `None` when it has none or it does not parse.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX_ANNOTATION)?
        .parse()
        .ok()
        .filter(|i: &i32| *i >= 0)
}

/// Ordered, disjoint, non-adjacent closed intervals of indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(i32, i32)>);

impl Intervals {
    /// Parses a status's `completedIndexes`, dropping what is malformed and what is not
    /// below `completions` (as upstream does with a corrupted or shrunk Job).
    pub fn parse(s: &str, completions: i32) -> Self {
        let mut out: Vec<(i32, i32)> = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let mut limits = part.split('-');
            let Some(Ok(first)) = limits.next().map(str::parse::<i32>) else {
                continue;
            };
            if first >= completions {
                break;
            }
            let last = match limits.next().map(str::parse::<i32>) {
                None => first,
                Some(Ok(last)) => last.min(completions - 1),
                Some(Err(_)) => continue,
            };
            match out.last_mut() {
                Some(prev) if prev.1 == first - 1 => prev.1 = last,
                _ => out.push((first, last)),
            }
        }
        Intervals(out)
    }

    /// These intervals with `indexes` added.
    pub fn with_indexes(&self, indexes: impl IntoIterator<Item = i32>) -> Self {
        let mut all: Vec<(i32, i32)> = self.0.clone();
        all.extend(indexes.into_iter().map(|i| (i, i)));
        all.sort_unstable();
        let mut out: Vec<(i32, i32)> = Vec::with_capacity(all.len());
        for (first, last) in all {
            match out.last_mut() {
                Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
                _ => out.push((first, last)),
            }
        }
        Intervals(out)
    }

    /// How many indexes there are.
    pub fn total(&self) -> i32 {
        self.0.iter().map(|(f, l)| l - f + 1).sum()
    }

    /// Whether `index` is in.
    pub fn has(&self, index: i32) -> bool {
        self.0.iter().any(|(f, l)| (*f..=*l).contains(&index))
    }
}

impl fmt::Display for Intervals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (first, last)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{first}")?;
            if last > first {
                let sep = if *last == first + 1 { ',' } else { '-' };
                write!(f, "{sep}{last}")?;
            }
        }
        Ok(())
    }
}

/// The indexes completed before (the status's) and now (with succeeded pods whose
/// finalizer still holds them, i.e. not counted yet).
pub fn succeeded_indexes(
    completed: &str,
    completions: i32,
    pods: &[Arc<Pod>],
    has_finalizer: impl Fn(&Pod) -> bool,
) -> (Intervals, Intervals) {
    let prev = Intervals::parse(completed, completions);
    let new: BTreeSet<i32> = pods
        .iter()
        .filter(|p| crate::pods::phase(p) == "Succeeded" && has_finalizer(p))
        .filter_map(|p| completion_index(p))
        .filter(|i| *i < completions)
        .collect();
    let now = prev.with_indexes(new);
    (prev, now)
}

/// The lowest `count` indexes below `completions` that neither succeeded nor have an
/// active pod.
pub fn first_pending(
    active: &[Arc<Pod>],
    succeeded: &Intervals,
    count: usize,
    completions: i32,
) -> Vec<i32> {
    let busy = succeeded.with_indexes(active.iter().filter_map(|p| completion_index(p)));
    let mut out = Vec::with_capacity(count);
    let mut candidate = 0;
    for &(first, last) in &busy.0 {
        while candidate < completions && out.len() < count && candidate < first {
            out.push(candidate);
            candidate += 1;
        }
        candidate = candidate.max(last.saturating_add(1));
    }
    while candidate < completions && out.len() < count {
        out.push(candidate);
        candidate += 1;
    }
    out
}

/// Active pods of an Indexed Job that must go whatever the counts say: those without a
/// valid index, with an index not below `completions`, and all but the best of each
/// repeated index (`order` puts the pods to delete first). Returns (to remove, the rest).
pub fn duplicated_or_invalid(
    pods: &[Arc<Pod>],
    completions: i32,
    order: impl Fn(&Pod, &Pod) -> std::cmp::Ordering,
) -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
    let mut by_index: std::collections::BTreeMap<i32, Vec<Arc<Pod>>> = Default::default();
    let mut remove = Vec::new();
    for pod in pods {
        match completion_index(pod) {
            Some(i) if i < completions => by_index.entry(i).or_default().push(pod.clone()),
            _ => remove.push(pod.clone()),
        }
    }
    let mut keep = Vec::new();
    for (_, mut same) in by_index {
        same.sort_by(|a, b| order(a, b));
        if let Some(best) = same.pop() {
            keep.push(best);
        }
        remove.extend(same);
    }
    (remove, keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use std::collections::BTreeMap;

    fn pod(index: Option<&str>, phase: &str) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.annotations = index
            .map(|i| BTreeMap::from([(COMPLETION_INDEX_ANNOTATION.to_string(), i.to_string())]));
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn intervals_parse_merge_and_print_like_upstream() {
        let i = Intervals::parse("1,3-5,7", 10);
        assert_eq!(i.total(), 5);
        assert_eq!(i.to_string(), "1,3-5,7");
        assert_eq!(i.with_indexes([2, 6, 9]).to_string(), "1-7,9");
        assert_eq!(Intervals::default().with_indexes([0, 1]).to_string(), "0,1");
        assert_eq!(
            Intervals::default().with_indexes([0, 1, 2]).to_string(),
            "0-2"
        );
        assert_eq!(Intervals::parse("0-3,x,8-12", 10).to_string(), "0-3,8,9");
        assert_eq!(Intervals::parse("", 3), Intervals::default());
        assert!(i.has(4) && !i.has(6));
    }

    #[test]
    fn pending_indexes_skip_succeeded_and_running_ones() {
        let succeeded = Intervals::parse("0,2", 6);
        let active = vec![pod(Some("1"), "Running"), pod(Some("4"), "Running")];
        assert_eq!(first_pending(&active, &succeeded, 5, 6), [3, 5]);
        assert_eq!(first_pending(&active, &succeeded, 1, 6), [3]);
        assert_eq!(first_pending(&[], &Intervals::default(), 3, 2), [0, 1]);
    }

    #[test]
    fn succeeded_indexes_count_only_uncounted_pods() {
        let pods = vec![
            pod(Some("0"), "Succeeded"),
            pod(Some("3"), "Succeeded"),
            pod(Some("9"), "Succeeded"),
            pod(Some("2"), "Failed"),
            pod(None, "Succeeded"),
        ];
        let (prev, now) = succeeded_indexes("1", 4, &pods, |_| true);
        assert_eq!(prev.to_string(), "1");
        assert_eq!(now.to_string(), "0,1,3");
        let (_, none_new) = succeeded_indexes("1", 4, &pods, |_| false);
        assert_eq!(none_new.to_string(), "1");
    }

    #[test]
    fn repeated_and_invalid_indexes_are_removed() {
        let pods = vec![
            pod(Some("0"), "Running"),
            pod(Some("0"), "Pending"),
            pod(Some("7"), "Running"),
            pod(None, "Running"),
            pod(Some("1"), "Running"),
        ];
        // Pending before Running: the pending duplicate goes.
        let rank = |p: &Pod| u8::from(crate::pods::phase(p) == "Running");
        let (remove, keep) = duplicated_or_invalid(&pods, 3, |a, b| rank(a).cmp(&rank(b)));
        assert_eq!(remove.len(), 3);
        assert_eq!(keep.len(), 2);
        assert!(keep.iter().all(|p| crate::pods::phase(p) == "Running"));
    }
}
