//! Names, tags and ids that place every resource in its (project, env, role, index) slot.
//!
//! These tags are how heet finds its own resources again and how it refuses to touch anyone
//! else's: a resource is heet's for a project/env only if its tags name that project/env and
//! its `heet:id` is the id heet derives for its role and index.

use sha2::{Digest, Sha256};

pub const TAG_PROJECT: &str = "heet:project";
pub const TAG_ENV: &str = "heet:env";
pub const TAG_ROLE: &str = "heet:role";
pub const TAG_INDEX: &str = "heet:index";
pub const TAG_ID: &str = "heet:id";
/// Hash of the launch settings; a different hash means the instance must be replaced.
pub const TAG_SPEC: &str = "heet:spec";
/// Each launch setting's own short hash (`launch::Settings`): which settings differ when the
/// spec does.
pub const TAG_SETTINGS: &str = "heet:settings";
/// Hash of the instance's CNAMEs: when the set changes, even to nothing, the instance's tags
/// change, so the change is seen without reading the ledger (which a no-op `up` skips).
pub const TAG_DNS: &str = "heet:dns";
/// `kind/name` of a network resource, e.g. `group/www` (see `network`).
pub const TAG_RESOURCE: &str = "heet:resource";
/// The batch launch an instance came from: set at launch with the tags its batch shares, so
/// a run killed before the instance got its slot's own tags can adopt it from the ledger.
pub const TAG_BATCH: &str = "heet:batch";
pub const TAG_NAME: &str = "Name";
/// Prefix of the tag a scenario leaves on each instance it ran on once every step succeeded:
/// `heet:scenario/deploy` = `2026-12-07T01:56:10Z 1.4.2` (when, and the project's version).
pub const TAG_SCENARIO: &str = "heet:scenario/";
/// Tags heet writes on every instance, `Name` included.
pub const OWN_TAGS: usize = 10;
/// Prefix of the tags heet owns; plugins may not set them.
pub const RESERVED_PREFIX: &str = "heet:";

/// Checks a project, environment or role name: `[a-z][a-z0-9-]*`, at most 32 characters, no
/// trailing `-` and no `--` (the separator in `env--role` tags).
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid {kind} name {name:?}: {why}"));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 32 {
        return bad("longer than 32 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("must start with a lowercase letter");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return bad(&format!(
            "character {c:?} is not allowed (use a-z, 0-9 and '-')"
        ));
    }
    if name.ends_with('-') {
        return bad("must not end with '-'");
    }
    if name.contains("--") {
        return bad("must not contain '--'");
    }
    Ok(())
}

/// The stable id of an instance slot. Deterministic, so a crashed run and the next one agree
/// on it, and unguessable from the other tags without knowing this derivation, so a hand-made
/// look-alike is told apart from heet's own.
pub fn slot_id(project: &str, env: &str, role: &str, index: u32) -> String {
    let digest = Sha256::digest(format!("heet/v1/{project}/{env}/{role}/{index}"));
    hex::encode(&digest[..8])
}

/// The stable id of a network resource (`heet:id`), as [`slot_id`] is for instances.
pub fn resource_id(project: &str, env: &str, resource: &str) -> String {
    let digest = Sha256::digest(format!("heet/v1/{project}/{env}/resource/{resource}"));
    hex::encode(&digest[..8])
}

/// Short stable hash of launch settings, stored in the `heet:spec` tag.
pub fn spec_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefix each part so ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

/// The id of a batch launch (`heet:batch`): the role, settings and slots it launches, and
/// `nonce` (the run, and how often it had to start over), so that no two launches share one.
pub fn batch_id(
    project: &str,
    env: &str,
    role: &str,
    spec: &str,
    slots: &[u32],
    nonce: &str,
) -> String {
    let slots: Vec<String> = slots.iter().map(u32::to_string).collect();
    let digest = Sha256::digest(format!(
        "heet/v1/{project}/{env}/{role}/{spec}/{}/{nonce}",
        slots.join(",")
    ));
    hex::encode(&digest[..8])
}

