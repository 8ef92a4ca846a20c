//! `{id}` → one sandbox record (SPEC §2.2).
//!
//! `?namespace=` selects the namespace. Without it the name is looked up in
//! `default` first, then among the caller's sandboxes in other namespaces:
//! one match is it, several are a 409 naming them, none is a 404. Another
//! user's sandbox is a 404 exactly as if it did not exist.

use std::sync::Arc;

use serde::Deserialize;

use agenttier_bus::model::{Principal, Sandbox, is_dns_label};

use crate::{ApiError, Ctx};

pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// The `?namespace=` every sandbox route takes (other keys are ignored).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct NsQuery {
    pub namespace: Option<String>,
}

pub(crate) fn check_namespace(ns: &str) -> Result<(), ApiError> {
    if is_dns_label(ns) {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "namespace {ns:?} is not a DNS-1123 label"
        )))
    }
}

/// Finds the sandbox `name` the caller means (in the router's copy of the
/// records, see [`crate::records`]).
pub(crate) async fn resolve(
    ctx: &Ctx,
    caller: &Principal,
    name: &str,
    namespace: Option<&str>,
) -> Result<Arc<Sandbox>, ApiError> {
    if let Some(ns) = namespace {
        check_namespace(ns)?;
    }
    if !is_dns_label(name) {
        return Err(ApiError::sandbox_not_found());
    }
    let mine = |s: &Arc<Sandbox>| caller.may_access(&s.created_by.sub);
    if let Some(ns) = namespace {
        return match ctx.records.get(&Sandbox::key(ns, name)).await? {
            Some(s) if mine(&s) => Ok(s),
            _ => Err(ApiError::sandbox_not_found()),
        };
    }
    // The copy first, `default` then the other namespaces; the store only
    // when the copy has nothing (a sandbox created a moment ago elsewhere),
    // so a name outside `default` costs no store read per request.
    let key = Sandbox::key(DEFAULT_NAMESPACE, name);
    if let Some(s) = ctx.records.held(&key).filter(mine) {
        return Ok(s);
    }
    match pick(ctx.records.named(name, false).await?, caller, name) {
        Err(ApiError::NotFound(_)) => {}
        found => return found,
    }
    if let Some(s) = ctx.records.fresh(&key).await?.filter(mine) {
        return Ok(s);
    }
    pick(ctx.records.named(name, true).await?, caller, name)
}

/// The rule for a name given without a namespace, over every record named
/// `name` outside `default`.
pub(crate) fn pick(
    candidates: Vec<Arc<Sandbox>>,
    caller: &Principal,
    name: &str,
) -> Result<Arc<Sandbox>, ApiError> {
    let mut mine: Vec<Arc<Sandbox>> = candidates
        .into_iter()
        .filter(|s| {
            s.name == name
                && s.namespace != DEFAULT_NAMESPACE
                && caller.may_access(&s.created_by.sub)
        })
        .collect();
    match mine.len() {
        0 => Err(ApiError::sandbox_not_found()),
        1 => Ok(mine.remove(0)),
        _ => {
            let mut namespaces: Vec<String> =
                mine.into_iter().map(|s| s.namespace.clone()).collect();
            namespaces.sort();
            Err(ApiError::Ambiguous {
                name: name.to_string(),
                namespaces,
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use agenttier_bus::model::{Mode, Owner, SandboxStatus, TemplateRef};

    pub(crate) fn sandbox(ns: &str, name: &str, owner: &str) -> Sandbox {
        Sandbox {
            name: name.into(),
            namespace: ns.into(),
            mode: Mode::Agent,
            template_ref: TemplateRef {
                name: "python-agent".into(),
                kind: TemplateRef::CLUSTER.into(),
                namespace: None,
            },
            image: String::new(),
            env: Default::default(),
            agent: Default::default(),
            network: Default::default(),
            created_at: "2026-01-01T00:00:00Z".into(),
            created_by: Owner {
                sub: owner.into(),
                ..Default::default()
            },
            status: SandboxStatus::default(),
        }
    }

    fn sbx(ns: &str, name: &str, owner: &str) -> Arc<Sandbox> {
        Arc::new(sandbox(ns, name, owner))
    }

    fn user(sub: &str, admin: bool) -> Principal {
        Principal {
            sub: sub.into(),
            admin,
            ..Default::default()
        }
    }

    #[test]
    fn one_match_elsewhere_is_it() {
        let got = pick(
            vec![sbx("team", "a", "u1"), sbx("x", "a", "u2")],
            &user("u1", false),
            "a",
        );
        assert_eq!(
            got.map(|s| s.namespace.clone()).ok().as_deref(),
            Some("team")
        );
    }

    #[test]
    fn several_matches_name_the_namespaces() {
        let got = pick(
            vec![sbx("b", "a", "u1"), sbx("a", "a", "u1")],
            &user("u1", false),
            "a",
        );
        match got {
            Err(ApiError::Ambiguous { namespaces, .. }) => assert_eq!(namespaces, vec!["a", "b"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_users_sandboxes_are_invisible_but_admins_see_all() {
        let c = || vec![sbx("team", "a", "u2")];
        assert!(matches!(
            pick(c(), &user("u1", false), "a"),
            Err(ApiError::NotFound(_))
        ));
        assert!(pick(c(), &user("root", true), "a").is_ok());
    }

    #[test]
    fn default_namespace_records_are_not_candidates() {
        // `default` is looked up by key first; the fallback only sees others.
        assert!(pick(vec![sbx("default", "a", "u1")], &user("u1", false), "a").is_err());
    }
}
