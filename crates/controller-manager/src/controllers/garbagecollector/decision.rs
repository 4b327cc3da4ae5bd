//! What the collector does with a dependent, given the state of each of its owners
//! (upstream's `classifyReferences` and the switch of `attemptToDeleteItem`).

use rkube_client::PropagationPolicy;

use super::graph::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

/// What a live read says about one owner of a dependent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists and is not waiting for its dependents: it keeps the dependent.
    Solid,
    /// The owner does not exist (not found, or another object by that name).
    Dangling,
    /// The owner is being deleted in the foreground and waits for its dependents to go.
    WaitingForDependents,
    /// The reference cannot be right (a namespaced owner of a cluster-scoped object); the
    /// dependent is left alone, as upstream does.
    Invalid,
}

/// What to do with the dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: some owner still holds it (or a reference is invalid).
    Keep,
    /// Some owner holds it, but these owners (UIDs) are gone or waiting for it: drop the
    /// references to them so they stop waiting.
    RemoveReferences(Vec<String>),
    /// An owner waits for it in the foreground and it has dependents of its own: delete it
    /// in the foreground too, first clearing its own `blockOwnerDeletion` references when
    /// one of its dependents is itself waiting (which could deadlock a cycle).
    DeleteForeground {
        /// Clear `blockOwnerDeletion` on its references first.
        unblock: bool,
    },
    /// No owner holds it: delete it with this propagation.
    Delete(PropagationPolicy),
}

/// Decides for a dependent whose owners (UID and state) are `owners`, which carries
/// `finalizers`, has dependents of its own (`has_dependents`), one of them waiting for its
/// own dependents (`dependent_waiting`).
pub fn decide(
    owners: &[(String, OwnerState)],
    finalizers: &[String],
    has_dependents: bool,
    dependent_waiting: bool,
) -> Decision {
    let with = |state: OwnerState| {
        owners
            .iter()
            .filter(move |(_, s)| *s == state)
            .map(|(uid, _)| uid.clone())
    };
    if owners.is_empty() || with(OwnerState::Invalid).next().is_some() {
        return Decision::Keep;
    }
    let solid = with(OwnerState::Solid).count();
    let dangling: Vec<String> = with(OwnerState::Dangling).collect();
    let waiting: Vec<String> = with(OwnerState::WaitingForDependents).collect();
    if solid > 0 {
        if dangling.is_empty() && waiting.is_empty() {
            return Decision::Keep;
        }
        return Decision::RemoveReferences(dangling.into_iter().chain(waiting).collect());
    }
    if !waiting.is_empty() && has_dependents {
        return Decision::DeleteForeground {
            unblock: dependent_waiting,
        };
    }
    let has = |f: &str| finalizers.iter().any(|x| x == f);
    Decision::Delete(if has(ORPHAN_FINALIZER) {
        PropagationPolicy::Orphan
    } else if has(FOREGROUND_FINALIZER) {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use OwnerState::*;

    fn owners(states: &[(&str, OwnerState)]) -> Vec<(String, OwnerState)> {
        states.iter().map(|(u, s)| (u.to_string(), *s)).collect()
    }

    #[test]
    fn an_object_with_a_live_owner_stays() {
        assert_eq!(
            decide(&owners(&[("a", Solid)]), &[], false, false),
            Decision::Keep
        );
        assert_eq!(
            decide(&[], &[], true, false),
            Decision::Keep,
            "no owners at all"
        );
    }

    #[test]
    fn an_object_whose_owners_are_all_gone_is_deleted_in_the_background() {
        assert_eq!(
            decide(
                &owners(&[("a", Dangling), ("b", Dangling)]),
                &[],
                true,
                false
            ),
            Decision::Delete(PropagationPolicy::Background)
        );
    }

    #[test]
    fn the_objects_own_finalizers_choose_the_propagation() {
        assert_eq!(
            decide(
                &owners(&[("a", Dangling)]),
                &["orphan".into()],
                false,
                false
            ),
            Decision::Delete(PropagationPolicy::Orphan)
        );
        assert_eq!(
            decide(
                &owners(&[("a", Dangling)]),
                &["foregroundDeletion".into()],
                false,
                false
            ),
            Decision::Delete(PropagationPolicy::Foreground)
        );
    }

    #[test]
    fn with_one_owner_left_only_the_references_to_gone_or_waiting_owners_go() {
        assert_eq!(
            decide(
                &owners(&[("a", Solid), ("b", Dangling), ("c", WaitingForDependents)]),
                &[],
                false,
                false
            ),
            Decision::RemoveReferences(vec!["b".into(), "c".into()])
        );
    }

    #[test]
    fn a_dependent_of_a_foreground_deletion_is_deleted_in_the_foreground_if_it_owns_things() {
        let waiting = owners(&[("a", WaitingForDependents)]);
        assert_eq!(
            decide(&waiting, &[], true, false),
            Decision::DeleteForeground { unblock: false }
        );
        assert_eq!(
            decide(&waiting, &[], true, true),
            Decision::DeleteForeground { unblock: true },
            "a waiting dependent of its own could make a cycle"
        );
        assert_eq!(
            decide(&waiting, &[], false, false),
            Decision::Delete(PropagationPolicy::Background),
            "a leaf is simply deleted"
        );
    }

    #[test]
    fn an_invalid_reference_leaves_the_object_alone() {
        assert_eq!(
            decide(
                &owners(&[("a", Invalid), ("b", Dangling)]),
                &[],
                false,
                false
            ),
            Decision::Keep
        );
    }
}