/// The RunInstances idempotency token of a batch: the SDK's retries of a launch whose answer
/// was lost, and the next run after a crash, get the instances already launched, not twins.
pub fn batch_token(batch_id: &str) -> String {
    let digest = Sha256::digest(format!("heet/v1/token/{batch_id}"));
    // RunInstances accepts up to 64 ASCII characters.
    format!("heet-{}", hex::encode(&digest[..16]))
}

/// The value of `heet:dns` for a set of CNAMEs (in any order).
pub fn dns_hash(cnames: &[String]) -> String {
    let mut names: Vec<String> = cnames.iter().map(|n| n.to_ascii_lowercase()).collect();
    names.sort();
    hex::encode(&Sha256::digest(names.join("\n"))[..6])
}

/// The SSM parameter that locks an environment while a run changes it.
pub fn lock_parameter(project: &str, env: &str) -> String {
    format!("/heet/{project}/{env}/lock")
}

/// The default `Name` before any plugin has an opinion.
pub fn default_name(project: &str, env: &str, role: &str, index: u32) -> String {
    format!("{project}-{env}-{role}-{index:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_follow_the_rules() {
        assert!(check_name("env", "staging").is_ok());
        assert!(check_name("env", "prod-eu-1").is_ok());
        for bad in [
            "",
            "Staging",
            "1st",
            "a_b",
            "a b",
            "a.b",
            "a-",
            "a--b",
            "ünï",
            "stagingstagingstagingstagingstagi",
        ] {
            assert!(check_name("env", bad).is_err(), "{bad:?} accepted");
        }
        let err = check_name("env", "stag$ing").unwrap_err();
        assert_eq!(
            err,
            "invalid env name \"stag$ing\": character '$' is not allowed (use a-z, 0-9 and '-')"
        );
    }

    #[test]
    fn slot_ids_are_stable_and_distinct() {
        let a = slot_id("p", "staging", "www", 1);
        assert_eq!(a, slot_id("p", "staging", "www", 1));
        assert_eq!(a.len(), 16);
        assert_ne!(a, slot_id("p", "production", "www", 1));
        assert_ne!(a, slot_id("p", "staging", "www", 2));
        assert_ne!(a, slot_id("p", "staging", "db", 1));
    }

    #[test]
    fn spec_hash_separates_parts() {
        assert_ne!(spec_hash(&["ab", "c"]), spec_hash(&["a", "bc"]));
        assert_eq!(spec_hash(&["x", "y"]), spec_hash(&["x", "y"]));
    }

    #[test]
    fn batch_ids_and_tokens_are_distinct_per_launch_and_fit_ec2() {
        let a = batch_id("p", "e", "www", "spec", &[1, 2, 3], "run-1");
        assert_eq!(a, batch_id("p", "e", "www", "spec", &[1, 2, 3], "run-1"));
        for other in [
            batch_id("p", "e", "www", "spec", &[1, 2, 3], "run-2"),
            batch_id("p", "e", "www", "spec", &[1, 2], "run-1"),
            batch_id("p", "e", "www", "spec", &[12, 3], "run-1"),
            batch_id("p", "e", "db", "spec", &[1, 2, 3], "run-1"),
            batch_id("p", "e", "www", "spec2", &[1, 2, 3], "run-1"),
        ] {
            assert_ne!(a, other);
        }
        let t = batch_token(&a);
        assert!(t.len() <= 64 && t.is_ascii(), "{t}");
        assert_ne!(
            t,
            batch_token(&batch_id("p", "e", "www", "spec", &[1, 2, 3], "run-2"))
        );
    }

    proptest! {
        #[test]
        fn accepted_names_are_tag_and_dns_safe(name in "[a-z][a-z0-9-]{0,40}") {
            if check_name("role", &name).is_ok() {
                prop_assert!(name.len() <= 32);
                prop_assert!(!name.contains("--") && !name.ends_with('-'));
                prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            }
        }
    }
}
