//! The plan: desired state ⊕ observed state → the changes that make them equal. A value,
//! computed without I/O; only `apply` acts on it. Each kind plans its own part
//! (`kinds::*`); this module joins them, in the order what points at something needs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::desired::Desired;
use crate::kinds::iam::IamPlan;
use crate::kinds::instances::{self, InstancePlan, ObservedInstance};
use crate::kinds::network::{self, NetChange, ObservedResource};
use crate::kinds::records::{DnsPlan, DnsState, RecordChange, plan_records};
use crate::kinds::stacks::StackPlan;
use crate::kinds::{Change, Family, Scope, Stage};
use crate::ledger;
use crate::text;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub project: String,
    pub env: String,
    /// Instances (`kinds::instances`): launched, retagged, replaced in rollouts, terminated.
    pub instances: InstancePlan,
    /// VPC, subnets, security groups and Elastic IPs.
    pub network: Vec<NetChange>,
    /// IAM policies, groups, users, roles and instance profiles (`kinds::iam`).
    pub iam: IamPlan,
    /// DNS records (`kinds::records`): Route53 changes, the zone to create, names others
    /// hold, records others changed.
    pub dns: DnsPlan,
    /// CloudFormation stacks (`kinds::stacks`): made first, deleted last.
    pub stacks: StackPlan,
    /// Load balancers, their target groups, listeners and targets (`kinds::balancers`).
    pub balancers: crate::kinds::balancers::BalancerPlan,
    /// Nothing is desired (`down`).
    pub teardown: bool,
    /// The role of each slot heet wants or found, for a plan limited to some roles.
    pub slot_roles: BTreeMap<String, String>,
}

impl Plan {
    /// The families of kinds, in the order the plan shows them: the one place a family is
    /// registered for what reads a plan.
    pub fn families(&self) -> [&dyn Family; 6] {
        [
            &self.stacks,
            &self.instances,
            &self.balancers,
            &self.dns,
            &self.network,
            &self.iam,
        ]
    }

    /// The families, to limit them (in `families`' order).
    fn families_mut(&mut self) -> [&mut dyn Family; 6] {
        [
            &mut self.stacks,
            &mut self.instances,
            &mut self.balancers,
            &mut self.dns,
            &mut self.network,
            &mut self.iam,
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.families().iter().all(|f| f.is_empty())
    }

    /// The plan limited to `roles` (`--role`): their changes (their instances, and the names
    /// and Elastic IPs of their slots) and, unless `theirs_only` (`down`), what roles share
    /// that is made or changed for them (the network, IAM), never deleted.
    pub fn only(mut self, roles: &BTreeSet<String>, theirs_only: bool) -> Plan {
        let slot_roles = std::mem::take(&mut self.slot_roles);
        let keep = |c: &dyn Change| match c.scope() {
            Scope::Role(role) => roles.contains(role),
            Scope::Slot(slot) => slot_roles.get(slot).is_some_and(|r| roles.contains(r)),
            Scope::Shared => !theirs_only && !c.narrows(),
        };
        for family in self.families_mut() {
            family.retain(&keep);
        }
        self.slot_roles = slot_roles;
        self.instances.awaited = awaited(&self);
        self
    }

    /// The part of the plan applied before the rest can be planned: the stacks it makes or
    /// changes, whose outputs the rest may read. None when it makes or changes none.
    pub fn stacks_first(&self) -> Option<Plan> {
        if !self.stacks.makes() {
            return None;
        }
        let mut first = self.clone();
        for family in first.families_mut() {
            family.retain(&|_| false);
        }
        first.stacks.changes = self
            .stacks
            .changes
            .iter()
            .filter(|c| c.makes())
            .cloned()
            .collect();
        Some(first)
    }

    /// The places at which any family has changes to make in `stage` and rollout round
    /// `round`, in the order apply makes them: apply's schedule.
    pub fn places(&self, stage: Stage, round: u32) -> BTreeSet<u8> {
        let rounds = self.instances.slot_rounds();
        self.families()
            .iter()
            .flat_map(|f| f.places(stage, round, &rounds))
            .collect()
    }

    /// How many rollout rounds `stage` takes: the instances' rounds while they run, else one.
    pub fn rounds(&self, stage: Stage) -> u32 {
        match stage {
            Stage::Running => self.instances.rounds(),
            Stage::Before | Stage::After => 1,
        }
    }
}

/// Computes the changes that turn `observed` (instances, network resources and DNS) into
/// `desired`. `batches` are the ledger's batch launches, when the ledger was read; `now` is
/// the time in seconds since the epoch, for ledger entries that are over.
pub fn plan(
    desired: &Desired,
    observed: &[ObservedInstance],
    resources: &[ObservedResource],
    dns: &DnsState,
    batches: Option<&BTreeMap<String, ledger::Batch>>,
    now: i64,
) -> Plan {
    let (project, env) = (desired.project.as_str(), desired.env.as_str());
    let (instances, mut slots) = instances::plan(desired, observed, batches, now);
    let network = network::plan(project, env, &desired.network, resources, &slots.staying);
    // An instance that gets an Elastic IP gets a new public DNS name: its records are
    // pointed at it once the address is associated.
    for c in &network {
        if let NetChange::Associate { slot, .. } = c {
            slots.targets.insert(slot.as_str(), None);
        }
    }

    let mut dns_plan = plan_records(desired, &slots.targets, &slots.booting, dns);
    // Names of instances without any DNS name are not written (and said so).
    dns_plan.changes.retain(|r| match r {
        RecordChange::Upsert {
            slot,
            target: None,
            instance_id: None,
            ..
        } => !unresolved_slot(desired, slot, &instances.unresolved),
        _ => true,
    });
    // Whose each slot is, and which slot each of heet's instances' names and addresses is.
    let mut slot_roles: BTreeMap<String, String> = desired
        .instances
        .iter()
        .map(|d| (d.id.clone(), d.role.clone()))
        .collect();
    let mut slot_of_target: BTreeMap<String, String> = BTreeMap::new();
    for o in observed {
        if let (Some(slot), (Some(role), _)) = (o.slot_id(project, env), o.role_index()) {
            slot_roles.insert(slot.to_owned(), role.to_owned());
            for t in o.record_targets() {
                slot_of_target.insert(t, slot.to_owned());
            }
        }
    }
    // A record heet deletes says the slot of the instance it points at.
    for c in &mut dns_plan.changes {
        if let RecordChange::Delete { target, slot, .. } = c {
            *slot = slot_of_target.get(target).cloned();
        }
    }
    let mut plan = Plan {
        project: project.to_owned(),
        env: env.to_owned(),
        instances,
        network,
        iam: IamPlan::default(),
        dns: dns_plan,
        stacks: StackPlan::default(),
        balancers: Default::default(),
        teardown: desired.instances.is_empty(),
        slot_roles,
    };
    plan.instances.awaited = awaited(&plan);
    plan
}

/// What other kinds wait for of an instance still booting, which the instances wait for.
fn awaited(plan: &Plan) -> Vec<(String, String)> {
    plan.families()
        .iter()
        .flat_map(|f| f.changes())
        .filter_map(|c| c.waits_for())
        .map(|(slot, id)| (slot.to_owned(), id.to_owned()))
        .collect()
}

/// Whether `slot`'s instance was found to have no DNS name or address at all.
fn unresolved_slot(desired: &Desired, slot: &str, unresolved: &[String]) -> bool {
    desired
        .instances
        .iter()
        .find(|d| d.id == slot)
        .is_some_and(|d| {
            unresolved
                .iter()
                .any(|u| u.starts_with(&format!("{} ", d.name)))
        })
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = format!("{}/{}", self.project, self.env);
        let families = self.families();
        if self.is_empty() {
            write!(
                f,
                "no changes: {target} is up to date ({} instance(s))",
                self.instances.unchanged
            )?;
        } else {
            let summary: Vec<String> = families.iter().filter_map(|f| f.summary()).collect();
            write!(f, "plan for {target}: {}", summary.join(", "))?;
            for change in families.iter().flat_map(|f| f.changes()) {
                write!(f, "\n  {change}")?;
            }
        }
        for note in families.iter().flat_map(|f| f.notes()) {
            write!(f, "\n  {note}")?;
        }
        for c in families.iter().flat_map(|f| f.conflicts()) {
            write!(f, "\n  conflict: {}", text::shown(c))?;
        }
        for r in families.iter().flat_map(|f| f.refused()) {
            write!(f, "\n  refused: {}", text::shown(&r))?;
        }
        for n in families.iter().flat_map(|f| f.foreign()) {
            write!(f, "\n  not heet's, left alone: {}", text::shown(n))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::DesiredInstance;
    use crate::desired::{
        compute,
        tests::{NoPlugins, definition},
    };
    use crate::kinds::instances::BATCH_GRACE_SECS;
    use crate::kinds::instances::{Ending, InstanceChange as Change, Phase};
    use crate::launch::Setting;
    use crate::namespace::{
        TAG_BATCH, TAG_ENV, TAG_ID, TAG_INDEX, TAG_PROJECT, TAG_ROLE, TAG_SETTINGS, TAG_SPEC,
    };
    use std::collections::{BTreeMap, BTreeSet};

    const DEF: &str = r#"
[project]
name = "shop"
[defaults]
ami = "ami-12c6146b"
[roles.www]
count = 2
[environments.staging]
[environments.production]
"#;

    pub(super) fn desired(env: &str) -> Desired {
        compute(&definition(DEF), env, "us-east-1", &mut NoPlugins).unwrap()
    }

    fn running(d: &DesiredInstance, id: &str, launched: i64) -> ObservedInstance {
        ObservedInstance {
            instance_id: id.into(),
            state: "running".into(),
            instance_type: d.instance_type.clone(),
            ami: d.ami.clone(),
            launch_time: Some(launched),
            public_dns: Some(format!("{id}.compute.example")),
            private_dns: None,
            public_ip: None,
            private_ip: None,
            launch_index: Some(0),
            data_volume: None,
            monitoring: false,
            source_dest_check: Some(true),
            tags: d.tags.clone(),
        }
    }

    /// Every desired instance running as desired, ids `i-0`, `i-1`, ...
    pub(super) fn all_running(d: &Desired) -> Vec<ObservedInstance> {
        d.instances
            .iter()
            .enumerate()
            .map(|(i, x)| running(x, &format!("i-{i}"), 1))
            .collect()
    }

    #[test]
    fn empty_account_means_create_everything() {
        let p = plan(&desired("staging"), &[], &[], &DnsState::default(), None, 0);
        assert_eq!(p.instances.changes.len(), 2);
        assert!(
            p.instances
                .changes
                .iter()
                .all(|c| matches!(c, Change::Create { .. }))
        );
        assert!(!p.instances.is_destructive());
        assert_eq!(
            p.to_string(),
            "plan for shop/staging: 2 to create, 0 to replace, 0 to update, 0 to delete\n  \
             + create   www[1] shop-staging-www-01 (t3.micro, ami-12c6146b)\n  \
             + create   www[2] shop-staging-www-02 (t3.micro, ami-12c6146b)"
        );
    }

    #[test]
    fn matching_state_means_no_changes() {
        let d = desired("staging");
        let observed = all_running(&d);
        let p = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        assert!(p.is_empty());
        assert_eq!(p.instances.unchanged, 2);
        assert_eq!(
            p.to_string(),
            "no changes: shop/staging is up to date (2 instance(s))"
        );
    }

    #[test]
    fn each_registered_family_is_counted_shown_and_kept_from_an_empty_plan() {
        use crate::kinds::iam::IamChange;
        let d = desired("staging");
        let mut p = plan(&d, &all_running(&d), &[], &DnsState::default(), None, 0);
        assert!(p.is_empty());
        // A conflict alone stops apply: the plan is not empty, and says why.
        p.iam.conflicts = vec!["iam group shop-staging-ops".into()];
        assert!(!p.is_empty());
        assert!(
            p.to_string()
                .ends_with("\n  conflict: iam group shop-staging-ops"),
            "{p}"
        );
        p.iam.conflicts.clear();
        p.network = vec![NetChange::DeleteVpc {
            resource: "vpc/main".into(),
            vpc_id: "vpc-1".into(),
        }];
        p.iam.changes = vec![IamChange::CreateGroup {
            name: "shop-staging-ops".into(),
        }];
        let shown = p.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines[0],
            "plan for shop/staging: 0 to create, 0 to replace, 0 to update, 0 to delete, 1 network change(s), 1 iam change(s)"
        );
        // In the order of `families`, each change as its kind shows it.
        assert_eq!(lines.len(), 3, "{shown}");
        assert_eq!(lines[1], format!("  {}", p.network[0]));
        assert_eq!(lines[2], format!("  {}", p.iam.changes[0]));
        assert_eq!(
            p.families()
                .iter()
                .filter_map(|f| f.changes().first().map(|c| crate::kinds::drift(*c)))
                .collect::<Vec<_>>(),
            [
                crate::kinds::Drift::Unexpected,
                crate::kinds::Drift::Missing
            ]
        );
        // `down` lists what a family deletes, not what it undoes on the way.
        p.iam.changes = vec![
            IamChange::Leave {
                user: "shop-staging-ci".into(),
                group: "shop-staging-ops".into(),
            },
            IamChange::Delete {
                kind: crate::kinds::iam::Kind::Group,
                name: "shop-staging-ops".into(),
                arn: "arn:aws:iam::123456789012:group/shop-staging-ops".into(),
            },
        ];
        let deleted = |f: &dyn crate::kinds::Family| -> Vec<String> {
            crate::kinds::deleted(f).map(|c| c.to_string()).collect()
        };
        assert_eq!(deleted(&p.network), [p.network[0].to_string()]);
        assert_eq!(deleted(&p.iam), [p.iam.changes[1].to_string()]);
        assert_eq!(
            crate::kinds::drift(p.iam.changes()[0]),
            crate::kinds::Drift::Unexpected
        );
    }

    #[test]
    fn apply_s_schedule_is_the_places_of_every_family_s_changes() {
        use crate::kinds::iam::IamChange;
        let d = desired("staging");
        let mut observed = all_running(&d);
        observed.pop();
        let mut p = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        p.network = vec![NetChange::DeleteVpc {
            resource: "vpc/main".into(),
            vpc_id: "vpc-1".into(),
        }];
        p.iam.changes = vec![IamChange::CreateGroup {
            name: "shop-staging-ops".into(),
        }];
        let places = |stage| p.places(stage, 0).into_iter().collect::<Vec<_>>();
        // IAM's group, before anything is launched; the missing slot's launch (no rollout:
        // nothing to retire); the VPC once the instances are gone.
        assert_eq!(places(Stage::Before), [3]);
        assert_eq!(places(Stage::Running), [Phase::Launch.at().1]);
        assert_eq!(places(Stage::After), [3]);
        assert_eq!(p.rounds(Stage::Before), 1);
        assert_eq!(p.rounds(Stage::Running), 1);
        // Nothing to make: no place at all, so apply makes no call.
        let none = plan(&d, &all_running(&d), &[], &DnsState::default(), None, 0);
        for stage in Stage::ALL {
            assert!(none.places(stage, 0).is_empty());
        }
    }

    #[test]
    fn termination_protection_refuses_to_terminate_unless_the_slot_turns_it_off() {
        let with = |extra: &str| {
            let src = DEF.replace(
                "[roles.www]\ncount = 2",
                &format!("[roles.www]\ncount = 2\n{extra}"),
            );
            compute(&definition(&src), "staging", "us-east-1", &mut NoPlugins).unwrap()
        };
        let protected = with("disable_api_termination = true");
        let running = all_running(&protected);
        assert!(plan(&protected, &running, &[], &DnsState::default(), None, 0).is_empty());

        // down: nothing is applied, and the plan says why.
        let nothing = Desired::nothing("shop", "staging", "us-east-1");
        let down = plan(&nothing, &running, &[], &DnsState::default(), None, 0);
        assert_eq!(down.instances.protected.len(), 2, "{down}");
        assert!(
            down.to_string().contains("refused: www[1] shop-staging-www-01 i-0: no longer in the definition: termination protection is on"),
            "{down}"
        );
        // Turned off: changed in place, the same instances.
        let off = with("disable_api_termination = false");
        let p = plan(&off, &running, &[], &DnsState::default(), None, 0);
        assert!(p.instances.protected.is_empty());
        assert!(
            p.instances.changes.iter().all(
                |c| c.modifies() == [crate::kinds::instances::Attribute::ApiTermination(false)]
            ),
            "{p}"
        );
        // Turned off with a replacement: the old instances go, protection off first.
        let replaced = with("disable_api_termination = false\ninstance_type = \"t3.large\"");
        let p = plan(&replaced, &running, &[], &DnsState::default(), None, 0);
        assert!(p.instances.protected.is_empty());
        assert_eq!(p.instances.unprotect, ["i-0", "i-1"]);
        // Kept on with a replacement: refused.
        let kept = with("disable_api_termination = true\ninstance_type = \"t3.large\"");
        let p = plan(&kept, &running, &[], &DnsState::default(), None, 0);
        assert_eq!(p.instances.protected.len(), 2, "{p}");
    }

    #[test]
    fn monitoring_turned_off_by_hand_is_turned_on_in_place_and_unset_is_left_alone() {
        let src = DEF.replace(
            "[roles.www]\ncount = 2",
            "[roles.www]\ncount = 2\nmonitoring = true",
        );
        let d = compute(&definition(&src), "staging", "us-east-1", &mut NoPlugins).unwrap();
        let mut observed = all_running(&d);
        observed[1].monitoring = true;
        let p = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        assert_eq!(p.instances.changes.len(), 1, "{p}");
        assert!(
            p.to_string()
                .contains("~ modify   www[1] shop-staging-www-01 i-0: monitoring on"),
            "{p}"
        );
        // The role does not say: whatever EC2 has is left.
        let unset = desired("staging");
        let observed = all_running(&unset);
        assert!(plan(&unset, &observed, &[], &DnsState::default(), None, 0).is_empty());
    }

    #[test]
    fn a_plan_limited_to_a_role_keeps_its_changes_and_what_it_needs_never_a_shared_delete() {
        use crate::kinds::iam::IamChange;
        let src = DEF.replace(
            "[roles.www]\ncount = 2",
            "[roles.www]\ncount = 2\n[roles.db]\ncount = 1",
        );
        let d = compute(&definition(&src), "staging", "us-east-1", &mut NoPlugins).unwrap();
        let mut p = plan(&d, &[], &[], &DnsState::default(), None, 0);
        assert_eq!(p.instances.changes.len(), 3);
        p.network = vec![NetChange::DeleteVpc {
            resource: "vpc/main".into(),
            vpc_id: "vpc-1".into(),
        }];
        p.iam.changes = vec![IamChange::CreateGroup {
            name: "shop-staging-ops".into(),
        }];
        let db = BTreeSet::from(["db".to_owned()]);
        let only = p.clone().only(&db, false);
        let roles: Vec<&str> = only
            .instances
            .changes
            .iter()
            .filter_map(|c| c.launches().map(|(d, _)| d.role.as_str()))
            .collect();
        assert_eq!(roles, ["db"]);
        assert!(only.network.is_empty(), "a shared delete waits");
        assert_eq!(
            only.iam.changes.len(),
            1,
            "a shared create is what it may need"
        );
        // down --role: its own changes only.
        let theirs = p.only(&db, true);
        assert_eq!(theirs.instances.changes.len(), 1);
        assert!(theirs.iam.changes.is_empty());
    }

    #[test]
    fn lowering_the_count_deletes_the_extra_slot() {
        let d = desired("staging");
        let observed = all_running(&d);
        let mut fewer = d.clone();
        fewer.instances.pop();
        let p = plan(&fewer, &observed, &[], &DnsState::default(), None, 0);
        assert_eq!(p.instances.changes.len(), 1);
        assert!(
            matches!(&p.instances.changes[0], Change::Delete { instance_id, reason, .. } if instance_id == "i-1" && reason == "no longer in the definition")
        );
    }

    #[test]
    fn twins_keep_the_oldest_running_one() {
        let d = desired("staging");
        let a = running(&d.instances[0], "i-young", 20);
        let b = running(&d.instances[0], "i-old", 10);
        let c = running(&d.instances[1], "i-c", 10);
        let p = plan(&d, &[a, b, c], &[], &DnsState::default(), None, 0);
        assert_eq!(p.instances.changes.len(), 1, "{p}");
        assert!(
            matches!(&p.instances.changes[0], Change::Delete { instance_id, reason, .. } if instance_id == "i-young" && reason == "twin of i-old")
        );
    }

    #[test]
    fn changed_type_replaces_and_changed_name_retags() {
        let d = desired("staging");
        let mut old_type = running(&d.instances[0], "i-a", 1);
        old_type.tags.insert(TAG_SPEC.into(), "stale".into());
        // Tagged before heet:settings: only the spec tells.
        old_type.tags.remove(TAG_SETTINGS);
        old_type.instance_type = "t2.nano".into();
        let mut renamed = running(&d.instances[1], "i-b", 1);
        renamed.tags.insert("Name".into(), "old-name".into());
        let p = plan(&d, &[old_type, renamed], &[], &DnsState::default(), None, 0);
        assert!(
            matches!(&p.instances.changes[0], Change::Replace { instance_id, reasons, .. } if instance_id == "i-a" && reasons == &["instance type t2.nano → t3.micro"])
        );
        assert!(
            matches!(&p.instances.changes[1], Change::UpdateTags { set, .. } if set.len() == 1 && set["Name"] == "shop-staging-www-02")
        );
        assert!(p.instances.is_destructive());
    }

    #[test]
    fn a_user_data_change_replaces_unless_replace_on_leaves_it_out() {
        let d = desired("staging");
        let launched = all_running(&d);
        let new_user_data = |replace_on: &str| {
            let def = DEF.replace(
                "count = 2",
                &format!("count = 2\nuser_data = \"#!/bin/sh\\necho v2\"\n{replace_on}"),
            );
            compute(&definition(&def), "staging", "us-east-1", &mut NoPlugins).unwrap()
        };

        // As today by default: every instance replaced, and the plan says for what.
        let p = plan(
            &new_user_data(""),
            &launched,
            &[],
            &DnsState::default(),
            None,
            0,
        );
        assert_eq!(
            p.instances.count(|c| matches!(c, Change::Replace { .. })),
            2,
            "{p}"
        );
        assert!(
            matches!(&p.instances.changes[0], Change::Replace { reasons, .. } if reasons == &["user_data changed"]),
            "{p}"
        );
        assert!(p.instances.as_launched.is_empty());

        // Left out of replace_on: both stay, their spec and settings tags keep saying what
        // they run, and the next plan over them is the same no-op.
        let keep = new_user_data(r#"replace_on = ["ami", "instance_type"]"#);
        let p = plan(&keep, &launched, &[], &DnsState::default(), None, 0);
        assert!(p.is_empty(), "{p}");
        assert_eq!(p.instances.unchanged, 2);
        let kept: Vec<(&str, &[Setting])> = p
            .instances
            .as_launched
            .iter()
            .map(|a| (a.instance_id.as_str(), a.settings.as_slice()))
            .collect();
        assert_eq!(
            kept,
            [
                ("i-0", &[Setting::UserData][..]),
                ("i-1", &[Setting::UserData][..])
            ]
        );
        assert!(
            p.to_string().contains(
                "as launched: www[1] shop-staging-www-01 i-0: keeps its user_data (not in its role's replace_on)"
            ),
            "{p}"
        );

        // A tag change still reaches them, but never over their spec and settings.
        let mut renamed = launched.clone();
        renamed[0].tags.insert("Name".into(), "old".into());
        let p = plan(&keep, &renamed, &[], &DnsState::default(), None, 0);
        assert!(
            matches!(&p.instances.changes[..], [Change::UpdateTags { set, .. }] if set.keys().eq(["Name"])),
            "{p}"
        );

        // A setting replace_on lists still replaces them, user_data along with it.
        let both = DEF.replace(
            "count = 2",
            "count = 2\ninstance_type = \"t3.small\"\nuser_data = \"v2\"\nreplace_on = [\"instance_type\"]",
        );
        let both = compute(&definition(&both), "staging", "us-east-1", &mut NoPlugins).unwrap();
        let p = plan(&both, &launched, &[], &DnsState::default(), None, 0);
        assert!(
            matches!(&p.instances.changes[0], Change::Replace { reasons, instance, .. }
                if reasons == &["instance type t3.micro → t3.small", "user_data changed"]
                    && instance.user_data == "v2"),
            "{p}"
        );

        // Launched before heet:settings existed: only the spec tells, so it is replaced.
        let mut old = launched.clone();
        for o in &mut old {
            o.tags.remove(TAG_SETTINGS);
        }
        let p = plan(&keep, &old, &[], &DnsState::default(), None, 0);
        assert_eq!(
            p.instances.count(|c| matches!(c, Change::Replace { .. })),
            2,
            "{p}"
        );
        // And one as wanted gets the tag, not a replacement.
        let p = plan(&d, &old, &[], &DnsState::default(), None, 0);
        assert!(
            p.instances.changes.iter().all(
                |c| matches!(c, Change::UpdateTags { set, .. } if set.keys().eq([TAG_SETTINGS]))
            ),
            "{p}"
        );
    }

    /// `d`'s instances running with other launch settings than it asks for.
    fn all_stale(d: &Desired) -> Vec<ObservedInstance> {
        let mut observed = all_running(d);
        for o in &mut observed {
            o.tags.insert(TAG_SPEC.into(), "stale".into());
            // Tagged before heet:settings: only the spec tells.
            o.tags.remove(TAG_SETTINGS);
            o.instance_type = "t2.nano".into();
        }
        observed
    }

    #[test]
    fn a_replacement_rolls_batch_by_batch_each_new_instance_before_its_old_one_goes() {
        let d = desired("staging");
        let p = plan(&d, &all_stale(&d), &[], &DnsState::default(), None, 0);
        let steps: Vec<(u32, Option<(&str, Ending)>)> = p
            .instances
            .changes
            .iter()
            .map(|c| (c.launches().unwrap().1, c.terminates()))
            .collect();
        assert_eq!(
            steps,
            [
                (0, Some(("i-0", Ending::AfterRound(0)))),
                (1, Some(("i-1", Ending::AfterRound(1))))
            ]
        );
        assert_eq!(p.instances.rounds(), 2);
        assert_eq!(p.instances.slot_rounds()[d.instances[1].id.as_str()], 1);
        // Round 0 over: i-0's successor is healthy and it goes; i-1 serves until round 1.
        let none = BTreeSet::new();
        assert_eq!(
            p.instances.after_round(0, &none),
            (vec!["i-0"], vec!["i-1"])
        );
        // Its successor failed: i-0 keeps serving too.
        let failed = BTreeSet::from([d.instances[0].id.as_str()]);
        assert_eq!(
            p.instances.after_round(0, &failed),
            (vec![], vec!["i-0", "i-1"])
        );
        assert_eq!(p.instances.after_round(1, &none), (vec!["i-1"], vec![]));
        // Apply's schedule: nothing before the rounds; each round launches (and waits),
        // then retires the old instance once its successor holds its names.
        assert_eq!(p.rounds(Stage::Running), 2);
        assert!(p.places(Stage::Before, 0).is_empty());
        for round in 0..2 {
            assert_eq!(
                p.places(Stage::Running, round),
                BTreeSet::from([Phase::Launch.at().1, Phase::Retire.at().1])
            );
        }
        let text = p.to_string();
        assert!(
            text.contains("± replace  www[2] shop-staging-www-02 i-1: instance type t2.nano → t3.micro; batch 2 of 2, the new instance first"),
            "{text}"
        );
        assert!(
            text.contains("rollout  www: 2 batch(es) of 25% (max_unavailable 0), each healthy when running within 600 s"),
            "{text}"
        );
    }

    #[test]
    fn all_at_once_terminates_first_as_replacement_always_did() {
        let mut d = desired("staging");
        for i in &mut d.instances {
            i.rolling.batch = crate::rolling::Amount::Percent(100);
            i.rolling.max_unavailable = crate::rolling::Amount::Percent(100);
        }
        let p = plan(&d, &all_stale(&d), &[], &DnsState::default(), None, 0);
        assert_eq!(p.instances.rounds(), 1);
        assert!(
            p.instances
                .changes
                .iter()
                .all(|c| matches!(c.terminates(), Some((_, Ending::First)))
                    && c.launches().unwrap().1 == 0)
        );
    }

    #[test]
    fn a_rollout_under_way_keeps_its_successor_and_retires_the_old_instance_once_it_is_healthy() {
        let d = desired("staging");
        let mut observed = all_stale(&d);
        // A killed run launched www[1]'s successor: it has the slot's tags and the new spec.
        let mut successor = running(&d.instances[0], "i-new", 50);
        successor.state = "pending".into();
        observed.push(successor);
        let p = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        assert!(
            !p.instances
                .changes
                .iter()
                .any(|c| matches!(c, Change::Delete { .. })),
            "the successor is no twin: {p}"
        );
        let first = &p.instances.changes[0];
        assert_eq!(first.successor(), Some("i-new"));
        assert_eq!(first.launches(), None, "not launched again");
        assert_eq!(first.terminates(), Some(("i-0", Ending::AfterRound(0))));
        // The other slot's batch waits for the one in flight.
        assert_eq!(p.instances.changes[1].launches().unwrap().1, 1);
        assert!(
            p.to_string().contains("its successor i-new is launched"),
            "{p}"
        );

        // Once the successor runs, the old one and the successor are still one slot.
        let mut observed = all_stale(&d);
        observed.push(running(&d.instances[0], "i-new", 50));
        let p = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        assert_eq!(p.instances.changes[0].successor(), Some("i-new"));
    }

    #[test]
    fn a_successor_placed_from_the_ledger_gets_its_own_tags_before_its_names_move() {
        let d = desired("staging");
        let observed = {
            let mut o = all_stale(&d);
            // Killed after the launch of a batch of two (www[1]'s successor and a new slot),
            // before the instances got their own tags.
            let mut s = untagged(&d.instances[0], "i-new", "b1", 0);
            s.launch_time = Some(50);
            o.push(s);
            o
        };
        let ledger = batch(&d, "b1", &[], 100);
        let p = plan(&d, &observed, &[], &DnsState::default(), Some(&ledger), 100);
        let retag = p.instances.changes.iter().find_map(Change::retags);
        assert!(
            matches!(retag, Some(("i-new", _, set)) if set.contains_key(TAG_ID) && set.contains_key(TAG_INDEX)),
            "{p}"
        );
        assert!(
            p.instances
                .changes
                .iter()
                .any(|c| c.successor() == Some("i-new")
                    && c.terminates() == Some(("i-0", Ending::AfterRound(0))))
        );
    }

    #[test]
    fn a_failed_successor_of_settings_given_up_is_a_twin_and_the_old_instance_stays() {
        let d = desired("staging");
        let mut observed = all_running(&d);
        // i-bad was the successor of settings the definition no longer asks for.
        let mut bad = running(&d.instances[0], "i-bad", 50);
        bad.tags.insert(TAG_SPEC.into(), "given-up".into());
        // Tagged before heet:settings: only the spec tells.
        bad.tags.remove(TAG_SETTINGS);
        observed.push(bad);
        let p = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        assert_eq!(p.instances.changes.len(), 1, "{p}");
        assert!(
            matches!(&p.instances.changes[0], Change::Delete { instance_id, twin: true, .. } if instance_id == "i-bad"),
            "{p}"
        );
    }

    #[test]
    fn other_envs_and_look_alikes_are_never_touched() {
        let staging = desired("staging");
        let production = desired("production");
        let theirs = running(&production.instances[0], "i-prod", 1);
        let mut look_alike = running(&staging.instances[0], "i-fake", 1);
        look_alike
            .tags
            .insert(TAG_ID.into(), "0000000000000000".into());
        let p = plan(
            &staging,
            &[theirs, look_alike],
            &[],
            &DnsState::default(),
            None,
            0,
        );
        assert_eq!(p.instances.foreign, ["i-prod", "i-fake"]);
        assert!(!p.instances.is_destructive());
        assert_eq!(p.instances.count(|c| matches!(c, Change::Create { .. })), 2);
    }

    /// `d`'s instance as a batch launch leaves it before its own tags: only the tags its
    /// batch shares, and `heet:batch`.
    fn untagged(d: &DesiredInstance, id: &str, batch: &str, launch_index: u32) -> ObservedInstance {
        let mut o = running(d, id, 1);
        o.tags
            .retain(|k, _| [TAG_PROJECT, TAG_ENV, TAG_ROLE, TAG_SPEC].contains(&k.as_str()));
        o.tags.insert(TAG_BATCH.into(), batch.into());
        o.launch_index = Some(launch_index);
        o
    }

    fn batch(
        d: &Desired,
        id: &str,
        instances: &[&str],
        since: i64,
    ) -> BTreeMap<String, ledger::Batch> {
        BTreeMap::from([(
            id.to_owned(),
            ledger::Batch {
                batch: id.into(),
                role: "www".into(),
                spec: d.instances[0].spec.clone(),
                slots: vec![1, 2],
                client_token: "heet-t".into(),
                instances: instances.iter().map(|s| (*s).to_owned()).collect(),
                since,
                state: if instances.is_empty() {
                    ledger::State::Pending
                } else {
                    ledger::State::Done
                },
            },
        )])
    }

    #[test]
    fn instances_of_an_interrupted_batch_are_placed_by_the_ledger_and_only_by_it() {
        let d = desired("staging");
        // A kill after RunInstances, before the instances got their own tags; the second
        // launched first in the answer's order, which is AmiLaunchIndex's to decide.
        let observed = [
            untagged(&d.instances[1], "i-b", "b1", 1),
            untagged(&d.instances[0], "i-a", "b1", 0),
        ];
        // Without the ledger: not converged, and nothing is touched yet.
        let first = plan(&d, &observed, &[], &DnsState::default(), None, 0);
        assert_eq!(first.instances.unadopted, ["i-b", "i-a"]);
        assert!(!first.is_empty());
        assert!(
            first
                .instances
                .changes
                .iter()
                .all(|c| matches!(c, Change::Create { .. }))
        );

        let ledger = batch(&d, "b1", &[], 100);
        let p = plan(&d, &observed, &[], &DnsState::default(), Some(&ledger), 100);
        assert!(
            p.instances.unadopted.is_empty() && p.instances.foreign.is_empty(),
            "{p:?}"
        );
        let retags: Vec<(&str, &str)> = p
            .instances
            .changes
            .iter()
            .map(|c| match c {
                Change::UpdateTags {
                    instance_id, set, ..
                } => (instance_id.as_str(), set[TAG_INDEX].as_str()),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(retags, [("i-a", "1"), ("i-b", "2")], "no launch, no twin");
        assert_eq!(
            p.instances.settled,
            ["batch/b1"],
            "over once they are retagged"
        );

        // Once confirmed, only the instances the ledger names are the batch's.
        let confirmed = batch(&d, "b1", &["i-a", "i-other"], 100);
        let p = plan(
            &d,
            &observed,
            &[],
            &DnsState::default(),
            Some(&confirmed),
            100,
        );
        assert_eq!(
            p.instances.foreign,
            ["i-b"],
            "a look-alike copying the batch tag"
        );
        assert!(p.instances.settled.is_empty(), "i-other is not seen yet");

        // A batch the ledger does not list is nobody heet knows.
        let p = plan(
            &d,
            &observed,
            &[],
            &DnsState::default(),
            Some(&BTreeMap::new()),
            100,
        );
        assert_eq!(p.instances.foreign, ["i-b", "i-a"]);
        assert_eq!(p.instances.count(|c| matches!(c, Change::Create { .. })), 2);
    }

    #[test]
    fn a_batch_written_ahead_that_never_launched_is_dropped_only_after_its_grace() {
        let d = desired("staging");
        let ledger = batch(&d, "b1", &[], 1_000);
        let soon = plan(&d, &[], &[], &DnsState::default(), Some(&ledger), 1_010);
        assert!(
            soon.instances.settled.is_empty(),
            "its instances may not be visible yet"
        );
        let later = plan(
            &d,
            &[],
            &[],
            &DnsState::default(),
            Some(&ledger),
            1_000 + BATCH_GRACE_SECS + 1,
        );
        assert_eq!(later.instances.settled, ["batch/b1"]);
    }

    #[test]
    fn json_never_contains_user_data() {
        let mut d = desired("staging");
        d.instances[0].user_data = "password=hunter2".into();
        let p = plan(&d, &[], &[], &DnsState::default(), None, 0);
        let mut out = Vec::new();
        crate::report::plan(&p, &mut serde_json::Serializer::new(&mut out)).unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains(r#""action":"create""#), "{json}");
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;
    use crate::kinds::instances::InstanceChange as Change;
    use crate::kinds::records::{ObservedRecord, RecordAction, Zone};
    use crate::ledger::OwnedRecord;
    use crate::namespace;

    /// Two www instances with the indexed CNAMEs, both running as `i-0`, `i-1`.
    fn setup() -> (Desired, Vec<ObservedInstance>) {
        let mut d = super::tests::desired("staging");
        for i in &mut d.instances {
            i.cnames = vec![format!("www-{:02}", i.index)];
            i.tags
                .insert(namespace::TAG_DNS.into(), namespace::dns_hash(&i.cnames));
        }
        let observed = super::tests::all_running(&d);
        (d, observed)
    }

    fn cname(target: &str) -> ObservedRecord {
        ObservedRecord {
            kind: "CNAME".into(),
            values: vec![target.into()],
            ttl: Some(300),
        }
    }

    fn dns(records: &[(&str, ObservedRecord)], owned: Option<&[(&str, &str)]>) -> DnsState {
        DnsState {
            domain: Some("example.com".into()),
            zone: Some(Zone {
                id: "Z1".into(),
                name: "example.com".into(),
            }),
            records: records
                .iter()
                .map(|(n, r)| ((*n).to_owned(), r.clone()))
                .collect(),
            owned: owned.map(|o| {
                o.iter()
                    .map(|(n, t)| {
                        (
                            (*n).to_owned(),
                            OwnedRecord {
                                target: (*t).to_owned(),
                                ttl: 300,
                            },
                        )
                    })
                    .collect()
            }),
            balancers: BTreeMap::new(),
        }
    }

    #[test]
    fn missing_records_point_at_running_instances() {
        let (d, observed) = setup();
        let p = plan(&d, &observed, &[], &dns(&[], Some(&[])), None, 0);
        let targets: Vec<(&str, Option<&str>)> = p
            .dns
            .changes
            .iter()
            .map(|r| match r {
                RecordChange::Upsert { name, target, .. } => (name.as_str(), target.as_deref()),
                RecordChange::Delete { .. } | RecordChange::Balancer { .. } => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            [
                ("www-01.example.com", Some("i-0.compute.example")),
                ("www-02.example.com", Some("i-1.compute.example"))
            ]
        );
    }

    #[test]
    fn correct_records_are_a_no_op_even_without_the_ledger() {
        let (d, observed) = setup();
        let records = [
            ("www-01.example.com", cname("i-0.compute.example")),
            ("www-02.example.com", cname("i-1.compute.example")),
        ];
        assert!(plan(&d, &observed, &[], &dns(&records, None), None, 0).is_empty());
    }

    #[test]
    fn a_new_instance_gets_its_record_after_launch() {
        let (d, observed) = setup();
        let p = plan(&d, &observed[..1], &[], &dns(&[], Some(&[])), None, 0);
        assert!(matches!(
            &p.dns.changes[1],
            RecordChange::Upsert { name, target: None, .. } if name == "www-02.example.com"
        ));
    }

    #[test]
    fn a_foreign_record_on_a_wanted_name_is_a_conflict_never_overwritten() {
        let (d, observed) = setup();
        let records = [
            ("www-01.example.com", cname("i-0.compute.example")),
            ("www-02.example.com", cname("someone-else.example")),
        ];
        let p = plan(
            &d,
            &observed,
            &[],
            &dns(
                &records,
                Some(&[("www-01.example.com", "i-0.compute.example")]),
            ),
            None,
            0,
        );
        assert!(p.dns.changes.is_empty(), "{:?}", p.dns.changes);
        assert_eq!(p.dns.conflicts.len(), 1);
        assert!(
            p.dns.conflicts[0]
                .starts_with("www-02.example.com exists (CNAME someone-else.example)")
        );
        assert!(!p.is_empty());
    }

    #[test]
    fn stale_records_are_deleted_only_when_heet_made_them_and_nobody_changed_them() {
        let (mut d, observed) = setup();
        for i in &mut d.instances {
            i.cnames.clear();
        }
        let records = [
            ("www-01.example.com", cname("i-0.compute.example")),
            ("www-02.example.com", cname("changed-by-hand.example")),
            ("www-03.example.com", cname("not-ours.example")),
        ];
        let owned = [
            ("www-01.example.com", "i-0.compute.example"),
            ("www-02.example.com", "i-1.compute.example"),
            ("www-09.example.com", "i-9.compute.example"),
        ];
        let p = plan(&d, &observed, &[], &dns(&records, Some(&owned)), None, 0);
        let deletes: Vec<(&str, bool)> = p
            .dns
            .changes
            .iter()
            .map(|r| match r {
                RecordChange::Delete { name, present, .. } => (name.as_str(), *present),
                RecordChange::Upsert { .. } | RecordChange::Balancer { .. } => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(
            deletes,
            [("www-01.example.com", true), ("www-09.example.com", false)]
        );
        assert_eq!(p.dns.forgotten, ["www-02.example.com"]);
    }

    #[test]
    fn dropping_every_cname_is_seen_without_the_ledger() {
        let (mut d, observed) = setup();
        let records = [
            ("www-01.example.com", cname("i-0.compute.example")),
            ("www-02.example.com", cname("i-1.compute.example")),
        ];
        d = {
            let mut def_less = d.clone();
            for i in &mut def_less.instances {
                i.cnames.clear();
                i.tags
                    .insert(namespace::TAG_DNS.into(), namespace::dns_hash(&[]));
            }
            def_less
        };
        // The optimistic plan (no ledger) must not call this converged: the instances' tags
        // say their records changed, so `up` goes on to read the ledger and delete them.
        let p = plan(&d, &observed, &[], &dns(&records, None), None, 0);
        assert_eq!(
            p.instances
                .count(|c| matches!(c, Change::UpdateTags { .. })),
            2,
            "{p}"
        );
    }

    #[test]
    fn a_booting_instance_gets_its_records_once_it_runs_not_its_private_name_now() {
        let (d, mut observed) = setup();
        observed[1].state = "pending".into();
        observed[1].public_dns = None;
        observed[1].private_dns = Some("ip-10-0-0-9.ec2.internal".into());
        let p = plan(&d, &observed, &[], &dns(&[], Some(&[])), None, 0);
        assert!(
            matches!(
                &p.dns.changes[1],
                RecordChange::Upsert { target: None, instance_id: Some(id), .. } if id == "i-1"
            ),
            "{:?}",
            p.dns.changes
        );
    }

    #[test]
    fn a_running_instance_without_any_dns_name_gets_no_record_and_the_plan_says_so() {
        let (d, mut observed) = setup();
        observed[0].public_dns = None;
        observed[0].private_dns = None;
        let p = plan(&d, &observed, &[], &dns(&[], Some(&[])), None, 0);
        assert_eq!(p.dns.changes.len(), 1, "{:?}", p.dns.changes);
        assert_eq!(p.instances.unresolved.len(), 1);
        assert!(
            p.to_string()
                .contains("no record: shop-staging-www-01 i-0: the instance has no DNS name"),
            "{p}"
        );
    }

    #[test]
    fn a_name_is_an_a_record_to_the_address_without_a_public_name_or_with_record_a() {
        let (mut d, mut observed) = setup();
        for (o, ip) in observed.iter_mut().zip(["54.0.0.1", "54.0.0.2"]) {
            o.public_ip = Some(ip.into());
            o.private_ip = Some("10.0.0.9".into());
        }
        // No public DNS name: its public address; with none, its private one.
        observed[0].public_dns = None;
        observed[0].private_dns = Some("ip-10-0-0-9.ec2.internal".into());
        // record = "a": its address, whatever its DNS name.
        d.instances[1].record_a = true;
        let p = plan(&d, &observed, &[], &dns(&[], Some(&[])), None, 0);
        let targets: Vec<(&str, Option<&str>)> = p
            .dns
            .changes
            .iter()
            .map(|r| match r {
                RecordChange::Upsert { name, target, .. } => (name.as_str(), target.as_deref()),
                RecordChange::Delete { .. } | RecordChange::Balancer { .. } => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            [
                ("www-01.example.com", Some("54.0.0.1")),
                ("www-02.example.com", Some("54.0.0.2"))
            ]
        );
        observed[0].public_ip = None;
        let p = plan(&d, &observed, &[], &dns(&[], Some(&[])), None, 0);
        assert!(
            p.to_string()
                .contains("+ record   www-01.example.com → 10.0.0.9"),
            "{p}"
        );

        // What holds it already is a no-op; a CNAME where an A record belongs is replaced
        // by two operations in one batch (a CNAME shares its name with no other record).
        let a_record = ObservedRecord {
            kind: "A".into(),
            values: vec!["10.0.0.9".into()],
            ttl: Some(300),
        };
        let held = dns(
            &[
                ("www-01.example.com", a_record),
                ("www-02.example.com", cname("i-1.compute.example")),
            ],
            Some(&[
                ("www-01.example.com", "10.0.0.9"),
                ("www-02.example.com", "i-1.compute.example"),
            ]),
        );
        let p = plan(&d, &observed, &[], &held, None, 0);
        assert_eq!(p.dns.changes.len(), 1, "{:?}", p.dns.changes);
        let ops = p.dns.changes[0]
            .ops(
                &std::collections::BTreeMap::new(),
                &std::collections::BTreeMap::new(),
            )
            .unwrap();
        let shown: Vec<(RecordAction, &str)> =
            ops.iter().map(|o| (o.action, o.target.as_str())).collect();
        assert_eq!(
            shown,
            [
                (RecordAction::Delete, "i-1.compute.example"),
                (RecordAction::Create, "54.0.0.2")
            ]
        );
        assert_eq!(crate::kinds::records::record_type(&ops[1].target), "A");
    }

    #[test]
    fn a_missing_zone_is_planned_when_records_are_wanted() {
        let (d, observed) = setup();
        let mut state = dns(&[], Some(&[]));
        state.zone = None;
        let p = plan(&d, &observed, &[], &state, None, 0);
        assert_eq!(p.dns.create_zone.as_deref(), Some("example.com"));
        assert!(p.to_string().contains("+ zone     example.com"), "{p}");
    }
}
